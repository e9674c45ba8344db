"""An audiobook's work state in Redis: which items are waiting, which are in flight on which worker, which are done.

Work items are strings: ``c:<n>`` synthesize chunk n, ``a:<n>`` assemble chapter n, ``b`` assemble the book.
Celery messages for a book carry no item, only the book's id: each message is a token that lets one worker take
the next item from the book's ``pending`` list. Tokens are interchangeable, so a duplicated token costs nothing
(it finds nothing to take) and a lost one is replaced by the watchdog; the truth is always here and in the chunk
cache on disk, never in the broker. An item taken is recorded in ``inflight`` with the taking worker's instance,
so that the watchdog can hand it back when that worker's heartbeat stops.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Iterable

from ..jobs import BOOKS_ACTIVE, JobStore, book_key, job_key

# Take the first pending item and record who has it, in one step: no two workers ever take the same item.
_TAKE_LUA = """
local item = redis.call('LPOP', KEYS[1])
if not item then return false end
redis.call('HSET', KEYS[2], item, ARGV[1])
redis.call('HSET', KEYS[3], 'activity_at', ARGV[2])
return item
"""


class BookStore:
    def __init__(self, store: JobStore):
        self.store = store
        self.r = store.r
        self._take = self.r.register_script(_TAKE_LUA)

    def _keys(self, job_id: str, *parts: str) -> list[str]:
        return [book_key(job_id, p) for p in parts]

    # -- set-up --------------------------------------------------------------------------------------------------
    def start(self, job_id: str, items: Iterable[str]) -> int:
        """Fresh work state for a book: every item pending. Returns how many."""
        items = list(items)
        ttl = self.store.settings.job_ttl_s
        p = self.r.pipeline()
        for part in ("pending", "inflight", "done", "failures", "renders", "chapters"):
            p.delete(book_key(job_id, part))
        if items:
            p.rpush(book_key(job_id, "pending"), *items)
        for part in ("pending", "done", "failures", "renders", "chapters", "inflight"):
            p.expire(book_key(job_id, part), ttl)  # a no-op for keys that do not exist yet; touch() renews
        p.sadd(BOOKS_ACTIVE, job_id)
        p.execute()
        return len(items)

    def touch(self, job_id: str) -> None:
        """Keep the work state as long as the job record."""
        ttl = self.store.settings.job_ttl_s
        p = self.r.pipeline()
        for part in ("pending", "inflight", "done", "failures", "renders", "chapters"):
            p.expire(book_key(job_id, part), ttl)
        p.execute()

    # -- items ---------------------------------------------------------------------------------------------------
    def take(self, job_id: str, instance: str, worker: str) -> str | None:
        owner = json.dumps({"instance": instance, "worker": worker, "at": time.time()})
        pending, inflight = self._keys(job_id, "pending", "inflight")
        item = self._take(keys=[pending, inflight, job_key(job_id)], args=[owner, time.time()])
        return item or None

    def release(self, job_id: str, item: str) -> None:
        self.r.hdel(book_key(job_id, "inflight"), item)

    def push_front(self, job_id: str, item: str) -> None:
        self.r.lpush(book_key(job_id, "pending"), item)

    def retry(self, job_id: str, item: str) -> None:
        """Put an item that failed back at the front, for the next token."""
        p = self.r.pipeline()
        p.hdel(book_key(job_id, "inflight"), item)
        p.lpush(book_key(job_id, "pending"), item)
        p.execute()

    def fail(self, job_id: str, item: str) -> int:
        """Count a failure of an item; returns how many it has had."""
        return int(self.r.hincrby(book_key(job_id, "failures"), item, 1))

    def queue_once(self, job_id: str, item: str) -> bool:
        """Queue an assembly item unless it already is (two workers may finish a chapter's last chunks at once)."""
        if not self.r.set(book_key(job_id, f"queued:{item}"), "1", nx=True, ex=self.store.settings.job_ttl_s):
            return False
        self.push_front(job_id, item)
        return True

    def unqueue(self, job_id: str, *items: str) -> None:
        """Allow assembly items to be queued again (after a chunk changed)."""
        self.r.delete(*[book_key(job_id, f"queued:{item}") for item in items])

    def counted_render(self, job_id: str, index: int) -> int:
        """Count a synthesis of chunk ``index`` (the audit that shows no chunk was made twice)."""
        return int(self.r.hincrby(book_key(job_id, "renders"), str(index), 1))

    def renders(self, job_id: str) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.r.hgetall(book_key(job_id, "renders")).items()}

    # -- chunks and chapters -------------------------------------------------------------------------------------
    def complete_chunk(self, job_id: str, index: int, info: dict) -> bool:
        """Record chunk ``index`` as done; True the first time only."""
        p = self.r.pipeline()
        p.hsetnx(book_key(job_id, "done"), str(index), json.dumps(info))
        p.hdel(book_key(job_id, "inflight"), f"c:{index}")
        new, _ = p.execute()
        return bool(new)

    def undo_chunk(self, job_id: str, index: int) -> None:
        self.r.hdel(book_key(job_id, "done"), str(index))

    def done(self, job_id: str) -> dict[int, dict]:
        return {int(k): json.loads(v) for k, v in self.r.hgetall(book_key(job_id, "done")).items()}

    def done_count(self, job_id: str) -> int:
        return int(self.r.hlen(book_key(job_id, "done")))

    def count_done(self, job_id: str, indices: range) -> int:
        if not len(indices):
            return 0
        values = self.r.hmget(book_key(job_id, "done"), [str(i) for i in indices])
        return sum(v is not None for v in values)

    def all_done(self, job_id: str, indices: range) -> bool:
        return self.count_done(job_id, indices) == len(indices)

    def set_chapter(self, job_id: str, index: int, info: dict) -> None:
        self.r.hset(book_key(job_id, "chapters"), str(index), json.dumps(info))

    def forget_chapter(self, job_id: str, index: int) -> None:
        self.r.hdel(book_key(job_id, "chapters"), str(index))

    def chapters(self, job_id: str) -> dict[int, dict]:
        return {int(k): json.loads(v) for k, v in self.r.hgetall(book_key(job_id, "chapters")).items()}

    # -- whole book ----------------------------------------------------------------------------------------------
    def pending(self, job_id: str) -> list[str]:
        return self.r.lrange(book_key(job_id, "pending"), 0, -1)

    def pending_count(self, job_id: str) -> int:
        return int(self.r.llen(book_key(job_id, "pending")))

    def inflight(self, job_id: str) -> dict[str, dict]:
        return {k: json.loads(v) for k, v in self.r.hgetall(book_key(job_id, "inflight")).items()}

    def active(self) -> list[str]:
        return sorted(self.r.smembers(BOOKS_ACTIVE))

    def activate(self, job_id: str) -> None:
        self.r.sadd(BOOKS_ACTIVE, job_id)

    def deactivate(self, job_id: str) -> None:
        self.r.srem(BOOKS_ACTIVE, job_id)

    def clear_failures(self, job_id: str) -> None:
        self.r.delete(book_key(job_id, "failures"))

    def requeue_dead(self, job_id: str, alive: Callable[[str], bool]) -> list[str]:
        """Items in flight on workers whose heartbeat stopped, handed back to the front of the pending list."""
        back = []
        for item, owner in self.inflight(job_id).items():
            if alive(owner.get("instance", "")):
                continue
            # HDEL answers 1 to one caller only: the item goes back once even if two watchdogs race.
            if self.r.hdel(book_key(job_id, "inflight"), item):
                self.r.lpush(book_key(job_id, "pending"), item)
                back.append(item)
        return back

    def set_status(self, job_id: str, status: str, **fields) -> None:
        """A change between the unfinished statuses of a book that is already counted as unfinished (running,
        paused); a book queued again goes through reopen."""
        assert status in ("running", "paused")
        self.store.update(job_id, status=status, **fields)
        if status != "paused":
            self.activate(job_id)

    def reopen(self, job_id: str, **fields) -> None:
        """Queue a paused, finished or stopped book again, counted against its owner's cap (raises QueueFull)."""
        self.store.reopen(job_id, status="queued", **fields)
        self.activate(job_id)
