"""Audiobook throughput: the same book with one worker and with two, each worker pinned to its own core.

A generated book (default about 20,000 words in 10 chapters) goes through the whole system twice, each time in
a fresh data directory so that no chunk comes from the cache: REST in, Redis, the workers on the bulk queue, chapter
and M4B assembly. Printed side by side from one run:

- audio hours produced per wall-clock hour with one worker and with two, and their ratio (target >= 1.8)
- time spent planning (in the web request) and assembling (chapters and the M4B) as a fraction of the book's
  total time (target < 5 %): of all the workers' time (wall time x workers), since chapter assembly runs on one
  worker while the others synthesize; and the tail, from the last chunk made to the book done, which adds to the
  wall time directly

Usage: python bench/audiobook.py [--words 20000] [--chapters 10] [--no-checks]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Process, System, wait_until  # noqa: E402

SUBJECTS = ["The old sailor", "A tired clerk", "The youngest daughter", "Her brother", "The village doctor",
            "A stranger in a grey coat", "The baker", "Nobody in the house", "The schoolteacher", "A small boy"]
VERBS = ["walked slowly to", "looked for a long time at", "remembered", "wrote a letter about", "laughed at",
         "carried a lamp to", "never spoke of", "waited quietly near", "painted", "dreamed about"]
OBJECTS = ["the harbour wall", "the empty station", "the garden behind the church", "a broken clock",
           "the letters in the drawer", "the road to the mountains", "the river in winter", "the lighthouse",
           "an unfinished song", "the kitchen window"]
ENDINGS = ["before the rain came.", "as the bells rang out.", "and then went home.", "without a word.",
           "while the others slept.", "for the first time that year.", "under a pale moon.", "with great care."]


def make_book(words: int, chapters: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    per_chapter = words // chapters
    parts = []
    for c in range(chapters):
        paragraphs, count = [], 0
        while count < per_chapter:
            sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}"
                         for _ in range(rng.randint(3, 6))]
            paragraph = " ".join(sentences)
            paragraphs.append(paragraph)
            count += len(paragraph.split())
        parts.append(f"Chapter {c + 1}\n\n" + "\n\n".join(paragraphs))
    return "\n\n".join(parts)


def start_pinned_worker(system: System, name: str, core: int) -> Process:
    env = {**system.env, "CHATTERBOX_THREADS": "1", "OMP_NUM_THREADS": "1"}
    worker = Process(["worker", "--name", name], env, system.root / f"{name}.log").start()
    # The interpreter has not started any thread yet: every thread it makes inherits this one core.
    os.sched_setaffinity(worker.pid, {core})
    system.workers.append(worker)
    system.wait_worker(worker)
    return worker


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children so far (user + system)."""
    import psutil

    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:4])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def run(text: str, workers: int, checks: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-book-") as tmp:
        system = System(Path(tmp), worker=False)
        system.env.update(CHATTERBOX_BOOK_QUALITY_CHECKS="1" if checks else "0")
        system.settings = system.settings.replace(book_quality_checks=checks)
        system.start()
        try:
            cores = sorted(os.sched_getaffinity(0))
            for i in range(workers):
                start_pinned_worker(system, f"bench{i}", cores[i % len(cores)])
            procs = [("web", system.web), *((f"worker {i}", w) for i, w in enumerate(system.workers)),
                     ("redis", system.redis.proc)]
            cpu_before = {name: _cpu_seconds(proc.pid) for name, proc in procs}
            started = time.perf_counter()
            response = system.api.post("/audiobooks", json={"text": text, "title": "Bench"}, timeout=600)
            response.raise_for_status()
            job_id = response.json()["job_id"]
            state = wait_until(lambda: (b := system.api.get(f"/audiobooks/{job_id}", timeout=30).json())
                               ["status"] in ("succeeded", "failed") and b, 24 * 3600, interval=1.0, what="the book")
            wall = time.perf_counter() - started
            if state["status"] != "succeeded":
                raise SystemExit(f"the book failed: {state.get('error')}")
            last_chunk = max(float(e["ts"]) for e in system.store.events_after(job_id)
                             if e["type"] == "progress" and "chapter" in e)
            cpu = {name: _cpu_seconds(proc.pid) - cpu_before[name] for name, proc in procs}
            tail = float(state["finished_at"]) - last_chunk
            return {"workers": workers, "wall_s": wall, "audio_s": state["duration_s"], "plan_s": state["plan_s"],
                    "assembly_s": state["assembly_s"], "chunks": state["chunks_total"], "tail_s": tail, "cpu": cpu}
        finally:
            system.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=20000)
    parser.add_argument("--chapters", type=int, default=10)
    parser.add_argument("--no-checks", action="store_true", help="skip the per-chunk quality checks (ASR)")
    args = parser.parse_args()
    text = make_book(args.words, args.chapters)
    print(f"book: {len(text.split())} words, {args.chapters} chapters; quality checks "
          f"{'off' if args.no_checks else 'on'}; {len(os.sched_getaffinity(0))} cores")
    results = [run(text, n, not args.no_checks) for n in (1, 2)]
    for r in results:
        rate = r["audio_s"] / r["wall_s"]
        overhead = (r["plan_s"] + r["assembly_s"]) / (r["wall_s"] * r["workers"])
        print(f"{r['workers']} worker(s): {r['chunks']} chunks, {r['audio_s'] / 60:.1f} min of audio in "
              f"{r['wall_s']:.1f} s = {rate:.2f} audio hours per hour; planning {r['plan_s']:.2f} s + assembly "
              f"{r['assembly_s']:.2f} s = {overhead:.1%} of the workers' time; tail after the last chunk "
              f"{r['tail_s']:.2f} s = {r['tail_s'] / r['wall_s']:.1%} of the wall time")
        print("    CPU seconds during the book: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in r["cpu"].items()))
        r["rate"] = rate
    print(f"scaling, two workers / one: {results[1]['rate'] / results[0]['rate']:.2f} (target >= 1.8)")


if __name__ == "__main__":
    main()
