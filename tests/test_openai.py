"""The OpenAI-compatible speech API on the real system (gunicorn, Redis, a Piper worker), with the official openai
package as the client wherever it can be."""
from __future__ import annotations

import base64
import json
import time

import numpy as np
import openai
import pytest
import requests
from openai import OpenAI

from chatterbox.audio import decode, is_silent
from chatterbox.streaming import CONTENT_TYPES, OUTPUT_RATE

from .conftest import Process, System, free_port, wait_until

SHORT = "Hello there. This is a short test of the speech endpoint."
SENTENCE = "The quick brown fox jumps over the lazy dog beside the quiet river bank. "
TERMINAL = ("succeeded", "failed", "cancelled")


def auth(system: System) -> dict:
    return {"Authorization": f"Bearer {system.api_key}"}


def make_client(url: str, key: str) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture()
def client(live: System) -> OpenAI:
    return make_client(live.url, live.api_key)


def get_job(system: System, job_id: str) -> dict:
    response = requests.get(f"{system.url}/jobs/{job_id}", headers=auth(system), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_job(system: System, job_id: str, timeout: float = 60) -> dict:
    return wait_until(lambda: (j := get_job(system, job_id))["status"] in TERMINAL and j, timeout,
                      what=f"job {job_id} to end")


def seconds_of(data: bytes, fmt: str) -> tuple[float, np.ndarray]:
    if fmt == "pcm":
        assert len(data) % 2 == 0
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0
        return len(samples) / OUTPUT_RATE, samples
    samples, rate = decode(data)
    assert rate == (48000 if fmt == "opus" else OUTPUT_RATE)  # Opus always decodes at 48 kHz
    return len(samples) / rate, samples


@pytest.mark.parametrize("fmt", list(CONTENT_TYPES))
def test_every_format(live: System, client: OpenAI, fmt: str):
    raw = client.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input=SHORT,
                                                       response_format=fmt)
    assert raw.headers["content-type"].startswith(CONTENT_TYPES[fmt])
    seconds, samples = seconds_of(raw.content, fmt)
    job = wait_job(live, raw.headers["x-job-id"])
    assert job["status"] == "succeeded" and job["source"] == "openai" and job["voice"] == "joe"
    assert 1.5 < seconds < 10 and not is_silent(samples)
    # The whole job's audio, resampled to 24 kHz: the same length give or take the codecs' padding.
    assert abs(seconds - job["duration_s"]) < (0.01 if fmt in ("pcm", "wav") else 0.15), (seconds, job["duration_s"])


def test_stream_starts_before_the_job_ends(live: System, client: OpenAI):
    text = SENTENCE * 5
    parts, status_at_first = [], None
    with client.audio.speech.with_streaming_response.create(model="piper", voice="alloy", input=text,
                                                            response_format="wav") as response:
        job_id = response.headers["x-job-id"]
        for chunk in response.iter_bytes():
            if status_at_first is None:
                status_at_first = get_job(live, job_id)["status"]
            parts.append(chunk)
    assert status_at_first == "running"
    job = wait_job(live, job_id)
    assert job["status"] == "succeeded"
    seconds, samples = seconds_of(b"".join(parts), "wav")
    assert abs(seconds - job["duration_s"]) < 0.01 and not is_silent(samples)


def test_speed(live: System, client: OpenAI):
    lengths = {}
    for speed in (1.0, 2.0, 4.0):  # 4.0 is beyond Piper's length_scale: atempo does the rest
        audio = client.audio.speech.create(model="tts-1-hd", voice="alloy", input=SHORT, response_format="flac",
                                           speed=speed)
        lengths[speed] = seconds_of(audio.content, "flac")[0]
    # Piper's length_scale stretches the phonemes but not all of its pauses: 2.0 gives about 0.64 of the length.
    assert lengths[2.0] < 0.75 * lengths[1.0], lengths
    assert abs(lengths[4.0] / lengths[2.0] - 0.5) < 0.05, lengths  # atempo is exact


def test_sse(live: System):
    body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": SHORT, "response_format": "mp3",
            "stream_format": "sse", "instructions": "Speak cheerfully."}
    with requests.post(live.url + "/v1/audio/speech", json=body, headers=auth(live), stream=True, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines(decode_unicode=True)
                  if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] == len(SHORT)
    seconds, samples = seconds_of(b"".join(base64.b64decode(e["audio"]) for e in events[:-1]), "mp3")
    assert 1.5 < seconds < 10 and not is_silent(samples)


def test_models(live: System, client: OpenAI):
    ids = [m.id for m in client.models.list()]
    assert ids == ["piper", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
    model = client.models.retrieve("tts-1")
    assert (model.id, model.object, model.owned_by) == ("tts-1", "model", "chatterbox-jobs")
    assert isinstance(model.created, int)
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("whisper-1")
    assert err.value.param == "model"


@pytest.mark.parametrize("fields, param", [
    ({"model": "tts-2"}, "model"),
    ({"response_format": "ogg"}, "response_format"),
    ({"speed": 5.0}, "speed"),
    ({"speed": 0.1}, "speed"),
    ({"input": ""}, "input"),
    ({"input": "word " * 1200}, "input"),
    ({"voice": "nobody"}, "voice"),
    ({"stream_format": "chunks"}, "stream_format"),
])
def test_bad_requests(live: System, client: OpenAI, fields: dict, param: str):
    request = {"model": "tts-1", "voice": "alloy", "input": SHORT, **fields}
    # A voice that is not there is a missing resource, as on every route (and another key's voice is answered so).
    error = openai.NotFoundError if param == "voice" else openai.BadRequestError
    with pytest.raises(error) as err:
        client.audio.speech.create(**request)
    assert err.value.param == param, err.value.body
    assert err.value.type == "invalid_request_error" and err.value.message


def test_unknown_and_missing_fields(live: System):
    url = live.url + "/v1/audio/speech"
    for body, param in [({"model": "tts-1", "voice": "alloy", "input": "Hi.", "format": "mp3"}, "format"),
                        ({"voice": "alloy", "input": "Hi."}, "model"),
                        ({"model": "tts-1", "input": "Hi."}, "voice"),
                        ({"model": "tts-1", "voice": "alloy"}, "input")]:
        r = requests.post(url, json=body, headers=auth(live), timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_disconnect_cancels_the_job(live: System):
    text = SENTENCE * 60  # about 4400 characters: half a minute of synthesis on a small CPU
    body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "mp3"}
    r = requests.post(live.url + "/v1/audio/speech", json=body, headers=auth(live), stream=True, timeout=60)
    assert r.status_code == 200, r.text
    job_id = r.headers["X-Job-Id"]
    assert next(r.iter_content(1024))
    r.close()
    started = time.monotonic()
    job = wait_job(live, job_id, timeout=30)
    assert job["status"] == "cancelled", job
    assert job["chunks_done"] < job["chunks_total"] - 3, job
    assert time.monotonic() - started < 10


@pytest.fixture(scope="module")
def mapped(system: System):
    """A second web app over the same Redis and worker, with CHATTERBOX_OPENAI_VOICES set."""
    port = free_port()
    env = {**system.env, "CHATTERBOX_WEB_PORT": str(port), "CHATTERBOX_OPENAI_VOICES": "alloy=joe, nova=nosuch"}
    web = Process(["web"], env, system.root / "web-openai-voices.log").start()
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(url + "/v1/models", headers=auth(system), timeout=5).status_code == 200
        except requests.RequestException:
            return False
    try:
        wait_until(answers, 60, what=f"the second web app\n{web.output()}")
        yield make_client(url, system.api_key)
    finally:
        web.kill()


def test_voice_mapping(live: System, mapped: OpenAI):
    for voice in ("alloy", "echo", "joe", {"id": "joe"}):  # mapped, unmapped (the default voice), ours, an object
        raw = mapped.audio.speech.with_raw_response.create(model="tts-1", voice=voice, input="Hi.",
                                                           response_format="pcm")
        assert raw.content and get_job(live, raw.headers["x-job-id"])["voice"] == "joe"
    with pytest.raises(openai.BadRequestError) as err:
        mapped.audio.speech.create(model="tts-1", voice="nova", input="Hi.")
    assert err.value.param == "voice" and "CHATTERBOX_OPENAI_VOICES" in err.value.message
