"""Kokoro-FastAPI's POST /dev/captioned_speech on the real system (gunicorn, Redis, a Piper worker): the audio with
its word timestamps, whole or streamed as newline-delimited JSON, as Kokoro's clients read them."""
from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
import requests

from chatterbox import audio
from chatterbox.keys import KeyStore

from .conftest import System, exported_voice
from .test_openai import SENTENCE, get_job, seconds_of, wait_job

URL = "/dev/captioned_speech"
SHORT = "Hello there, this is a captioned test."
# Two text chunks (CHATTERBOX_CHUNK_CHARS is 300): a job's words come a text chunk at a time.
SENTENCES = ("The first sentence is short. Then a second one follows it, a little longer than the first. "
             "A third one comes after them both. The fourth sentence talks about the weather in the valley. "
             "Number five is about the quiet river and the boats on it. The sixth sentence is nearly the last. "
             "And the seventh one ends the text.")
MIME = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav",
        "pcm": "audio/pcm"}
MAGIC = {"wav": b"RIFF", "opus": b"OggS", "flac": b"fLaC"}


def post(system: System, body: dict, **kwargs) -> requests.Response:
    return system.api.post(URL, json=body, timeout=120, **kwargs)


def streamed(system: System, body: dict) -> tuple[requests.Response, list[dict]]:
    with post(system, body, stream=True) as response:
        assert response.status_code == 200, response.text
        lines = [json.loads(line) for line in response.iter_lines() if line]
    return response, lines


def words_of(timestamps: list[dict]) -> list[str]:
    return [t["word"] for t in timestamps]


def slack(fmt: str) -> float:
    """How far a word's end may pass the decoded audio's: times are rounded to ms, and codecs pad or trim a little."""
    return 0.01 if fmt in ("wav", "pcm") else 0.15


def assert_in_order(timestamps: list[dict], seconds: float, fmt: str) -> None:
    """Each word within the audio, none before the one that precedes it."""
    previous = 0.0
    for t in timestamps:
        assert set(t) == {"word", "start_time", "end_time"}, t
        assert previous <= t["start_time"] <= t["end_time"] <= seconds + slack(fmt), (t, previous, seconds)
        previous = t["start_time"]


@pytest.mark.parametrize("fmt", ["mp3", "wav", "opus"])
def test_the_whole_answer(live: System, fmt: str):
    r = post(live, {"model": "kokoro", "input": SHORT, "voice": "af_heart", "response_format": fmt, "stream": False})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json", r.text
    answer = r.json()
    assert set(answer) == {"audio", "audio_format", "timestamps"} and answer["audio_format"] == MIME[fmt]
    data = base64.b64decode(answer["audio"])
    assert data.startswith(MAGIC[fmt]) if fmt in MAGIC else data[:3] == b"ID3" or data[0] == 0xFF
    seconds, samples = seconds_of(data, fmt)
    assert not audio.is_silent(samples)
    timestamps = answer["timestamps"]
    assert words_of(timestamps) == SHORT.split()
    assert_in_order(timestamps, seconds, fmt)
    assert timestamps[-1]["end_time"] > seconds - 1.0  # at most the end's trailing silence after the last word
    # A job like any other: listed, the caller's, Kokoro's voice name speaking in the default voice.
    job = wait_job(live, r.headers["X-Job-Id"])
    assert (job["status"], job["source"], job["voice"]) == ("succeeded", "captioned", "joe")
    listed = live.api.get("/jobs?limit=20", timeout=10).json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]


def test_the_streamed_answer(live: System):
    # Kokoro's defaults: streamed, with timestamps, mp3, its default model and voice.
    response, lines = streamed(live, {"input": SENTENCES})
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    # Pieces as they are made (how many depends on how far the worker is ahead of the reader: about one a sentence).
    assert len(lines) >= 2, [(len(line["audio"]), len(line["timestamps"])) for line in lines]
    assert all(set(line) == {"audio", "audio_format", "timestamps"} and line["audio_format"] == "audio/mpeg"
               for line in lines), [line for line in lines if "audio" not in line]
    seconds, samples = seconds_of(b"".join(base64.b64decode(line["audio"]) for line in lines), "mp3")
    assert not audio.is_silent(samples)
    timestamps = [t for line in lines for t in line["timestamps"]]
    assert words_of(timestamps) == SENTENCES.split()
    assert_in_order(timestamps, seconds, "mp3")
    job = wait_job(live, response.headers["X-Job-Id"])
    assert job["status"] == "succeeded" and abs(seconds - job["duration_s"]) < 0.15
    # The job's own word timestamps, in seconds of the same audio.
    words = live.api.get(f"/jobs/{job['id']}/words", timeout=10).json()["words"]
    assert [(w["word"], w["start"], w["end"]) for w in words] == [
        (t["word"], t["start_time"], t["end_time"]) for t in timestamps]


def test_pauses_speed_and_volume(live: System):
    """A pause the text asks for is in the answer's audio and its times; speed 4 is Piper's fastest (2) and atempo
    (2 more), and the times are of the faster audio; the volume multiplier scales the samples."""
    text = "One two three. [pause:1.5s] Four five six."
    r = post(live, {"input": text, "response_format": "wav", "stream": False, "speed": 4.0, "volume_multiplier": 0.5})
    assert r.status_code == 200, r.text
    answer = r.json()
    seconds, samples = seconds_of(base64.b64decode(answer["audio"]), "wav")
    job = wait_job(live, r.headers["X-Job-Id"])
    own, rate = audio.decode(live.api.get(f"/jobs/{job['id']}/audio", timeout=10).content)
    assert abs(seconds - len(own) / rate / 2.0) < 0.05, (seconds, len(own) / rate)  # atempo 2 on the job's audio
    job_words = live.api.get(f"/jobs/{job['id']}/words", timeout=10).json()["words"]
    timestamps = answer["timestamps"]
    assert words_of(timestamps) == ["One", "two", "three.", "Four", "five", "six."]
    for ours, theirs in zip(timestamps, job_words):
        assert abs(ours["start_time"] - theirs["start"] / 2.0) < 0.002, (ours, theirs)
    assert timestamps[3]["start_time"] - timestamps[2]["end_time"] > 1.5 / 2.0  # the pause, at twice the pace
    assert abs(float(np.sqrt(np.mean(samples ** 2))) / float(np.sqrt(np.mean(own ** 2))) - 0.5) < 0.1


def test_without_timestamps(live: System):
    r = post(live, {"input": "Hi.", "response_format": "pcm", "stream": False, "return_timestamps": False,
                    "return_download_link": True, "model": "tts-1", "lang_code": "a", "voice": "Reader",
                    "voice_aliases": {"reader": "bm_george"}, "normalization_options": {"normalize": True}})
    assert r.status_code == 200 and r.json()["timestamps"] is None and r.json()["audio"]
    # the job's own file is WAV (the answer was encoded once, as it streamed); the link asks for the nearest format
    assert r.headers["X-Download-Path"] == f"/jobs/{r.headers['X-Job-Id']}/audio?format=wav"
    assert wait_job(live, r.headers["X-Job-Id"])["format"] == "wav"
    _, lines = streamed(live, {"input": "Hi.", "response_format": "pcm", "return_timestamps": False})
    assert lines and all(line["timestamps"] == [] for line in lines)


def test_a_cancelled_job_ends_the_stream_with_an_error(live: System):
    with post(live, {"input": SENTENCE * 20, "response_format": "pcm"}, stream=True) as response:
        assert response.status_code == 200, response.text
        lines = response.iter_lines()
        assert "audio" in json.loads(next(lines))
        live.api.delete(f"/jobs/{response.headers['X-Job-Id']}", timeout=10)
        last = json.loads([line for line in lines if line][-1])
    assert last["error"]["code"] == "job_cancelled", last
    assert get_job(live, response.headers["X-Job-Id"])["status"] == "cancelled"


@pytest.mark.parametrize("fields, status, param", [
    ({"response_format": "ogg"}, 400, "response_format"),
    ({"input": ""}, 400, "input"),
    ({"input": None}, 400, "input"),
    ({"input": "word " * 1200}, 400, "input"),
    ({"voice": "nobody"}, 404, "voice"),
    ({"voice": "af_bella+nobody"}, 404, "voice"),
    ({"model": "tts-2"}, 400, "model"),
    ({"speed": 5}, 400, "speed"),
    ({"volume_multiplier": -1}, 400, "volume_multiplier"),
    ({"lang_code": "xx"}, 400, "lang_code"),
    ({"lang_code": "j"}, 400, "lang_code"),  # Japanese: Piper speaks English only
    ({"stream": "yes"}, 400, "stream"),
    ({"allow_voice_tags": True}, 400, "allow_voice_tags"),
    ({"ssml": True}, 400, "ssml"),
    ({"normalization_options": {"normalize": "no"}}, 400, "normalization_options.normalize"),
    ({"voice_aliases": {"narrator": {"voice": "joe", "rate": 9}}}, 400, "voice_aliases.narrator.rate"),
    ({"format": "mp3"}, 400, "format"),
])
def test_bad_requests(live: System, fields: dict, status: int, param: str):
    r = post(live, {"input": SHORT, **fields})
    assert r.status_code == status and r.headers["Content-Type"] == "application/json", r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"], error


def test_not_json_and_no_key(live: System):
    r = live.api.post(URL, data="input=Hi", timeout=10, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = post(live, {"input": "Hi."}, headers={"Authorization": None})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_another_keys_voice_is_unknown(live: System, tmp_path):
    tag = str(time.monotonic_ns())
    keys = KeyStore(live.store.r)
    alice, bob = (keys.create(f"{name}-{tag}")[1] for name in ("alice", "bob"))
    imported = requests.post(live.url + "/voices/import", headers={"Authorization": f"Bearer {alice}"}, timeout=30,
                             files={"file": ("a.voice", exported_voice(tmp_path, f"Narrator {tag}"))})
    assert imported.status_code == 201, imported.text
    voice = imported.json()
    for name in (voice["id"], voice["name"]):
        r = post(live, {"input": "Hi.", "voice": name}, headers={"Authorization": f"Bearer {bob}"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_voice", r.text
        assert r.json()["error"]["param"] == "voice"
    # Alice finds her voice; it was made for Chatterbox, which this Piper system cannot speak with.
    r = post(live, {"input": "Hi.", "voice": voice["id"]}, headers={"Authorization": f"Bearer {alice}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_engine", r.text
    # And an alias of Bob's to it changes nothing.
    r = post(live, {"input": "Hi.", "voice": "mine", "voice_aliases": {"Mine": voice["id"]}},
             headers={"Authorization": f"Bearer {bob}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_voice", r.text
    # Alice's alias reaches the lookup: "mine" is her voice (which this system cannot speak with).
    r = post(live, {"input": "Hi.", "voice": "mine", "voice_aliases": {"Mine": voice["id"]}},
             headers={"Authorization": f"Bearer {alice}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_engine", r.text
