"""Pure parts: settings, engine parameter checks, device planning, the supervisor with real child processes."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from chatterbox.engines import InvalidRequest, choose_engine, create_engine
from chatterbox.engines.chatterbox import WEIGHT_FILES
from chatterbox.settings import load, to_env
from chatterbox.access import SYSTEM
from chatterbox.synthesis import parse_request
from workers.devices import visible_gpus, worker_specs
from workers.supervisor import Service, Supervisor


def test_settings_from_env_with_and_without_prefix(tmp_path):
    s = load(environ={"REDIS_URL": "redis://h:1/0", "CHATTERBOX_MAX_TEXT_CHARS": "99",
                      "CHATTERBOX_DATA_DIR": str(tmp_path), "TTS_ENGINE": "piper"})
    assert s.redis_url == "redis://h:1/0" and s.max_text_chars == 99 and s.tts_engine == "piper"
    assert s.outputs_dir == tmp_path / "outputs"
    assert load(environ=to_env(s)) == s
    assert load(environ={}).broker_url == "redis://127.0.0.1:6379/0"
    assert load({"chunk_chars": 50}, environ={}).chunk_chars == 50


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="CHATTERBOX_MAX_TEXT_CHARS"):
        load(environ={"CHATTERBOX_MAX_TEXT_CHARS": "many"})
    with pytest.raises(ValueError, match="TTS_ENGINE"):
        load(environ={"TTS_ENGINE": "espeak"})
    with pytest.raises(ValueError, match="CHATTERBOX_MODEL_DTYPE"):
        load(environ={"CHATTERBOX_MODEL_DTYPE": "fp8"})
    with pytest.raises(ValueError, match="unknown setting"):
        load({"colour": 1}, environ={})


def test_auto_engine_choice(tmp_path):
    s = load({"data_dir": tmp_path}, environ={})
    assert choose_engine(s)[0] == "piper"
    model_dir = tmp_path / "models" / "chatterbox"
    model_dir.mkdir(parents=True)
    for name in WEIGHT_FILES:
        (model_dir / name).write_bytes(b"x")
    name, reason = choose_engine(s)
    assert name == "chatterbox" and "weights found" in reason
    assert choose_engine(s.replace(tts_engine="piper"))[0] == "piper"


def test_chatterbox_engine_without_weights_says_where_it_looked(tmp_path):
    engine = create_engine(load({"data_dir": tmp_path}, environ={}), name="chatterbox")
    with pytest.raises(Exception, match="weights are not in"):
        engine.load()
    assert engine.validate({"cfg_weight": 0})["cfg_weight"] == 0.0
    assert engine.validate({})["steps"] == 10 and "seed" not in engine.validate({})
    assert [v["id"] for v in engine.voices(SYSTEM)] == ["default"]


def test_boolean_settings():
    assert load(environ={"CHATTERBOX_WATERMARK": "yes"}).watermark is True
    assert load(environ={}).watermark is False
    with pytest.raises(ValueError, match="CHATTERBOX_WATERMARK"):
        load(environ={"CHATTERBOX_WATERMARK": "maybe"})


def test_piper_params_and_request_parsing(tmp_path):
    settings = load({"data_dir": tmp_path}, environ={})
    engine = create_engine(settings, name="piper")
    assert engine.validate({}) == {"length_scale": 1.0, "noise_scale": 0.667, "noise_w": 0.8, "volume": 1.0}
    req = parse_request({"text": "Hi.", "format": "MP3"}, engine, settings, SYSTEM)
    assert req.voice == "joe" and req.format == "mp3"
    with pytest.raises(InvalidRequest) as info:
        parse_request({"text": "Hi.", "params": {"volume": float("nan")}}, engine, settings, SYSTEM)
    assert info.value.field == "params.volume"


def test_device_planning():
    cpu = load({"devices": "cpu"}, environ={})
    auto = load(environ={})
    assert [s.name for s in worker_specs(cpu)] == ["cpu"]
    assert visible_gpus(auto, {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus(auto, {"CUDA_VISIBLE_DEVICES": ""}) == []
    specs = worker_specs(load({"devices": "0,1"}, environ={}))
    assert [(s.name, s.device, s.env()["CUDA_VISIBLE_DEVICES"]) for s in specs] == [
        ("gpu0", "cuda:0", "0"), ("gpu1", "cuda:0", "1")]
    assert worker_specs(cpu)[0].env()["CUDA_VISIBLE_DEVICES"] == ""
    two = worker_specs(load({"devices": "cpu", "cpu_workers": 2}, environ={}))
    assert [(s.name, s.device) for s in two] == [("cpu", "cpu"), ("cpu1", "cpu")]


def test_supervisor_restarts_a_crash_and_gives_up_on_config_errors(tmp_path, capsys):
    counter = tmp_path / "runs"
    crasher = Service("crasher", [sys.executable, "-c",
                                  f"open({str(counter)!r}, 'a').write('x'); raise SystemExit(1)"])
    misconfigured = Service("misconfigured", [sys.executable, "-c", "raise SystemExit(3)"])
    sleeper = Service("sleeper", [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"])
    sup = Supervisor([crasher, misconfigured, sleeper], stop_timeout=5)
    thread = threading.Thread(target=sup.run)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(counter.read_text() if counter.exists() else "") < 3:
        time.sleep(0.1)
    sup.stop()
    thread.join(20)
    assert len(counter.read_text()) >= 3  # restarted, with backoff
    assert misconfigured.given_up and misconfigured.proc.returncode == 3
    assert sleeper.proc.returncode is not None  # stopped on shutdown
    assert "[sleeper] up" in capsys.readouterr().out


def test_supervisor_brings_back_at_once_a_service_killed_after_it_started(tmp_path):
    starts = tmp_path / "starts"
    worker = Service("worker", [sys.executable, "-c",
                                f"import time; open({str(starts)!r}, 'a').write(f'{{time.time()}}\\n'); "
                                "time.sleep(60)"])
    sup = Supervisor([worker], stop_timeout=5, started_s=1.0)
    thread = threading.Thread(target=sup.run)
    thread.start()
    try:
        for round in range(3):  # killed again and again, each time after it got going: never a backoff
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(starts.read_text().split() if starts.exists() else []) <= round:
                time.sleep(0.05)
            time.sleep(1.2)
            killed = time.time()
            os.kill(worker.proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(starts.read_text().split()) <= round + 1:
                time.sleep(0.05)
            back = float(starts.read_text().split()[round + 1]) - killed
            assert back < 1.5, f"restarted {back:.2f} s after the kill"
    finally:
        sup.stop()
        thread.join(20)


def test_urls_in_messages_hide_the_whole_password():
    from chatterbox.redis_client import redact_url

    # A password may hold "@" itself: what follows the last one is the host.
    assert redact_url("redis://:p@ss@w0rd@10.0.0.5:6379/0") == "redis://***@10.0.0.5:6379/0"
    assert redact_url("rediss://user:secret@cache.example:6380/1?ssl_cert_reqs=none&x=a@b") == \
        "rediss://***@cache.example:6380/1?ssl_cert_reqs=none&x=a@b"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_the_embedded_redis_password_reaches_every_process_of_the_data_directory(tmp_path):
    from chatterbox.settings import embedded_redis_password

    settings = load({"data_dir": tmp_path, "redis_port": 6390}, environ={})
    assert settings.broker_url == "redis://127.0.0.1:6390/0"  # none made yet
    password = embedded_redis_password(settings)
    assert (tmp_path / "redis-password").stat().st_mode & 0o777 == 0o600
    assert embedded_redis_password(settings) == password  # made once
    # A worker or `chatterbox keys` started on its own, with only the data directory, finds it.
    assert load({"data_dir": tmp_path, "redis_port": 6390}, environ={}).broker_url == \
        f"redis://:{password}@127.0.0.1:6390/0"
    mine = load({"data_dir": tmp_path, "redis_password": "my s3cret/@"}, environ={})
    assert embedded_redis_password(mine) == "my s3cret/@" and mine.broker_url.startswith("redis://:my%20s3cret%2F%40@")
    assert load({"redis_url": "redis://other:6379/2", "data_dir": tmp_path}, environ={}).broker_url == \
        "redis://other:6379/2"


def test_flower_credentials_that_flower_would_cut_are_refused(tmp_path):
    from chatterbox.settings import flower_credentials

    user, password = flower_credentials(load({"data_dir": tmp_path}, environ={}))
    assert user == "admin" and len(password) >= 16 and (tmp_path / "flower-password").stat().st_mode & 0o777 == 0o600
    assert flower_credentials(load({"data_dir": tmp_path, "flower_password": "a:b@c"}, environ={}))[1] == "a:b@c"
    for bad in ({"flower_password": "one,two"}, {"flower_user": "ad:min"}):
        with pytest.raises(ValueError, match="CHATTERBOX_FLOWER_USER"):  # when the settings are loaded
            load({"data_dir": tmp_path, **bad}, environ={})
