"""Retention: finished work is kept for its period and then deleted whole (record, events, files), unfinished work
never; the chunk cache keeps what kept books use; uploads do not leak; Redis stays bounded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from chatterbox import redis_server, retention
from chatterbox.jobs import JOB_INDEX, JobStore, job_key
from chatterbox.keys import KeyStore
from chatterbox.settings import load

from .conftest import ROOT, free_port

DAY = 24 * 3600


@pytest.fixture()
def store(fresh_redis, redis_url, tmp_path):
    return JobStore.connect(load({"redis_url": redis_url, "data_dir": tmp_path / "data"}, environ={}))


def aged(path: Path, days: float) -> Path:
    when = time.time() - days * DAY
    os.utime(path, (when, when))
    return path


def write(path: Path, data: bytes = b"x" * 1000, days: float = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return aged(path, days)


def job(store: JobStore, job_id: str, *, days: float, status: str | None = "succeeded", kind="synthesize",
        **extra) -> dict:
    """A job created ``days`` ago that ended (with ``status``) as long ago, or is still unfinished (None)."""
    store.create(job_id, text="Hello.", voice="joe", format="wav", params=extra.pop("params", {}), engine="piper",
                 source="test", kind=kind, **extra)
    when = time.time() - days * DAY
    store.r.hset(job_key(job_id), "created_at", when)
    store.r.zadd(JOB_INDEX, {job_id: when})
    if status:
        store.finish(job_id, status, output=f"{job_id}.wav" if kind == "synthesize" else "book.m4b")
        store.r.hset(job_key(job_id), "finished_at", when)
    return store.get(job_id)


def test_finished_jobs_past_retention_go_whole_and_nothing_else(store):
    s = store.settings
    old = job(store, "old", days=31)
    write(s.outputs_dir / "old.wav", days=31)
    store.put_chunk("old", 0, b"RIFF")
    job(store, "recent", days=29)
    write(s.outputs_dir / "recent.wav", days=29)
    job(store, "waiting", days=40, status=None)  # unfinished work is never swept, however old
    job(store, "oldbook", days=31, kind="audiobook")
    write(s.books_dir / "oldbook" / "chapters" / "001.mp3", days=31)
    orphan = write(s.outputs_dir / "lost-record.wav", days=40)  # its record is gone (a Redis reset)
    fresh_orphan = write(s.outputs_dir / "new-lost.wav", days=1)
    dry = retention.sweep(store, dry_run=True)
    assert (dry.jobs, dry.orphans) == (2, 1) and (s.outputs_dir / "old.wav").exists() and store.get("old")
    report = retention.sweep(store)
    assert sorted(report.deleted) == ["old", "oldbook"] and report.orphans == 1 and report.bytes >= 3000
    assert store.get("old") is None and not store.events_after("old") and store.get_chunk("old", 0) is None
    assert not (s.outputs_dir / "old.wav").exists() and not (s.books_dir / "oldbook").exists()
    assert not orphan.exists() and fresh_orphan.exists()
    assert store.get("recent") and (s.outputs_dir / "recent.wav").exists() and store.get("waiting")
    assert "old" not in store.r.zrange(JOB_INDEX, 0, -1)
    assert old["id"] == "old"


def test_the_chunk_cache_keeps_what_kept_books_use(store, tmp_path):
    from chatterbox.books.plan import chunk_paths

    s = store.settings
    keys = {name: name * 32 for name in "abc"}  # unused and old, used by a kept book, used recently

    def chunk(key: str, days: float) -> None:
        wav, meta = chunk_paths(s, key)
        write(wav, days=days)
        write(meta, b"{}", days=days)

    chunk(keys["a"], 40)
    chunk(keys["b"], 40)
    chunk(keys["c"], 40)
    retention.touch_chunk(s, keys["c"])  # reused by a book just now
    job(store, "kept", days=5, kind="audiobook")
    plan = {"chunks": [{"key": keys["b"]}]}
    write(s.books_dir / "kept" / "plan.json", json.dumps(_plan_with(plan)).encode())
    report = retention.sweep(store)
    assert report.chunks == 1
    assert not any(p.exists() for p in chunk_paths(s, keys["a"]))
    assert all(p.exists() for p in chunk_paths(s, keys["b"]) + chunk_paths(s, keys["c"]))


def _plan_with(partial: dict) -> dict:
    """A minimal plan.json naming the given chunk keys."""
    chunks = [{"index": i, "chapter": 0, "text": "Hi.", "brk": "chapter", "params": {}, "key": c["key"]}
              for i, c in enumerate(partial["chunks"])]
    return {"job_id": "kept", "title": "T", "author": "", "language": "en", "engine": "piper", "model": "piper",
            "voice": "joe", "params": {}, "format": "mp3", "sample_rate": 22050, "assembly": {},
            "chapters": [{"index": 0, "title": "One", "first": 0, "count": len(chunks), "words": 1}],
            "chunks": chunks}


def test_uploads_never_leak(store):
    s = store.settings
    clip = write(s.uploads_dir / "q.audio")
    job(store, "q", days=0, status=None, audio_prompt=str(clip.resolve()))
    assert store.cancel("q") == "cancelled" and not clip.exists()  # cancelled while queued: gone at once
    mine = write(s.data_dir / "my-recording.wav")  # a caller's own file, sent through the Celery API
    job(store, "c", days=0, status=None, kind="clone", params={"upload": str(mine), "keep_upload": True})
    store.finish("c", "failed", error="boom")
    assert mine.exists()
    leaked = write(s.uploads_dir / "f.audio", days=0.1)  # its job ended without deleting it (a crash)
    job(store, "f", days=0, status="failed")
    waiting = write(s.uploads_dir / "w.audio", days=0.1)
    job(store, "w", days=0, status=None, audio_prompt=str(waiting.resolve()))
    retention.sweep(store)
    assert not leaked.exists() and waiting.exists()


def test_redis_bounds_what_a_finished_job_keeps(store):
    job(store, "j", days=0, status=None)
    store.put_chunk("j", 0, b"RIFF" * 1000)
    assert store.r.ttl(job_key("j")) == -1  # unfinished: no expiry
    store.finish("j", "succeeded")
    assert 0 < store.r.ttl(f"{job_key('j')}:pieces") <= store.settings.piece_ttl_s  # the file is the lasting copy
    assert store.settings.retention_s < store.r.ttl(job_key("j")) <= store.settings.retention_s + DAY


def test_retention_off_keeps_everything(fresh_redis, redis_url, tmp_path):
    store = JobStore.connect(load({"redis_url": redis_url, "data_dir": tmp_path, "retention_days": 0}, environ={}))
    job(store, "ancient", days=400)
    assert retention.sweep(store).jobs == 0 and store.get("ancient") and store.r.ttl(job_key("ancient")) == -1


def test_the_embedded_redis_caps_its_memory_and_never_evicts(tmp_path):
    port = free_port()
    proc = redis_server.start(port, tmp_path / "redis", maxmemory_mb=64, stdout=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port, decode_responses=True)
        config = {**r.config_get("maxmemory"), **r.config_get("maxmemory-policy"),
                  **r.config_get("aof-use-rdb-preamble"), **r.config_get("auto-aof-rewrite-min-size")}
        assert config == {"maxmemory": str(64 * 2**20), "maxmemory-policy": "noeviction",
                          "aof-use-rdb-preamble": "yes", "auto-aof-rewrite-min-size": str(64 * 2**20)}
        r.set("queue-and-records", "stay")
        blob = "x" * 2**20
        with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
            for i in range(100):
                r.set(f"fill:{i}", blob)
        assert r.get("queue-and-records") == "stay"
    finally:
        proc.terminate()
        proc.wait(10)


def test_gc_on_the_command_line(store, redis_url):
    job(store, "old", days=31)
    write(store.settings.outputs_dir / "old.wav", days=31)
    env = {**os.environ, "REDIS_URL": redis_url, "CHATTERBOX_DATA_DIR": str(store.settings.data_dir)}
    dry = subprocess.run([sys.executable, "-m", "chatterbox", "gc", "--dry-run"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and "would delete 1 finished jobs" in dry.stdout and store.get("old")
    out = subprocess.run([sys.executable, "-m", "chatterbox", "gc", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["swept"]["jobs"] == 1 and store.get("old") is None
    assert set(figures["kept"]["disk"]) == {"outputs", "books", "chunks", "uploads", "voices"}
    assert figures["kept"]["redis"]["used_memory"] > 0


def test_storage_figures_are_for_admins(live):
    token = KeyStore(live.store.r).create(f"plain-{time.time_ns()}")[1]
    refused = requests.get(f"{live.url}/storage", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    body = live.api.get("/storage", timeout=30).json()
    assert body["retention_days"] == 30 and body["disk"]["outputs"]["files"] >= 0
    assert body["redis"]["maxmemory_policy"] and body["jobs"] >= 0
