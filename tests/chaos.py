"""A chaos run: a book through `chatterbox up` (the embedded Redis, two CPU workers, the web app, all under the
supervisor) while workers are SIGKILLed every few seconds, one is frozen past its lease and thawed, Redis is killed
once and paused once for longer than the heartbeat TTL, and the whole system is stopped with Ctrl-C and started
again. Used by tests/test_chaos.py (a short book) and bench/chaos.py (a long one, with figures).

What it checks, against an undisturbed run of the same book (Piper with its noise at 0 is deterministic): every
chapter lasts what it lasts undisturbed; no chunk was made twice; no piece index repeats on the event stream of any
synthesis job sent meanwhile; no job is left running or queued; the book finished without a resume by hand.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatterbox.books.state import BookStore  # noqa: E402
from chatterbox.jobs import JOB_INDEX, RUNNING_SET, TERMINAL, JobStore  # noqa: E402
from chatterbox.settings import load  # noqa: E402
from tests.conftest import free_port, wait_until  # noqa: E402

QUIET = {"noise_scale": 0.0, "noise_w": 0.0}  # Piper without noise: the same text makes the same samples


@dataclass
class Disturbance:
    """What to do to the system, in seconds after the book was submitted (None: not at all)."""

    kill_every_s: float | None = 12.0  # SIGKILL a worker (the supervisor restarts it)
    freeze_at_s: float | None = None  # SIGSTOP a worker past its lease, then SIGCONT
    redis_kill_at_s: float | None = None
    redis_pause_at_s: float | None = None  # SIGSTOP Redis past the heartbeat TTL, then SIGCONT
    restart_at_s: float | None = None  # Ctrl-C the whole system, then `chatterbox up` again
    kills_max: int | None = None  # stop killing after this many


@dataclass
class Outcome:
    wall_s: float
    book: dict
    chapters: list[float]  # seconds of each chapter file
    renders: dict[int, int]
    jobs: list[str]
    events: list[str] = field(default_factory=list)  # what was done when
    problems: list[str] = field(default_factory=list)
    # Synthesis jobs whose worker was killed on every attempt (CHATTERBOX_MAX_ATTEMPTS): failed, saying why.
    jobs_failed_by_kills: int = 0


class Stack:
    """`chatterbox up` in a data directory of its own, found again after a restart."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.data = root / "data"
        self.web_port, self.redis_port = free_port(), free_port()
        self.key = "cbx-chaos-admin-" + os.urandom(8).hex()
        self.env = {**os.environ, **env, "CHATTERBOX_DATA_DIR": str(self.data), "CHATTERBOX_ADMIN_KEY": self.key,
                    "CHATTERBOX_WEB_PORT": str(self.web_port), "CHATTERBOX_REDIS_PORT": str(self.redis_port),
                    "TTS_ENGINE": "piper", "CHATTERBOX_DEVICES": "cpu", "CHATTERBOX_CPU_WORKERS": "2",
                    "CHATTERBOX_RATE_LIMIT_PER_MINUTE": "0", "CHATTERBOX_AUTH_FAILURES_PER_MINUTE": "0"}
        self.env.pop("REDIS_URL", None)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        self.starts += 1
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"up{self.starts}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "chatterbox", "up", "--no-flower"], env=self.env, cwd=ROOT,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: len(self.worker_pids()) == 2 and self._ready(), 180, 0.5, what="the system to start")

    def _ready(self) -> bool:
        try:
            return requests.get(self.url + "/health", headers=self.auth, timeout=5).json().get("status") == "ok" and \
                all(w["model_loaded"] and w["consuming"] for w in self.get("/health")["workers"])
        except (requests.RequestException, ValueError):
            return False

    def stop(self, timeout: float = 60) -> None:
        """Ctrl-C, as a person at the terminal would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def children(self, match) -> list[psutil.Process]:
        if not self.proc or self.proc.poll() is not None:
            return []
        found = []
        for child in psutil.Process(self.proc.pid).children(recursive=False):
            try:
                if match(child.cmdline()):
                    found.append(child)
            except psutil.Error:
                pass
        return found

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.children(lambda cmd: "worker" in cmd and "chatterbox" in cmd)]

    def redis_pid(self) -> int | None:
        found = self.children(lambda cmd: any("redis-server" in part for part in cmd))
        return found[0].pid if found else None

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str) -> dict:
        return requests.get(self.url + path, headers=self.auth, timeout=30).json()

    def post(self, path: str, body: dict) -> dict:
        response = requests.post(self.url + path, json=body, headers=self.auth, timeout=120)
        response.raise_for_status()
        return response.json()

    def store(self) -> JobStore:
        return JobStore.connect(load(environ={k: v for k, v in self.env.items() if k.startswith("CHATTERBOX_")}))


def run_book(root: Path, text: str, disturbance: Disturbance | None, env: dict[str, str],
             jobs_every_s: float | None = None, timeout_s: float = 3600) -> Outcome:
    """The book through a fresh system, disturbed or not, with a synthesis job sent every ``jobs_every_s`` meanwhile
    (the same load disturbed or not); the system is stopped at the end."""
    stack = Stack(root, env)
    stack.start()
    events: list[str] = []
    jobs: list[str] = []
    done = threading.Event()
    try:
        started = time.monotonic()
        book_id = stack.post("/audiobooks", {"text": text, "title": "Chaos", "params": QUIET})["job_id"]
        threads = [threading.Thread(target=_send_jobs, args=(stack, jobs_every_s, done, events, jobs), daemon=True)
                   ] if jobs_every_s else []
        if disturbance:
            threads.append(threading.Thread(target=_disturb, args=(stack, disturbance, started, done, events),
                                            daemon=True))
        for thread in threads:
            thread.start()
        book = wait_until(lambda: _finished(stack, book_id), timeout_s, 1.0, what="the book to finish")
        wall = time.monotonic() - started
        done.set()
        for thread in threads:
            thread.join(120)
        for job_id in jobs:
            wait_until(lambda: _finished(stack, job_id, "/jobs/"), 180, 0.5, what=f"job {job_id}")
        return _outcome(stack, book_id, book, wall, events, jobs)
    finally:
        done.set()
        stack.stop()
        stack.kill()


def _send_jobs(stack: Stack, every_s: float, done: threading.Event, events: list[str], jobs: list[str]) -> None:
    while not done.wait(every_s):
        try:
            jobs.append(stack.post("/synthesize", {"text": "A short message sent while the book is read. " * 4,
                                                   "params": QUIET})["job_id"])
        except requests.RequestException as exc:  # the system is restarting: the next one goes through
            events.append(f"(a synthesis job not sent: {type(exc).__name__})")


def _finished(stack: Stack, job_id: str, prefix: str = "/audiobooks/") -> dict | None:
    try:
        state = stack.get(prefix + job_id)
    except (requests.RequestException, ValueError):
        return None  # the system is restarting
    return state if state.get("status") in TERMINAL else None


def _disturb(stack: Stack, plan: Disturbance, started: float, done: threading.Event, events: list[str]) -> None:
    rng = random.Random(1)
    once = {"freeze": plan.freeze_at_s, "redis_kill": plan.redis_kill_at_s, "redis_pause": plan.redis_pause_at_s,
            "restart": plan.restart_at_s}
    next_kill, kills = plan.kill_every_s, 0
    ttl = float(stack.env.get("CHATTERBOX_HEARTBEAT_TTL_S", "10"))

    def note(what: str) -> None:
        events.append(f"{time.monotonic() - started:7.1f} s  {what}")

    while not done.wait(0.2):
        now = time.monotonic() - started
        try:
            if next_kill is not None and now >= next_kill and (plan.kills_max is None or kills < plan.kills_max):
                next_kill += plan.kill_every_s
                pids = stack.worker_pids()
                if pids:
                    victim = rng.choice(pids)
                    os.kill(victim, signal.SIGKILL)
                    kills += 1
                    note(f"SIGKILL worker {victim}")
            for name, at in list(once.items()):
                if at is None or now < at:
                    continue
                # A disturbance whose target is not there now (Redis just killed and not yet started again, no
                # worker up) waits for it: dropped, it once left a chaos run without its Redis pause.
                target = stack.redis_pid() if name.startswith("redis") else \
                    stack.worker_pids() if name == "freeze" else True
                if not target:
                    continue
                del once[name]
                if name == "freeze" and (pids := stack.worker_pids()):
                    victim = rng.choice(pids)
                    note(f"SIGSTOP worker {victim} for {ttl + 2:.0f} s")
                    os.kill(victim, signal.SIGSTOP)
                    time.sleep(ttl + 2)
                    os.kill(victim, signal.SIGCONT)
                    note(f"SIGCONT worker {victim}")
                elif name == "redis_kill" and (pid := stack.redis_pid()):
                    os.kill(pid, signal.SIGKILL)
                    note(f"SIGKILL redis {pid}")
                elif name == "redis_pause" and (pid := stack.redis_pid()):
                    note(f"SIGSTOP redis {pid} for {ttl + 2:.0f} s")
                    os.kill(pid, signal.SIGSTOP)
                    time.sleep(ttl + 2)
                    os.kill(pid, signal.SIGCONT)
                    note(f"SIGCONT redis {pid}")
                elif name == "restart":
                    note("Ctrl-C the whole system")
                    stack.stop()
                    stack.start()
                    note("started again")
        except (requests.RequestException, ProcessLookupError, psutil.Error) as exc:
            note(f"(while disturbing: {type(exc).__name__}: {exc})")


def _outcome(stack: Stack, book_id: str, book: dict, wall: float, events: list[str], jobs: list[str]) -> Outcome:
    store = stack.store()
    problems = []
    chapters = [float(c.get("duration_s") or 0.0) for c in book.get("chapters", [])]
    if book["status"] != "succeeded":
        problems.append(f"the book {book['status']}: {book.get('error')}")
    renders = BookStore(store).renders(book_id)
    if any(n > 1 for n in renders.values()):
        problems.append(f"chunks made more than once: {sorted(i for i, n in renders.items() if n > 1)}")
    history = store.events_after(book_id)
    if any(e.get("message") == "resumed" for e in history):
        problems.append("the book was resumed by hand")
    failed_by_kills = 0
    for job_id in jobs:
        indexes = [e["index"] for e in store.events_after(job_id) if e["type"] == "chunk"]
        if indexes != list(range(len(indexes))):
            problems.append(f"job {job_id} sent pieces {indexes}")
        job = store.get(job_id)
        if job["status"] == "failed" and "not retried again" in job.get("error", ""):
            failed_by_kills += 1
        elif job["status"] != "succeeded":
            problems.append(f"job {job_id} {job['status']}: {job.get('error')}")
    if store.r.smembers(RUNNING_SET):
        problems.append(f"jobs left running: {sorted(store.r.smembers(RUNNING_SET))}")
    unfinished = [j for j in store.r.zrange(JOB_INDEX, 0, -1) if (store.get(j) or {}).get("status") not in TERMINAL]
    if unfinished:
        problems.append(f"jobs left unfinished: {unfinished}")
    return Outcome(wall_s=wall, book=book, chapters=chapters, renders=renders, jobs=jobs, events=events,
                   problems=problems, jobs_failed_by_kills=failed_by_kills)


def compare(calm: Outcome, chaos: Outcome, tolerance_s: float = 0.01) -> list[str]:
    """Problems of the disturbed run, and chapters whose duration differs from the undisturbed run's."""
    problems = list(chaos.problems)
    if len(calm.chapters) != len(chaos.chapters):
        problems.append(f"{len(chaos.chapters)} chapters, undisturbed {len(calm.chapters)}")
    for i, (a, b) in enumerate(zip(calm.chapters, chaos.chapters)):
        if abs(a - b) > tolerance_s:
            problems.append(f"chapter {i + 1} lasts {b:.3f} s, undisturbed {a:.3f} s")
    return problems
