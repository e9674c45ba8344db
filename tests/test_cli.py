"""The command line: `chatterbox say`, in-process and through the running system."""
from __future__ import annotations

import subprocess
import sys

from chatterbox import audio

from .conftest import ROOT


def run(args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "chatterbox", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=180, **kwargs)


def test_say_through_the_system(live, tmp_path):
    out = tmp_path / "hello.mp3"
    result = run(["say", "Hello from the command line.", "-o", str(out), "--server", live.url], live.env)
    assert result.returncode == 0, result.stderr
    samples, rate = audio.decode(out)
    assert rate == 22050 and len(samples) > rate


def test_say_local_from_stdin(system, tmp_path):
    out = tmp_path / "local.flac"
    result = run(["say", "-", "-o", str(out), "--local", "-p", "length_scale=1.5"], system.env,
                 input="Read from standard input.")
    assert result.returncode == 0, result.stderr
    assert audio.decode(out)[1] == 22050


def test_say_reports_bad_input_plainly(live, tmp_path):
    result = run(["say", "Hi.", "-o", str(tmp_path / "x.wav"), "-p", "length_scale=9", "--server", live.url],
                 live.env)
    assert result.returncode != 0
    assert "params.length_scale must be between 0.5 and 2.0" in result.stderr
    assert "Traceback" not in result.stderr
    result = run(["say", "Hi.", "--server", "http://127.0.0.1:9"], live.env)
    assert result.returncode != 0 and "cannot reach" in result.stderr
    result = run(["say", "Hi.", "-p", "speed", "--local"], live.env)
    assert result.returncode != 0 and "NAME=VALUE" in result.stderr
