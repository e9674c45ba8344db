"""The command line: `chatterbox say` in-process and through the running system, `jobs`, `keys` and `book`, with
the exit codes scripts rely on."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from chatterbox import audio
from chatterbox.cli import (EXIT_AUTH, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE,
                            EXIT_CODES_HELP)

from .conftest import ROOT, free_port


def run(args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "chatterbox", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=180, **kwargs)


def client_env(live) -> dict[str, str]:
    """The system's environment plus where the server is and the key to use, as a user's shell would have them."""
    return {**live.env, "CHATTERBOX_SERVER": live.url, "CHATTERBOX_API_KEY": live.api_key}


def server_enforces_keys(live) -> bool:
    return requests.get(live.url + "/jobs", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401


def one_line_error(result) -> str:
    """The error of a failed command: one line on stderr, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_say_through_the_system(live, tmp_path):
    out = tmp_path / "hello.mp3"
    result = run(["say", "Hello from the command line.", "-o", str(out), "--server", live.url,
                  "--key", live.api_key], live.env)
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
                 client_env(live))
    assert result.returncode == EXIT_REFUSED
    assert "params.length_scale must be between 0.5 and 2.0" in one_line_error(result)
    result = run(["say", "Hi.", "--server", "http://127.0.0.1:9"], live.env)
    assert result.returncode == EXIT_UNREACHABLE and "cannot reach" in one_line_error(result)
    result = run(["say", "Hi.", "-p", "speed", "--local"], live.env)
    assert result.returncode == EXIT_USAGE and "NAME=VALUE" in result.stderr


def test_say_with_progress_and_env_server(live, tmp_path):
    out = tmp_path / "progress.ogg"
    result = run(["say", "A progress bar, fed by the job's events.", "-o", str(out), "--progress"],
                 client_env(live))
    assert result.returncode == EXIT_OK, result.stderr
    assert audio.decode(out)[1] > 0
    bars = [line for line in result.stderr.splitlines() if line.startswith("speaking [")]
    assert bars and bars[-1].startswith("speaking [" + "#" * 30 + "] 100%")
    assert f"wrote {out}" in result.stdout


def test_say_unknown_voice_is_refused(live, tmp_path):
    result = run(["say", "Hi.", "-v", "nobody-at-all", "-o", str(tmp_path / "x.wav")], client_env(live))
    assert result.returncode == EXIT_NOT_FOUND
    line = one_line_error(result)
    assert "nobody-at-all" in line and "voice" in line
    assert not (tmp_path / "x.wav").exists()


def test_say_cancelled_exits_1(live, tmp_path):
    out = tmp_path / "never.wav"
    text = "This sentence is one of many, and the job will be cancelled long before the end. " * 45
    proc = subprocess.Popen([sys.executable, "-m", "chatterbox", "say", text, "-o", str(out), "--progress"],
                            env=client_env(live), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline().split()
        assert first[0] == "job", first
        assert live.api.delete(f"/jobs/{first[1]}", timeout=10).status_code in (200, 202)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_FAILED, stderr
    assert "Traceback" not in stderr and f"job {first[1]} cancelled" in stderr.splitlines()[-1]
    assert not out.exists()


def test_bad_server_url_and_output_are_usage_errors(live, tmp_path):
    result = run(["jobs", "list", "--server", "localhost:5000"], client_env(live))
    assert result.returncode == EXIT_USAGE and "not a server URL" in one_line_error(result)
    result = run(["say", "Hi.", "-o", str(tmp_path / "missing" / "x.wav")], client_env(live))
    assert result.returncode == EXIT_USAGE and "does not exist" in result.stderr


def test_unreachable_server_exits_3(live, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    for args in (["say", "Hi.", "-o", str(tmp_path / "x.wav"), "--server", closed],
                 ["jobs", "list", "--server", closed]):
        result = run(args, client_env(live))
        assert result.returncode == EXIT_UNREACHABLE, result.stderr
        assert "cannot reach" in one_line_error(result)


def test_jobs_list_show_cancel(live):
    env = client_env(live)
    job = live.submit("Listed by the command line.")
    live.wait_job(job["job_id"])
    result = run(["jobs", "list", "--json", "--limit", "20"], env)
    assert result.returncode == EXIT_OK, result.stderr
    listed = {j["id"]: j for j in json.loads(result.stdout)}
    assert listed[job["job_id"]]["status"] == "succeeded"
    table = run(["jobs", "list"], env).stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "KIND", "STATUS"] and any(job["job_id"] in line for line in table)

    shown = run(["jobs", "show", job["job_id"], "--json"], env)
    assert shown.returncode == EXIT_OK and json.loads(shown.stdout)["id"] == job["job_id"]
    assert f"id: {job['job_id']}" in run(["jobs", "show", job["job_id"]], env).stdout

    missing = run(["jobs", "show", "0" * 32], env)
    assert missing.returncode == EXIT_NOT_FOUND and "no job with id" in one_line_error(missing)

    # A finished job cannot be cancelled (409: refused); a fresh one can.
    finished = run(["jobs", "cancel", job["job_id"]], env)
    assert finished.returncode == EXIT_REFUSED and "nothing to cancel" in one_line_error(finished)
    fresh = live.submit("A long text to cancel. " * 40)
    cancelled = run(["jobs", "cancel", fresh["job_id"]], env)
    assert cancelled.returncode == EXIT_OK, cancelled.stderr
    assert fresh["job_id"] in cancelled.stdout
    assert live.wait_job(fresh["job_id"])["status"] in ("cancelled", "succeeded")  # it may have beaten us


def test_keys_round_trip(live):
    env = {**live.env, "REDIS_URL": live.redis.url}
    name = f"cli-{free_port()}"
    created = run(["keys", "create", name], env)
    assert created.returncode == EXIT_OK, created.stderr
    token = created.stdout.strip()
    assert token.startswith("cbx_") and "\n" not in token
    assert "cannot be shown again" in created.stderr

    listed = run(["keys", "list", "--json"], env)
    assert listed.returncode == EXIT_OK, listed.stderr
    mine = next(k for k in json.loads(listed.stdout) if k["name"] == name)
    assert mine["active"] and not mine["admin"] and token not in listed.stdout
    assert token not in run(["keys", "list"], env).stdout

    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(live.url + "/jobs", headers=headers, timeout=10).status_code == 200

    revoked = run(["keys", "revoke", name], env)
    assert revoked.returncode == EXIT_OK and mine["id"] in revoked.stdout
    after = next(k for k in json.loads(run(["keys", "list", "--json"], env).stdout) if k["name"] == name)
    assert not after["active"] and after["revoked_at"]
    assert run(["keys", "create", name], env).returncode == EXIT_REFUSED  # names stay taken
    missing = run(["keys", "revoke", "no-such-key"], env)
    assert missing.returncode == EXIT_NOT_FOUND and "no key" in one_line_error(missing)
    down = run(["keys", "list"], {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.returncode == EXIT_UNREACHABLE and "cannot reach Redis" in one_line_error(down)

    if not server_enforces_keys(live):
        pytest.xfail("auth layer not merged yet: the server does not refuse revoked keys")
    assert requests.get(live.url + "/jobs", headers=headers, timeout=10).status_code == 401
    result = run(["jobs", "list"], {**client_env(live), "CHATTERBOX_API_KEY": token})
    assert result.returncode == EXIT_AUTH, result.stderr


def test_book_to_directory(live, tmp_path):
    source = tmp_path / "lanterns.txt"
    source.write_text("The Lanterns of the Quay\n\nChapter One\n\nThe lamps were lit along the quay at dusk.\n\n"
                      "Chapter Two\n\nBy midnight only one of them still burned.\n")
    out = tmp_path / "book"
    result = run(["book", str(source), "-o", str(out), "--progress"], client_env(live))
    assert result.returncode == EXIT_OK, result.stderr
    written = [line for line in result.stdout.splitlines() if line]
    assert len(written) == 3 and all(Path(line).parent == out and Path(line).is_file() for line in written)
    m4b = sorted(out.glob("*.m4b"))
    chapters = sorted(out.glob("*.mp3"))
    assert len(m4b) == 1 and len(chapters) == 2
    assert chapters[0].name.startswith("001 ") and "Chapter One" in chapters[0].name
    samples, rate = audio.decode(m4b[0])
    assert len(samples) > 2 * rate
    assert all(audio.decode(c)[1] > 0 for c in chapters)
    assert any(line.startswith("book [") and "chunks" in line for line in result.stderr.splitlines())

    queued = run(["book", str(source), "--no-wait"], client_env(live))
    assert queued.returncode == EXIT_OK, queued.stderr
    book_id = queued.stdout.strip()
    status = run(["books", "status", book_id, "--json"], client_env(live))
    assert status.returncode == EXIT_OK and json.loads(status.stdout)["id"] == book_id
    fetched = run(["books", "download", book_id, "-o", str(tmp_path / "again")], client_env(live))
    assert fetched.returncode == EXIT_OK, fetched.stderr
    assert len(list((tmp_path / "again").iterdir())) == 3
    assert run(["books", "status", "0" * 32], client_env(live)).returncode == EXIT_NOT_FOUND


def test_help_lists_the_exit_codes():
    result = run(["--help"], None)
    assert result.returncode == 0
    for code in (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND, EXIT_REFUSED):
        assert f"  {code}  " in result.stdout
    assert "Exit codes:" in EXIT_CODES_HELP
