"""A book's statuses and the moves between them: which event may move a book from which status to which.

BookStore (state.py) is the only one that changes a book's status, and only by an event of TRANSITIONS: the scripts
here check the status and move it in one Redis step, so that two moves at once (a pause and the book's end, a
cancel and a worker starting the book) apply in some order, never half each. A move the book's status does not
allow is refused with BookStateError (the web layer answers it with 409 and its code) or, for the moves of workers
and of a regenerated chunk, with a False answer: there it is no error, only nothing to do.

The record's status and the indices by status are jobs.py's (its scripts move both together); these scripts are
built on its own Lua, so that a book moves them exactly as every other job does.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import RequestError
from ..jobs import ADMIT_LUA, INDEX_LUA, STATUSES, TERMINAL

UNFINISHED = frozenset(STATUSES) - TERMINAL  # queued, running, paused: watched, counted against the owner's cap
MOVING = frozenset({"queued", "running"})  # a book that workers are (or are about to be) working on
WORKING = "running"  # the only status in which a worker takes an item: a paused book's items in flight finish


class BookStateError(RequestError):
    """An action that the book's current state does not allow (resume a running book, ...)."""
    status = 409


@dataclass(frozen=True)
class Move:
    sources: frozenset[str]  # the statuses it may start from
    target: str
    code: str = ""  # "": a refusal is answered False (nothing to do), else raised as BookStateError with this code
    refusal: str = ""  # its message; {job_id} and {status} are filled in

    def refuse(self, job_id: str, status: str) -> BookStateError:
        return BookStateError(self.refusal.format(job_id=job_id, status=status), self.code)


TRANSITIONS: dict[str, Move] = {
    # A worker's first message for a queued book (new, resumed or reopened) starts its run.
    "start": Move(frozenset({"queued"}), "running"),
    "pause": Move(frozenset({"queued", "running"}), "paused", "not_running",
                  "book {job_id} is {status}; only a queued or running book can be paused"),
    # Counted against the owner's cap like a new job (QueueFull) and with its failures forgotten.
    "resume": Move(frozenset({"paused", "failed", "cancelled"}), "queued", "not_resumable",
                   "book {job_id} is {status}; only a paused, failed or cancelled book can be resumed"),
    # A chunk regenerated in a book that has ended queues it again; an unfinished book just makes the chunk.
    "reopen": Move(TERMINAL, "queued"),
    "cancel": Move(UNFINISHED, "cancelled", "job_finished", "book {job_id} has already {status}; nothing to cancel"),
    # An item failed for good, or too often; or the plan is gone.
    "fail": Move(UNFINISHED, "failed"),
    # The book's assembly is done (a paused book's too: its last item was already in flight).
    "finish": Move(UNFINISHED, "succeeded"),
}
# JobStore.finish makes the moves to an end: once, from any unfinished status, which is what the table says.
assert all(m.sources == UNFINISHED for m in TRANSITIONS.values() if m.target in TERMINAL)


def _one_of(statuses: frozenset[str] | set[str]) -> str:
    """A Lua test that the local ``status`` is one of ``statuses``."""
    return f"(' {' '.join(sorted(statuses))} '):find(' ' .. status .. ' ', 1, true)"


def move_lua(event: str) -> str:
    """Move between unfinished statuses. KEYS: the job, the set of unfinished books, its done chunks. ARGV: job id,
    now, then field/value pairs. A run's start is noted for the ETA (runner.eta_seconds): when, and at how many
    chunks done. Answers {1, the status it had} or, refused, {0, the status it has ('' no record)}."""
    move = TRANSITIONS[event]
    assert move.target in UNFINISHED and not move.sources & TERMINAL  # from an end: reopen_lua (the owner's cap)
    return INDEX_LUA + f"""
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or not {_one_of(move.sources)} then return {{0, status or ''}} end
redis.call('HSET', KEYS[1], 'status', '{move.target}', unpack(ARGV, 3))
if '{move.target}' == '{WORKING}' then
  local started = redis.call('HGET', KEYS[1], 'started_at')
  if (not started) or started == '' then redis.call('HSET', KEYS[1], 'started_at', ARGV[2]) end
  redis.call('HSET', KEYS[1], 'run_started_at', ARGV[2], 'run_done_at_start', redis.call('HLEN', KEYS[3]))
end
move_status(KEYS[1], ARGV[1], status, '{move.target}')
redis.call('SADD', KEYS[2], ARGV[1])
return {{1, status}}
"""


def reopen_lua(event: str) -> str:
    """Make a book unfinished again through jobs.py's admission, which counts it against its owner's cap (and moves
    it out of the finished index), only from the event's sources. KEYS and ARGV: the admission's (its field/value
    pairs set the target status), then KEYS[8] the set of unfinished books. Answers the status it has when refused
    ('' no record), else the admission's answer: -1 admitted, or how many unfinished jobs the owner has."""
    return "local function admit()\n" + ADMIT_LUA + "\nend\n" + f"""
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or not {_one_of(TRANSITIONS[event].sources)} then return status or '' end
local verdict = admit()
if verdict == -1 then redis.call('SADD', KEYS[8], ARGV[3]) end
return verdict
"""


# Drop a book from the set of unfinished ones (KEYS[2]) once its record (KEYS[1]) has ended or is gone, never one
# that a resume made unfinished again meanwhile. ARGV[1]: its id. Answers 1 if it was dropped.
SETTLE_LUA = f"""
local status = redis.call('HGET', KEYS[1], 'status')
if status and {_one_of(UNFINISHED)} then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""
