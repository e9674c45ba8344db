"""Job events for everyone who follows a job in this web process, woken by one Redis pub/sub listener.

A worker appends each event to its job's stream and publishes it on the job's channel (chatterbox/jobs.py). Every
follower (a websocket, a ``?wait=1`` request, a streamed speech response) used to hold a pub/sub connection of its
own and read Redis twice a second while nothing happened: redis-py's pool of 100 connections ran out at 70 to 100
followers (measured), and 500 would have made a thousand reads a second of nothing new. Here one thread per web
process subscribes to every job's channel (one pattern) and wakes the followers of the job a publication names;
each then reads the job's stream after the last id it delivered. That read, not the publication, is what a
follower delivers, so events arrive exactly once and in order even when a publication is lost; one is lost only
while the listener is not subscribed, and when it subscribes again it wakes every follower to read once more.
The listener lives only while someone follows: an idle web process hears no job's publications, and one whose Redis
went away (a test's, or at shutdown) does not go on reconnecting for nobody.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from chatterbox.jobs import FINAL_EVENTS, TERMINAL, JobStore, channel, events_key, parse_event_id, public_view

log = logging.getLogger(__name__)

PATTERN = channel("*")
# A follower with nothing to deliver looks at its stop condition (its client gone, its deadline passed) this often,
# without touching Redis: a websocket whose client left frees its thread within this long.
CHECK_S = 2.0
# The listener's longest wait for a message. Between waits it ends if nobody follows any more, and the client pings
# an idle connection (its health_check_interval), which is how a silently dead connection is found.
LISTEN_S = 1.0
RETRY_S = (0.2, 5.0)  # the listener's first and longest pause before it reconnects after losing Redis


class Fanout:
    """One pub/sub connection per process, and the followers it wakes, by job."""

    def __init__(self, store: JobStore):
        self.store = store
        self._lock = threading.Lock()
        self._waiting: dict[str, set[threading.Event]] = {}  # a job's channel -> its followers' wake-up calls
        self._listener: threading.Thread | None = None

    def follow(self, job_id: str, after: str | None = None,
               stop: Callable[[], bool] | None = None) -> Iterator[dict]:
        """Events after ``after`` in order, then live ones, ending after the final event (done or error), or once
        ``stop()`` is true (asked after each round, and every CHECK_S while nothing happens)."""
        last = after
        with self._watch(job_id) as wake:
            while True:
                wake.clear()  # before the read: a publication during it means one more read, never a missed one
                events = self.store.events_after(job_id, last)
                for event in events:
                    last = event["id"]
                    yield event
                    if event["type"] in FINAL_EVENTS:
                        return
                if not events:
                    ended, final = self._ended(job_id, last)
                    if final is not None:
                        yield final
                    if ended:
                        return
                if stop is not None and stop():
                    return
                while not wake.wait(CHECK_S):
                    if stop is not None and stop():
                        return

    def _ended(self, job_id: str, last: str | None) -> tuple[bool, dict | None]:
        """Whether a follower with nothing new to read is done, and the final event to give it when the job ended
        but its events expired before its record did."""
        job = self.store.get(job_id)
        if job is None:
            return True, None
        if job["status"] not in TERMINAL:
            return False, None
        tail = self.store.r.xrevrange(events_key(job_id), count=1)
        if not tail:
            return True, {"type": "done" if job["status"] == "succeeded" else "error", "job_id": job_id,
                          "id": last or "0-0", **public_view(job)}
        tail_id, fields = tail[0]
        if json.loads(fields["e"])["type"] in FINAL_EVENTS and last is not None and \
                parse_event_id(tail_id) <= parse_event_id(last):
            return True, None  # the client has already seen the end
        return False, None  # the final event is being appended right now: its publication wakes the follower

    @contextmanager
    def _watch(self, job_id: str) -> Iterator[threading.Event]:
        """A wake-up call for the job's publications, registered before the follower's first read."""
        wake = threading.Event()
        key = channel(job_id)
        with self._lock:
            self._waiting.setdefault(key, set()).add(wake)
            if self._listener is None:
                # Started by the first follower, in the process that serves it (gunicorn forks after import).
                self._listener = threading.Thread(target=self._listen, name="event-fanout", daemon=True)
                self._listener.start()
        try:
            yield wake
        finally:
            with self._lock:
                wakes = self._waiting.get(key)
                if wakes is not None:
                    wakes.discard(wake)
                    if not wakes:
                        del self._waiting[key]

    def _wake(self, key: str | None = None) -> None:
        """Wake the followers of one channel, or (None) everyone."""
        with self._lock:
            if key is None:
                wakes = [wake for group in self._waiting.values() for wake in group]
            else:
                wakes = list(self._waiting.get(key, ()))
        for wake in wakes:
            wake.set()

    def _idle(self) -> bool:
        """True, and the listener given up, when nobody follows: the next follower starts another. Asked under the
        lock that followers register under, so none can register with a listener that is about to end."""
        with self._lock:
            if self._waiting:
                return False
            self._listener = None
            return True

    def _listen(self) -> None:
        pause = RETRY_S[0]
        while True:
            pubsub = self.store.r.pubsub()
            try:
                pubsub.psubscribe(PATTERN)
                while not self._idle():
                    message = pubsub.get_message(timeout=LISTEN_S)
                    if message is None:
                        continue
                    if message["type"] == "pmessage":
                        self._wake(message["channel"])
                    elif message["type"] == "psubscribe":
                        # Subscribed (again): whatever was published before this went unheard, so every follower
                        # reads its stream once more.
                        self._wake()
                        pause = RETRY_S[0]
                return
            except Exception as exc:  # noqa: BLE001 - whatever it was, no follower may be left waiting on a dead
                # listener: each reads its stream now (meeting the error itself if Redis is away), and the listener
                # subscribes again.
                if self._idle():
                    return
                log.warning("job event listener: %s; subscribing again in %.1f s", exc, pause)
                self._wake()
                time.sleep(pause)
                pause = min(pause * 2, RETRY_S[1])
            finally:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001 - a connection already broken
                    pass
