"""Job records, events and worker heartbeats in Redis: the only module that knows the key names.

A job is a Redis hash. Its events go to a per-job Redis Stream (bounded, expiring), which is the record a client
replays from, and are also published on a per-job channel so that live followers wake at once. Followers always
read the stream after the last id they delivered, so a dropped pub/sub message can delay an event by at most one
poll interval but never lose or repeat it.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Iterator

import redis

from .settings import Settings

PREFIX = "cbx"
RUNNING_SET = f"{PREFIX}:jobs:running"
JOB_INDEX = f"{PREFIX}:jobs"
STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")  # only books pause
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
FINAL_EVENTS = frozenset({"done", "error"})

_INT_FIELDS = {"attempt", "max_attempts", "chunks_total", "chunks_done", "sample_rate", "text_chars",
               "chapters_total", "chapters_done", "run_done_at_start"}
_FLOAT_FIELDS = {"created_at", "started_at", "finished_at", "progress", "duration_s", "synth_s", "encode_s",
                 "queued_s", "total_s", "rtf", "first_chunk_s", "audio_s", "run_started_at", "activity_at",
                 "plan_s", "assembly_s"}
_JSON_FIELDS = {"params"}

# Append to the stream, keep it bounded and expiring, and publish, as one atomic step so that the order of
# publications is the order of the stream.
_EMIT_LUA = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
return id
"""


# Admit a job into its owner's active set, counting the owner's unfinished jobs first, and (for a new job) write its
# record, all in one step: two submissions at once cannot both take the last place, and a job is never in the set
# without its record (which the count would take for an expired one). KEYS: the job, its owner's active set, the
# job index, the owner's index. ARGV: the cap (0: none), the job key prefix, the job id, the time, the record's TTL
# (0: an existing record, reopened), then field/value pairs to set. Answers -1 when admitted, else how many are active.
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
if tonumber(ARGV[5]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
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


def chunk_key(job_id: str, index: int) -> str:
    return f"{PREFIX}:job:{job_id}:chunk:{index}"


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
BOOKS_WATCHDOG = f"{PREFIX}:books:watchdog"


def worker_key(instance: str) -> str:
    return f"{PREFIX}:worker:{instance}"


def new_job_id() -> str:
    return uuid.uuid4().hex


def parse_event_id(event_id: str) -> tuple[int, int]:
    """Stream ids ("1700000000000-3") as comparable tuples; raises ValueError on anything else."""
    ms, _, seq = str(event_id).partition("-")
    return int(ms), int(seq or 0)


class JobStore:
    def __init__(self, client: redis.Redis, settings: Settings):
        self.r = client  # decode_responses=True
        self.raw = redis.Redis(connection_pool=redis.ConnectionPool(
            **{**client.connection_pool.connection_kwargs, "decode_responses": False}))
        self.settings = settings
        self._emit = self.r.register_script(_EMIT_LUA)
        self._admit = self.r.register_script(_ADMIT_LUA)

    @classmethod
    def connect(cls, settings: Settings, **kwargs: Any) -> "JobStore":
        options = dict(decode_responses=True, socket_connect_timeout=2, socket_timeout=10,
                       health_check_interval=15, retry_on_timeout=True)
        options.update(kwargs)
        return cls(redis.Redis.from_url(settings.broker_url, **options), settings)

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
        self._admit_job(job_id, extra.get("owner") or "", record, now=now, ttl=self.settings.job_ttl_s)
        self.emit(job_id, "progress", status="queued", progress=0.0)
        return self.get(job_id)

    def reopen(self, job_id: str, **fields: Any) -> None:
        """Make a finished or paused job unfinished again (a book resumed or regenerated), counted against its
        owner's cap like a new job; raises QueueFull."""
        owner = self.r.hget(job_key(job_id), "owner") or ""
        self._admit_job(job_id, owner, {k: _encode(v) for k, v in fields.items()}, now=time.time(), ttl=0)

    def _admit_job(self, job_id: str, owner: str, fields: dict, now: float, ttl: int) -> None:
        # Jobs sent through Celery belong to no key, and no key's cap counts them.
        limit = self.settings.max_queued_jobs if owner else 0
        pairs = [str(_encode(x)) for item in fields.items() for x in item]
        active = self._admit(keys=[job_key(job_id), owner_active(owner), JOB_INDEX, owner_index(owner)],
                             args=[max(0, limit), job_key(""), job_id, now, ttl, *pairs])
        if int(active) >= 0:
            raise QueueFull(int(active), limit)

    def get(self, job_id: str) -> dict | None:
        raw = self.r.hgetall(job_key(job_id))
        return _decode(raw) if raw else None

    def update(self, job_id: str, **fields: Any) -> None:
        self.r.hset(job_key(job_id), mapping={k: _encode(v) for k, v in fields.items()})

    def add(self, job_id: str, field: str, amount: float) -> float:
        """Add to a numeric field of a job; returns the new value."""
        return float(self.r.hincrbyfloat(job_key(job_id), field, amount))

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
        """Remove a finished job's record, events and audio pieces from Redis."""
        keys = [job_key(job_id), events_key(job_id), *self.r.scan_iter(match=f"{job_key(job_id)}:*")]
        p = self.r.pipeline()
        p.delete(*keys)
        p.zrem(JOB_INDEX, job_id)
        p.zrem(owner_index(owner), job_id)
        p.srem(owner_active(owner), job_id)
        p.execute()

    def claim(self, job_id: str, attempt: int, worker: str, instance: str) -> str:
        """Mark a job running on this worker. Returns "claimed", or why not: "missing", "finished", "stale"
        (a message for an earlier attempt), "duplicate" (a live worker runs it) or "cancelled"."""
        key = job_key(job_id)
        with self.r.pipeline() as p:
            while True:
                try:
                    p.watch(key)
                    status, current, cancel, owner = p.hmget(key, "status", "attempt", "cancel_requested",
                                                             "worker_instance")
                    if status is None:
                        return "missing"
                    if status in TERMINAL:
                        return "finished"
                    if int(current or 1) != attempt:
                        return "stale"
                    if status == "running" and owner and self.worker_alive(owner):
                        return "duplicate"
                    if cancel == "1":
                        p.unwatch()
                        self.finish(job_id, "cancelled", error="cancelled before it started")
                        return "cancelled"
                    p.multi()
                    p.hset(key, mapping={"status": "running", "started_at": time.time(), "worker": worker,
                                         "worker_instance": instance})
                    p.sadd(RUNNING_SET, job_id)
                    p.execute()
                    return "claimed"
                except redis.WatchError:
                    continue

    def finish(self, job_id: str, status: str, **fields: Any) -> bool:
        """Move a job to a terminal status once; returns False if it already was terminal."""
        assert status in TERMINAL
        key = job_key(job_id)
        with self.r.pipeline() as p:
            while True:
                try:
                    p.watch(key)
                    if p.hget(key, "status") in TERMINAL:
                        return False
                    p.multi()
                    values = {"status": status, "finished_at": time.time(), **fields}
                    if status == "succeeded":
                        values["progress"] = 1.0
                    p.hset(key, mapping={k: _encode(v) for k, v in values.items()})
                    p.srem(RUNNING_SET, job_id)
                    p.execute()
                    break
                except redis.WatchError:
                    continue
        job = self.get(job_id) or {}
        event = "done" if status == "succeeded" else "error"
        self.emit(job_id, event, **public_view(job))
        return True

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
        if status == "queued" and self.finish(job_id, "cancelled", error="cancelled before it started"):
            return "cancelled"
        return (self.get(job_id) or {}).get("status", "missing")

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(job_key(job_id), "cancel_requested") == "1"

    # -- events ---------------------------------------------------------------------------------------------
    def emit(self, job_id: str, type: str, **data: Any) -> str:
        body = json.dumps({"type": type, "job_id": job_id, "ts": round(time.time(), 3), **data})
        return self._emit(keys=[events_key(job_id), channel(job_id)],
                          args=[self.settings.event_maxlen, body, self.settings.event_ttl_s])

    def events_after(self, job_id: str, after: str | None = None) -> list[dict]:
        start = f"({after}" if after and after != "0-0" else "-"
        return [{**json.loads(fields["e"]), "id": event_id}
                for event_id, fields in self.r.xrange(events_key(job_id), min=start, max="+")]

    def follow(self, job_id: str, after: str | None = None, poll_s: float = 1.0,
               stop: Callable[[], bool] | None = None) -> Iterator[dict]:
        """Events after ``after`` in order, then live ones, ending after the final event (done or error)."""
        pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel(job_id))  # before the first replay, so nothing falls between the two
        last = after
        try:
            while True:
                for event in self.events_after(job_id, last):
                    last = event["id"]
                    yield event
                    if event["type"] in FINAL_EVENTS:
                        return
                job = self.get(job_id)
                if job is None:
                    return
                if job["status"] in TERMINAL:
                    tail = self.r.xrevrange(events_key(job_id), count=1)
                    if not tail:
                        # The events expired before the record did: say how it ended all the same.
                        yield {"type": "done" if job["status"] == "succeeded" else "error", "job_id": job_id,
                               "id": last or "0-0", **public_view(job)}
                        return
                    tail_id, fields = tail[0]
                    if json.loads(fields["e"])["type"] in FINAL_EVENTS and last is not None and \
                            parse_event_id(tail_id) <= parse_event_id(last):
                        return  # the client has already seen the end
                    # otherwise the final event is being appended right now: the next round reads it
                if stop is not None and stop():
                    return
                pubsub.get_message(timeout=poll_s)  # a publication or the poll interval, whichever is first
        finally:
            pubsub.close()

    def put_chunk(self, job_id: str, index: int, data: bytes) -> None:
        self.raw.set(chunk_key(job_id, index), data, ex=self.settings.event_ttl_s)

    def get_chunk(self, job_id: str, index: int) -> bytes | None:
        return self.raw.get(chunk_key(job_id, index))

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

    def reap_orphans(self, requeue: Callable[[dict], None]) -> list[str]:
        """Jobs left ``running`` by a worker whose heartbeat stopped: run again, or fail after max_attempts.

        Celery would re-deliver such a message only after the visibility timeout; this finds them within a
        heartbeat TTL. ``requeue(job)`` sends the task again for the job's new attempt.
        """
        reaped = []
        for job_id in self.r.smembers(RUNNING_SET):
            job = self.get(job_id)
            if job is None or job["status"] != "running":
                self.r.srem(RUNNING_SET, job_id)
                continue
            if self.worker_alive(job.get("worker_instance", "")):
                continue
            if not self.r.set(f"{job_key(job_id)}:reap", "1", nx=True, ex=30):
                continue  # another worker is reaping it
            worker, attempt, limit = job.get("worker", "?"), job["attempt"], job["max_attempts"]
            reason = f"worker {worker} stopped while running this job (attempt {attempt} of {limit})"
            if attempt >= limit:
                self.finish(job_id, "failed", error=f"{reason}; not retried again")
            else:
                p = self.r.pipeline()
                p.hset(job_key(job_id), mapping={"status": "queued", "attempt": attempt + 1, "progress": 0.0,
                                                 "chunks_done": 0, "last_error": reason})
                p.srem(RUNNING_SET, job_id)
                p.execute()
                self.emit(job_id, "progress", status="queued", progress=0.0, message=f"{reason}; running it again")
                requeue(self.get(job_id))
            reaped.append(job_id)
        return reaped


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


_PUBLIC = ("id", "kind", "status", "progress", "voice", "format", "params", "engine", "source", "created_at",
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
