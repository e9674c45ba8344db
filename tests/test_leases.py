"""Leases with real worker processes: a worker frozen past its lease wakes to find its job taken and writes nothing;
a worker that dies is noticed at once (its Redis connections close), well before its lease would run out; the job
resumes where it stopped, and no listener is sent a piece twice."""
from __future__ import annotations

import io
import os
import signal
import time
import wave

import pytest

from chatterbox.settings import load

from .conftest import System, wait_until
from .test_system import PARAGRAPH

LEASE_TTL_S = 6  # longer than a killed worker may take to be noticed (3 s): only its closed connections tell so soon


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two workers on one system."""
    system = System(tmp_path_factory.mktemp("pair"))
    system.env.update(CHATTERBOX_HEARTBEAT_TTL_S=str(LEASE_TTL_S))
    system.settings = load(environ=system.env)
    system.start()
    system.start_worker()
    yield system
    system.stop()


def both_running(system: System) -> None:
    alive = [w for w in system.workers if w.alive()]
    for _ in range(2 - len(alive)):
        system.start_worker()


def holder_of(system: System, job_id: str):
    """The worker process running a job (from the instance in its record: host:pid:nonce)."""
    instance = system.store.get(job_id)["worker_instance"]
    pid = int(instance.split(":")[1])
    return next(w for w in system.workers if w.pid == pid)


def started(system: System, job_id: str, chunks: int = 1) -> dict:
    return wait_until(lambda: (j := system.store.get(job_id))["status"] == "running"
                      and j.get("chunks_done", 0) >= chunks and j, 60, interval=0.05, what="the job to be under way")


def check_sent_once(system: System, job_id: str) -> None:
    """Every piece index sent once, in order, and the file is what was sent (pieces and the gaps between chunks)."""
    events = system.store.events_after(job_id)
    chunks = [e for e in events if e["type"] == "chunk"]
    assert [c["index"] for c in chunks] == list(range(len(chunks))), [c["index"] for c in chunks]
    audio = system.api.get(f"/jobs/{job_id}/audio", timeout=10)
    with wave.open(io.BytesIO(audio.content)) as w:
        seconds = w.getnframes() / w.getframerate()
    texts = len({c["text_index"] for c in chunks})
    sent = sum(c["duration_s"] for c in chunks) + system.settings.chunk_gap_s * (texts - 1)
    assert seconds == pytest.approx(sent, abs=0.01 * len(chunks) + 0.01)


def test_a_frozen_worker_wakes_to_find_its_job_taken_and_writes_nothing(pair):
    both_running(pair)
    # Frozen, the job cannot end before the other worker takes it: a few chunks are enough (each left is a second).
    job_id = pair.submit(PARAGRAPH * 4)["job_id"]
    started(pair, job_id)
    frozen = holder_of(pair, job_id)
    os.killpg(frozen.pid, signal.SIGSTOP)  # a GC pause, a swap storm, a VM stopped and resumed
    try:
        # Its connections stay open: only its lease running out lets the other worker take the job.
        taken = wait_until(lambda: (j := pair.store.get(job_id))["attempt"] == 2 and j["status"] == "running" and j,
                           LEASE_TTL_S + 20, interval=0.1, what="the other worker to take the job")
        assert holder_of(pair, job_id) is not frozen
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    final = pair.wait_job(job_id, timeout=180)
    assert final["status"] == "succeeded" and final["attempt"] == 2, final
    assert "stopped while running this job (attempt 1 of 2)" in final["last_error"]
    check_sent_once(pair, job_id)
    wait_until(lambda: "stopped without writing" in frozen.output(), 30, what="the thawed worker to stop")
    assert frozen.alive() and taken["chunks_done"] >= 1
    # and it goes on serving
    again = pair.submit("The thawed worker is fine.")
    assert pair.wait_job(again["job_id"])["status"] == "succeeded"


def test_a_killed_worker_is_noticed_at_once_and_its_job_resumes(pair):
    both_running(pair)
    job_id = pair.submit(PARAGRAPH * 6)["job_id"]  # chunks left after the kill, about a second each
    before = started(pair, job_id, chunks=2)
    victim = holder_of(pair, job_id)
    killed_at = time.monotonic()
    victim.kill(signal.SIGKILL)
    wait_until(lambda: (j := pair.store.get(job_id))["attempt"] == 2 and j["status"] == "running", 15,
               interval=0.05, what="the job to be taken back")
    taken_after = time.monotonic() - killed_at
    assert taken_after < 3.0, f"taken back {taken_after:.1f} s after the kill (its lease: {LEASE_TTL_S} s)"
    final = pair.wait_job(job_id, timeout=180)
    assert final["status"] == "succeeded" and final["attempt"] == 2
    check_sent_once(pair, job_id)
    events = pair.store.events_after(job_id)
    resumed = next(e for e in events if "resuming at text chunk" in e.get("message", ""))
    assert resumed["chunks_done"] >= before["chunks_done"]  # what was made before the kill was not made again
