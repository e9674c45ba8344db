"""web.client against the real system: Redis, a Piper worker and the web app under gunicorn; no mocks."""
from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from chatterbox import audio
from chatterbox.cli import EXIT_REFUSED
from web.client import ApiError, AuthError, Client, ConnectionFailed, NotFound, RateLimited

from .conftest import ROOT, System, free_port

# Several sentences: Piper makes one chunk event per sentence, so there is a middle to drop the connection in.
STORY = ("The lighthouse keeper climbed the stairs. The lamp was cold. He struck a match and waited. "
         "Far out at sea, a small boat turned toward the light. By morning it was safe in the harbour.")

BOOK = """The Two Lanterns

Chapter One

The first lantern hung above the door. It burned all night.

Chapter Two

The second lantern was kept in a drawer, for storms.
"""


@pytest.fixture()
def client(live) -> Client:
    with Client(live.url, api_key=live.api_key) as c:
        yield c


def test_synthesize_wait_download(client, tmp_path):
    sent = client.synthesize("Hello from the Python client.", format="mp3")
    assert sent["status"] == "queued" and sent["job_id"]
    seen: list[dict] = []
    job = client.wait(sent["job_id"], on_event=seen.append, timeout=120)
    assert job["status"] == "succeeded" and job["id"] == sent["job_id"]
    assert seen[-1]["type"] == "done" and any(e["type"] == "progress" for e in seen)
    samples, rate = audio.decode(client.download(sent["job_id"]))
    assert rate == 22050 and len(samples) > rate / 2
    path = client.download(sent["job_id"], tmp_path / "hello.mp3")
    assert path == tmp_path / "hello.mp3" and audio.decode(path)[1] == 22050
    assert any(j["id"] == sent["job_id"] for j in client.jobs(limit=20))

    said = client.say("A second sentence, by the convenience method.", tmp_path / "say.ogg")
    assert said.suffix == ".ogg" and audio.decode(said)[1] > 0


def test_events_resume_without_loss_or_repeat(client):
    job_id = client.synthesize(STORY)["job_id"]
    # The whole stream in one go: the reference.
    everything = list(client.events(job_id, timeout=120))
    assert everything[-1]["type"] == "done"
    ids = [e["id"] for e in everything]
    assert len(ids) >= 6 and len(set(ids)) == len(ids)

    # A connection dropped under the stream: it reconnects with ?after= by itself.
    stream = client.events(job_id, timeout=120)
    got = [next(stream) for _ in range(3)]
    stream.drop()
    got += list(stream)
    assert stream.reconnects == 1 and stream.finished
    assert [e["id"] for e in got] == ids

    # A follower that stopped and came back later with the last id it saw.
    with client.events(job_id) as first:
        head = [next(first) for _ in range(2)]
    tail = list(client.events(job_id, after=head[-1]["id"]))
    assert [e["id"] for e in head + tail] == ids
    assert _increasing(ids) and tail[-1]["type"] == "done"


def test_events_resume_mid_stream(client):
    """Drop the connection twice in the middle of the stream (usually while the job is still making audio)."""
    job_id = client.synthesize(STORY + " " + STORY, params={"length_scale": 1.4})["job_id"]
    stream = client.events(job_id, timeout=120)
    got = []
    for event in stream:
        got.append(event)
        if event["type"] == "chunk" and event["index"] in (1, 3):
            stream.drop()
    assert got[-1]["type"] == "done" and stream.reconnects == 2
    ids = [e["id"] for e in got]
    assert _increasing(ids)
    assert [e["id"] for e in client.events(job_id)] == ids  # the server's own record, replayed whole
    chunks = [e["index"] for e in got if e["type"] == "chunk"]
    assert chunks == list(range(len(chunks)))


def test_wait_by_polling(live):
    """Where websockets cannot pass (some proxies), wait() polls the record and reports it as events."""
    with Client(live.url, api_key=live.api_key, websockets=False) as polling:
        job_id = polling.synthesize("Polled, not followed.")["job_id"]
        seen: list[dict] = []
        job = polling.wait(job_id, on_event=seen.append, timeout=60, poll_s=0.2)
    assert job["status"] == "succeeded" and seen[-1]["type"] == "done" and seen[-1]["job_id"] == job_id


def _increasing(ids: list[str]) -> bool:
    keys = [tuple(int(x) for x in i.split("-")) for i in ids]
    return all(a < b for a, b in zip(keys, keys[1:]))


def test_errors_carry_the_servers_message(client, live):
    with pytest.raises(NotFound) as err:
        client.job("0" * 32)
    assert err.value.status == 404 and err.value.code == "job_not_found" and "no job with id" in str(err.value)
    with pytest.raises(NotFound):
        list(client.events("f" * 32))  # refused before the websocket handshake
    with pytest.raises(ApiError) as err:
        client.synthesize("Hi.", params={"length_scale": 9})
    assert err.value.status == 400 and err.value.param == "params.length_scale"
    assert str(err.value).startswith("params.length_scale must be between 0.5 and 2.0")
    assert not isinstance(err.value, (NotFound, AuthError))
    with pytest.raises(ApiError) as err:
        client.synthesize("Hi.", voice="nobody-at-all")
    assert err.value.status == 404 and err.value.param == "voice" and isinstance(err.value, NotFound)

    gone = Client(f"http://127.0.0.1:{free_port()}", api_key=live.api_key, timeout=5)
    with pytest.raises(ConnectionFailed) as err:
        gone.health()
    assert "cannot reach" in str(err.value)
    with pytest.raises(ConnectionFailed):
        list(gone.events("a" * 32, retries=1))


def test_wrong_key_is_an_auth_error(live):
    with Client(live.url, api_key="cbx_0000000000_" + "x" * 32) as wrong:
        if requests.get(live.url + "/jobs", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code != 401:
            pytest.xfail("auth layer not merged yet: the server does not check keys")
        with pytest.raises(AuthError) as err:
            wrong.jobs()
        assert err.value.status == 401 and "API key" in str(err.value)
        with pytest.raises(AuthError):
            list(wrong.events("a" * 32))  # the websocket handshake is refused alike
        assert wrong.health()["status"]  # /health needs no key


def test_rate_limit_is_raised_with_retry_after(tmp_path):
    """A system of its own (web app and Redis, no worker) with a limit of a few requests a minute."""
    limited = System(tmp_path, worker=False)
    limited.env["CHATTERBOX_RATE_LIMIT_PER_MINUTE"] = "4"
    limited.start()
    try:
        if requests.get(limited.url + "/jobs", headers={"Authorization": "Bearer x"}, timeout=10).status_code != 401:
            pytest.xfail("auth layer not merged yet: the server has no per-key limits")
        with Client(limited.url, api_key=limited.api_key) as keyed:
            with pytest.raises(RateLimited) as err:
                for _ in range(10):
                    keyed.engine()
        assert err.value.status == 429 and err.value.code == "rate_limited"
        assert err.value.retry_after is not None and err.value.retry_after >= 1
        assert "requests a minute" in str(err.value)
        # The command line calls it a refused request (6), with the server's message.
        result = subprocess.run([sys.executable, "-m", "chatterbox", "jobs", "list", "--server", limited.url,
                                 "--key", limited.api_key], env=limited.env, cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == EXIT_REFUSED and "requests a minute" in result.stderr
    finally:
        limited.stop()


def test_service_and_voices(client):
    assert client.health()["redis"]["ok"]
    engine = client.engine()
    assert "wav" in engine["formats"] and engine["max_text_chars"] > 0
    voices = client.voices()
    assert voices and all("id" in v for v in voices)
    assert any(v.get("builtin") for v in voices)
    builtin = next(v for v in voices if v.get("builtin"))
    assert client.voice(builtin["id"])["id"] == builtin["id"]
    assert isinstance(client.saved_voices(), list)
    with pytest.raises(NotFound):
        client.voice("no-such-voice")


def test_audiobook_submit_wait_download(client, tmp_path):
    parsed = client.parse_book(text=BOOK)["book"]
    assert [c["title"] for c in parsed["chapters"]] == ["Chapter One", "Chapter Two"]

    sent = client.submit_book(file=BOOK.encode(), source_format="txt", title="The Two Lanterns")
    assert sent["chapters"] == 2
    job = client.wait(sent["job_id"], timeout=180)
    assert job["status"] == "succeeded", job
    state = client.book(sent["job_id"])
    assert state["m4b_ready"] and [c["status"] for c in state["chapters"]] == ["assembled", "assembled"]
    assert any(b["id"] == sent["job_id"] for b in client.books())

    m4b = client.download_m4b(sent["job_id"], tmp_path)
    assert m4b.name == "The Two Lanterns.m4b"
    samples, rate = audio.decode(m4b)
    assert len(samples) > rate * 2
    chapter = client.download_chapter(sent["job_id"], 1)
    assert audio.decode(chapter)[1] > 0
    with pytest.raises(NotFound) as err:
        client.download_chapter(sent["job_id"], 5)
    assert err.value.code == "chapter_not_found"
