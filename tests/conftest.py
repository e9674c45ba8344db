"""Fixtures that start the real thing: the embedded Redis, real worker processes and the web app under gunicorn."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pytest
import redis
import requests
from requests.structures import CaseInsensitiveDict

from chatterbox import redis_server
from chatterbox.jobs import JobStore
from chatterbox.model.rowmatmul import set_plan_cache
from chatterbox.settings import load

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Piper's voice with its phoneme durations (63 MB) is made once for the whole run, not once per test's data directory:
# every System and every load() of the tests reads this from the environment.
os.environ.setdefault("CHATTERBOX_PIPER_DIR", str(Path(tempfile.gettempdir()) / f"chatterbox-test-piper-{os.getuid()}"))
# Likewise the CPU's plan for row-exact matmuls (chatterbox.model.rowmatmul, seconds a model to make): made by the
# first process that loads a model, read by every other test process and worker.
os.environ.setdefault("CHATTERBOX_PLAN_CACHE",
                      str(Path(tempfile.gettempdir()) / f"chatterbox-test-plans-{os.getuid()}.json"))
set_plan_cache(os.environ["CHATTERBOX_PLAN_CACHE"])
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# `make test` runs the suite in one test process per core (pytest-xdist), scheduled here: each module stays in one
# process, since its module fixtures are whole systems. The modules that write a checkpoint of 1-2 GB (Turbo,
# Multilingual) share one process, so that no more of them are on disk at once than in a serial run
# (CI's disk once ran out). The longest go first, so that the processes end together instead of one finishing a long
# module alone (xdist's own order, most tests first, had put test_chaos, 70 s, last: one process ran alone for
# 60 s). Seconds each group took on the 2-core machine (2026-12-05, two processes); only the order depends on them,
# and a module not named here goes after these, in file order.
SECONDS = {"big-checkpoints": 190, "tests/test_chaos.py": 75, "tests/test_books.py": 74, "tests/test_voices.py": 43,
           "tests/test_pages.py": 40, "tests/test_book_limits.py": 38, "tests/test_runtime_install.py": 37,
           "tests/test_readalong.py": 33, "tests/test_worker_batching.py": 33, "tests/test_dashboard.py": 33,
           "tests/test_followers.py": 31, "tests/test_books_page.py": 30, "tests/test_system.py": 28,
           "tests/test_leases.py": 27, "tests/test_cli.py": 27, "tests/test_multihost.py": 27,
           "tests/test_voice_access.py": 26, "tests/test_chatterbox.py": 25, "tests/test_epub_readalong.py": 25,
           "tests/test_up.py": 25, "tests/test_openapi.py": 24, "tests/test_job_index.py": 24,
           "tests/test_voices_page.py": 24, "tests/test_limits.py": 17, "tests/test_kubernetes.py": 16,
           "tests/test_batching.py": 15, "tests/test_assemble.py": 14, "tests/test_model_s3gen.py": 12,
           "tests/test_model_t3.py": 11, "tests/test_auth.py": 11, "tests/test_lexicon.py": 12,
           "tests/test_units.py": 10, "tests/test_openai.py": 10, "tests/test_signin.py": 7}
BIG_CHECKPOINTS = re.compile(r"\b(turbo_checkpoint|mtl_checkpoint)\b")


@functools.cache
def schedule_source(path: str) -> str:
    """A test module's source text ("" for anything else)."""
    return (ROOT / path).read_text() if path.endswith(".py") and (ROOT / path).is_file() else ""


@functools.cache
def schedule_group(path: str) -> str:
    """The group a test module runs in: its own, or the checkpoint modules' (those that name such a fixture)."""
    return "big-checkpoints" if BIG_CHECKPOINTS.search(schedule_source(path)) else path


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook; the suite also runs without it
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return schedule_group(nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False  # hand the groups out in the order collected (below), not by test count
    return ModuleGroups(config, log)


def checkpoints_order(path: str) -> int:
    """Within the checkpoint modules: Turbo's alone, then both, then Multilingual's alone, so that each of the two
    checkpoints is written once and kept while the modules that need it run (kept_checkpoint)."""
    named = set(BIG_CHECKPOINTS.findall(schedule_source(path)))
    return 0 if named == {"turbo_checkpoint"} else 2 if named == {"mtl_checkpoint"} else 1


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the scheduler hands out groups in this order
        def key(item) -> tuple[int, int]:
            path = item.nodeid.split("::", 1)[0]
            return -SECONDS.get(schedule_group(path), 0), checkpoints_order(path)

        items.sort(key=key)


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()



# -- the key a test request carries is in the test ---------------------------------------------------------------
# The API requires a key on every route. A System's ``api`` sends its admin key, ``api_as(token)`` another key, and
# a bare requests call none: which one a test uses says what it checks.
class Api:
    """The HTTP API of one test system, called with one key, which every request and websocket handshake sends as
    ``Authorization: Bearer <key>`` (none when the key is None). Paths are relative to the system's URL
    (``api.get("/jobs")``); a full URL is used as it is. A header a call passes wins (``{"Authorization": None}``
    sends no key)."""

    def __init__(self, base_url: str, key: str | None):
        self.base_url, self.key = base_url, key

    @property
    def headers(self) -> dict[str, str]:
        """The key's header, for a call made some other way."""
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://", "ws://", "wss://")) else self.base_url + path

    def request(self, method: str, path: str, *, headers: Mapping[str, str | None] | None = None,
                **kwargs) -> requests.Response:
        merged = CaseInsensitiveDict(self.headers)
        merged.update(headers or {})
        # A fresh session a call, as requests.get makes: no cookie a response set and no kept-alive connection to a
        # web app that a test has since restarted carries over to the next call.
        return requests.request(method, self.url(path), headers=merged, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs) -> requests.Response:
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    @property
    def ws_header(self) -> list[str]:
        """The key's header as websocket-client takes it (``header=``)."""
        return [f"{name}: {value}" for name, value in self.headers.items()]

    def ws_url(self, path: str) -> str:
        return self.url(path).replace("http://", "ws://", 1).replace("https://", "wss://", 1)

    def ws(self, path: str, *, header: list[str] | None = None, **kwargs):
        """A websocket (websocket-client's) to ``path`` or a ws:// URL, its handshake sending the key, then
        ``header``."""
        import websocket

        return websocket.create_connection(self.ws_url(path), header=[*self.ws_header, *(header or [])], **kwargs)


def signed_in_page(browser, system: "System", **context):
    """A new browser page, signed in to the dashboard with the system's admin key (through the sign-in form).
    With context options (color_scheme, viewport, ...) the page gets a context of its own: close it with
    page.context.close()."""
    page = browser.new_context(**context).new_page() if context else browser.new_page()
    page.goto(system.url + "/login")
    page.fill("#key", system.api_key)
    page.click("#sign-in")
    page.wait_for_url(system.url + "/")
    return page


ARTIFACTS = ROOT / "test-artifacts"


def shot(page, name: str) -> Path:
    """A full-page screenshot of a browser test, kept as test-artifacts/<name>.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def horizontal_overflow(page) -> int:
    """How many pixels the page is wider than its viewport (a phone must not scroll sideways)."""
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class RedisProcess:
    def __init__(self, data_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.dir = data_dir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisProcess":
        self.proc = redis_server.start(self.port, self.dir, stdout=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # Redis flushes its AOF on SIGTERM
            self.proc.wait(10)


class Process:
    """A chatterbox subprocess with its output in a log file (printed when a test fails to start it)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Process":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "chatterbox", *self.args], env=self.env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class System:
    """Redis + one worker + the web app, each a real process, sharing one data directory."""

    def __init__(self, root: Path, redis_proc: RedisProcess | None = None, worker: bool = True):
        self.root = root
        self.data = root / "data"
        self.redis = redis_proc or RedisProcess(self.data / "redis")
        self.web_port = free_port()
        # The admin key, registered at the web app's start; ``api`` sends it.
        self.api_key = "cbx-test-admin-" + os.urandom(12).hex()
        self.api = Api(self.url, self.api_key)
        self.env = {**os.environ, "CHATTERBOX_ADMIN_KEY": self.api_key,
                    "CHATTERBOX_DATA_DIR": str(self.data), "REDIS_URL": self.redis.url,
                    # Tests poll fast; the limits have tests of their own (test_auth.py).
                    "CHATTERBOX_RATE_LIMIT_PER_MINUTE": "0", "CHATTERBOX_MAX_QUEUED_JOBS": "1000",
                    "CHATTERBOX_AUTH_FAILURES_PER_MINUTE": "0",
                    "TTS_ENGINE": "piper", "CHATTERBOX_HEARTBEAT_INTERVAL_S": "0.5",
                    "CHATTERBOX_HEARTBEAT_TTL_S": "3", "CHATTERBOX_WEB_PORT": str(self.web_port),
                    "CHATTERBOX_WAIT_TIMEOUT_S": "120", "CHATTERBOX_LOG_LEVEL": "INFO"}
        self.settings = load(environ=self.env)
        self.workers: list[Process] = []
        self.web: Process | None = None
        self._worker_count = 0
        self._start_worker = worker

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}"

    def api_as(self, key: str | None) -> Api:
        """The API called with another key (a plain key's token, a wrong one), or with none."""
        return Api(self.url, key)

    def start(self) -> "System":
        try:
            if self.redis.proc is None:
                self.redis.start()
            self.store = JobStore.connect(self.settings)
            if self._start_worker:
                self.start_worker()
            self.web = Process(["web"], self.env, self.root / "web.log").start()
            wait_until(lambda: self._answers("/engine"), 60, what=f"the web app\n{self.web.output()}")
        except BaseException:
            self.stop()  # a system that failed to start leaves no processes behind
            raise
        return self

    def _answers(self, path: str) -> bool:
        try:
            return self.api.get(path, timeout=5).status_code == 200
        except requests.RequestException:  # not listening yet, or still importing the app
            return False

    def start_worker(self, wait: bool = True, name: str | None = None, cores: set[int] | None = None) -> Process:
        """A worker; with ``cores``, held to those cores (a thread each), leaving the others to the rest."""
        self._worker_count += 1
        args = ["worker"] + (["--name", name] if name else [])
        env = self.env if cores is None else {**self.env, "CHATTERBOX_THREADS": str(len(cores)),
                                                "OMP_NUM_THREADS": str(len(cores))}
        worker = Process(args, env, self.root / f"worker{self._worker_count}.log").start()
        if cores is not None:
            os.sched_setaffinity(worker.pid, cores)  # before the interpreter has started a thread: all inherit it
        self.workers.append(worker)
        if wait:
            self.wait_worker(worker)
        return worker

    def wait_worker(self, worker: Process) -> dict:
        def ready():
            if not worker.alive():
                raise RuntimeError(f"worker exited:\n{worker.output()}")
            return next((w for w in self.store.workers() if w["pid"] == worker.pid and w["model_loaded"]
                         and w["consuming"]), None)
        return wait_until(ready, 90, what=f"the worker\n{worker.output()}")

    @property
    def worker(self) -> Process:
        return self.workers[-1]

    def ensure_worker(self) -> Process:
        if not self.workers or not self.worker.alive():
            return self.start_worker()
        return self.worker

    # -- API helpers --------------------------------------------------------------------------------------------
    def submit(self, text: str, **fields) -> dict:
        response = self.api.post("/synthesize", json={"text": text, **fields}, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: str) -> dict:
        return self.api.get(f"/jobs/{job_id}", timeout=10).json()

    def wait_job(self, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 120) -> dict:
        return wait_until(lambda: (j := self.job(job_id))["status"] in statuses and j, timeout,
                          what=f"job {job_id} to reach {statuses}")

    def stop(self) -> None:
        for proc in [self.web, *self.workers]:
            if proc is not None:
                proc.kill(signal.SIGKILL)
        self.redis.stop()


@pytest.fixture(scope="session")
def system(tmp_path_factory) -> System:
    """The shared running system; tests that kill its worker leave a live one behind (ensure_worker)."""
    sys_ = System(tmp_path_factory.mktemp("system")).start()
    yield sys_
    sys_.stop()


@pytest.fixture()
def live(system: System) -> System:
    system.ensure_worker()
    return system


@pytest.fixture(scope="session")
def piper_engine(tmp_path_factory):
    """One loaded Piper engine for the tests that call it in their own process: (engine, settings), its data in a
    directory of its own."""
    from chatterbox.engines.piper import PiperEngine

    settings = load({"data_dir": str(tmp_path_factory.mktemp("piper")), "tts_engine": "piper"})
    engine = PiperEngine(settings)
    engine.load()
    return engine, settings


@contextlib.contextmanager
def plain_key(system: "System", name: str):
    """A plain (not admin) key of a test's own, so that its lexicon and jobs touch no other test's: its token;
    revoked, its lexicon cleared, afterwards."""
    from chatterbox.keys import KeyStore

    keys = KeyStore(system.store.r)
    key, token = keys.create(f"{name}-{time.time_ns()}")
    try:
        yield token
    finally:
        system.api_as(token).delete("/lexicon", timeout=10)
        keys.revoke(key.id)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc.url
    proc.stop()


@pytest.fixture()
def fresh_redis(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    return client


def ws_events(api: Api, path: str, limit: int = 1000, timeout: float = 120) -> list[dict]:
    """All events the websocket at ``path`` sends, opened with ``api``'s key, until the server closes it (after the
    final event)."""
    import websocket

    conn = api.ws(path, timeout=timeout)
    events = []
    try:
        while len(events) < limit:
            try:
                message = conn.recv()
            except websocket.WebSocketConnectionClosedException:
                break
            if not message:
                break
            events.append(json.loads(message))
    finally:
        conn.close()
    return events


class Follower(threading.Thread):
    """A websocket client in a thread of its own: every event the server sends, and when each arrived (time.time()),
    until the server closes the socket. ``opened`` is set at the first event. It connects to ``path`` with ``api``'s
    key."""

    def __init__(self, api: Api, path: str, timeout: float = 300):
        super().__init__(name=f"follower {path.rsplit('/', 1)[-1][:8]}", daemon=True)
        self.api, self.path, self.timeout = api, path, timeout
        self.events: list[dict] = []
        self.arrived: list[float] = []
        self.opened = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        import websocket

        try:
            conn = self.api.ws(self.path, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - the test or benchmark reports it
            self.error = f"connect: {exc!r}"
            return
        try:
            while message := conn.recv():
                self.events.append(json.loads(message))
                self.arrived.append(time.time())
                self.opened.set()
        except websocket.WebSocketConnectionClosedException:
            pass
        except Exception as exc:  # noqa: BLE001
            self.error = f"receive: {exc!r}"
        finally:
            conn.close()


class HealthProbe(threading.Thread):
    """GET /health without a key (as a load balancer asks) every ``interval`` s until stopped; ``samples`` holds
    (started at, time.monotonic(); seconds to the answer; its status code, or the error) of each."""

    def __init__(self, url: str, interval: float = 0.1):
        super().__init__(name="health probe", daemon=True)
        self.url, self.interval = url, interval
        self.samples: list[tuple[float, float, str]] = []
        self.done = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        while not self.done.is_set():
            started = time.monotonic()
            try:
                status = str(session.get(self.url + "/health", timeout=60).status_code)
            except requests.RequestException as exc:
                status = f"{type(exc).__name__}: {str(exc)[-80:]}"
            self.samples.append((started, time.monotonic() - started, status))
            self.done.wait(self.interval)

    def stop(self) -> list[tuple[float, float, str]]:
        self.done.set()
        self.join(70)
        return self.samples


def exported_voice(tmp_path: Path, name: str, reference_wav: bytes | None = None) -> bytes:
    """An exported voice file (random conditionals, and ``reference_wav`` as its recording: else 0.1 s of
    silence), for POST /voices/import."""
    import torch

    from chatterbox import audio
    from chatterbox.model.conds import Conditionals
    from chatterbox.model.random_checkpoint import random_conds
    from chatterbox.access import SYSTEM
    from chatterbox.voices import VoiceLibrary

    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.save(random_conds(3), tmp_path / "conds.pt")
    library = VoiceLibrary(tmp_path / "voices")
    clip = audio.wav_bytes(np.zeros(2400, dtype=np.float32), 24000)
    voice = library.create(name=name, engine="chatterbox", conds=Conditionals.load(tmp_path / "conds.pt"),
                           reference_wav=reference_wav or clip, sample_wav=clip, description="made by a test")
    return library.export(voice.id, SYSTEM)


def made_once(tmp_path_factory, name: str, make) -> Path:
    """A directory that ``make(directory)`` fills once for the whole run: with parallel test processes (xdist), the
    first to need it makes it while the others wait, and they all read the same one."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's own directory, above each test process's
    directory = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / ".complete").exists():
            shutil.rmtree(directory, ignore_errors=True)
            make(directory)
            (directory / ".complete").touch()
    return directory


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """The official checkpoint layout filled with seeded random weights (seed 0), written once per run; small
    (the first layers of each stack: T3's 2 of 30, S3Gen's flow, HiFT and tokenizer cut likewise; a short built-in
    voice): for everything around the model and for the reference tests (made on it too), where the full size only
    made the suite slow (a system test decoded at 0.3 s a token, and a voice's preview spent 40 s in the flow's 12
    mid levels)."""
    from chatterbox.model.random_checkpoint import write_checkpoint

    return made_once(tmp_path_factory, "checkpoint", lambda d: write_checkpoint(d, seed=0, small=True))


# Turbo's and Multilingual's small checkpoints are about 1.2 and 0.6 GB (Turbo's T3 embeds 50,000 text ids). Each is
# written when a module first needs it and kept while the modules that follow need it too (the scheduler runs them
# one after another in one test process), then removed: at most the session's original checkpoint and these two are
# on disk at once (CI's disk once ran out with every checkpoint of the session kept), and each is written about once
# a run instead of once a module (3.6 and 2 s of a core each time).
_KEPT: dict[str, Path] = {}


def kept_checkpoint(tmp_path_factory, name: str, write) -> Path:
    """The directory ``write(directory)`` filled, made at the first call and reused until removed (below)."""
    if name not in _KEPT:
        _KEPT[name] = write(tmp_path_factory.mktemp(name))
    return _KEPT[name]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    needed = BIG_CHECKPOINTS.findall(schedule_source(nextitem.nodeid.split("::", 1)[0])) if nextitem else []
    for name in [n for n in _KEPT if n not in needed]:
        shutil.rmtree(_KEPT.pop(name), ignore_errors=True)


@pytest.fixture(scope="module")
def turbo_checkpoint(tmp_path_factory) -> Path:
    """Chatterbox Turbo's official files with seeded random weights, small as `random_checkpoint` is (T3 with 2 of
    its 24 blocks, S3Gen cut likewise, a short built-in voice): for tests of what surrounds the model."""
    from chatterbox.model.random_checkpoint_turbo import write_turbo_checkpoint

    return kept_checkpoint(tmp_path_factory, "turbo_checkpoint",
                           lambda directory: write_turbo_checkpoint(directory, seed=0, small=True))


@pytest.fixture(scope="module")
def mtl_checkpoint(tmp_path_factory) -> Path:
    """Chatterbox Multilingual's official files with seeded random weights, small (T3 with 2 of its 30 layers, S3Gen
    cut likewise)."""
    from chatterbox.model.random_checkpoint_mtl import write_mtl_checkpoint

    return kept_checkpoint(tmp_path_factory, "mtl_checkpoint",
                           lambda directory: write_mtl_checkpoint(directory, seed=0, small=True))


@pytest.fixture(scope="session")
def tts(random_checkpoint):
    from chatterbox.tts import ChatterboxTTS

    return ChatterboxTTS.from_local(random_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def cloning(tmp_path_factory, random_checkpoint) -> System:
    """A system of its own on the Chatterbox engine with random weights, which can clone voices (short previews)."""
    system = System(tmp_path_factory.mktemp("cloning"))
    system.env.update(TTS_ENGINE="chatterbox", CHATTERBOX_MODEL_DIR=str(random_checkpoint),
                      CHATTERBOX_PREVIEW_MAX_TOKENS="6")
    system.start()
    yield system
    system.stop()
