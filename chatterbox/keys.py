"""API keys: created, listed and revoked from the command line, kept in Redis only as salted hashes.

A key reads ``cbx_<id>_<secret>``: the id finds the record, the secret is checked against its salted scrypt hash.
A key given in ``CHATTERBOX_ADMIN_KEY`` may be any string; it is registered under the fixed id ``env-admin``, and the
processes that have it in their settings compare it as it is. Checking a hash costs a few milliseconds and 16 MiB,
so a token of neither form is refused before any hashing, and each process remembers tokens it has verified for a
minute; whether the key was revoked is read from Redis on every request all the same, so a revocation takes effect
at once.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

import redis

from .access import Caller
from .errors import RequestError

PREFIX = "cbx"
KEY_SET = f"{PREFIX}:apikeys"
NAMES = f"{PREFIX}:apikey-names"
ENV_ADMIN_ID = "env-admin"
TOKEN = re.compile(r"^cbx_([0-9a-f]{10})_([A-Za-z0-9_-]{20,})$")
NAME = re.compile(r"^[\w .@+-]{1,64}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_CACHE_S = 60.0


def record_key(key_id: str) -> str:
    return f"{PREFIX}:apikey:{key_id}"


class ApiKeyError(RequestError):
    """A key operation that cannot be done (duplicate name, unknown key)."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    admin: bool
    created_at: float
    revoked_at: float | None = None
    last_used_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def caller(self) -> Caller:
        return Caller(self.id, self.admin)

    def public(self) -> dict:
        return {"id": self.id, "name": self.name, "admin": self.admin, "created_at": self.created_at,
                "revoked_at": self.revoked_at, "last_used_at": self.last_used_at, "active": self.active}


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT).hex()


class KeyStore:
    def __init__(self, client: redis.Redis, env_admin: str | None = None):
        self.r = client  # decode_responses=True
        self.env_admin = env_admin  # CHATTERBOX_ADMIN_KEY, when this process has it
        self._verified: dict[str, tuple[str, float]] = {}  # sha256(token) -> (key id, valid until)
        self._lock = threading.Lock()

    def create(self, name: str, admin: bool = False, token: str | None = None) -> tuple[ApiKey, str]:
        """A new key; the token is returned here and never again (only its hash is kept)."""
        if not isinstance(name, str) or not NAME.match(name):
            raise ApiKeyError("a key's name is 1 to 64 letters, digits, spaces or . @ + - _", "invalid_name")
        key_id = ENV_ADMIN_ID if token is not None else secrets.token_hex(5)
        token = token if token is not None else f"cbx_{key_id}_{secrets.token_urlsafe(24)}"
        salt = secrets.token_bytes(16)
        now = time.time()
        if not self.r.hsetnx(NAMES, name, key_id):
            raise ApiKeyError(f"a key named {name!r} already exists", "duplicate_name")
        p = self.r.pipeline()
        p.hset(record_key(key_id), mapping={"name": name, "admin": int(admin), "salt": salt.hex(),
                                            "hash": _hash(token, salt), "created_at": now})
        p.hdel(record_key(key_id), "revoked_at", "last_used_at")
        p.sadd(KEY_SET, key_id)
        p.execute()
        return ApiKey(key_id, name, admin, now), token

    def get(self, key_id: str) -> ApiKey | None:
        raw = self.r.hgetall(record_key(key_id))
        if not raw:
            return None
        return ApiKey(key_id, raw["name"], raw.get("admin") == "1", float(raw["created_at"]),
                      float(raw["revoked_at"]) if raw.get("revoked_at") else None,
                      float(raw["last_used_at"]) if raw.get("last_used_at") else None)

    def list(self) -> list[ApiKey]:
        keys = [self.get(k) for k in self.r.smembers(KEY_SET)]
        return sorted((k for k in keys if k is not None), key=lambda k: k.created_at)

    def find(self, id_or_name: str) -> ApiKey:
        key = self.get(id_or_name) or (self.get(self.r.hget(NAMES, id_or_name) or "") if id_or_name else None)
        if key is None:
            raise ApiKeyError(f"no key with id or name {id_or_name!r}", "unknown_key")
        return key

    def revoke(self, id_or_name: str) -> ApiKey:
        key = self.find(id_or_name)
        if key.active:
            self.r.hset(record_key(key.id), "revoked_at", time.time())
        return self.find(key.id)

    def has_admin(self) -> bool:
        return any(k.admin and k.active for k in self.list())

    def register_env_admin(self, token: str) -> ApiKey:
        """Make ``token`` (from CHATTERBOX_ADMIN_KEY) the env admin key, replacing an earlier one."""
        current = self.get(ENV_ADMIN_ID)
        if current is not None and current.active and self._matches(ENV_ADMIN_ID, token):
            return current
        self.r.hdel(NAMES, current.name if current else "admin-env")
        self.r.delete(record_key(ENV_ADMIN_ID))
        key, _ = self.create("admin-env", admin=True, token=token)
        return key

    def _matches(self, key_id: str, token: str) -> bool:
        salt, stored = self.r.hmget(record_key(key_id), "salt", "hash")
        return bool(salt and stored) and hmac.compare_digest(_hash(token, bytes.fromhex(salt)), stored)

    def verify(self, token: str | None) -> ApiKey | None:
        """The active key this token is, or None (missing, malformed, unknown, wrong or revoked: all alike)."""
        if not token or len(token) > 512:
            return None
        match = TOKEN.match(token)
        now = time.time()
        if match:
            key_id = match.group(1)
        elif self.env_admin and hmac.compare_digest(token.encode(), self.env_admin.encode()):
            key_id = ENV_ADMIN_ID
        else:
            return None  # not a token of ours: refused before any hashing
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            cached = self._verified.get(digest)
        if key_id != ENV_ADMIN_ID and not (cached and cached[0] == key_id and cached[1] > now):
            if not self._matches(key_id, token):
                return None
            with self._lock:
                if len(self._verified) > 10000:
                    self._verified.clear()
                self._verified[digest] = (key_id, now + _CACHE_S)
        key = self.get(key_id)
        if key is None or not key.active:
            return None
        if key.last_used_at is None or now - key.last_used_at > 60:
            self.r.hset(record_key(key_id), "last_used_at", now)
        return key
