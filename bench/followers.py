"""Many followers: N websocket clients at once, each following its own job, on one system.

One system (embedded Redis, the web app under gunicorn as `make run` serves it, one Piper worker, as
tests/conftest.py's System starts them). N short jobs are submitted while no worker runs, and N websockets are
opened together, one per job, until every one has had its first event (the job queued): all N are then open at
once. Then the worker starts and every job runs while its follower listens. Printed:

- how many websockets were open at once, and how long opening them took
- GET /health latency (max, p99, median; probed every 0.1 s without a key, as a load balancer asks) while the
  websockets open, while they are all open, and while their jobs run (target: under 1 s throughout)
- events delivered per second while the jobs run, and how long each took from the worker to its client
- whether every client got every event of its job exactly once, in order, ending with `done` (each client's ids
  against the job's stream)
- the web process's threads, RSS, open files and CPU time, and Redis' connected clients

Usage: python bench/followers.py [-n 500] [--web-threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Follower, HealthProbe, System  # noqa: E402

SENTENCES = [
    "The kettle clicked off just as the rain began.",
    "She counted the steps to the harbour.",
    "Nobody answered the phone in the lighthouse that night.",
    "A small dog followed the postman to the station.",
    "The map was wrong about the river, but right about the bridge.",
]
RUN_TIMEOUT_S = 1800.0


class Sampler(threading.Thread):
    """The web process's threads, RSS and open files, and Redis' connected clients, every 0.5 s; their peaks."""

    def __init__(self, system: System):
        super().__init__(name="sampler", daemon=True)
        self.system = system
        self.peak: Counter = Counter()
        self.done = threading.Event()

    def sample(self) -> dict:
        master = psutil.Process(self.system.web.pid)
        proc = (master.children() or [master])[0]  # gunicorn's worker, where the app runs
        return {"threads": proc.num_threads(), "rss_mb": proc.memory_info().rss / 2**20, "fds": proc.num_fds(),
                "cpu_s": sum(proc.cpu_times()[:2]),
                "redis_clients": int(self.system.store.r.info("clients")["connected_clients"])}

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                for name, value in self.sample().items():
                    self.peak[name] = max(self.peak[name], value)
            except (psutil.Error, OSError):
                pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latencies(samples: list[tuple[float, float, str]], since: float, until: float) -> str:
    chosen = [s for s in samples if since <= s[0] <= until]
    if not chosen:
        return "no probes"
    seconds = [s[1] for s in chosen]
    failed = Counter(s[2] for s in chosen if s[2] != "200")
    return (f"max {max(seconds) * 1000:.0f} ms, p99 {percentile(seconds, 0.99) * 1000:.0f} ms, median "
            f"{statistics.median(seconds) * 1000:.0f} ms ({len(chosen)} probes"
            + (f"; not 200: {dict(failed)})" if failed else ")"))


def errors_logged(log: Path) -> Counter:
    """The exceptions in the web app's log, by their last line."""
    found: Counter = Counter()
    lines = log.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = next((j for j in range(i + 1, len(lines)) if not lines[j].startswith((" ", "Traceback"))), None)
            if end is not None:
                found[lines[end][:160]] += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="websocket clients, each on its own job")
    parser.add_argument("--web-threads", type=int, default=None, help="CHATTERBOX_WEB_THREADS for the web app")
    parser.add_argument("--open-timeout", type=float, default=120.0,
                        help="seconds the websockets may take to open before the jobs start without the rest")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-followers-") as tmp:
        system = System(Path(tmp), worker=False)
        system.env["CHATTERBOX_MAX_QUEUED_JOBS"] = str(args.n + 10)
        if args.web_threads:
            system.env["CHATTERBOX_WEB_THREADS"] = str(args.web_threads)
        system.start()
        sampler, probe = Sampler(system), HealthProbe(system.url)
        try:
            idle = sampler.sample()
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {system.api_key}"
            jobs = []
            for i in range(args.n):
                response = session.post(system.url + "/synthesize", timeout=60,
                                        json={"text": f"{SENTENCES[i % len(SENTENCES)]} This is job {i + 1}."})
                response.raise_for_status()
                jobs.append(response.json())
            sampler.start()
            probe.start()
            time.sleep(1.0)

            before_open = sampler.sample()
            opening = time.monotonic()
            followers = [Follower(system.api, job["events_url"], timeout=RUN_TIMEOUT_S) for job in jobs]
            for follower in followers:
                follower.start()
            for follower in followers:
                follower.opened.wait(max(0.0, opening + args.open_timeout - time.monotonic()))
            opened = sum(f.opened.is_set() for f in followers)
            all_open = time.monotonic()
            time.sleep(3.0)  # all open and idle
            open_sample = sampler.sample()

            running = time.monotonic()
            worker_started = time.time()
            system.start_worker(wait=False)
            for follower in followers:
                follower.join(max(0.0, running + RUN_TIMEOUT_S - time.monotonic()))
            finished = time.monotonic()
            after_run = sampler.sample()
            probe.stop()
            stored = {job["job_id"]: [e["id"] for e in system.store.events_after(job["job_id"])] for job in jobs}
            web_errors = errors_logged(system.root / "web.log")
        finally:
            probe.done.set()
            sampler.done.set()
            system.stop()

    exact = sum(1 for f, job in zip(followers, jobs) if not f.error and f.events and f.events[-1]["type"] == "done"
                and [e["id"] for e in f.events] == stored[job["job_id"]])
    duplicates = sum(len(f.events) - len({e["id"] for e in f.events}) for f in followers)
    missing = sum(len(set(stored[job["job_id"]]) - {e["id"] for e in f.events}) for f, job in zip(followers, jobs))
    errors = Counter(f.error[:70] for f in followers if f.error)
    live = [(event, at) for f in followers for event, at in zip(f.events, f.arrived) if at >= worker_started]
    lag = [at - event["ts"] for event, at in live]
    span = max(at for _, at in live) - min(at for _, at in live) if len(live) > 1 else 0.0
    samples = probe.samples

    print(f"clients: {args.n} websockets, each following its own job (piper, one CPU worker)"
          + (f", CHATTERBOX_WEB_THREADS={args.web_threads}" if args.web_threads else ""))
    print(f"open at once: {opened} of {args.n}, after {all_open - opening:.2f} s")
    print(f"/health while they opened:     {latencies(samples, opening, all_open)}")
    print(f"/health while all were open:   {latencies(samples, all_open, running)}")
    print(f"/health while the jobs ran:    {latencies(samples, running, finished)}")
    print(f"/health throughout:            {latencies(samples, opening, finished)}   (target: max < 1 s)")
    print(f"jobs ran in {finished - running:.1f} s; events delivered live: {len(live)} in {span:.1f} s = "
          f"{len(live) / span if span else 0:.1f} events/s")
    if lag:
        print(f"worker to client, per event: median {statistics.median(lag) * 1000:.1f} ms, "
              f"p99 {percentile(lag, 0.99) * 1000:.1f} ms, max {max(lag) * 1000:.1f} ms")
    print(f"exactly once, in order, ending with done: {exact} of {args.n} clients "
          f"({sum(len(ids) for ids in stored.values())} events in the streams; {duplicates} duplicates, "
          f"{missing} missing; client errors: {dict(errors) or 'none'})")
    per_open = (open_sample["cpu_s"] - before_open["cpu_s"]) / max(opened, 1)
    per_event = (after_run["cpu_s"] - open_sample["cpu_s"]) / max(len(live), 1)
    print(f"web process: threads {idle['threads']} idle, {open_sample['threads']} with all open, "
          f"{sampler.peak['threads']} at peak; RSS {idle['rss_mb']:.0f} MB idle, {open_sample['rss_mb']:.0f} MB "
          f"with all open, {sampler.peak['rss_mb']:.0f} MB at peak; open files {open_sample['fds']} with all "
          f"open, {sampler.peak['fds']} at peak")
    print(f"web process CPU: {per_open * 1000:.2f} ms per websocket opened (its replay and the probes included), "
          f"{per_event * 1000:.2f} ms per event delivered live (the probes included)")
    print(f"Redis connected clients: {idle['redis_clients']} idle, {open_sample['redis_clients']} with all open, "
          f"{sampler.peak['redis_clients']} at peak")
    print(f"web app errors logged: {sum(web_errors.values())}"
          + "".join(f"\n  {count} x {line}" for line, count in web_errors.most_common(5)))


if __name__ == "__main__":
    main()
