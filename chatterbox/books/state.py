"""An audiobook's work state in Redis: which items are waiting, which are in flight on which worker, which are done.

Work items are strings: ``c:<n>`` synthesize chunk n, ``a:<n>`` assemble chapter n, ``b`` assemble the book.
Celery messages for a book carry no item, only the book's id: each message is a token that lets one worker take
the next item from the book's ``pending`` list. Tokens are interchangeable, so a duplicated token costs nothing
(it finds nothing to take) and a lost one is replaced by the watchdog; the truth is always here and in the chunk
cache on disk, never in the broker. An item taken is held under a lease (chatterbox/leases.py): ``inflight`` names
its holder, and a lease key that the holder's worker renews says it is alive. Whatever the holder writes for the
item checks that it still holds it, in the same Redis script; an item whose lease ran out (or whose worker is
known dead) is handed back atomically, once. Every key here has a TTL: renewed while the book is unfinished,
the retention period once it has ended.

The book's status (queued, running, paused, then succeeded, failed or cancelled) changes only here, by the named
moves of transitions.TRANSITIONS (begin_run, pause, resume, reopen, cancel, stop, finish), each checked and made in
one Redis step; the runner and the controls ask, and never set a status or read one to decide for themselves.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Iterable

from ..jobs import BOOK_PARTS as PARTS, BOOKS_ACTIVE, BOOKS_WATCHDOG, JobStore, QueueFull, book_key, job_key
from ..leases import FENCE_LUA, Lease
from .transitions import MOVING, SETTLE_LUA, TRANSITIONS, UNFINISHED, WORKING, move_lua, reopen_lua


# Whether an item is already waiting, in flight or done (KEYS: pending, inflight, done, chapters). A duplicate in
# pending (a reconcile racing a retry) is skipped when taken, so it can never be made twice at once.
_SEEN_LUA = """
local function settled(item)
  if redis.call('HEXISTS', KEYS[2], item) == 1 then return true end
  local kind, n = string.match(item, '^(%a):(%d+)$')
  if kind == 'c' then return redis.call('HEXISTS', KEYS[3], n) == 1 end
  if kind == 'a' then return redis.call('HEXISTS', KEYS[4], n) == 1 end
  return false
end
"""

# Take the first pending item that is not settled, and record its holder and lease, in one step: no two workers ever
# hold the same item, and none takes one once the book is paused or has ended. KEYS: pending, inflight, done,
# chapters, the job. ARGV: holder, token, now, lease TTL (ms), the lease key's prefix.
_TAKE_LUA = _SEEN_LUA + f"""
if redis.call('HGET', KEYS[5], 'status') ~= '{WORKING}' then return false end
while true do
  local item = redis.call('LPOP', KEYS[1])
  if not item then return false end
  if not settled(item) then
    redis.call('HSET', KEYS[2], item, ARGV[1])
    redis.call('SET', ARGV[5] .. item, ARGV[2], 'PX', ARGV[4])
    redis.call('HSET', KEYS[5], 'activity_at', ARGV[3])
    return item
  end
end
"""

# Queue an item unless it is waiting, in flight or done already. ARGV: the item, "front" or "back".
_QUEUE_LUA = _SEEN_LUA + """
if settled(ARGV[1]) or redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
if ARGV[2] == 'front' then redis.call('LPUSH', KEYS[1], ARGV[1]) else redis.call('RPUSH', KEYS[1], ARGV[1]) end
return 1
"""

# A holder's writes for its item; each ends the holding (KEYS[1] inflight, KEYS[2] the lease key).
_END_HOLDING = "redis.call('HDEL', KEYS[1], ARGV[1])\nredis.call('DEL', KEYS[2])\n"
# Chunk n made: KEYS[3] done, KEYS[4] renders; ARGV[3] n, ARGV[4] its report, ARGV[5] "1" if synthesized here.
_COMPLETE_LUA = FENCE_LUA + """
local new = redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[4])
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[4], ARGV[3], 1) end
""" + _END_HOLDING + "return new"
# Chapter n assembled: KEYS[3] chapters; ARGV[3] n, ARGV[4] its files.
_CHAPTER_LUA = FENCE_LUA + "redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])\n" + _END_HOLDING + "return 1"
# Put the item back at the front of pending (KEYS[3]) for the next token.
_RETRY_LUA = FENCE_LUA + _END_HOLDING + "redis.call('LPUSH', KEYS[3], ARGV[1])\nreturn 1"
_RELEASE_LUA = FENCE_LUA + _END_HOLDING + "return 1"

# Hand an item back from a holder that is gone: only the holder seen, and only once its lease key has expired (or,
# ARGV[3] = "1", its worker is known dead). KEYS: inflight, the lease key, pending. ARGV: item, holder seen, force.
_HAND_BACK_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
""" + _END_HOLDING + """redis.call('LPUSH', KEYS[3], ARGV[1])
return 1
"""

# From what is durable (the chunks done, the chapters assembled; the plan's shape in ARGV: each chapter's first
# chunk and count), queue whatever is missing: a chunk neither done, waiting nor in flight; the assembly of a
# chapter whose chunks are all done; the book's once every chapter is assembled. KEYS: pending, inflight, done,
# chapters. Answers how many items it queued.
_RECONCILE_LUA = """
local function set_of(list) local s = {} for _, v in ipairs(list) do s[v] = true end return s end
local pending = set_of(redis.call('LRANGE', KEYS[1], 0, -1))
local inflight = set_of(redis.call('HKEYS', KEYS[2]))
local done = set_of(redis.call('HKEYS', KEYS[3]))
local assembled = set_of(redis.call('HKEYS', KEYS[4]))
local function waiting(item) return pending[item] or inflight[item] end
local queued, all_assembled = 0, true
for c = 0, #ARGV / 2 - 1 do
  local first, count = tonumber(ARGV[2 * c + 1]), tonumber(ARGV[2 * c + 2])
  local complete = true
  for i = first, first + count - 1 do
    if not done[tostring(i)] then
      complete = false
      if not waiting('c:' .. i) then redis.call('RPUSH', KEYS[1], 'c:' .. i) queued = queued + 1 end
    end
  end
  if not assembled[tostring(c)] then
    all_assembled = false
    if complete and not waiting('a:' .. c) then redis.call('LPUSH', KEYS[1], 'a:' .. c) queued = queued + 1 end
  end
end
if all_assembled and not waiting('b') then redis.call('LPUSH', KEYS[1], 'b') queued = queued + 1 end
return queued
"""


class BookStore:
    """One book's work state and status, and the set of unfinished books the watchdog keeps going."""

    def __init__(self, store: JobStore):
        self.store = store
        self.r = store.r
        scripts = {"take": _TAKE_LUA, "queue": _QUEUE_LUA, "complete": _COMPLETE_LUA, "chapter": _CHAPTER_LUA,
                   "retry": _RETRY_LUA, "release": _RELEASE_LUA, "hand_back": _HAND_BACK_LUA,
                   "reconcile": _RECONCILE_LUA, "settle": SETTLE_LUA,
                   "start": move_lua("start"), "pause": move_lua("pause"),
                   "resume": reopen_lua("resume"), "reopen": reopen_lua("reopen")}
        self._lua = {name: self.r.register_script(code) for name, code in scripts.items()}

    def _keys(self, job_id: str, *parts: str) -> list[str]:
        return [book_key(job_id, p) for p in parts]

    @staticmethod
    def lease_key(job_id: str, item: str) -> str:
        return book_key(job_id, f"lease:{item}")

    # -- set-up and lifetime -------------------------------------------------------------------------------------
    def start(self, job_id: str, items: Iterable[str]) -> int:
        """Fresh work state for a book: every item pending. Returns how many."""
        items = list(items)
        p = self.r.pipeline()
        p.delete(*self._keys(job_id, *PARTS))
        if items:
            p.rpush(book_key(job_id, "pending"), *items)
        p.sadd(BOOKS_ACTIVE, job_id)
        p.execute()
        self.touch(job_id)
        return len(items)

    def touch(self, job_id: str, ttl_s: int | None = None) -> None:
        """Give every key of the book's state a TTL: ``ttl_s``, or the retention period (renewed by the watchdog
        while the book is unfinished, so that only an abandoned book's state runs out)."""
        ttl = ttl_s if ttl_s is not None else self.store.settings.retention_s or 0
        p = self.r.pipeline(transaction=False)
        for key in self._keys(job_id, *PARTS):
            if ttl > 0:
                p.expire(key, ttl + 24 * 3600)
            else:
                p.persist(key)
        p.execute()

    # -- items ---------------------------------------------------------------------------------------------------
    def take(self, job_id: str, instance: str, worker: str) -> Lease | None:
        """The next pending item under a new lease held by this worker, or None."""
        token = uuid.uuid4().hex
        holder = json.dumps({"instance": instance, "worker": worker, "at": time.time(), "token": token})
        item = self._lua["take"](keys=[*self._keys(job_id, "pending", "inflight", "done", "chapters"),
                                       job_key(job_id)],
                                 args=[holder, token, time.time(), int(self.store.settings.heartbeat_ttl_s * 1000),
                                       book_key(job_id, "lease:")])
        if not item:
            return None
        return Lease(holder_key=book_key(job_id, "inflight"), field=item, holder=holder,
                     key=self.lease_key(job_id, item), token=token, job_id=job_id, item=item)

    def _held(self, name: str, lease: Lease, *keys: str, args: Iterable = ()) -> int:
        """A fenced script for the item ``lease`` holds, which ends the holding: KEYS inflight and the lease key, then
        ``keys``."""
        answer = int(self.store._fenced(self._lua[name], lease, [lease.key, *keys], list(args)))
        lease.ended = True
        return answer

    def check(self, lease: Lease) -> None:
        """Raise LeaseLost unless the item is still this holder's (asked of Redis, not of the last renewal)."""
        self.store.check(lease)

    def complete_chunk(self, lease: Lease, index: int, info: dict, synthesized: bool) -> bool:
        """Record chunk ``index`` as done (and count its synthesis); True the first time only."""
        done, renders = self._keys(lease.job_id, "done", "renders")
        return bool(self._held("complete", lease, done, renders,
                               args=[index, json.dumps(info), "1" if synthesized else "0"]))

    def set_chapter(self, lease: Lease, index: int, info: dict) -> None:
        self._held("chapter", lease, book_key(lease.job_id, "chapters"), args=[index, json.dumps(info)])

    def retry(self, lease: Lease) -> None:
        """Put an item that failed back at the front, for the next token."""
        self._held("retry", lease, book_key(lease.job_id, "pending"))

    def release(self, lease: Lease) -> None:
        """End a holding without recording anything (the item was given up or is to be queued anew)."""
        self._held("release", lease)

    def fail(self, job_id: str, item: str) -> int:
        """Count a failure of an item; returns how many it has had."""
        return int(self.r.hincrby(book_key(job_id, "failures"), item, 1))

    def queue(self, job_id: str, item: str, front: bool = True) -> bool:
        """Queue an item unless it is waiting, in flight or done already; True if it was queued."""
        keys = self._keys(job_id, "pending", "inflight", "done", "chapters")
        return bool(self._lua["queue"](keys=keys, args=[item, "front" if front else "back"]))

    def hand_back(self, job_id: str, dead: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Items whose holder is gone (lease expired, or its worker in ``dead``), back at the front of pending."""
        back = []
        for item, raw in self.r.hgetall(book_key(job_id, "inflight")).items():
            try:
                instance = json.loads(raw).get("instance", "")
            except ValueError:
                instance = ""
            force = "1" if instance in dead else "0"
            if self._lua["hand_back"](keys=[book_key(job_id, "inflight"), self.lease_key(job_id, item),
                                            book_key(job_id, "pending")], args=[item, raw, force]):
                back.append(item)
        return back

    def reconcile(self, job_id: str, chapters: Iterable[tuple[int, int]]) -> int:
        """Queue what the durable state says is missing (``chapters``: each chapter's first chunk and count)."""
        shape = [n for first, count in chapters for n in (first, count)]
        keys = self._keys(job_id, "pending", "inflight", "done", "chapters")
        return int(self._lua["reconcile"](keys=keys, args=shape))

    def renders(self, job_id: str) -> dict[int, int]:
        """How often each chunk was synthesized by a holder of it (the audit that shows none was made twice)."""
        return {int(k): int(v) for k, v in self.r.hgetall(book_key(job_id, "renders")).items()}

    # -- chunks and chapters -------------------------------------------------------------------------------------
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

    def clear_failures(self, job_id: str) -> None:
        self.r.delete(book_key(job_id, "failures"))

    # -- the book's status: only by the moves of transitions.TRANSITIONS ---------------------------------------------
    def begin_run(self, job_id: str) -> bool:
        """``start``: a queued book runs (a worker's first message for it); False if it was not queued."""
        return self._move("start", job_id)

    def pause(self, job_id: str) -> None:
        """``pause``: its items in flight finish, no new one is taken. Raises BookStateError (not_running)."""
        self._move("pause", job_id)

    def resume(self, job_id: str) -> None:
        """``resume``: a paused, failed or cancelled book is queued again, its items' failures forgotten. Raises
        BookStateError (not_resumable), or QueueFull when its owner is at the cap of unfinished jobs (unchanged)."""
        self._reopen("resume", job_id, error="", finished_at="", run_started_at=time.time(),
                     run_done_at_start=self.done_count(job_id))
        self.clear_failures(job_id)

    def reopen(self, job_id: str) -> bool:
        """``reopen``: a book that has ended is queued again for a regenerated chunk (raises QueueFull, unchanged,
        when its owner is at the cap); False if it had not ended (it makes the chunk as it is)."""
        return self._reopen("reopen", job_id, error="", finished_at="", run_started_at=time.time())

    def cancel(self, job_id: str) -> None:
        """``cancel``: the book ends; its work state is kept for the retention period, for a resume. Raises
        BookStateError (job_finished) once it has ended."""
        if not self._end("cancel", job_id, error="cancelled by request; finished chunks are kept, resume continues"):
            self._refused("cancel", job_id, self.r.hget(job_key(job_id), "status") or "")

    def stop(self, job_id: str, error: str) -> bool:
        """``fail``: the book ends with ``error`` (an item failed for good); False if it had already ended."""
        return self._end("fail", job_id, error=error)

    def finish(self, job_id: str, **fields) -> bool:
        """``finish``: the book succeeded (its assembly is done); False if it had already ended."""
        return self._end("finish", job_id, **fields)

    @staticmethod
    def moving(job: dict) -> bool:
        """Whether workers work on the book of this record (queued or running), so the watchdog keeps it going."""
        return job.get("status") in MOVING

    def has_work(self, job_id: str) -> bool:
        """Whether a work message sent now would find an item: the book is running and items wait."""
        p = self.r.pipeline(transaction=False)
        p.llen(book_key(job_id, "pending"))
        p.hget(job_key(job_id), "status")
        count, status = p.execute()
        return bool(count) and status == WORKING

    def unfinished(self) -> list[dict]:
        """The records of the books counted as unfinished; one found ended (or gone) leaves the count."""
        jobs = []
        for job_id in self.active():
            job = self.store.get(job_id)
            if job is not None and job["status"] in UNFINISHED:
                jobs.append(job)
            else:
                self._lua["settle"](keys=[job_key(job_id), BOOKS_ACTIVE], args=[job_id])
        return jobs

    def watchdog_turn(self, instance: str, seconds: float) -> bool:
        """Whether this worker runs the books' watchdog now (one worker at a time, for ``seconds``). The lock only
        spares the others the same work: each step of the watchdog is safe on its own."""
        return bool(self.r.set(BOOKS_WATCHDOG, instance, nx=True, ex=max(1, int(seconds))))

    def _move(self, event: str, job_id: str) -> bool:
        moved, status = self._lua[event](keys=[job_key(job_id), BOOKS_ACTIVE, book_key(job_id, "done")],
                                         args=[job_id, time.time()])
        if not int(moved):
            self._refused(event, job_id, status)
        return bool(int(moved))

    def _reopen(self, event: str, job_id: str, **fields) -> bool:
        # JobStore's admission of an existing record (jobs.ADMIT_LUA), run here behind the check of the book's
        # status, in the same step.
        owner, kind = self.r.hmget(job_key(job_id), "owner", "kind")
        keys, args, limit = self.store.admission(job_id, owner or "", kind or "audiobook",
                                                 {"status": TRANSITIONS[event].target, **fields}, time.time(), False)
        answer = self._lua[event](keys=[*keys, BOOKS_ACTIVE], args=args)
        if isinstance(answer, str):
            self._refused(event, job_id, answer)
            return False
        if int(answer) >= 0:
            raise QueueFull(int(answer), limit)
        self.touch(job_id)
        return True

    def _end(self, event: str, job_id: str, **fields) -> bool:
        # JobStore.finish ends a job once, from any unfinished status (as TRANSITIONS says), with its final event.
        # The set of unfinished books drops it after, never before: a crash in between leaves an ended book in the
        # set (the watchdog drops it), not an unfinished one out of it (nobody would watch it again).
        ended = self.store.finish(job_id, TRANSITIONS[event].target, **fields)
        self._lua["settle"](keys=[job_key(job_id), BOOKS_ACTIVE], args=[job_id])
        if ended:
            self.touch(job_id)  # kept for the retention period (a resume, a regenerated chunk)
        return ended

    @staticmethod
    def _refused(event: str, job_id: str, status: str) -> None:
        """Raise what a refused move is answered with: KeyError for a book that is gone, BookStateError for a move
        that has a code; a move without one is answered False by its caller."""
        move = TRANSITIONS[event]
        if move.code:
            if not status:
                raise KeyError(job_id)
            raise move.refuse(job_id, status)
