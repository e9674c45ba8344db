"""Job records, events and worker heartbeats in Redis: the only module that knows the key names.

A job is a Redis hash. Its events go to a per-job Redis Stream (bounded, expiring), which is the record a client
replays from, and are also published on a per-job channel so that live followers wake at once (web/fanout.py).
Followers always read the stream after the last id they delivered, so a dropped pub/sub message never loses or
repeats an event. Running work is held under leases (leases.py) that fence every write a worker makes for it.
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import redis

from . import redis_client
from .leases import FENCE_LUA, Lease, LeaseLost, is_lease_lost
from .settings import Settings

PREFIX = "cbx"
RUNNING_SET = f"{PREFIX}:jobs:running"
JOB_INDEX = f"{PREFIX}:jobs"
STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")  # only books pause
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
FINAL_EVENTS = frozenset({"done", "error"})

_INT_FIELDS = {"attempt", "max_attempts", "chunks_total", "chunks_done", "sample_rate", "text_chars",
               "chapters_total", "chapters_done", "run_done_at_start", "pieces"}
_FLOAT_FIELDS = {"created_at", "started_at", "finished_at", "progress", "duration_s", "synth_s", "encode_s",
                 "queued_s", "total_s", "rtf", "first_chunk_s", "audio_s", "run_started_at", "activity_at",
                 "plan_s", "assembly_s", "synth_s_done"}
_JSON_FIELDS = {"params"}

# Append to the stream, keep it bounded and expiring, and publish, as one atomic step so that the order of
# publications is the order of the stream. Fenced (leases.py): KEYS[1] the holder's hash, ARGV[1:2] field and holder.
_EMIT_LUA = FENCE_LUA + """
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', KEYS[3], id .. ' ' .. ARGV[4])
return id
"""
# Fenced writes of a holder: fields of a record, a number added to one, an audio piece (kept while the job runs).
_HSET_LUA = FENCE_LUA + "redis.call('HSET', KEYS[2], unpack(ARGV, 3))\nreturn 1"
_INCR_LUA = FENCE_LUA + "return redis.call('HINCRBYFLOAT', KEYS[2], ARGV[3], ARGV[4])"
_CHECK_LUA = FENCE_LUA + "return 1"
# A piece: its audio and the text chunk it speaks (t:<index>), and the count in the record (KEYS[3]), which is what
# a later attempt resumes from.
_PIECE_LUA = FENCE_LUA + """
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4], 't:' .. ARGV[3], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[3], 'pieces', tonumber(ARGV[3]) + 1)
return 1
"""

# Claim a job for a worker under a new lease. KEYS: the job, its lease key, the running set. ARGV: job id, attempt,
# token, now, worker, instance, lease TTL (ms). A running job whose lease key still lives has a live holder; one whose
# key expired is taken over (its old holder's writes are then refused).
_CLAIM_LUA = """
local status, attempt, cancel = unpack(redis.call('HMGET', KEYS[1], 'status', 'attempt', 'cancel_requested'))
if not status then return 'missing' end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 'finished' end
if tonumber(attempt or '1') ~= tonumber(ARGV[2]) then return 'stale' end
if status == 'running' and redis.call('EXISTS', KEYS[2]) == 1 then return 'duplicate' end
if cancel == '1' then return 'cancelled' end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[4], 'worker', ARGV[5], 'worker_instance', ARGV[6],
           'lease', ARGV[3])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[7])
redis.call('SADD', KEYS[3], ARGV[1])
return 'claimed'
"""

# Move a job to a terminal status once, and append its final event, in one step: a job never ends without saying
# so on its stream. KEYS: the job, the running set, its events, its channel, its lease key, its audio pieces.
# ARGV: job id, the holder's token ('' unfenced), the status it must have ('' any), the record's TTL (0: none),
# the pieces' TTL, the stream's bound and TTL, the final event, then field/value pairs.
_FINISH_LUA = """
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[2] then return redis.error_reply('LEASE_LOST') end
if ARGV[3] ~= '' and status ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'lease', '', unpack(ARGV, 9))
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[5])
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) else redis.call('PERSIST', KEYS[1]) end
redis.call('EXPIRE', KEYS[6], ARGV[5])
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[8])
redis.call('EXPIRE', KEYS[3], ARGV[7])
redis.call('PUBLISH', KEYS[4], id .. ' ' .. ARGV[8])
return 1
"""


# Admit a job into its owner's active set, counting the owner's unfinished jobs first, and (for a new job) write its
# record, all in one step: two submissions at once cannot both take the last place, and a job is never in the set
# without its record (which the count would take for an expired one). KEYS: the job, its owner's active set, the
# job index, the owner's index. ARGV: the cap (0: none), the job key prefix, the job id, the time, "new" for a new
# record (else an existing one, reopened), then field/value pairs to set. Answers -1 when admitted, else how many are
# active. An unfinished record never expires (the retention sweeper and finish() give finished ones their time).
_ADMIT_LUA = """
local limit = tonumber(ARGV[1])
if limit > 0 then
  local active = 0
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local status = redis.call('HGET', ARGV[2] .. id, 'status')
    if (not status) or status == 'succeeded' or status == 'failed' or status == 'cancelled' then
      redis.call('SREM', KEYS[2], id)
    elseif id ~= ARGV[3] then
      active = active + 1
    end
  end
  if active >= limit then return active end
end
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
redis.call('PERSIST', KEYS[1])
if ARGV[5] == 'new' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
end
redis.call('SADD', KEYS[2], ARGV[3])
return -1
"""


class QueueFull(Exception):
    """An owner already has as many unfinished jobs as it may (CHATTERBOX_MAX_QUEUED_JOBS)."""

    def __init__(self, active: int, limit: int):
        super().__init__(f"this key already has {active} jobs queued, running or paused, the most it may have "
                         "(CHATTERBOX_MAX_QUEUED_JOBS); wait for some to finish")
        self.active, self.limit = active, limit


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:events"


def channel(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:live"


def pieces_key(job_id: str) -> str:
    """A job's audio pieces (index -> WAV bytes) as its listeners fetch them while it runs; short-lived after."""
    return f"{PREFIX}:job:{job_id}:pieces"


def lease_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:lease"


def owner_index(owner: str) -> str:
    """One owner's jobs, newest last (a sorted set by creation time)."""
    return f"{PREFIX}:owner:{owner or '-'}:jobs"


def owner_active(owner: str) -> str:
    """One owner's jobs that may still be unfinished (the cap on queued jobs counts them)."""
    return f"{PREFIX}:owner:{owner or '-'}:active"


def book_key(job_id: str, part: str) -> str:
    """Keys of an audiobook's work state (pending, inflight, done, ...), beside its job record."""
    return f"{PREFIX}:job:{job_id}:book:{part}"


BOOKS_ACTIVE = f"{PREFIX}:books:active"
# Jobs the reaper has put back to queued whose Celery message may not be sent yet (a transactional outbox: a reaper
# that dies between the two leaves the job here, and the next one sends it).
REQUEUE_OUTBOX = f"{PREFIX}:jobs:requeue"
BOOKS_WATCHDOG = f"{PREFIX}:books:watchdog"


def worker_key(instance: str) -> str:
    return f"{PREFIX}:worker:{instance}"


def connection_name(instance: str) -> str:
    """The name a worker's Redis connections carry (CLIENT SETNAME): their absence says the worker is gone."""
    return f"{PREFIX}-worker:{instance}"


def new_job_id() -> str:
    return uuid.uuid4().hex


def parse_event_id(event_id: str) -> tuple[int, int]:
    """Stream ids ("1700000000000-3") as comparable tuples; raises ValueError on anything else."""
    ms, _, seq = str(event_id).partition("-")
    return int(ms), int(seq or 0)


class JobStore:
    def __init__(self, client: redis.Redis, settings: Settings):
        self.r = client  # decode_responses=True
        # The same server for bytes (audio pieces), with as many connections as the first (the web app sizes it).
        self.raw = redis_client.sibling(client, decode_responses=False)
        self.settings = settings
        self._emit = self.r.register_script(_EMIT_LUA)
        self._hset = self.r.register_script(_HSET_LUA)
        self._incr = self.r.register_script(_INCR_LUA)
        self._check = self.r.register_script(_CHECK_LUA)
        self._piece = self.raw.register_script(_PIECE_LUA)
        self._claim = self.r.register_script(_CLAIM_LUA)
        self._finish = self.r.register_script(_FINISH_LUA)
        self._admit = self.r.register_script(_ADMIT_LUA)

    @classmethod
    def connect(cls, settings: Settings, **kwargs: Any) -> "JobStore":
        """A store on settings' Redis. A worker passes ``client_name=connection_name(instance)``: while any of its
        connections is open, Redis' CLIENT LIST shows it alive (dead_instances)."""
        options = dict(decode_responses=True, socket_connect_timeout=2, socket_timeout=10,
                       health_check_interval=15, retry_on_timeout=True)
        options.update(kwargs)
        return cls(redis_client.connect(settings.broker_url, **options), settings)

    # -- records --------------------------------------------------------------------------------------------
    def create(self, job_id: str, *, text: str, voice: str, format: str, params: dict, engine: str,
               source: str, kind: str = "synthesize", **extra: str) -> dict:
        now = time.time()
        record = {**extra,
            "id": job_id, "kind": kind, "status": "queued", "text": text, "text_chars": len(text),
            "voice": voice, "format": format, "params": json.dumps(params), "engine": engine, "source": source,
            "created_at": now, "progress": 0.0, "chunks_total": 0, "chunks_done": 0, "attempt": 1,
            "max_attempts": self.settings.max_attempts,
        }
        self._admit_job(job_id, extra.get("owner") or "", record, now=now, new=True)
        self.emit(job_id, "progress", status="queued", progress=0.0)
        return self.get(job_id)

    def reopen(self, job_id: str, **fields: Any) -> None:
        """Make a finished or paused job unfinished again (a book resumed or regenerated), counted against its
        owner's cap like a new job; raises QueueFull."""
        owner = self.r.hget(job_key(job_id), "owner") or ""
        self._admit_job(job_id, owner, {k: _encode(v) for k, v in fields.items()}, now=time.time(), new=False)

    def _admit_job(self, job_id: str, owner: str, fields: dict, now: float, new: bool) -> None:
        # Jobs sent through Celery belong to no key, and no key's cap counts them.
        limit = self.settings.max_queued_jobs if owner else 0
        pairs = [str(_encode(x)) for item in fields.items() for x in item]
        active = self._admit(keys=[job_key(job_id), owner_active(owner), JOB_INDEX, owner_index(owner)],
                             args=[max(0, limit), job_key(""), job_id, now, "new" if new else "reopen", *pairs])
        if int(active) >= 0:
            raise QueueFull(int(active), limit)

    def get(self, job_id: str) -> dict | None:
        raw = self.r.hgetall(job_key(job_id))
        return _decode(raw) if raw else None

    def update(self, job_id: str, fence: Lease | None = None, **fields: Any) -> None:
        """Set fields of a record; with ``fence``, only while that lease holds (else LeaseLost)."""
        pairs = [_encode(x) for item in fields.items() for x in item]
        self._fenced(self._hset, fence, [job_key(job_id)], pairs)

    def add(self, job_id: str, field: str, amount: float, fence: Lease | None = None) -> float:
        """Add to a numeric field of a job; returns the new value."""
        return float(self._fenced(self._incr, fence, [job_key(job_id)], [field, amount]))

    def check(self, lease: Lease) -> None:
        """Raise LeaseLost unless ``lease`` still holds (asked of Redis: before a write that is not in Redis)."""
        self._fenced(self._check, lease, [], [])

    def _fenced(self, script, fence: Lease | None, keys: list[str], args: list) -> Any:
        """Run a fenced script (leases.FENCE_LUA): KEYS[1] is the fence's hash, then ``keys``."""
        holder_key = fence.holder_key if fence else keys[0]
        try:
            return script(keys=[holder_key, *keys], args=[*(fence.fence if fence else ["", ""]), *args])
        except redis.exceptions.ResponseError as exc:
            if is_lease_lost(exc):
                fence.lost.set()
                raise LeaseLost(f"{fence.job_id} {fence.item}".strip()) from None
            raise

    def recent(self, limit: int = 50, owner: str | None = None, kind: str | None = None) -> list[dict]:
        """Newest jobs first: everyone's, or one owner's (an API key id; "" for jobs sent through Celery)."""
        index = JOB_INDEX if owner is None else owner_index(owner)
        jobs: list[dict] = []
        start, page = 0, max(limit, 50)
        while len(jobs) < limit:
            ids = self.r.zrevrange(index, start, start + page - 1)
            if not ids:
                break
            start += page
            for job_id in ids:
                job = self.get(job_id)
                if job is None:  # expired record: drop it from the index too
                    self.r.zrem(index, job_id)
                elif kind is None or job.get("kind") == kind:
                    jobs.append(job)
        return jobs[:limit]

    def search(self, owner: str | None = None, status: str | None = None, kind: str | None = None,
               text: str | None = None, since: float | None = None,
               voices: frozenset[str] | set[str] | None = None) -> list[dict]:
        """Every job matching the filters, newest first (``text``: lower-case words that must be in the text;
        ``voices``: the job's voice is one of these)."""
        index = JOB_INDEX if owner is None else owner_index(owner)
        ids = self.r.zrevrangebyscore(index, "+inf", since if since is not None else "-inf")
        words = text.split() if text else []
        found = []
        for start in range(0, len(ids), 200):
            p = self.r.pipeline()
            for job_id in ids[start:start + 200]:
                p.hgetall(job_key(job_id))
            for job_id, raw in zip(ids[start:start + 200], p.execute()):
                if not raw:
                    self.r.zrem(index, job_id)  # expired
                    continue
                job = _decode(raw)
                if status and job["status"] != status or kind and job.get("kind", "synthesize") != kind:
                    continue
                if voices and job.get("voice", "") not in voices:
                    continue
                if words and not all(w in job.get("text", "").lower() for w in words):
                    continue
                found.append(job)
        return found

    def purge(self, job_id: str, owner: str = "") -> None:
        """Remove a job's record, events, audio pieces and work state from Redis (its files: retention.py)."""
        keys = [job_key(job_id), events_key(job_id), *self.r.scan_iter(match=f"{job_key(job_id)}:*", count=1000)]
        p = self.r.pipeline()
        p.delete(*keys)
        p.zrem(JOB_INDEX, job_id)
        p.zrem(owner_index(owner), job_id)
        p.srem(owner_active(owner), job_id)
        p.srem(RUNNING_SET, job_id)
        p.srem(BOOKS_ACTIVE, job_id)
        p.execute()

    # -- running: claims, leases, the end -------------------------------------------------------------------
    def claim(self, job_id: str, attempt: int, worker: str, instance: str) -> tuple[str, Lease | None]:
        """Mark a job running on this worker under a new lease. Returns ("claimed", lease), or why not and None:
        "missing", "finished", "stale" (a message for another attempt), "duplicate" (a live holder runs it) or
        "cancelled" (and now recorded so)."""
        token = uuid.uuid4().hex
        verdict = self._claim(keys=[job_key(job_id), lease_key(job_id), RUNNING_SET],
                              args=[job_id, attempt, token, time.time(), worker, instance,
                                    int(self.settings.heartbeat_ttl_s * 1000)])
        if verdict == "cancelled":
            self.finish(job_id, "cancelled", error="cancelled before it started")
        if verdict != "claimed":
            return verdict, None
        return verdict, Lease(holder_key=job_key(job_id), field="lease", holder=token, key=lease_key(job_id),
                              token=token, job_id=job_id)

    def finish(self, job_id: str, status: str, fence: Lease | None = None, only_if: str | None = None,
               **fields: Any) -> bool:
        """Move a job to a terminal status once, with its final event; returns False if it already was terminal
        (or not ``only_if``). With ``fence``, only while that lease holds (else LeaseLost)."""
        job = self.get(job_id)
        if job is None:
            return False
        try:
            finished = bool(self._finish(**self._finish_call(job, status, fence, only_if, fields)))
        except redis.exceptions.ResponseError as exc:
            if fence is not None and is_lease_lost(exc):
                fence.lost.set()
                raise LeaseLost(job_id) from None
            raise
        if fence is not None:
            fence.ended = True
        if finished:
            self._drop_upload(job)
        return finished

    def _drop_upload(self, job: dict) -> None:
        """A finished job's uploaded clip (a one-off voice, a recording to clone) is of no further use: deleted
        here, where every way of ending a job passes (a job cancelled while queued included)."""
        for path in uploads_of(job, self.settings):
            path.unlink(missing_ok=True)

    def _finish_call(self, job: dict, status: str, fence: Lease | None, only_if: str | None,
                     fields: dict) -> dict:
        """keys and args of _FINISH_LUA for ``job`` as last read."""
        assert status in TERMINAL
        job_id = job["id"]
        values = {"status": status, "finished_at": time.time(), **fields}
        if status == "succeeded":
            values["progress"] = 1.0
        view = public_view({**job, **_decode({k: str(_encode(v)) for k, v in values.items()})})
        body = json.dumps({"type": "done" if status == "succeeded" else "error", "job_id": job_id,
                           "ts": round(time.time(), 3), **view})
        pairs = [_encode(x) for item in values.items() for x in item]
        return dict(keys=[job_key(job_id), RUNNING_SET, events_key(job_id), channel(job_id), lease_key(job_id),
                          pieces_key(job_id)],
                    args=[job_id, fence.token if fence else "", only_if or "", self.finished_ttl_s,
                          self.settings.piece_ttl_s, self.settings.event_maxlen, self.settings.event_ttl_s, body,
                          *pairs])

    @property
    def finished_ttl_s(self) -> int:
        """How long Redis keeps a finished job's record: past the retention, so the sweeper deletes it with its
        files first; 0 (retention off): for ever."""
        retention = self.settings.retention_s
        return retention + 24 * 3600 if retention > 0 else 0

    def cancel(self, job_id: str) -> str:
        """Cancel a job: a queued job at once, a running one at its next chunk. Returns the status after."""
        key = job_key(job_id)
        with self.r.pipeline() as p:
            while True:
                try:
                    p.watch(key)
                    status = p.hget(key, "status")
                    if status is None or status in TERMINAL:
                        return status or "missing"
                    p.multi()
                    p.hset(key, "cancel_requested", "1")
                    p.execute()
                    break
                except redis.WatchError:
                    continue
        # Only while still queued: a worker that claimed it meanwhile sees the request at its next chunk.
        if status == "queued" and self.finish(job_id, "cancelled", only_if="queued",
                                              error="cancelled before it started"):
            return "cancelled"
        return (self.get(job_id) or {}).get("status", "missing")

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(job_key(job_id), "cancel_requested") == "1"

    # -- events ---------------------------------------------------------------------------------------------
    def emit(self, job_id: str, type: str, fence: Lease | None = None, **data: Any) -> str:
        """Append an event to the job's stream and publish it; with ``fence``, only while that lease holds."""
        body = json.dumps({"type": type, "job_id": job_id, "ts": round(time.time(), 3), **data})
        return self._fenced(self._emit, fence, [events_key(job_id), channel(job_id)],
                            [self.settings.event_maxlen, body, self.settings.event_ttl_s])

    def events_after(self, job_id: str, after: str | None = None) -> list[dict]:
        start = f"({after}" if after and after != "0-0" else "-"
        return [{**json.loads(fields["e"]), "id": event_id}
                for event_id, fields in self.r.xrange(events_key(job_id), min=start, max="+")]

    def put_chunk(self, job_id: str, index: int, data: bytes, text_index: int = 0,
                  fence: Lease | None = None) -> None:
        """Audio piece ``index`` (WAV bytes) of text chunk ``text_index``, for the job's listeners and for a later
        attempt to resume from; kept while the job runs (and piece_ttl_s after: finish())."""
        self._fenced(self._piece, fence, [pieces_key(job_id), job_key(job_id)],
                     [index, data, self.settings.event_ttl_s, text_index])

    def get_chunk(self, job_id: str, index: int) -> bytes | None:
        return self.raw.hget(pieces_key(job_id), str(index))

    def pieces(self, job_id: str) -> dict[int, tuple[int, bytes]]:
        """Every audio piece a job has sent so far: index -> (its text chunk, WAV bytes)."""
        raw = self.raw.hgetall(pieces_key(job_id))
        return {int(k): (int(raw[b"t:" + k]), v) for k, v in raw.items()
                if not k.startswith(b"t:") and b"t:" + k in raw}

    # -- workers --------------------------------------------------------------------------------------------
    def heartbeat(self, instance: str, info: dict) -> None:
        self.r.set(worker_key(instance), json.dumps({**info, "instance": instance, "seen_at": time.time()}),
                   ex=self.settings.heartbeat_ttl_s)

    def forget_worker(self, instance: str) -> None:
        self.r.delete(worker_key(instance))

    def worker_alive(self, instance: str) -> bool:
        return bool(self.r.exists(worker_key(instance)))

    def workers(self) -> list[dict]:
        keys = sorted(self.r.scan_iter(match=worker_key("*"), count=200))
        return [json.loads(v) for v in self.r.mget(keys) if v] if keys else []

    def dead_instances(self) -> set[str]:
        """Workers known gone before their heartbeat expires: none of their connections is open to Redis (a
        process that dies, however, closes them at once) and they have missed a beat (a live worker whose
        connection dropped, or whose Redis restarted, reconnects at its next beat). Their heartbeats are
        forgotten. Empty where the server does not tell (CLIENT LIST refused); leases then run out on their own."""
        interval = self.settings.heartbeat_interval_s
        try:
            if int(self.r.info("server").get("uptime_in_seconds", 0)) < 2 * interval + 2:
                return set()  # Redis just (re)started: every worker is reconnecting, none is known dead yet
            names = {client.get("name", "") for client in self.r.client_list()}
        except redis.exceptions.ResponseError:
            return set()
        late = time.time() - interval - 0.5
        dead = {w["instance"] for w in self.workers()
                if connection_name(w["instance"]) not in names and float(w.get("seen_at", 0)) < late}
        for instance in dead:
            self.forget_worker(instance)
        return dead

    def reap_orphans(self, requeue: Callable[[dict], None], dead: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Jobs whose holder is gone: their lease expired, or their worker is in ``dead``. Each is put back to
        queued for its next attempt (``requeue(job)`` sends its message), or failed after max_attempts, in one
        transaction that only a lease still gone and still the same can pass. Celery would re-deliver such a
        message only after the visibility timeout."""
        self._send_outbox(requeue)
        reaped = []
        for job_id in self.r.smembers(RUNNING_SET):
            if self._reap(job_id, dead):
                reaped.append(job_id)
        if reaped:
            self._send_outbox(requeue)
        return reaped

    def _reap(self, job_id: str, dead: set[str] | frozenset[str]) -> bool:
        key = job_key(job_id)
        with self.r.pipeline() as p:
            try:
                p.watch(key, lease_key(job_id))
                raw = p.hgetall(key)
                job = _decode(raw) if raw else None
                if job is None or job["status"] != "running":
                    p.unwatch()
                    self.r.srem(RUNNING_SET, job_id)
                    return False
                if p.exists(lease_key(job_id)) and job.get("worker_instance") not in dead:
                    return False  # a live holder
                worker, attempt, limit = job.get("worker", "?"), job["attempt"], job["max_attempts"]
                reason = f"worker {worker} stopped while running this job (attempt {attempt} of {limit})"
                p.multi()
                if attempt >= limit:
                    self._finish(**self._finish_call(job, "failed", None, "running",
                                                     {"error": f"{reason}; not retried again"}), client=p)
                else:
                    p.srem(RUNNING_SET, job_id)
                    p.delete(lease_key(job_id))
                    # Progress stays: the next attempt resumes after the last whole text chunk (synthesis.run_job).
                    p.hset(key, mapping={"status": "queued", "attempt": attempt + 1, "last_error": reason,
                                         "lease": ""})
                    p.sadd(REQUEUE_OUTBOX, job_id)
                    body = json.dumps({"type": "progress", "job_id": job_id, "ts": round(time.time(), 3),
                                       "status": "queued", "progress": job.get("progress", 0.0),
                                       "message": f"{reason}; running it again"})
                    self._emit(keys=[key, events_key(job_id), channel(job_id)],
                               args=["", "", self.settings.event_maxlen, body, self.settings.event_ttl_s], client=p)
                p.execute()
            except redis.WatchError:
                return False  # its holder renewed, or it ended: not ours to take
        return True

    def _send_outbox(self, requeue: Callable[[dict], None]) -> None:
        for job_id in self.r.smembers(REQUEUE_OUTBOX):
            job = self.get(job_id)
            if job is not None and job["status"] == "queued":
                requeue(job)  # a duplicate message (a crash after this) is dropped by claim: "duplicate"/"finished"
            self.r.srem(REQUEUE_OUTBOX, job_id)


def uploads_of(job: dict, settings: Settings) -> list[Path]:
    """The files a job's request uploaded (a one-off voice's clip, a recording to clone). Only files in the uploads
    folder: a path sent through the Celery API is the caller's own file, never ours to delete."""
    params = job.get("params") if isinstance(job.get("params"), dict) else {}
    names = (job.get("audio_prompt"), None if params.get("keep_upload") else params.get("upload"))
    folder = settings.uploads_dir.resolve()
    return [Path(name).resolve() for name in names if name and Path(name).resolve().parent == folder]


def _encode(value: Any) -> str | int | float:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    return value


def _decode(raw: dict[str, str]) -> dict:
    job: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _INT_FIELDS and value != "":
            job[key] = int(float(value))
        elif key in _FLOAT_FIELDS and value != "":
            job[key] = float(value)
        elif key in _JSON_FIELDS:
            job[key] = json.loads(value) if value else {}
        else:
            job[key] = value
    return job


_PUBLIC = ("id", "kind", "status", "progress", "voice", "format", "params", "engine", "model", "language", "source",
           "created_at",
           "started_at", "finished_at", "chunks_total", "chunks_done", "duration_s", "sample_rate", "synth_s",
           "encode_s", "queued_s", "total_s", "first_chunk_s", "rtf", "worker", "attempt", "max_attempts",
           "error", "last_error", "output", "text_chars", "voice_id", "title", "author", "chapters_total",
           "chapters_done", "audio_s", "plan_s", "assembly_s", "owner")


def public_view(job: dict) -> dict:
    """The fields of a job record that clients see (the text itself only on request)."""
    view = {k: job[k] for k in _PUBLIC if k in job and job[k] != ""}
    if isinstance(view.get("params"), dict) and "upload" in view["params"]:
        # A clone job's params name the uploaded file on the server: not the client's business.
        view["params"] = {k: v for k, v in view["params"].items() if k not in ("upload", "keep_upload")}
    return view
