"""Settings are checked when they are loaded: a bad value is refused at start, naming its variable and what it may
be, and a serving command stops at once (exit 3, one line) instead of failing a request later."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from chatterbox.engines.models import MODELS
from chatterbox.settings import RANGES, Settings, load
from chatterbox.text import chunk_text
from workers.devices import WorkerSpec
from workers.supervisor import EXIT_CONFIG_ERROR

ROOT = Path(__file__).resolve().parent.parent


def variable(name: str) -> str:
    return f"CHATTERBOX_{name.upper()}"


def numeric_fields() -> set[str]:
    return {f.name for f in fields(Settings) if str(f.type) in ("int", "float")}


def bad_values(name: str) -> list[str]:
    low, high = RANGES[name]
    kind = next(f.type for f in fields(Settings) if f.name == name)
    step = 1 if kind == "int" else 0.01
    bad = [low - step] + ([high + step] if high is not None else [])
    if kind == "float":
        bad += [float("nan"), float("inf")]
    return [repr(int(v)) if kind == "int" else repr(v) for v in bad]


def test_the_defaults_load_and_lie_within_their_ranges():
    settings = load(environ={})
    assert settings == Settings()
    for name, (low, high) in RANGES.items():
        value = getattr(settings, name)
        assert low <= value and (high is None or value <= high), name


def test_every_number_has_a_range():
    assert set(RANGES) == numeric_fields()


@pytest.mark.parametrize("name", sorted(RANGES))
def test_each_number_out_of_its_range_is_refused_naming_it(name):
    low, high = RANGES[name]
    for raw in bad_values(name):
        with pytest.raises(ValueError, match=variable(name)) as info:
            load(environ={variable(name): raw})
        allowed = f"from {low:g} to {high:g}" if high is not None else f"{low:g} or more"
        assert allowed in str(info.value), str(info.value)
    # The bounds themselves are allowed.
    kind = next(f.type for f in fields(Settings) if f.name == name)
    for bound in (low, high):
        if bound is not None:
            raw = str(int(bound)) if kind == "int" else str(float(bound))
            assert getattr(load(environ={variable(name): raw}), name) == bound


def test_a_chunk_length_the_chunker_refuses_is_refused_at_load():
    with pytest.raises(ValueError, match=r"^CHATTERBOX_CHUNK_CHARS must be from 20 to 5000, not 10$"):
        load(environ={"CHATTERBOX_CHUNK_CHARS": "10"})
    with pytest.raises(ValueError, match="CHATTERBOX_CHUNK_CHARS"):
        load({"chunk_chars": 10}, environ={})  # overrides are checked as well
    # The low end is the chunker's own; the high end leaves every model's cap (and Piper's longer chunks) in it.
    low, high = RANGES["chunk_chars"]
    assert chunk_text("Hello there.", low)
    with pytest.raises(ValueError):
        chunk_text("Hello there.", low - 1)
    assert high >= max(spec.chunk_chars for spec in MODELS.values())


def test_other_values_are_refused_naming_their_variable():
    for name, raw in (("CHATTERBOX_LOG_LEVEL", "loud"), ("CHATTERBOX_WORKER_DEVICE", "gpu0"),
                      ("CHATTERBOX_FLOWER_USER", "ad:min"), ("CHATTERBOX_FLOWER_PASSWORD", "one,two"),
                      ("CHATTERBOX_REDIS_PORT", "many")):
        with pytest.raises(ValueError, match=name):
            load(environ={name: raw})
    with pytest.raises(ValueError, match="CHATTERBOX_WEB_PORT must be a number"):
        load({"web_port": "5000"}, environ={})
    assert load(environ={"CHATTERBOX_LOG_LEVEL": "debug"}).log_level == "debug"  # any case


def test_a_workers_device_and_queue_are_settings_its_parent_puts_in_its_environment():
    gpu = load(environ=WorkerSpec("gpu1", "1").env())
    assert (gpu.worker_device, gpu.worker_queue) == ("cuda:0", "gpu1")  # it sees only its own GPU
    cpu = load(environ=WorkerSpec("cpu2", None).env())
    assert (cpu.worker_device, cpu.worker_queue) == ("cpu", "cpu2")


def test_the_client_side_settings(monkeypatch):
    from web.client import Client

    settings = load(environ={"CHATTERBOX_SERVER": "http://box:8000", "CHATTERBOX_API_KEY": "cbx_x"})
    assert (settings.server, settings.api_key) == ("http://box:8000", "cbx_x")
    monkeypatch.setenv("CHATTERBOX_SERVER", "http://box:8000/")
    monkeypatch.setenv("CHATTERBOX_API_KEY", "cbx_x")
    client = Client()
    assert (client.base_url, client.api_key) == ("http://box:8000", "cbx_x")
    assert Client("http://other:1", api_key="").api_key is None  # given ones win, an empty key is none


def clean_env(**extra: str) -> dict[str, str]:
    ours = ("CHATTERBOX_", "REDIS_URL", "TTS_ENGINE")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(ours)}, **extra}


def test_a_serving_command_with_a_bad_setting_stops_at_once_in_one_line(tmp_path):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "chatterbox", "worker"], cwd=ROOT, capture_output=True, text=True,
                          env=clean_env(CHATTERBOX_DATA_DIR=str(tmp_path / "data"), CHATTERBOX_CHUNK_CHARS="10"),
                          timeout=60)
    assert proc.returncode == EXIT_CONFIG_ERROR == 3, proc.stderr
    assert proc.stderr.strip() == "Error: CHATTERBOX_CHUNK_CHARS must be from 20 to 5000, not 10"
    assert "Traceback" not in proc.stdout + proc.stderr
    assert time.monotonic() - start < 30  # no model, Redis or Celery was waited for
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_the_cli_talks_to_the_server_of_the_settings_unless_told_another(tmp_path):
    from tests.conftest import free_port

    env = clean_env(CHATTERBOX_DATA_DIR=str(tmp_path), CHATTERBOX_SERVER=f"http://127.0.0.1:{free_port()}")
    for args, server in ((["jobs", "list"], env["CHATTERBOX_SERVER"]),
                         (["jobs", "list", "--server", f"http://127.0.0.1:{free_port()}"], None)):
        server = server or args[-1]
        proc = subprocess.run([sys.executable, "-m", "chatterbox", *args], cwd=ROOT, capture_output=True, text=True,
                              env=env, timeout=60)
        assert proc.returncode == 3 and f"cannot reach {server}" in proc.stderr, proc.stderr
