"""`chatterbox up`: the whole stack under the supervisor, as `make run` starts it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from pathlib import Path

import psutil
import pytest
import redis
import requests

from .conftest import ROOT, free_port, wait_until


@pytest.fixture()
def stack(tmp_path):
    ports = {"CHATTERBOX_REDIS_PORT": free_port(), "CHATTERBOX_WEB_PORT": free_port(),
             "CHATTERBOX_FLOWER_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CHATTERBOX_REDIS_URL")}
    env.update({k: str(v) for k, v in ports.items()}, CHATTERBOX_DATA_DIR=str(tmp_path / "data"),
               TTS_ENGINE="auto", CHATTERBOX_HEARTBEAT_INTERVAL_S="0.5", CHATTERBOX_HEARTBEAT_TTL_S="3",
               CHATTERBOX_DEVICES="cpu", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "up.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "chatterbox", "up"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    yield proc, ports, tmp_path / "up.log", env
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_up_runs_everything_restarts_a_crash_and_stops_cleanly(stack):
    proc, ports, log_path, env = stack
    web = f"http://127.0.0.1:{ports['CHATTERBOX_WEB_PORT']}"

    key: dict[str, str] = {}

    def health():
        try:
            body = requests.get(web + "/health", timeout=2, headers=key).json()
        except requests.RequestException:
            return None
        return body if body.get("status") == "ok" else None

    assert wait_until(health, 120, 0.5, what=f"the stack\n{log_path.read_text()}") == {"status": "ok"}
    output = log_path.read_text()
    # the first start made an admin key and printed it, once
    keys = re.findall(r"^\[web\]\s+(cbx_[0-9a-f]{10}_\S+)\s*$", output, re.M)
    assert len(keys) == 1, output
    key["Authorization"] = f"Bearer {keys[0]}"
    auth = dict(key)
    body = health()
    assert body["workers"][0]["device"] == "cpu" and body["redis"]["aof"]
    assert "no Chatterbox weights" in body["engine"]["reason"]
    match = re.search(r"flower\s+(\S+)\s+\(user (\S+), password (\S+)\)", output)
    assert match, output
    flower_url, user, password = match.groups()

    def flower(**kwargs):
        try:
            return requests.get(flower_url + "/workers", timeout=10, **kwargs).status_code
        except requests.ConnectionError:
            return None

    assert wait_until(lambda: flower(), 60, 0.5, what="flower") == 401
    assert flower(auth=(user, password)) == 200

    assert requests.post(web + "/synthesize", json={"text": "Who?"}, timeout=10).status_code == 401

    # a job through the stack
    job = requests.post(web + "/synthesize?wait=1", json={"text": "Up and running."}, headers=auth, timeout=120)
    assert job.status_code == 200 and job.headers["Content-Type"] == "audio/wav"

    # The embedded Redis wants the password made at the first start, which no command line shows and only this
    # user can read; and nothing in the data directory is readable by anyone else.
    data = Path(env["CHATTERBOX_DATA_DIR"])
    password = (data / "redis-password").read_text().strip()
    assert len(password) >= 32 and password not in output
    port = ports["CHATTERBOX_REDIS_PORT"]
    with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)):
        redis.Redis(port=port, socket_timeout=5).set("anyone", "here")
    assert redis.Redis(port=port, password=password, socket_timeout=5).ping()
    family = [" ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True)]
    assert family and not any(password in line for line in family)
    readable = [str(p) for p in [data, *data.rglob("*")] if p.stat().st_mode & 0o077]
    assert readable == [], readable

    # a crashed worker is restarted, and the restart is logged
    first_pid = body["workers"][0]["pid"]
    os.kill(first_pid, signal.SIGKILL)
    wait_until(lambda: (b := health()) and any(w["pid"] != first_pid for w in b["workers"]), 90, 0.5,
               what="the restarted worker")
    assert re.search(r"worker-cpu exited with code -9; restarting it", log_path.read_text())

    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 4  # redis, worker, web (+ its gunicorn worker), flower
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], alive
    assert "all stopped" in log_path.read_text()

    # A second start finds the admin key and prints none.
    log_path.write_text("")
    again = subprocess.Popen([sys.executable, "-m", "chatterbox", "up"], env=env, cwd=ROOT,
                             stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    try:
        wait_until(health, 120, 0.5, what=f"the stack again\n{log_path.read_text()}")
        assert requests.get(web + "/jobs", headers=auth, timeout=10).status_code == 200
        assert "cbx_" not in log_path.read_text()
    finally:
        again.send_signal(signal.SIGINT)
        again.wait(60)
