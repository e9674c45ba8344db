"""What the job system costs: the same N short texts synthesized in-process and through the whole system.

In-process: the engine, chunking and WAV encoding in this process, nothing else. Through the system: REST in,
Redis, one Celery worker, websocket events out (the web app under gunicorn, as `make run` serves it). Printed
side by side from one run:

- throughput of the system as a ratio of in-process throughput (all N submitted at once; target >= 0.9)
- median added latency per job: submit-to-done over the websocket minus in-process time for the same text,
  jobs one at a time, each job measured right after its in-process twin (target < 15 ms)
- time from submit to the first audio chunk event

Usage: python bench/queue_overhead.py [-n 20]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatterbox import audio  # noqa: E402
from chatterbox.engines import create_engine  # noqa: E402
from chatterbox.synthesis import synthesize_text  # noqa: E402
from tests.conftest import System  # noqa: E402

SENTENCES = [
    "The kettle clicked off just as the rain began.",
    "She counted the steps to the harbour, and there were exactly forty.",
    "Nobody answered the phone in the lighthouse that night.",
    "A small dog followed the postman all the way to the station.",
    "The map was wrong about the river, but right about the bridge.",
]


def texts(n: int) -> list[str]:
    return [f"{SENTENCES[i % len(SENTENCES)]} This is text number {i + 1}." for i in range(n)]


def in_process(engine, settings, text: str) -> float:
    started = time.perf_counter()
    samples = synthesize_text(engine, text, engine.default_voice, engine.validate({}), settings)
    audio.wav_bytes(samples, engine.sample_rate)
    return time.perf_counter() - started


def through_system(system: System, text: str) -> tuple[float, float]:
    """Seconds from submit to the done event, and to the first chunk event."""
    started = time.perf_counter()
    job = system.api.post("/synthesize", json={"text": text}, timeout=60).json()
    conn = system.api.ws(job["events_url"], timeout=120)
    first_chunk = None
    try:
        while True:
            event = json.loads(conn.recv())
            if event["type"] == "chunk" and first_chunk is None:
                first_chunk = time.perf_counter() - started
            if event["type"] in ("done", "error"):
                assert event["type"] == "done", event
                return time.perf_counter() - started, first_chunk
    finally:
        conn.close()


def burst(system: System, batch: list[str]) -> float:
    """Submit all at once; seconds until the last is done."""
    started = time.perf_counter()
    jobs = [system.api.post("/synthesize", json={"text": t}, timeout=60).json() for t in batch]
    for job in jobs:
        conn = system.api.ws(job["events_url"], timeout=300)
        try:
            while json.loads(conn.recv())["type"] not in ("done", "error"):
                pass
        finally:
            conn.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="number of texts")
    args = parser.parse_args()
    batch = texts(args.n)

    with tempfile.TemporaryDirectory() as tmp:
        system = System(Path(tmp)).start()
        try:
            engine = create_engine(system.settings, name="piper")
            engine.load()
            in_process(engine, system.settings, batch[0])  # warm both sides alike
            through_system(system, batch[0])

            # Interleaved, so that whatever else the machine does falls on both sides alike.
            local, remote = [], []
            for text in batch:
                local.append(in_process(engine, system.settings, text))
                remote.append(through_system(system, text))
            local_burst = system_burst = float("inf")
            for _ in range(2):  # the better of two rounds each
                local_burst = min(local_burst, sum(in_process(engine, system.settings, t) for t in batch))
                system_burst = min(system_burst, burst(system, batch))
        finally:
            system.stop()

    added = [r[0] - l for r, l in zip(remote, local)]
    first = [r[1] for r in remote]
    print(f"texts: {args.n} short texts, one CPU worker, piper engine")
    print(f"in-process: {args.n / local_burst:.2f} jobs/s   through the system: {args.n / system_burst:.2f} jobs/s")
    print(f"throughput ratio (system / in-process): {local_burst / system_burst:.3f}   (target >= 0.9)")
    print(f"median in-process time per job: {statistics.median(local) * 1000:.1f} ms")
    print(f"median added latency per job: {statistics.median(added) * 1000:.1f} ms   (target < 15 ms)")
    print(f"median submit to first audio chunk: {statistics.median(first) * 1000:.1f} ms   "
          f"(submit to done: {statistics.median(r[0] for r in remote) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
