"""The job store against a real Redis: records, claims, cancellation, events and the reaper."""
from __future__ import annotations

import threading
import time

import pytest

from chatterbox.jobs import JobStore, parse_event_id
from chatterbox.settings import load


@pytest.fixture()
def store(fresh_redis, redis_url):
    return JobStore.connect(load({"redis_url": redis_url, "heartbeat_ttl_s": 1}, environ={}))


def make(store, job_id="j1"):
    return store.create(job_id, text="Hello.", voice="joe", format="wav", params={"a": 1}, engine="piper",
                        source="test")


def test_create_and_read_back_typed_fields(store):
    job = make(store)
    assert job["status"] == "queued" and job["params"] == {"a": 1} and job["attempt"] == 1
    assert isinstance(job["created_at"], float) and job["max_attempts"] == 2
    assert [j["id"] for j in store.recent()] == ["j1"]


def test_claim_rules(store):
    assert store.claim("nope", 1, "w", "i1") == "missing"
    make(store)
    assert store.claim("j1", 2, "w", "i1") == "stale"
    store.heartbeat("i1", {})
    assert store.claim("j1", 1, "w", "i1") == "claimed"
    assert store.claim("j1", 1, "w2", "i2") == "duplicate"  # i1 is alive
    assert store.finish("j1", "succeeded")
    assert store.finish("j1", "failed") is False  # terminal stays terminal
    assert store.claim("j1", 1, "w", "i1") == "finished"


def test_cancel_queued_and_running(store):
    make(store, "q")
    assert store.cancel("q") == "cancelled"
    assert store.get("q")["status"] == "cancelled"
    make(store, "r")
    store.heartbeat("i", {})
    store.claim("r", 1, "w", "i")
    assert store.cancel("r") == "running" and store.cancel_requested("r")
    assert store.cancel("missing") == "missing"


def test_events_replay_after_an_id(store):
    make(store)
    ids = [store.emit("j1", "progress", progress=i / 10) for i in range(5)]
    events = store.events_after("j1")
    assert len(events) == 6  # the "queued" event from create, then five
    assert [e["id"] for e in events[1:]] == ids
    after = store.events_after("j1", events[2]["id"])
    assert [e["id"] for e in after] == [e["id"] for e in events[3:]]
    assert all(parse_event_id(a["id"]) < parse_event_id(b["id"]) for a, b in zip(events, events[1:]))


def test_follow_delivers_live_events_and_ends_on_done(store):
    make(store)
    seen = []

    def follow():
        for event in store.follow("j1", poll_s=5):
            seen.append((event["type"], time.monotonic()))

    thread = threading.Thread(target=follow)
    thread.start()
    time.sleep(0.3)
    sent = time.monotonic()
    store.emit("j1", "progress", progress=0.5)
    store.finish("j1", "succeeded")
    thread.join(5)
    assert not thread.is_alive()
    assert [t for t, _ in seen] == ["progress", "progress", "done"]
    # woken by pub/sub, not by the 5 s poll
    assert seen[1][1] - sent < 1.0


def test_follow_after_the_end_returns_nothing_and_expired_events_still_end(store):
    make(store)
    store.finish("j1", "failed", error="boom")
    events = list(store.follow("j1"))
    assert events[-1]["type"] == "error" and events[-1]["error"] == "boom"
    assert list(store.follow("j1", after=events[-1]["id"])) == []
    store.r.delete("cbx:job:j1:events")
    [only] = list(store.follow("j1"))
    assert only["type"] == "error" and only["status"] == "failed"


def test_reaper_requeues_then_fails(store):
    make(store)
    store.heartbeat("dead", {})
    assert store.claim("j1", 1, "w", "dead") == "claimed"
    requeued = []
    assert store.reap_orphans(requeued.append) == []  # still alive
    store.forget_worker("dead")
    assert store.reap_orphans(requeued.append) == ["j1"]
    job = store.get("j1")
    assert job["status"] == "queued" and job["attempt"] == 2 and requeued[0]["attempt"] == 2
    store.r.delete("cbx:job:j1:reap")
    assert store.claim("j1", 1, "w", "x") == "stale"
    store.heartbeat("dead2", {})
    assert store.claim("j1", 2, "w", "dead2") == "claimed"
    store.forget_worker("dead2")
    assert store.reap_orphans(requeued.append) == ["j1"]
    job = store.get("j1")
    assert job["status"] == "failed" and "attempt 2 of 2" in job["error"] and len(requeued) == 1


def test_workers_from_heartbeats_expire(store):
    store.heartbeat("w1", {"device": "cpu"})
    assert [w["device"] for w in store.workers()] == ["cpu"]
    time.sleep(1.2)
    assert store.workers() == []
