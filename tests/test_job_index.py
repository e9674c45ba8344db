"""The job indices (chatterbox/jobs.py): listings by owner, status and kind read from Redis' sorted sets, equal to a
brute-force filter of every record through every status transition, expiry, retention and purge; the indices built
once for records that predate them; /jobs and /stats through the web app. All against a real Redis."""
from __future__ import annotations

import itertools
import os
import random
import time

import pytest

from chatterbox import retention
from chatterbox.books.state import BookStore
from chatterbox.jobs import (FINISHED_KEEP_S, INDEX_VERSION, INDEX_VERSION_KEY, JOB_INDEX, KINDS, REINDEX_LOCK,
                             STATUSES, TERMINAL, JobStore, finished_index, job_key, kind_index, lease_key, owner_index,
                             status_index, time_index)
from chatterbox.leases import LeaseLost
from chatterbox.settings import load

from .conftest import wait_until

OWNERS = ("", "k1", "k2")  # "" is no key (jobs sent through Celery)
WORDS = ("harbour", "kettle", "lighthouse", "rain", "Ünïcode", "forty")


@pytest.fixture()
def store(fresh_redis, redis_url, tmp_path) -> JobStore:
    # Leases that outlive the test: the reaper takes only those a test lets go.
    return JobStore.connect(load({"redis_url": redis_url, "data_dir": tmp_path / "data", "heartbeat_ttl_s": 600,
                                  "max_queued_jobs": 0}, environ={}))


def populate(store: JobStore, n: int, seed: int = 0, prefix: str = "j") -> list[str]:
    rng = random.Random(seed)
    ids = []
    for i in range(n):
        job_id = f"{prefix}{i:03d}"
        store.create(job_id, text=f"The {rng.choice(WORDS)} and the {rng.choice(WORDS)}, number {i}.",
                     voice=rng.choice(("joe", "amy")), format="wav", params={}, engine="piper", source="test",
                     kind=rng.choice(("synthesize", "synthesize", "clone", "audiobook")), owner=OWNERS[i % 3])
        ids.append(job_id)
    return ids


# -- the reference: every record, found without the indices ---------------------------------------------------
def every_record(store: JobStore) -> list[dict]:
    ids = [key.split(":")[2] for key in store.r.scan_iter(match="cbx:job:*", count=1000) if key.count(":") == 2]
    return [job for job in store.records(ids) if job is not None]


def brute(store: JobStore, owner: str | None = None, status: str | None = None, kind: str | None = None,
          text: str | None = None, voices: set[str] | None = None) -> list[str]:
    """The ids matching the filters, newest first (ties by id, as a sorted set orders them)."""
    words = text.lower().split() if text else []
    found = [j for j in every_record(store)
             if (owner is None or j.get("owner", "") == owner) and (not status or j["status"] == status)
             and (not kind or j.get("kind", "synthesize") == kind) and (not voices or j.get("voice") in voices)
             and all(w in j.get("text", "").lower() for w in words)]
    return [j["id"] for j in sorted(found, key=lambda j: (j["created_at"], j["id"]), reverse=True)]


def assert_indices_exact(store: JobStore) -> None:
    """Every index holds exactly the jobs it should, each scored by its creation time."""
    records = every_record(store)
    now = time.time()

    def members(key: str) -> dict[str, float]:
        return dict(store.r.zrange(key, 0, -1, withscores=True))

    for owner in (None, *OWNERS):
        mine = [j for j in records if owner is None or j.get("owner", "") == owner]
        assert members(time_index(owner)) == {j["id"]: j["created_at"] for j in mine}
        for status in STATUSES:
            want = {j["id"]: j["created_at"] for j in mine if j["status"] == status}
            assert members(status_index(status, owner)) == want, (owner, status)
        for kind in KINDS:
            want = {j["id"]: j["created_at"] for j in mine if j.get("kind", "synthesize") == kind}
            assert members(kind_index(kind, owner)) == want, (owner, kind)
        ended = {j["id"]: j["finished_at"] for j in mine if j["status"] in TERMINAL
                 and j.get("finished_at", 0) > now - FINISHED_KEEP_S}
        assert members(finished_index(owner)) == ended, owner


def assert_listings_exact(store: JobStore, **filters) -> None:
    """Pages newest first, with and without filters, equal to the brute-force filter; totals too."""
    for owner, status, kind in itertools.product((None, *OWNERS), (None, *STATUSES), (None, "synthesize", "clone")):
        want = brute(store, owner, status, kind, **filters)
        whole = store.page(owner=owner, status=status, kind=kind, limit=500, **filters)
        assert [j["id"] for j in whole.jobs] == want and whole.total == len(want) and whole.exact
        for offset, limit in ((0, 1), (2, 3), (len(want) - 1, 5), (len(want) + 3, 5)):
            page = store.page(owner=owner, status=status, kind=kind, offset=max(0, offset), limit=limit, **filters)
            assert [j["id"] for j in page.jobs] == want[max(0, offset):max(0, offset) + limit], \
                (owner, status, kind, offset, limit)
            assert page.total == len(want)


def check(store: JobStore) -> None:
    assert_indices_exact(store)
    assert_listings_exact(store)


def zset_members_everywhere(store: JobStore, member: str) -> list[str]:
    """Every sorted set and set in Redis that holds ``member`` (a walk of the keyspace: the test's, not the code's)."""
    found = []
    for key in store.r.scan_iter(count=1000):
        kind = store.r.type(key)
        if kind == "zset" and store.r.zscore(key, member) is not None or \
                kind == "set" and store.r.sismember(key, member):
            found.append(key)
    return found


# -- transitions -----------------------------------------------------------------------------------------------
def test_every_status_transition_keeps_the_indices_exact(store):
    ids = populate(store, 36)
    check(store)
    leases = {}
    for job_id in ids[:24]:  # claimed: running
        verdict, leases[job_id] = store.claim(job_id, 1, "w", "i1")
        assert verdict == "claimed"
    check(store)
    for job_id in ids[:6]:
        assert store.finish(job_id, "succeeded", fence=leases[job_id], duration_s=1.5)
    for job_id in ids[6:9]:
        assert store.finish(job_id, "failed", fence=leases[job_id], error="boom")
    check(store)
    for job_id in ids[30:33]:  # queued: cancelled at once
        assert store.cancel(job_id) == "cancelled"
    assert store.cancel(ids[9]) == "running"  # running: ends cancelled at its next chunk
    assert store.finish(ids[9], "cancelled", fence=leases[ids[9]], error="cancelled")
    check(store)

    # The reaper: a job whose lease ran out is queued again, and failed once it has had its attempts.
    for job_id in ids[10:14]:
        store.r.delete(lease_key(job_id))
    assert sorted(store.reap_orphans(lambda job: None)) == ids[10:14]
    assert {store.get(j)["status"] for j in ids[10:14]} == {"queued"}
    check(store)
    for job_id in ids[10:14]:
        assert store.claim(job_id, 2, "w", "i2")[0] == "claimed"
        store.r.delete(lease_key(job_id))
    store.reap_orphans(lambda job: None)
    assert {store.get(j)["status"] for j in ids[10:14]} == {"failed"}
    check(store)

    # A book's own moves (chatterbox/books/state.py): paused, queued again, run, finished, reopened.
    book = ids[14]
    store.update(book, status="paused")
    check(store)
    with pytest.raises(LeaseLost):  # a write refused by its fence moves nothing
        store.update(book, fence=leases[ids[0]], status="running")
    store.reopen(book, status="queued")
    check(store)
    verdict, lease = store.claim(book, 1, "w", "i1")
    assert verdict == "claimed"
    store.update(book, fence=lease, status="running", progress=0.5)
    assert store.finish(book, "succeeded", fence=lease, duration_s=3.0)
    check(store)
    store.reopen(book, status="queued")  # a finished book queued again: out of the finished index
    assert book not in store.r.zrange(finished_index(), 0, -1)
    check(store)
    assert store.status_counts() == {s: len(brute(store, status=s)) for s in STATUSES}
    assert all(store.status_counts(o) == {s: len(brute(store, o, s)) for s in STATUSES} for o in OWNERS)


def test_text_voice_and_status_with_kind_are_searched_within_a_window(store):
    ids = populate(store, 45, seed=1)
    for job_id in ids[:20]:
        _, lease = store.claim(job_id, 1, "w", "i")
        store.finish(job_id, "succeeded" if int(job_id[1:]) % 2 else "failed", fence=lease)
    # Python's lower case, as the API promises, beyond what Lua's knows (the Kelvin sign is a "k" in lower case).
    store.create("kelvin", text="The \u212aettle in İstanbul.", voice="amy", format="wav", params={}, engine="piper",
                 source="test", owner="k1")
    assert [j["id"] for j in store.page(text="kettle", owner="k1").jobs] == brute(store, "k1", text="kettle")
    assert "kelvin" in brute(store, text="kettle")
    assert_listings_exact(store, text="kettle")
    assert_listings_exact(store, text="harbour")
    assert_listings_exact(store, text="KETTLE rain")
    assert_listings_exact(store, text="ünïcode")  # any case, beyond ASCII
    assert_listings_exact(store, voices={"amy"})
    assert_listings_exact(store, text="lighthouse", voices={"joe", "amy"})
    # Past the window, the total counts the matches among the newest jobs read, and says it is not exact.
    page = store.page(text="the", limit=3, window=10)
    newest = brute(store)[:10]
    assert not page.exact and page.total == 10 and page.examined == 10
    assert [j["id"] for j in page.jobs] == newest[:3]
    assert store.page(text="the", window=len(ids) + 1).exact and not store.page(text="the", window=len(ids)).exact
    # The narrowest index is the one read: a kind with few jobs is read, not the whole history.
    few = store.page(status="failed", kind="audiobook")
    assert few.examined == min(store.r.zcard(status_index("failed")), store.r.zcard(kind_index("audiobook")))
    assert store.page(status="sleeping").total == 0 and store.page(kind="podcast").total == 0
    # A scan counts ranks below the newest job it began with: jobs created meanwhile shift nothing.
    newest = store.r.zrevrange(JOB_INDEX, 0, -1, withscores=True)
    reply = store._scan(keys=[JOB_INDEX], args=[repr(newest[4][1]), 2, 3, 0, 10, "", "", 0])
    assert reply[:2] == [3, 3] and reply[2::3] == [job_id for job_id, _ in newest[6:9]]


def test_a_search_across_many_stretches_of_the_index(store):
    """More jobs than one stretch of the scan reads (500), with texts only Python may judge among them: pages at
    every place, the last one included, and the totals, equal to the brute-force filter."""
    rng = random.Random(3)
    for i in range(1300):
        text = rng.choice(("The kettle sings.", "The \u212aettle sings.", "Rain on the harbour.", "İstanbul kettle."))
        store.create(f"m{i:04d}", text=text, voice=rng.choice(("joe", "amy")), format="wav", params={},
                     engine="piper", source="test", owner=OWNERS[i % 3])
    for filters in ({"text": "kettle"}, {"text": "kettle", "voices": {"amy"}}, {"text": "İstanbul"},
                    {"owner": "k1", "text": "sings"}):
        want = brute(store, **filters)
        for offset in (0, 240, 499, 500, 731, len(want) - 7, len(want)):
            page = store.page(offset=offset, limit=30, **filters)
            assert [j["id"] for j in page.jobs] == want[offset:offset + 30], (filters, offset)
            assert page.total == len(want) and page.exact


# -- expiry, retention, purge ----------------------------------------------------------------------------------
def test_expired_records_leave_every_index(store):
    store.ensure_indexed()  # (a first listing would build the indices, and drop the expired ones on the way)
    ids = populate(store, 12)
    for job_id in ids:
        _, lease = store.claim(job_id, 1, "w", "i")
        store.finish(job_id, "succeeded", fence=lease, duration_s=1.0)
    by_owner_listing, by_admin_listing, by_sweeper = ids[1], ids[5], ids[0]  # owners k1, k2, ""
    for job_id in (by_owner_listing, by_admin_listing, by_sweeper):
        store.r.pexpire(job_key(job_id), 1)  # as Redis expires a finished record where no sweeper runs
    wait_until(lambda: not any(store.r.exists(job_key(j)) for j in (by_owner_listing, by_admin_listing, by_sweeper)))

    # The owner's listing finds its expired job and drops it from every index, whoever lists next.
    page = store.page(owner="k1")
    assert [j["id"] for j in page.jobs] == brute(store, owner="k1") and page.total == len(page.jobs)
    assert zset_members_everywhere(store, by_owner_listing) == []
    # An admin's listing does not know whose it was: every owner's indices lose it.
    page = store.page(limit=8)
    assert [j["id"] for j in page.jobs] == brute(store)[:8] and zset_members_everywhere(store, by_admin_listing) == []
    # One that no page has shown is counted until the sweeper finds it (which, where it runs, deletes every
    # finished job a day before Redis would expire it).
    assert page.total == len(brute(store)) + 1 and zset_members_everywhere(store, by_sweeper)

    # The sweeper reaches it among the jobs created before the retention's cutoff.
    store.r.zadd(JOB_INDEX, {by_sweeper: time.time() - 40 * 86400})
    retention.sweep(store)
    assert zset_members_everywhere(store, by_sweeper) == []
    check(store)


def test_the_sweeper_and_purge_leave_nothing_and_scan_no_keyspace(store):
    ids = populate(store, 9)
    # A book with every key a job can have: events, pieces, a lease, its work state and an item's lease.
    book = "book1"
    store.create(book, text="A book.", voice="joe", format="mp3", params={}, engine="piper", source="test",
                 kind="audiobook", owner="k1")
    books = BookStore(store)
    books.start(book, ["c:0", "c:1", "b"])
    _, lease = store.claim(book, 1, "w", "i")
    store.put_chunk(book, 0, b"RIFF", fence=lease)
    item = books.take(book, "i", "w")
    assert store.r.exists(item.key)
    books.fail(book, "c:1")
    store.finish(book, "cancelled", fence=lease)
    check(store)
    assert set(store.r.scan_iter(match=f"*{book}*")) > {job_key(book)}

    store.r.config_resetstat()
    retention.delete_job(store, store.get(book))
    assert "cmdstat_scan" not in store.r.info("commandstats")  # purge names the keys; it walks no keyspace
    assert list(store.r.scan_iter(match=f"*{book}*")) == [] and zset_members_everywhere(store, book) == []
    check(store)

    # Retention: old finished jobs go from every index; unfinished ones stay, however old.
    for job_id in ids[:3]:
        _, lease = store.claim(job_id, 1, "w", "i")
        store.finish(job_id, "failed", fence=lease)
        store.r.hset(job_key(job_id), "finished_at", time.time() - 40 * 86400)
        store.r.zadd(JOB_INDEX, {job_id: time.time() - 40 * 86400})
    store.r.zadd(JOB_INDEX, {ids[3]: time.time() - 40 * 86400})  # queued, never finished
    assert sorted(retention.sweep(store).deleted) == ids[:3]
    for job_id in ids[:3]:
        assert zset_members_everywhere(store, job_id) == [] and store.get(job_id) is None
    assert store.get(ids[3])["status"] == "queued" and ids[3] in store.r.zrange(status_index("queued"), 0, -1)


# -- records from before the indices ---------------------------------------------------------------------------
def write_version_1(store: JobStore, job_id: str, owner: str, status: str, created: float, **fields) -> None:
    """A record as the store wrote it before the status, kind and finished indices: the record, the time index
    and the owner's."""
    record = {"id": job_id, "status": status, "text": f"old job {job_id}", "voice": "joe", "format": "wav",
              "params": "{}", "engine": "piper", "source": "test", "created_at": created, "owner": owner, **fields}
    store.r.hset(job_key(job_id), mapping=record)
    store.r.zadd(JOB_INDEX, {job_id: created})
    store.r.zadd(owner_index(owner), {job_id: created})


def test_records_from_before_the_indices_are_indexed_once(store, fresh_redis):
    now = time.time()
    statuses = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
    for i in range(30):
        status = statuses[i % 6]
        ended = {"finished_at": now - (i * 300)} if status in TERMINAL else {}
        kind = {} if i % 4 == 0 else {"kind": ("synthesize", "clone", "audiobook")[i % 3]}  # older ones had none
        write_version_1(store, f"old{i:02d}", OWNERS[i % 3], status, now - 7200 + i, **ended, **kind)
    # Version 1 dropped an expired record from the one index it was read from: the other may still name it.
    store.r.zadd(owner_index("k2"), {"expired1": now - 9000})
    store.r.zadd(JOB_INDEX, {"expired2": now - 9000})
    fresh_redis.delete(INDEX_VERSION_KEY)

    upgraded = JobStore.connect(store.settings)  # a process of the new version, its first listing
    page = upgraded.page(status="failed", limit=3)
    assert [j["id"] for j in page.jobs] == brute(store, status="failed")[:3] and page.total == 5
    assert fresh_redis.get(INDEX_VERSION_KEY) == INDEX_VERSION
    assert zset_members_everywhere(store, "expired1") == [] and zset_members_everywhere(store, "expired2") == []
    check(upgraded)
    # Jobs that ended within the hour count in /stats' figures.
    assert {j["id"] for j in upgraded.finished_since(now - 3600)} == \
        {j["id"] for j in every_record(store) if j["status"] in TERMINAL and j["finished_at"] > now - 3600}

    # New jobs beside the old ones, through every transition: still exact.
    ids = populate(upgraded, 6, prefix="new")
    _, lease = upgraded.claim(ids[0], 1, "w", "i")
    upgraded.finish(ids[0], "succeeded", fence=lease)
    _, lease = upgraded.claim("old00", 1, "w", "i")  # an old queued job run by the new version
    upgraded.finish("old00", "failed", fence=lease)
    check(upgraded)

    # Once built, a later process finds the version and builds nothing: no walk of the indices again.
    fresh_redis.config_resetstat()
    JobStore.connect(store.settings).page(status="queued")
    stats = fresh_redis.info("commandstats")
    assert "cmdstat_zscan" not in stats and "cmdstat_scan" not in stats


def test_a_reindex_beside_running_work_indexes_each_job_by_its_status_of_now(store, fresh_redis):
    ids = populate(store, 20)
    for job_id in ids[:10]:
        store.claim(job_id, 1, "w", "i")
    # Indices of a status a job no longer has (as a reindex that read it before a claim would have left them).
    for job_id in ids[:10]:
        store.r.zadd(status_index("queued"), {job_id: 1.0})
    assert store.reindex() == 20
    check(store)


def test_one_process_builds_the_indices_and_the_others_wait_or_take_over(store, fresh_redis):
    import threading

    write_version_1(store, "old1", "k1", "failed", time.time() - 60, finished_at=time.time() - 30)
    fresh_redis.set(REINDEX_LOCK, "another process", ex=30)  # building them, as far as anyone can tell

    def other_finishes() -> None:
        time.sleep(0.5)
        fresh_redis.set(INDEX_VERSION_KEY, INDEX_VERSION)  # (without indexing old1: only the waiter could)
        fresh_redis.delete(REINDEX_LOCK)

    other = threading.Thread(target=other_finishes)
    other.start()
    waiter = JobStore.connect(store.settings)
    assert waiter.page(status="failed").total == 0  # it waited for the other, and built nothing itself
    other.join()

    # A builder that died: its lock runs out, and the next listing builds them.
    fresh_redis.delete(INDEX_VERSION_KEY)
    fresh_redis.set(REINDEX_LOCK, "a process that died", ex=1)
    assert [j["id"] for j in JobStore.connect(store.settings).page(status="failed").jobs] == ["old1"]
    assert fresh_redis.get(INDEX_VERSION_KEY) == INDEX_VERSION and not fresh_redis.exists(REINDEX_LOCK)


# -- through the web app -------------------------------------------------------------------------------------
@pytest.fixture()
def web(fresh_redis, redis_url, tmp_path):
    from chatterbox.keys import KeyStore
    from web import create_app

    admin = "cbx-test-admin-" + os.urandom(8).hex()
    app = create_app({"redis_url": redis_url, "data_dir": tmp_path / "data", "tts_engine": "piper",
                      "admin_key": admin, "rate_limit_per_minute": 0, "max_queued_jobs": 0,
                      "auth_failures_per_minute": 0})
    keys = KeyStore(fresh_redis)
    users = {}
    for name in ("alice", "bob"):
        key, token = keys.create(name)
        users[name] = (key.id, {"Authorization": f"Bearer {token}"})
    users["admin"] = (None, {"Authorization": f"Bearer {admin}"})
    return app.test_client(), app.extensions["chatterbox"].store, users


def test_jobs_and_stats_through_the_web_app(web):
    client, store, users = web
    (alice, as_alice), (bob, as_bob), (_, as_admin) = users["alice"], users["bob"], users["admin"]
    for i in range(30):
        owner = (alice, bob, "")[i % 3]
        store.create(f"w{i:02d}", text=f"Spoken text {i} {'harbour' if i % 4 == 0 else 'field'}.",
                     voice="joe", format="wav", params={}, engine="piper", source="test", owner=owner)
    for i in range(0, 30, 2):
        _, lease = store.claim(f"w{i:02d}", 1, "w", "i")
        store.finish(f"w{i:02d}", "failed" if i % 4 == 0 else "succeeded", fence=lease, duration_s=2.0)

    for who, owner, headers in (("alice", alice, as_alice), ("bob", bob, as_bob), ("admin", None, as_admin)):
        for params in ({"limit": 4}, {"limit": 4, "offset": 4}, {"status": "succeeded"}, {"status": "queued"},
                       {"q": "HARBOUR", "limit": 2}, {"voice": "joe", "status": "failed"}, {"kind": "synthesize"}):
            body = client.get("/jobs", query_string=params, headers=headers).get_json()
            want = brute(store, owner, params.get("status"), params.get("kind"), params.get("q"),
                         {params["voice"]} if "voice" in params else None)
            offset, limit = params.get("offset", 0), params.get("limit", 50)
            assert [j["id"] for j in body["jobs"]] == want[offset:offset + limit], (who, params)
            assert body["total"] == len(want) and body["total_exact"] is True
            assert (body["offset"], body["limit"]) == (offset, limit)
            assert all(j["text_preview"] and j["status_url"] == f"/jobs/{j['id']}" for j in body["jobs"])

        stats = client.get("/stats", headers=headers).get_json()
        ended = [j for j in every_record(store) if j["status"] in TERMINAL and (owner is None or j["owner"] == owner)]
        assert stats["jobs"] == len(ended) and sum(b["failed"] for b in stats["buckets"]) == \
            sum(j["status"] == "failed" for j in ended)
        assert stats["audio_s"] == pytest.approx(2.0 * len(ended))
        assert stats["statuses"] == {s: len(brute(store, owner, s)) for s in STATUSES}
        assert set(stats["queues"]) == {"interactive", "bulk"} and len(stats["buckets"]) == 12

    bad = client.get("/jobs", query_string={"status": "sleeping"}, headers=as_alice)
    assert bad.status_code == 400 and bad.get_json()["error"]["param"] == "status"
    # A purge through the API leaves the listing and the figures at once.
    gone = brute(store, alice, "succeeded")[0]
    assert client.delete(f"/jobs/{gone}", query_string={"purge": 1}, headers=as_alice).status_code == 200
    body = client.get("/jobs", query_string={"status": "succeeded"}, headers=as_alice).get_json()
    assert gone not in [j["id"] for j in body["jobs"]] and body["total"] == len(brute(store, alice, "succeeded"))
    assert client.get("/stats", headers=as_alice).get_json()["statuses"]["succeeded"] == body["total"]


def test_gc_reindex_repairs_what_an_older_worker_left(store):
    """Workers of the version before the status indices, still running beside newer ones during an upgrade, claim
    jobs without moving them between status indices: `chatterbox gc --reindex` puts every job where it is now."""
    import subprocess
    import sys

    from .conftest import ROOT

    ids = populate(store, 12)
    store.ensure_indexed()  # (a fresh Redis: the first listing would build them from the records as they are)
    for job_id in ids[:4]:  # claimed the old way: the record says running, the indices still say queued
        store.r.hset(job_key(job_id), "status", "running")
    assert {j["id"] for j in store.page(status="running").jobs} != set(ids[:4])
    env = {**os.environ, "REDIS_URL": store.settings.redis_url, "CHATTERBOX_DATA_DIR": str(store.settings.data_dir)}
    out = subprocess.run([sys.executable, "-m", "chatterbox", "gc", "--reindex", "--dry-run"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "reindexed 12 jobs" in out.stdout
    assert {j["id"] for j in store.page(status="running").jobs} == set(ids[:4])
    check(store)
