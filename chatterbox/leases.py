"""Leases on running work: who holds a job or a book item, kept alive by its worker, fencing every write it makes.

A holder is recorded in a Redis hash field (a job record's ``lease``, a book's ``inflight`` entry for an item) and
backed by a lease key with a TTL that the holder's worker renews from its heartbeat thread. Another worker may take
the work back only once the lease key is gone (or the holder is known dead), and does so atomically, changing the
holder field. Every write a holder makes checks that field in the same Redis script, so a worker that was frozen
past its TTL (a GC pause, a swap storm, a VM stopped and resumed) wakes to find its writes refused
(``LeaseLost``) and stops without writing: a job is never run twice into the same record or event stream.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import redis

LEASE_LOST = "LEASE_LOST"

# Shared by every fenced script: KEYS[1] is the hash that names the holder, ARGV[1] the field, ARGV[2] the holder
# ('' for an unfenced write). A refused write is an error reply, so no caller can mistake it for a result.
FENCE_LUA = """
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return redis.error_reply('LEASE_LOST')
end
"""

# Renew one lease: only while the holder field still names this holder. A holder whose key expired but whom nobody
# replaced takes its key back: it never stopped being the holder.
_RENEW_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  return 1
end
return 0
"""


class LeaseLost(Exception):
    """Another worker holds this work now (this one was taken for dead): stop, and write nothing more for it."""


@dataclass(eq=False)
class Lease:
    """One holding of a job (field ``lease`` of its record) or of a book item (its field in ``inflight``)."""

    holder_key: str  # the hash whose field names the holder
    field: str
    holder: str  # the value that field holds while this lease is held
    key: str  # the lease key, whose TTL says the holder is alive
    token: str
    job_id: str
    item: str = ""  # a book item ("c:12", "a:0", "b"); "" for a whole job
    lost: threading.Event = field(default_factory=threading.Event)
    ended: bool = False  # its holder's own write ended it (the work is done or given back): nothing to renew
    record: dict | None = None  # a job's record as its claim found it (read in the same step), for its runner

    @property
    def fence(self) -> list[str]:
        """ARGV[1:3] of a fenced script."""
        return [self.field, self.holder]

    def check(self) -> None:
        """Raise LeaseLost once a renewal found the lease taken (a cheap check between steps of long work)."""
        if self.lost.is_set():
            raise LeaseLost(f"{self.job_id} {self.item}".strip())


def is_lease_lost(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.ResponseError) and LEASE_LOST in str(exc)


class LeaseKeeper:
    """The leases one worker process holds; its heartbeat thread renews them all in one round trip."""

    def __init__(self, client: redis.Redis, ttl_s: float):
        self.r = client
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._renew = client.register_script(_RENEW_LUA)
        self._held: dict[int, Lease] = {}
        self._lock = threading.Lock()

    def hold(self, lease: Lease) -> Lease:
        with self._lock:
            self._held[id(lease)] = lease
        return lease

    def release(self, lease: Lease | None) -> None:
        """Stop renewing (the work is done, or was given up: its key then expires and it can be taken back)."""
        if lease is not None:
            with self._lock:
                self._held.pop(id(lease), None)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def renew(self) -> list[Lease]:
        """Renew every held lease; returns those found taken (marked lost, no longer renewed)."""
        for lease in [lease for lease in self.held() if lease.ended]:
            self.release(lease)
        leases = self.held()
        if not leases:
            return []
        p = self.r.pipeline(transaction=False)
        for lease in leases:
            self._renew(keys=[lease.holder_key, lease.key], args=[lease.field, lease.holder, lease.token,
                                                                 self.ttl_ms], client=p)
        gone = [lease for lease, kept in zip(leases, p.execute()) if not int(kept)]
        for lease in gone:
            self.release(lease)
        lost = [lease for lease in gone if not lease.ended]  # (ended meanwhile by its holder: not lost)
        for lease in lost:
            lease.lost.set()
        return lost
