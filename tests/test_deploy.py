"""Deployment files: the systemd units `chatterbox deploy systemd` writes (checked by systemd's own verifier), the
examples in deploy/systemd/ kept equal to them, and `chatterbox redis`, the embedded Redis its unit runs."""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from chatterbox.deploy import ENV_EXAMPLE, EXAMPLE, TARGET, systemd_units
from workers.supervisor import EXIT_CONFIG_ERROR

from .conftest import ROOT, free_port, wait_until

CLI = [sys.executable, "-m", "chatterbox"]


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd or ROOT,
                          env={**os.environ, **(env or {})})


def test_the_examples_in_deploy_are_what_the_generator_writes():
    folder = ROOT / "deploy" / "systemd"
    units = systemd_units(EXAMPLE)
    assert sorted(p.name for p in folder.glob("chatterbox*") if not p.name.endswith(".example")) == sorted(units)
    for name, text in units.items():
        assert (folder / name).read_text() == text, f"deploy/systemd/{name} differs: regenerate it"
    assert (folder / "chatterbox.env.example").read_text() == ENV_EXAMPLE


def test_each_worker_is_pinned_to_its_gpu_and_a_misconfigured_one_stays_down():
    units = systemd_units(EXAMPLE)
    worker = units["chatterbox-worker@.service"]
    assert "ExecStart=/opt/chatterbox-jobs/.venv/bin/python -m chatterbox worker --gpu %i\n" in worker
    assert f"RestartPreventExitStatus={EXIT_CONFIG_ERROR}\n" in worker and "Restart=on-failure\n" in worker
    assert "EnvironmentFile=-/etc/chatterbox/chatterbox.env\n" in worker and "MemoryMax=32G\n" in worker
    target = units[TARGET]
    for name in ("chatterbox-worker@0.service", "chatterbox-worker@1.service", "chatterbox-web.service",
                 "chatterbox-flower.service", "chatterbox-redis.service"):
        assert name in target
    for name, text in units.items():
        if name.endswith(".service"):
            assert f"PartOf={TARGET}" in text and "StandardOutput=journal" in text and "User=chatterbox" in text


@pytest.mark.parametrize("args", [("--gpus", "0,1"), ("--gpus", "cpu", "--no-redis", "--no-flower")],
                         ids=["two-gpus", "cpu-external-redis"])
def test_systemd_verifies_the_units_written_for_this_machine(tmp_path, args):
    out = tmp_path / "units"
    made = cli("deploy", "systemd", "-o", str(out), "--user", getpass.getuser(), *args)
    assert made.returncode == 0, made.stderr
    names = sorted(p.name for p in out.iterdir())
    if "cpu" in args:
        assert names == ["chatterbox-backend.target", "chatterbox-web.service", "chatterbox-worker-cpu.service"]
    else:
        assert "chatterbox-worker@.service" in names and "chatterbox-redis.service" in names
        assert "sudo systemctl enable --now chatterbox-backend.target" in made.stdout
    text = (out / names[-1]).read_text()
    assert f"ExecStart={sys.executable} -m chatterbox" in text and f"WorkingDirectory={ROOT}" in text
    verifier = shutil.which("systemd-analyze")
    if verifier is None:
        pytest.skip("systemd-analyze is not installed")
    units = [str(out / n) for n in names if "@." not in n]
    if "chatterbox-worker@.service" in names:
        units += [str(out / "chatterbox-worker@0.service"), str(out / "chatterbox-worker@1.service")]
    checked = subprocess.run([verifier, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    # The verifier exits 0 even for unknown keys: any line it prints is a problem with the units.
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr


def test_bad_gpu_indices_are_a_usage_error(tmp_path):
    bad = cli("deploy", "systemd", "-o", str(tmp_path / "u"), "--gpus", "first")
    assert bad.returncode == 2 and "--gpus takes indices" in bad.stderr and not (tmp_path / "u").exists()


def test_the_redis_unit_runs_the_embedded_redis_in_the_foreground(tmp_path):
    port = free_port()
    env = {"CHATTERBOX_DATA_DIR": str(tmp_path / "data"), "CHATTERBOX_REDIS_PORT": str(port)}
    env.pop("REDIS_URL", None)
    child_env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen([*CLI, "redis"], cwd=ROOT, env={**child_env, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        password = tmp_path / "data" / "redis-password"
        wait_until(password.is_file, 30, 0.1, "the generated password")
        client = redis.Redis(port=port, password=password.read_text().strip(), socket_connect_timeout=1)

        def answers() -> bool:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_until(answers, 30, 0.1, "the embedded Redis")
        client.set("kept", "1")
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, socket_connect_timeout=1).set("x", "1")  # no password, no writes
        assert (tmp_path / "data" / "redis").is_dir()  # its append-only file lives in the data directory
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    refused = cli("redis", env={"REDIS_URL": f"redis://127.0.0.1:{port}/0", "CHATTERBOX_DATA_DIR": str(tmp_path)})
    assert refused.returncode == 2 and "REDIS_URL is set" in refused.stderr


def test_the_environment_file_and_memory_limit_reach_every_unit(tmp_path):
    out = tmp_path / "units"
    made = cli("deploy", "systemd", "-o", str(out), "--gpus", "0", "--env-file", "/srv/tts/settings.env",
               "--worker-memory", "12G")
    assert made.returncode == 0, made.stderr
    for path in out.glob("*.service"):
        assert "EnvironmentFile=-/srv/tts/settings.env\n" in path.read_text(), path.name
    assert "MemoryMax=12G\n" in (out / "chatterbox-worker@.service").read_text()
    assert "MemoryMax=12G" not in (out / "chatterbox-web.service").read_text()
