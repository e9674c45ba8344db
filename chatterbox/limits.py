"""Rate limits kept in Redis, so that they hold across every web process: fixed windows per key."""
from __future__ import annotations

import time

import redis

PREFIX = "cbx:limit"


class RateLimiter:
    def __init__(self, client: redis.Redis):
        self.r = client

    def exceeded(self, name: str, limit: int, window_s: int) -> int | None:
        """Whether ``name`` has been counted ``limit`` times in this window already (without counting this): None,
        or the seconds until the next window."""
        if limit <= 0:
            return None
        now = time.time()
        window = int(now // window_s)
        count = int(self.r.get(f"{PREFIX}:{name}:{window}") or 0)
        return int((window + 1) * window_s - now) + 1 if count >= limit else None

    def hit(self, name: str, limit: int, window_s: int) -> int | None:
        """Count one use of ``name``; None while within ``limit`` per window, else the seconds until the next
        window (for Retry-After). A limit of 0 or less turns the limit off."""
        if limit <= 0:
            return None
        now = time.time()
        window = int(now // window_s)
        key = f"{PREFIX}:{name}:{window}"
        p = self.r.pipeline()
        p.incr(key)
        p.expire(key, window_s + 1)
        count, _ = p.execute()
        if count <= limit:
            return None
        return int((window + 1) * window_s - now) + 1
