"""Job records, events and worker heartbeats in Redis: the only module that knows the key names.

A job is a Redis hash. Its events go to a per-job Redis Stream (bounded, expiring), which is the record a client
replays from, and are also published on a per-job channel so that live followers wake at once (web/fanout.py).
Followers always read the stream after the last id they delivered, so a dropped pub/sub message never loses or
repeats an event. Running work is held under leases (leases.py) that fence every write a worker makes for it.

Jobs are indexed in sorted sets by creation time: everyone's and each owner's, all of them, by status and by kind,
and those that ended lately by when they ended. The scripts that change a record move its index entries in the same
step, so a page of a listing is read from one index at the cost of the page (JobStore.page), and /stats reads only
the last hour's jobs. Purging a job deletes its keys by name (no walk of the keyspace) and every entry it has.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import redis

from . import redis_client
from .leases import FENCE_LUA, Lease, LeaseLost, is_lease_lost
from .schemas.records_jobs import KINDS, STATUSES, Job, JobRecord, hash_types
from .settings import Settings

log = logging.getLogger(__name__)

PREFIX = "cbx"
RUNNING_SET = f"{PREFIX}:jobs:running"
JOB_INDEX = f"{PREFIX}:jobs"
# STATUSES (only books pause) and KINDS (a record without a kind is a synthesis: older records) are the job
# models' (chatterbox/schemas/records_jobs.py).
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
FINAL_EVENTS = frozenset({"done", "error"})
# Every owner whose indices exist (owner_part: "-" for no key): a record that expired leaves its id in indices that
# only its owner's name finds, and its record no longer says whose it was.
OWNERS = f"{PREFIX}:jobs:owners"
# The indices' layout: "2" added the status, kind and finished indices to the time and owner ones. A store that
# finds another value builds them from the records once (JobStore.ensure_indexed).
INDEX_VERSION_KEY = f"{PREFIX}:jobs:index-version"
INDEX_VERSION = "2"
REINDEX_LOCK = f"{PREFIX}:jobs:reindexing"  # held by the one process that builds them; the others wait for it
# How long a job stays in the finished index (/stats reads the last hour of it): past that it is trimmed away.
FINISHED_KEEP_S = 2 * 3600
# ?q= and ?voice= cannot be answered from an index: at most this many of the newest jobs of a listing are read to
# answer them (total_exact is false when there were more).
SEARCH_WINDOW = 20_000

# Redis keeps a job's fields as text: JobRecord's annotations say what each is read back as (once, here: _decode
# stays a dict loop, with no validation per record). A field it does not name is read as text.
_TYPES = hash_types(JobRecord)
_INT_FIELDS = frozenset(k for k, t in _TYPES.items() if t is int)
_FLOAT_FIELDS = frozenset(k for k, t in _TYPES.items() if t is float)
_JSON_FIELDS = frozenset(k for k, t in _TYPES.items() if t in (dict, list))  # params; plan: [[text, gap_s, rate]]


def _lua_list(values) -> str:
    return "{" + ", ".join(f"'{v}'" for v in values) + "}"


# The indices of a job, as the scripts that change its record keep them: sorted sets scored by its creation time
# (everyone's and its owner's, by status and by kind), and the finished index, scored by when it ended. Their names
# are made here from the record's owner and status, which only the script reads atomically; status_index(),
# kind_index() and finished_index() below make the same names. A status change and its index move are one step,
# so a listing by status is never out of step with the records.
INDEX_LUA = """
local P = '$P'
local STATUSES = $STATUSES
local KINDS = $KINDS
local function owner_part(owner) if (not owner) or owner == '' then return '-' end return owner end
local function status_keys(owner, status)
  return {P .. ':jobs:status:' .. status, P .. ':owner:' .. owner_part(owner) .. ':status:' .. status}
end
local function finished_keys(owner)
  return {P .. ':jobs:finished', P .. ':owner:' .. owner_part(owner) .. ':finished'}
end
local function terminal(status) return status == 'succeeded' or status == 'failed' or status == 'cancelled' end
local function move_status(job, id, old, new)
  if old == new then return end
  local owner, created = unpack(redis.call('HMGET', job, 'owner', 'created_at'))
  if old then for _, k in ipairs(status_keys(owner, old)) do redis.call('ZREM', k, id) end end
  if new then
    created = created or redis.call('ZSCORE', P .. ':jobs', id) or '0'
    for _, k in ipairs(status_keys(owner, new)) do redis.call('ZADD', k, created, id) end
  end
  if not terminal(new) then for _, k in ipairs(finished_keys(owner)) do redis.call('ZREM', k, id) end end
end
""".replace("$P", PREFIX).replace("$STATUSES", _lua_list(STATUSES)).replace("$KINDS", _lua_list(KINDS))

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
# The same, for writes that change the status (ARGV[3] the job's id): its indices move with it.
_HSET_STATUS_LUA = FENCE_LUA + INDEX_LUA + """
local old = redis.call('HGET', KEYS[2], 'status')
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
if old then move_status(KEYS[2], ARGV[3], old, redis.call('HGET', KEYS[2], 'status')) end
return 1
"""
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
_CLAIM_LUA = INDEX_LUA + """
local status, attempt, cancel = unpack(redis.call('HMGET', KEYS[1], 'status', 'attempt', 'cancel_requested'))
if not status then return 'missing' end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 'finished' end
if tonumber(attempt or '1') ~= tonumber(ARGV[2]) then return 'stale' end
if status == 'running' and redis.call('EXISTS', KEYS[2]) == 1 then return 'duplicate' end
if cancel == '1' then return 'cancelled' end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[4], 'worker', ARGV[5], 'worker_instance', ARGV[6],
           'lease', ARGV[3])
move_status(KEYS[1], ARGV[1], status, 'running')
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[7])
redis.call('SADD', KEYS[3], ARGV[1])
local claimed = redis.call('HGETALL', KEYS[1])
table.insert(claimed, 1, 'claimed')
return claimed
"""

# Move a job to a terminal status once, and append its final event, in one step: a job never ends without saying
# so on its stream. KEYS: the job, the running set, its events, its channel, its lease key, its audio pieces.
# ARGV: job id, the holder's token ('' unfenced), the status it must have ('' any), the record's TTL (0: none),
# the pieces' TTL, the stream's bound and TTL, the final event, the new status, the time it ended, then field/value
# pairs. It enters the finished index (/stats), which keeps FINISHED_KEEP_S of them.
_FINISH_LUA = INDEX_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[2] then return redis.error_reply('LEASE_LOST') end
if ARGV[3] ~= '' and status ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'lease', '', unpack(ARGV, 11))
move_status(KEYS[1], ARGV[1], status, ARGV[9])
for _, k in ipairs(finished_keys(redis.call('HGET', KEYS[1], 'owner'))) do
  redis.call('ZADD', k, ARGV[10], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. (tonumber(ARGV[10]) - $KEEP))
  redis.call('EXPIRE', k, $KEEP)
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[5])
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) else redis.call('PERSIST', KEYS[1]) end
redis.call('EXPIRE', KEYS[6], ARGV[5])
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[8])
redis.call('EXPIRE', KEYS[3], ARGV[7])
redis.call('PUBLISH', KEYS[4], id .. ' ' .. ARGV[8])
return 1
""".replace("$KEEP", str(FINISHED_KEEP_S))


# Admit a job into its owner's active set, counting the owner's unfinished jobs first, and (for a new job) write its
# record, all in one step: two submissions at once cannot both take the last place, and a job is never in the set
# without its record (which the count would take for an expired one). KEYS: the job, its owner's active set, the
# job index, the owner's index, the kind's index and the owner's, the set of owners. ARGV: the cap (0: none), the
# job key prefix, the job id, the time, "new" for a new record (else an existing one, reopened), the owner, then
# field/value pairs to set. Answers -1 when admitted, else how many are active. An unfinished record never expires
# (the retention sweeper and finish() give finished ones their time).
ADMIT_LUA = INDEX_LUA + """
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
local old = redis.call('HGET', KEYS[1], 'status')
if #ARGV > 6 then redis.call('HSET', KEYS[1], unpack(ARGV, 7)) end
redis.call('PERSIST', KEYS[1])
if ARGV[5] == 'new' then
  for i = 3, 6 do redis.call('ZADD', KEYS[i], ARGV[4], ARGV[3]) end
  redis.call('SADD', KEYS[7], owner_part(ARGV[6]))
end
move_status(KEYS[1], ARGV[3], old, redis.call('HGET', KEYS[1], 'status'))
redis.call('SADD', KEYS[2], ARGV[3])
return -1
"""

# Forget a job in Redis wholly: its keys (KEYS: the record, its book's in-flight items, then the rest), the lease
# keys of those items, and every index it may be in. ARGV: its id, and its owner when the record is gone ('*': not
# known, so every owner's indices). Purging a job and dropping one whose record expired both come here.
_FORGET_LUA = INDEX_LUA + """
local id = ARGV[1]
local owner = redis.call('HGET', KEYS[1], 'owner')
local owners
if owner then owners = {owner_part(owner)}
elseif ARGV[2] ~= '*' then owners = {owner_part(ARGV[2])}
else owners = redis.call('SMEMBERS', P .. ':jobs:owners') end
for _, item in ipairs(redis.call('HKEYS', KEYS[2])) do
  redis.call('DEL', P .. ':job:' .. id .. ':book:lease:' .. item)
end
redis.call('DEL', unpack(KEYS))
local scopes = {P .. ':jobs'}
for _, o in ipairs(owners) do
  table.insert(scopes, P .. ':owner:' .. o)
  redis.call('SREM', P .. ':owner:' .. o .. ':active', id)
end
for i, scope in ipairs(scopes) do
  redis.call('ZREM', i == 1 and scope or scope .. ':jobs', id)
  redis.call('ZREM', scope .. ':finished', id)
  for _, s in ipairs(STATUSES) do redis.call('ZREM', scope .. ':status:' .. s, id) end
  for _, k in ipairs(KINDS) do redis.call('ZREM', scope .. ':kind:' .. k, id) end
end
redis.call('SREM', P .. ':jobs:running', id)
redis.call('SREM', P .. ':books:active', id)
redis.call('SREM', P .. ':jobs:requeue', id)
return 1
"""

# Read a stretch of a listing's index and judge each job against the filters that no index answers, in Redis, so
# that neither the records nor the ids of matches off the page cross the network (20,000 jobs read from Python took
# seconds). KEYS[1]: the index. ARGV: the newest score of the listing (ranks are counted below it, so jobs created
# meanwhile shift nothing), the rank to start at, how many to read, the page's first match position and the one
# past its last, relative to this stretch, the status ('' any), the kind ('' any), the number of voices, the voices,
# then the words (lower case). Answers how many it read, how many surely matched, then a triple for each job Python
# must see: its id; '' (it matches), its text (Python judges the words) or '-' (its record is gone); and how many
# sure matches came before it. Lua lower-cases ASCII only; Python, as the API promises, lower-cases everything, and
# only two characters become ASCII letters in its lower case (U+212A KELVIN SIGN, U+0130 I WITH DOT ABOVE): a text
# with either, or any text where a word is beyond ASCII, is judged in Python; an ASCII word found in Lua's lower
# case is found in Python's too. A sure match is sent only if its position, whatever Python finds of the texts
# before it, may fall on the page.
_SCAN_LUA = """
local base = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
local first = base + tonumber(ARGV[2])
local ids = redis.call('ZREVRANGE', KEYS[1], first, first + tonumber(ARGV[3]) - 1)
local lo, hi = tonumber(ARGV[4]), tonumber(ARGV[5])
local status, kind, nvoices = ARGV[6], ARGV[7], tonumber(ARGV[8])
local voices, words, ascii = {}, {}, true
for i = 9, 8 + nvoices do voices[ARGV[i]] = true end
for i = 9 + nvoices, #ARGV do
  table.insert(words, ARGV[i])
  if string.find(ARGV[i], '[\\128-\\255]') then ascii = false end
end
local out, sure, unsure = {#ids, 0}, 0, 0
for _, id in ipairs(ids) do
  local s, k, v, t = unpack(redis.call('HMGET', '$P:job:' .. id, 'status', kind ~= '' and 'kind' or 'id',
                                       nvoices > 0 and 'voice' or 'id', #words > 0 and 'text' or 'id'))
  local verdict = nil
  if not s then verdict = '-'
  elseif (status == '' or s == status) and (kind == '' or (k or 'synthesize') == kind)
      and (nvoices == 0 or voices[v or '']) then
    t = t or ''
    if #words == 0 then verdict = ''
    elseif not ascii then verdict = t
    else
      local lower = string.lower(t)
      verdict = ''
      for _, w in ipairs(words) do
        if not string.find(lower, w, 1, true) then verdict = nil break end
      end
      if not verdict and (string.find(t, '\\226\\132\\170', 1, true) or string.find(t, '\\196\\176', 1, true)) then
        verdict = t
      end
    end
  end
  if verdict == '' then
    if sure + unsure >= lo and sure < hi then
      table.insert(out, id) table.insert(out, '') table.insert(out, sure)
    end
    sure = sure + 1
  elseif verdict then
    table.insert(out, id) table.insert(out, verdict) table.insert(out, sure)
    if verdict ~= '-' then unsure = unsure + 1 end
  end
end
out[2] = sure
return out
""".replace("$P", PREFIX)

# Build the indices of version 2 for jobs recorded before them (ARGV: the earliest end the finished index keeps,
# then job ids): each job is put in its status', kind's and owner's indices and taken out of the other statuses', in
# one step per batch, so that a job changing status meanwhile is indexed by its status of now. Answers the ids whose
# record is gone (the caller forgets them once it knows every owner).
_REINDEX_LUA = INDEX_LUA + """
local gone = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local job = P .. ':job:' .. id
  local status, owner, kind, created, finished = unpack(redis.call('HMGET', job, 'status', 'owner', 'kind',
                                                                   'created_at', 'finished_at'))
  if not status then
    table.insert(gone, id)
  else
    local o = owner_part(owner)
    if (not kind) or kind == '' then kind = 'synthesize' end
    created = created or redis.call('ZSCORE', P .. ':jobs', id) or '0'
    redis.call('SADD', P .. ':jobs:owners', o)
    redis.call('ZADD', P .. ':jobs', 'NX', created, id)
    redis.call('ZADD', P .. ':owner:' .. o .. ':jobs', 'NX', created, id)
    for _, s in ipairs(STATUSES) do
      if s ~= status then for _, k in ipairs(status_keys(owner, s)) do redis.call('ZREM', k, id) end end
    end
    for _, k in ipairs(status_keys(owner, status)) do redis.call('ZADD', k, created, id) end
    redis.call('ZADD', P .. ':jobs:kind:' .. kind, created, id)
    redis.call('ZADD', P .. ':owner:' .. o .. ':kind:' .. kind, created, id)
    if terminal(status) and finished and finished ~= '' and tonumber(finished) >= tonumber(ARGV[1]) then
      for _, k in ipairs(finished_keys(owner)) do redis.call('ZADD', k, finished, id) end
    end
  end
end
return gone
"""


@dataclass
class Page:
    """A page of a listing: its jobs, newest first, and how many match in all."""

    jobs: list[dict]
    total: int
    exact: bool = True  # false: ``total`` counts the matches among the newest SEARCH_WINDOW jobs only
    examined: int = 0  # records read to find them, beyond the page's own (0: the page came from an index)


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


def time_index(owner: str | None = None) -> str:
    """Everyone's jobs (owner None), or one owner's, by creation time."""
    return JOB_INDEX if owner is None else owner_index(owner)


def status_index(status: str, owner: str | None = None) -> str:
    """The jobs in one status, everyone's or one owner's, by creation time (the scripts' status_keys)."""
    scope = JOB_INDEX if owner is None else f"{PREFIX}:owner:{owner or '-'}"
    return f"{scope}:status:{status}"


def kind_index(kind: str, owner: str | None = None) -> str:
    """The jobs of one kind (KINDS), everyone's or one owner's, by creation time."""
    scope = JOB_INDEX if owner is None else f"{PREFIX}:owner:{owner or '-'}"
    return f"{scope}:kind:{kind}"


def finished_index(owner: str | None = None) -> str:
    """The jobs that ended in the last FINISHED_KEEP_S, everyone's or one owner's, by when they ended."""
    scope = JOB_INDEX if owner is None else f"{PREFIX}:owner:{owner or '-'}"
    return f"{scope}:finished"


def owner_active(owner: str) -> str:
    """One owner's jobs that may still be unfinished (the cap on queued jobs counts them)."""
    return f"{PREFIX}:owner:{owner or '-'}:active"


# The parts of an audiobook's work state, each a key beside its job record (chatterbox.books.state works them).
BOOK_PARTS = ("pending", "inflight", "done", "failures", "renders", "chapters")


def book_key(job_id: str, part: str) -> str:
    """Keys of an audiobook's work state (pending, inflight, done, ...), beside its job record."""
    return f"{PREFIX}:job:{job_id}:book:{part}"


BOOKS_ACTIVE = f"{PREFIX}:books:active"
# Jobs the reaper has put back to queued whose Celery message may not be sent yet (a transactional outbox: a reaper
# that dies between the two leaves the job here, and the next one sends it).
REQUEUE_OUTBOX = f"{PREFIX}:jobs:requeue"
BOOKS_WATCHDOG = f"{PREFIX}:books:watchdog"


def lexicon_key(owner: str) -> str:
    """One owner's pronunciation lexicon (chatterbox.lexicon): a hash of term -> entry ("-": no key's)."""
    return f"{PREFIX}:owner:{owner or '-'}:lexicon"


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
        self._admit = self.r.register_script(ADMIT_LUA)
        self._hset_status = self.r.register_script(_HSET_STATUS_LUA)
        self._forget = self.r.register_script(_FORGET_LUA)
        self._reindex = self.r.register_script(_REINDEX_LUA)
        self._scan = self.r.register_script(_SCAN_LUA)
        self._indexed = False  # ensure_indexed() has found (or made) the indices of INDEX_VERSION

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
        self._admit_job(job_id, extra.get("owner") or "", kind, record, now=now, new=True)
        self.emit(job_id, "progress", status="queued", progress=0.0)
        return self.get(job_id)

    def reopen(self, job_id: str, **fields: Any) -> None:
        """Make a finished or paused job unfinished again (a book resumed or regenerated), counted against its
        owner's cap like a new job; raises QueueFull."""
        owner, kind = self.r.hmget(job_key(job_id), "owner", "kind")
        self._admit_job(job_id, owner or "", kind or "synthesize", {k: _encode(v) for k, v in fields.items()},
                        now=time.time(), new=False)

    def admission(self, job_id: str, owner: str, kind: str, fields: dict, now: float,
                  new: bool) -> tuple[list[str], list, int]:
        """ADMIT_LUA's keys and arguments for a job, and its owner's cap (books/transitions.py runs the same script
        behind a check of the book's status)."""
        # Jobs sent through Celery belong to no key, and no key's cap counts them.
        limit = self.settings.max_queued_jobs if owner else 0
        pairs = [str(_encode(x)) for item in fields.items() for x in item]
        keys = [job_key(job_id), owner_active(owner), JOB_INDEX, owner_index(owner), kind_index(kind),
                kind_index(kind, owner), OWNERS]
        return keys, [max(0, limit), job_key(""), job_id, now, "new" if new else "reopen", owner, *pairs], limit

    def _admit_job(self, job_id: str, owner: str, kind: str, fields: dict, now: float, new: bool) -> None:
        keys, args, limit = self.admission(job_id, owner, kind, fields, now, new)
        active = self._admit(keys=keys, args=args)
        if int(active) >= 0:
            raise QueueFull(int(active), limit)

    def get(self, job_id: str) -> dict | None:
        raw = self.r.hgetall(job_key(job_id))
        return _decode(raw) if raw else None

    def update(self, job_id: str, fence: Lease | None = None, **fields: Any) -> None:
        """Set fields of a record; with ``fence``, only while that lease holds (else LeaseLost). A new status moves
        the job's indices with it."""
        pairs = [_encode(x) for item in fields.items() for x in item]
        if "status" in fields:
            self._fenced(self._hset_status, fence, [job_key(job_id)], [job_id, *pairs])
        else:
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

    # -- listing: pages from the indices ---------------------------------------------------------------------
    def recent(self, limit: int = 50, owner: str | None = None, kind: str | None = None) -> list[dict]:
        """Newest jobs first: everyone's, or one owner's (an API key id; "" for jobs sent through Celery)."""
        return self.page(owner=owner, kind=kind, limit=limit).jobs

    def page(self, owner: str | None = None, status: str | None = None, kind: str | None = None,
             text: str | None = None, voices: frozenset[str] | set[str] | None = None, offset: int = 0,
             limit: int = 50, window: int = SEARCH_WINDOW) -> "Page":
        """One page of the jobs matching the filters, newest first, and how many match (``text``: words that must
        all be in the text, any case; ``voices``: the job's voice is one of these).

        Owner, status and kind alone (or owner with one of the others) are one index: the page is read from it at
        its offset, its size is the total, and the cost is the page's. Status with kind, ``text`` and ``voices``
        are read from the narrowest index that applies, newest first, up to ``window`` jobs (their status, kind,
        voice and text only), counting matches as they go; where the index holds more, the total counts the
        matches among those ``window`` (``exact`` false)."""
        self.ensure_indexed()
        if status and status not in STATUSES or kind and kind not in KINDS:
            return Page([], 0)
        words = text.lower().split() if text else []
        if not words and not voices and not (status and kind):
            index = status_index(status, owner) if status else kind_index(kind, owner) if kind else time_index(owner)
            return self._index_page(index, owner, offset, limit)
        return self._scan_page(owner, status, kind, words, voices, offset, limit, window)

    def _count_and_page(self, index: str, offset: int, limit: int) -> tuple[int, list[str]]:
        p = self.r.pipeline()  # MULTI: the total and the page as of one moment
        p.zcard(index)
        p.zrevrange(index, offset, offset + limit - 1)
        try:
            return tuple(p.execute())
        except redis.exceptions.ResponseError as exc:
            if redis_client.refusal(exc) is None:
                raise
        # Redis out of memory refuses every MULTI: reading still works, the two answers a moment apart.
        p = self.r.pipeline(transaction=False)
        p.zcard(index)
        p.zrevrange(index, offset, offset + limit - 1)
        return tuple(p.execute())

    def _index_page(self, index: str, owner: str | None, offset: int, limit: int) -> "Page":
        for _ in range(3):
            total, ids = self._count_and_page(index, offset, limit)
            records = self.records(ids)
            gone = [job_id for job_id, job in zip(ids, records) if job is None]
            for job_id in gone:  # expired since the last sweep: out of every index, and the page read again
                self.purge(job_id, owner)
            if not gone:
                break
        return Page([job for job in records if job is not None], int(total) - len(gone))

    def _scan_page(self, owner: str | None, status: str | None, kind: str | None, words: list[str],
                   voices: frozenset[str] | set[str] | None, offset: int, limit: int, window: int) -> "Page":
        candidates = [time_index(owner)] + ([status_index(status, owner)] if status else []) + \
            ([kind_index(kind, owner)] if kind else [])
        p = self.r.pipeline(transaction=False)
        for index in candidates:
            p.zcard(index)
        index = min(zip(p.execute(), candidates))[1]
        top = self.r.zrevrange(index, 0, 0, withscores=True)
        if not top:
            return Page([], 0)
        matched, examined, found, gone = 0, 0, [], []
        exhausted = False
        voices = sorted(voices or ())
        while examined < window:
            batch = min(500, window - examined)  # a short step at a time: Redis serves others between them
            reply = self._scan(keys=[index], args=[repr(top[0][1]), examined, batch, offset - matched,
                                                   offset + limit - matched, status or "", kind or "", len(voices),
                                                   *voices, *words])
            read, sure, rest = int(reply[0]), int(reply[1]), reply[2:]
            judged = 0  # matches Python found among the texts it judged, so far in this stretch
            for job_id, verdict, before in zip(rest[::3], rest[1::3], rest[2::3]):
                if verdict == "-":
                    gone.append(job_id)
                elif verdict == "" or all(w in verdict.lower() for w in words):
                    if offset <= matched + int(before) + judged < offset + limit:
                        found.append(job_id)
                    judged += verdict != ""
            matched += sure + judged
            examined += read
            if read < batch:
                exhausted = True
                break
        if not exhausted:
            exhausted = self.r.zcount(index, "-inf", top[0][1]) <= examined
        for job_id in gone:
            self.purge(job_id, owner)
        jobs = [job for job in self.records(found) if job is not None]
        return Page(jobs, matched, exact=exhausted, examined=examined)

    def records(self, ids: list[str]) -> list[dict | None]:
        """The records of these jobs, in one round trip (None for each that is gone)."""
        p = self.r.pipeline(transaction=False)
        for job_id in ids:
            p.hgetall(job_key(job_id))
        return [_decode(raw) if raw else None for raw in p.execute()] if ids else []

    def finished_since(self, since: float, owner: str | None = None) -> list[dict]:
        """The jobs that ended since ``since`` (at most FINISHED_KEEP_S ago), oldest first: id, status,
        finished_at and duration_s of each. Reads only those jobs."""
        self.ensure_indexed()
        ids = self.r.zrangebyscore(finished_index(owner), since, "+inf")
        p = self.r.pipeline(transaction=False)
        for job_id in ids:
            p.hmget(job_key(job_id), ["status", "finished_at", "duration_s"])
        ended = []
        for job_id, (status, finished, duration) in zip(ids, p.execute() if ids else []):
            if status in TERMINAL and finished:
                ended.append({"id": job_id, "status": status, "finished_at": float(finished),
                              "duration_s": float(duration or 0.0)})
        return ended

    def status_counts(self, owner: str | None = None) -> dict[str, int]:
        """How many jobs are on record in each status, everyone's or one owner's (the indices' sizes)."""
        self.ensure_indexed()
        p = self.r.pipeline(transaction=False)
        for status in STATUSES:
            p.zcard(status_index(status, owner))
        return dict(zip(STATUSES, map(int, p.execute())))

    # -- the indices' upkeep --------------------------------------------------------------------------------
    def purge(self, job_id: str, owner: str | None = None) -> None:
        """Remove a job from Redis: its record, events, audio pieces, work state and every index entry (its files:
        retention.py). ``owner`` serves only where the record is gone (None: not known, so every owner's)."""
        keys = [job_key(job_id), book_key(job_id, "inflight"), events_key(job_id), pieces_key(job_id),
                lease_key(job_id), *(book_key(job_id, part) for part in BOOK_PARTS if part != "inflight")]
        self._forget(keys=keys, args=[job_id, "*" if owner is None else owner])

    def ensure_indexed(self, wait_s: float = 300.0) -> None:
        """Build the indices once where the records predate them (the first listing after an upgrade does it: 10 s
        for 100,000 jobs on a 2-core VM, bench/job_listing.py). One process builds them; a listing elsewhere
        meanwhile waits for it, and takes over if it died (its lock runs out)."""
        deadline = time.monotonic() + wait_s
        while not self._indexed:
            if self.r.get(INDEX_VERSION_KEY) == INDEX_VERSION:
                self._indexed = True
                continue
            try:
                taken = self.r.set(REINDEX_LOCK, os.getpid(), nx=True, ex=30)
                if taken:
                    try:
                        self.reindex(lock=REINDEX_LOCK)
                    finally:
                        self.r.delete(REINDEX_LOCK)
            except redis.exceptions.ResponseError as exc:
                if redis_client.refusal(exc) is None:
                    raise
                # Redis refuses writes (out of memory, a full disk): reading must still work, from the indices there
                # are (time and owner always); the build is tried again at the next listing.
                log.warning("cannot build the job indices while Redis refuses writes (%s)", redis_client.refusal(exc))
                return
            if taken:
                continue
            if time.monotonic() > deadline:
                raise TimeoutError("another process has been building the job indices for too long")
            else:
                time.sleep(0.2)

    def reindex(self, lock: str | None = None) -> int:
        """Put every job on record in the indices of its owner, status and kind (and the finished index, if it
        ended within FINISHED_KEEP_S), and forget index entries whose record is gone. Safe beside running work
        and beside another reindex: each batch is one atomic step that indexes a job as it is then. Returns the
        jobs indexed. ``lock``: a key whose TTL is renewed as batches are done (ensure_indexed's)."""
        prefix, suffix = f"{PREFIX}:owner:", ":jobs"
        # One walk of the keyspace, once: the owners that the indices of version 1 had (with no list of them).
        for key in self.r.scan_iter(match=owner_index("*"), count=1000):
            self.r.sadd(OWNERS, key[len(prefix):-len(suffix)])
        cutoff = time.time() - FINISHED_KEEP_S
        seen: set[str] = set()
        gone: set[str] = set()
        for index in [JOB_INDEX, *(f"{prefix}{o}{suffix}" for o in sorted(self.r.smembers(OWNERS)))]:
            batch: list[str] = []
            for job_id, _ in self.r.zscan_iter(index, count=500):
                if job_id not in seen:
                    seen.add(job_id)
                    batch.append(job_id)
                if len(batch) == 500:
                    gone.update(self._reindex(args=[cutoff, *batch]))
                    batch = []
                    if lock:
                        self.r.expire(lock, 30)
            if batch:
                gone.update(self._reindex(args=[cutoff, *batch]))
        for job_id in gone:  # every owner is known now: their indices lose these too
            self.purge(job_id)
        self.r.set(INDEX_VERSION_KEY, INDEX_VERSION)
        return len(seen) - len(gone)

    # -- running: claims, leases, the end -------------------------------------------------------------------
    def claim(self, job_id: str, attempt: int, worker: str, instance: str) -> tuple[str, Lease | None]:
        """Mark a job running on this worker under a new lease. Returns ("claimed", lease: its ``record`` the job as
        claimed), or why not and None:
        "missing", "finished", "stale" (a message for another attempt), "duplicate" (a live holder runs it) or
        "cancelled" (and now recorded so)."""
        token = uuid.uuid4().hex
        verdict = self._claim(keys=[job_key(job_id), lease_key(job_id), RUNNING_SET],
                              args=[job_id, attempt, token, time.time(), worker, instance,
                                    int(self.settings.heartbeat_ttl_s * 1000)])
        if verdict == "cancelled":
            self.finish(job_id, "cancelled", error="cancelled before it started")
        if not isinstance(verdict, list):
            return verdict, None
        # The record as claimed comes back with the claim: its runner starts from it without reading it again.
        record = _decode(dict(zip(verdict[1::2], verdict[2::2])))
        return "claimed", Lease(holder_key=job_key(job_id), field="lease", holder=token, key=lease_key(job_id),
                                token=token, job_id=job_id, record=record)

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
                          status, values["finished_at"], *pairs])

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
                    requeued = {"status": "queued", "attempt": attempt + 1, "last_error": reason, "lease": ""}
                    pairs = [x for item in requeued.items() for x in item]
                    # Unfenced (the lease is gone): KEYS[1] the record, ARGV[1:2] empty; its indices move with it.
                    self._hset_status(keys=[key, key], args=["", "", job_id, *pairs], client=p)
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


_PUBLIC = tuple(Job.model_fields)  # what clients see of a record: the Job answer's fields


def public_view(job: dict) -> dict:
    """The fields of a job record that clients see (the text itself only on request)."""
    view = {k: job[k] for k in _PUBLIC if k in job and job[k] != ""}
    if isinstance(view.get("params"), dict) and "upload" in view["params"]:
        # A clone job's params name the uploaded file on the server: not the client's business.
        view["params"] = {k: v for k, v in view["params"].items() if k not in ("upload", "keep_upload")}
    return view
