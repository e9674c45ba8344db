"""One worker, many jobs at once: a Chatterbox worker (random weights) runs jobs together in one batch, each job's
audio the very audio it gets alone, interactive jobs ahead of book chunks, and a worker killed mid-batch loses
nothing."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from .conftest import System, wait_until

PARAMS = {"max_new_tokens": 20, "steps": 2}
TEXTS = ["The first of several jobs.", "A second one, at the same time.", "And a third.", "A fourth, the last."]


@pytest.fixture(scope="module")
def batching(tmp_path_factory, random_checkpoint) -> System:
    system = System(tmp_path_factory.mktemp("batching"))
    system.env.update(TTS_ENGINE="chatterbox", CHATTERBOX_MODEL_DIR=str(random_checkpoint),
                      CHATTERBOX_MAX_BATCH="4", CHATTERBOX_BOOK_QUALITY_CHECKS="0")
    system.start()
    yield system
    system.stop()


def submit_all(system: System, texts: list[str], seeds: list[int]) -> list[str]:
    return [system.submit(t, params={**PARAMS, "seed": s}, format="wav")["job_id"] for t, s in zip(texts, seeds)]


def audio_of(system: System, job_id: str) -> bytes:
    done = system.wait_job(job_id, timeout=300)
    assert done["status"] == "succeeded", done
    return system.api.get(f"/jobs/{job_id}/audio", timeout=30).content


def watch_batches(system: System, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        for worker in system.store.workers():
            seen.append(int((worker.get("batch") or {}).get("active", 0)))
        time.sleep(0.05)


def test_jobs_run_together_and_each_sounds_as_it_does_alone(batching):
    seeds = [11, 12, 13, 14]
    alone = [audio_of(batching, submit_all(batching, [t], [s])[0]) for t, s in zip(TEXTS, seeds)]
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=watch_batches, args=(batching, stop, seen))
    watcher.start()
    try:
        together = [audio_of(batching, j) for j in submit_all(batching, TEXTS, seeds)]
    finally:
        stop.set()
        watcher.join()
    assert max(seen) >= 2, seen  # the worker's heartbeat showed jobs decoded together
    assert together == alone  # byte for byte: the same tokens, the same waveform
    health = batching.api.get("/health", timeout=10).json()
    batch = health["workers"][0]["batch"]
    assert batch["max_batch"] == 4 and batch["capacity"] >= 5


def test_an_interactive_job_is_taken_while_a_book_fills_the_batch(batching):
    book = batching.api.post("/audiobooks", timeout=30, json={
        "text": "\n\n".join(f"Paragraph {i} of a book that fills the worker for a while." for i in range(8)),
        "params": PARAMS}).json()
    wait_until(lambda: any((w.get("batch") or {}).get("bulk", 0) >= 2 for w in batching.store.workers()), 120, 0.1,
               "book chunks in the batch")
    job = batching.submit("Me first, please.", params={**PARAMS, "seed": 3})
    done = batching.wait_job(job["job_id"], timeout=300)
    assert done["status"] == "succeeded"
    book_now = batching.api.get(f"/audiobooks/{book['job_id']}", timeout=10).json()
    assert book_now["status"] == "running" and book_now["chunks_done"] < book_now["chunks_total"], \
        "the interactive job waited for the whole book"
    assert done["queued_s"] < 10, done  # taken by a thread kept for interactive jobs, not after the book
    batching.api.post(f"/audiobooks/{book['job_id']}/cancel", timeout=10)


def test_a_worker_killed_mid_batch_loses_no_job(batching):
    batching.ensure_worker()
    jobs = submit_all(batching, TEXTS, [21, 22, 23, 24])
    wait_until(lambda: any((w.get("batch") or {}).get("active", 0) >= 2 for w in batching.store.workers()), 120,
               0.05, "a batch running")
    batching.worker.kill(signal.SIGKILL)
    batching.start_worker()
    for job_id in jobs:  # each one reaped from the dead worker and run again, or never started there
        done = batching.wait_job(job_id, timeout=300)
        assert done["status"] == "succeeded", done
