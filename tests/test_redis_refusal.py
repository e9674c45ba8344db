"""Redis that answers but refuses writes (out of memory, a failed snapshot on a full disk): every request that would
write gets 503 with a clear error, nothing half-made is left behind, and all works again once Redis takes writes."""
from __future__ import annotations

import pytest
import requests

from tests.conftest import System, wait_until


@pytest.fixture(scope="module")
def refusing(tmp_path_factory):
    sys_ = System(tmp_path_factory.mktemp("refusing"))
    sys_.start()
    yield sys_
    sys_.stop()


def refused(response: requests.Response) -> bool:
    return response.status_code == 503 and response.json()["error"]["code"] == "redis_refuses_writes"


def writes(system: System) -> list[requests.Response]:
    return [system.api.post("/synthesize", json={"text": "Hello."}, timeout=30),
            system.api.post("/audiobooks", json={"text": "A book."}, timeout=30),
            system.api.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "alloy"}, timeout=30)]


def test_out_of_memory_is_a_503_until_there_is_room(refusing):
    r = refusing.store.r
    before = r.zcard("cbx:jobs")
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)
    try:
        answers = writes(refusing)
        assert all(refused(a) for a in answers), [a.text for a in answers]
        assert "OOM" in answers[0].json()["error"]["message"]
        assert refusing.api.get("/jobs", timeout=10).status_code == 200  # reading still works
    finally:
        r.config_set("maxmemory", 0)
    assert r.zcard("cbx:jobs") == before  # nothing half-made
    job = refusing.submit("Room again.")
    assert refusing.wait_job(job["job_id"])["status"] == "succeeded"


def test_a_failed_snapshot_misconf_is_a_503_until_it_succeeds(refusing, tmp_path):
    r = refusing.store.r
    where, gone = r.config_get("dir")["dir"], tmp_path / "disk"
    gone.mkdir()
    r.config_set("save", "3600 1")
    r.config_set("dir", str(gone))
    gone.rmdir()  # as a full or vanished disk would: the snapshot cannot be written
    try:
        r.bgsave()
        wait_until(lambda: r.info("persistence")["rdb_bgsave_in_progress"] == 0 and
                   r.info("persistence")["rdb_last_bgsave_status"] == "err", 30, 0.1, "the failed snapshot")
        answers = writes(refusing)
        assert all(refused(a) for a in answers), [a.text for a in answers]
        assert "MISCONF" in answers[0].json()["error"]["message"]
    finally:
        r.config_set("dir", where)
        r.config_set("save", "")
        r.bgsave()
        wait_until(lambda: r.info("persistence")["rdb_last_bgsave_status"] == "ok", 30, 0.1, "a good snapshot")
    job = refusing.submit("Stored again.")
    assert refusing.wait_job(job["job_id"])["status"] == "succeeded"
