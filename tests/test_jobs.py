"""The job store against a real Redis: records, claims, cancellation, events and the reaper."""
from __future__ import annotations

import json
import time

import pytest

from chatterbox.jobs import JobStore, connection_name, parse_event_id
from chatterbox.leases import LeaseKeeper, LeaseLost
from chatterbox.settings import load

from .conftest import wait_until


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
    assert store.claim("nope", 1, "w", "i1") == ("missing", None)
    make(store)
    assert store.claim("j1", 2, "w", "i1") == ("stale", None)
    verdict, lease = store.claim("j1", 1, "w", "i1")
    assert verdict == "claimed" and lease.job_id == "j1" and store.get("j1")["lease"] == lease.token
    # The record as claimed comes with the lease, decoded as a read would give it: the runner reads it no more.
    assert lease.record == store.get("j1") and lease.record["status"] == "running" and lease.record["attempt"] == 1
    assert lease.record["params"] == {"a": 1}
    assert store.claim("j1", 1, "w2", "i2") == ("duplicate", None)  # its lease lives
    assert store.finish("j1", "succeeded", fence=lease)
    assert store.finish("j1", "failed") is False  # terminal stays terminal
    assert store.claim("j1", 1, "w", "i1") == ("finished", None)
    assert store.r.ttl("cbx:job:j1") > 29 * 24 * 3600  # a finished record is kept for the retention period


def test_cancel_queued_and_running(store):
    make(store, "q")
    assert store.cancel("q") == "cancelled"
    assert store.get("q")["status"] == "cancelled"
    make(store, "r")
    store.claim("r", 1, "w", "i")
    assert store.cancel("r") == "running" and store.cancel_requested("r")
    assert store.cancel("missing") == "missing"


def test_a_cancel_racing_a_claim_never_ends_a_running_job(store):
    make(store, "q")
    store.r.hset("cbx:job:q", "cancel_requested", "1")  # as cancel() does first
    _, lease = store.claim("q", 1, "w", "i")  # a claim in between sees the request...
    assert lease is None and store.get("q")["status"] == "cancelled"
    make(store, "r")
    _, lease = store.claim("r", 1, "w", "i")
    # ...and a cancel whose job was claimed after it read "queued" finishes nothing
    assert store.finish("r", "cancelled", only_if="queued") is False and store.get("r")["status"] == "running"


def test_a_lost_lease_refuses_every_write_of_its_old_holder(store):
    make(store)
    _, old = store.claim("j1", 1, "w1", "frozen")
    store.update("j1", fence=old, progress=0.5)
    store.emit("j1", "chunk", fence=old, index=0)
    store.put_chunk("j1", 0, b"RIFF", fence=old)
    # The holder freezes past its TTL: the lease key runs out, and a live worker takes the job back.
    store.r.delete("cbx:job:j1:lease")
    requeued = []
    assert store.reap_orphans(requeued.append) == ["j1"] and requeued[0]["attempt"] == 2
    _, new = store.claim("j1", 2, "w2", "live")
    events = len(store.events_after("j1"))
    for write in (lambda: store.update("j1", fence=old, progress=0.9),
                  lambda: store.add("j1", "audio_s", 1.0, fence=old),
                  lambda: store.emit("j1", "chunk", fence=old, index=1),
                  lambda: store.put_chunk("j1", 1, b"RIFF", fence=old),
                  lambda: store.check(old),
                  lambda: store.finish("j1", "succeeded", fence=old)):
        with pytest.raises(LeaseLost):
            write()
    assert old.lost.is_set() and len(store.events_after("j1")) == events
    job = store.get("j1")
    assert job["status"] == "running" and job["attempt"] == 2 and job["progress"] == 0.5  # its own write stood
    assert store.get_chunk("j1", 1) is None
    store.emit("j1", "chunk", fence=new, index=0)
    assert store.finish("j1", "succeeded", fence=new)


def test_renewal_keeps_a_lease_and_finds_one_taken(store):
    make(store)
    keeper = LeaseKeeper(store.r, ttl_s=1)
    _, lease = store.claim("j1", 1, "w", "i")
    keeper.hold(lease)
    for _ in range(4):  # longer than the TTL, renewed all along: never reaped
        time.sleep(0.4)
        assert keeper.renew() == []
        assert store.reap_orphans(lambda job: None) == []
    # A holder whose key expired but whom nobody replaced takes it back at its next renewal.
    store.r.delete("cbx:job:j1:lease")
    assert keeper.renew() == [] and store.r.exists("cbx:job:j1:lease")
    # Once replaced, the renewal says so and stops renewing it.
    store.r.delete("cbx:job:j1:lease")
    store.reap_orphans(lambda job: None)
    assert keeper.renew() == [lease] and lease.lost.is_set() and keeper.held() == []


def test_a_job_that_ends_while_the_reaper_looks_is_not_requeued(store, monkeypatch):
    make(store)
    _, lease = store.claim("j1", 1, "w", "slow")
    store.r.delete("cbx:job:j1:lease")  # its lease ran out: its holder is slow, not dead, and about to finish
    real = store.r.pipeline

    def pipeline(*args, **kwargs):
        p = real(*args, **kwargs)
        exists = p.exists

        def exists_then_finish(*keys):
            answer = exists(*keys)
            store.finish("j1", "succeeded", fence=lease)  # between the reaper's read and its write
            return answer
        p.exists = exists_then_finish
        return p

    monkeypatch.setattr(store.r, "pipeline", pipeline)
    requeued = []
    assert store.reap_orphans(requeued.append) == [] and requeued == []
    assert store.get("j1")["status"] == "succeeded" and store.get("j1")["attempt"] == 1


def test_events_replay_after_an_id(store):
    make(store)
    ids = [store.emit("j1", "progress", progress=i / 10) for i in range(5)]
    events = store.events_after("j1")
    assert len(events) == 6  # the "queued" event from create, then five
    assert [e["id"] for e in events[1:]] == ids
    after = store.events_after("j1", events[2]["id"])
    assert [e["id"] for e in after] == [e["id"] for e in events[3:]]
    assert all(parse_event_id(a["id"]) < parse_event_id(b["id"]) for a, b in zip(events, events[1:]))


def test_reaper_requeues_then_fails(store):
    make(store)
    assert store.claim("j1", 1, "w", "dead")[0] == "claimed"
    requeued = []
    assert store.reap_orphans(requeued.append) == []  # its lease lives
    store.r.delete("cbx:job:j1:lease")  # as when it runs out
    assert store.reap_orphans(requeued.append) == ["j1"]
    job = store.get("j1")
    assert job["status"] == "queued" and job["attempt"] == 2 and requeued[0]["attempt"] == 2
    assert "stopped while running" in store.events_after("j1")[-1]["message"]
    assert store.claim("j1", 1, "w", "x") == ("stale", None)
    assert store.claim("j1", 2, "w", "dead2")[0] == "claimed"
    assert store.reap_orphans(requeued.append, dead={"dead2"}) == ["j1"]  # known dead: its lease need not run out
    job = store.get("j1")
    assert job["status"] == "failed" and "attempt 2 of 2" in job["error"] and len(requeued) == 1
    assert store.events_after("j1")[-1]["type"] == "error"


def test_a_job_left_running_under_a_live_worker_is_taken_back(store):
    # Its task failed and could not record it (Redis refused finish()): the worker lives on, beating, but no longer
    # renews the job's lease, so the job runs out and goes back, instead of staying "running" for ever.
    make(store)
    keeper = LeaseKeeper(store.r, ttl_s=1)
    _, lease = store.claim("j1", 1, "w", "alive")
    keeper.hold(lease)
    keeper.release(lease)  # the task's finally
    deadline = time.monotonic() + 5
    requeued = []
    while not requeued and time.monotonic() < deadline:
        store.heartbeat("alive", {})
        keeper.renew()
        store.reap_orphans(requeued.append)
        time.sleep(0.2)
    assert [j["id"] for j in requeued] == ["j1"] and store.get("j1")["status"] == "queued"


def test_a_requeue_whose_message_was_not_sent_is_sent_by_the_next_reaper(store):
    make(store)
    store.claim("j1", 1, "w", "dead")
    store.r.delete("cbx:job:j1:lease")

    def crash(job):
        raise ConnectionError("the reaper died before sending the message")

    with pytest.raises(ConnectionError):
        store.reap_orphans(crash)
    assert store.get("j1")["status"] == "queued"
    sent = []
    store.reap_orphans(sent.append)
    assert [j["attempt"] for j in sent] == [2]
    store.reap_orphans(sent.append)
    assert len(sent) == 1


def test_a_dead_workers_connections_name_it(store, redis_url):
    # Nobody is called dead in a Redis' first seconds (every worker is reconnecting): a test run alone, or first in
    # its test process, starts here; the beats come after, or they would expire meanwhile.
    wait_until(lambda: int(store.r.info("server")["uptime_in_seconds"]) >= 2 * store.settings.heartbeat_interval_s + 2,
               10, 0.2, "the test Redis to be past its first seconds")
    store.heartbeat("alive", {})
    store.heartbeat("gone", {})
    alive = JobStore.connect(store.settings, client_name=connection_name("alive"))
    alive.r.ping()
    # "gone" has no connection open; once it has missed a beat it is dead (and forgotten), "alive" is not.
    assert store.dead_instances() == set()  # it beat just now: it may only be reconnecting
    data = json.loads(store.r.get("cbx:worker:gone"))
    store.r.set("cbx:worker:gone", json.dumps({**data, "seen_at": time.time() - 5}), ex=10)
    data = json.loads(store.r.get("cbx:worker:alive"))
    store.r.set("cbx:worker:alive", json.dumps({**data, "seen_at": time.time() - 5}), ex=10)
    assert store.dead_instances() == {"gone"}
    assert not store.worker_alive("gone") and store.worker_alive("alive")


def test_workers_from_heartbeats_expire(store):
    store.heartbeat("w1", {"device": "cpu"})
    assert [w["device"] for w in store.workers()] == ["cpu"]
    time.sleep(1.2)
    assert store.workers() == []
