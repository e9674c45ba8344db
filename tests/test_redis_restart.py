"""Redis going away and coming back: queued jobs survive (AOF), the web app answers 503 and then recovers."""
from __future__ import annotations

from .conftest import System, wait_until


def test_job_queued_across_a_redis_restart(tmp_path):
    system = System(tmp_path, worker=False).start()
    try:
        job = system.submit("I was queued before Redis went down.")
        assert system.job(job["job_id"])["status"] == "queued"
        # one message, on the interactive queue only
        assert system.store.r.llen("interactive") == 1 and system.store.r.llen("bulk") == 0

        system.redis.stop()
        health = system.api.get("/health", timeout=30)
        assert health.status_code == 503 and health.json()["error"]["code"] == "redis_unavailable"
        refused = system.api.post("/synthesize", json={"text": "Now?"}, timeout=30)
        assert refused.status_code == 503 and "Redis is not reachable" in refused.json()["error"]["message"]
        assert system.api.get(f"/jobs/{job['job_id']}", timeout=30).status_code == 503

        system.redis.start()  # same port, same AOF
        wait_until(lambda: system.api.get("/health", timeout=10).status_code == 200, 30,
                   what="the web app to recover")
        assert system.job(job["job_id"])["status"] == "queued"
        system.start_worker()
        done = system.wait_job(job["job_id"], timeout=120)
        assert done["status"] == "succeeded", done
    finally:
        system.stop()
