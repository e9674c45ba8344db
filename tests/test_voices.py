"""Voices: the saved-voice library, reference checks on generated signals, and clone jobs on a real worker."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from chatterbox import audio
from chatterbox.access import SYSTEM
from chatterbox.model.conds import Conditionals
from chatterbox.model.random_checkpoint import random_conds
from chatterbox.voices import VoiceError, VoiceLibrary, prepare_reference

from .conftest import ROOT

RATE = 24000


def speechlike(seconds: float, rate: int = RATE, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (amp * envelope * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)


def saved_conds(tmp_path) -> Conditionals:
    torch.save(random_conds(3), tmp_path / "c.pt")
    return Conditionals.load(tmp_path / "c.pt")


def test_library_lifecycle(tmp_path):
    lib = VoiceLibrary(tmp_path / "voices")
    voice = lib.create(name="Narrator", engine="chatterbox", conds=saved_conds(tmp_path), reference_wav=b"RIFF",
                       tags="calm, deep", description="a test")
    assert voice.id.startswith("v_") and voice.tags == ["calm", "deep"]
    assert lib.get("Narrator", SYSTEM).id == voice.id and lib.get(voice.id, SYSTEM).name == "Narrator"
    with pytest.raises(VoiceError, match="already exists"):
        lib.create(name="Narrator", engine="chatterbox", conds=saved_conds(tmp_path), reference_wav=b"")
    for bad in ("", "../etc", "x" * 80, "/abs"):
        with pytest.raises(VoiceError):
            lib.create(name=bad, engine="chatterbox", conds=saved_conds(tmp_path), reference_wav=b"")
    assert lib.update(voice.id, SYSTEM, name="Storyteller", tags=["warm"]).name == "Storyteller"
    exported = lib.export(voice.id, SYSTEM)
    lib.delete(voice.id, SYSTEM)
    with pytest.raises(VoiceError):
        lib.get(voice.id, SYSTEM)
    back = lib.import_(exported)
    original = torch.load(io.BytesIO(exported), weights_only=True)["conds"]
    again = torch.load(lib.conds_path(back.id), weights_only=True)
    assert torch.equal(original["t3"]["speaker_emb"], again["t3"]["speaker_emb"])
    assert torch.equal(original["gen"]["prompt_feat"], again["gen"]["prompt_feat"])
    assert back.name == "Storyteller" and back.tags == ["warm"]
    # Nothing half-written or left over (beside the stamp every change rewrites).
    assert sorted(p.name for p in lib.dir.iterdir()) == [".generation", back.id]
    with pytest.raises(VoiceError, match="not an exported voice"):
        lib.import_(b"\x80\x04garbage")


def test_the_library_is_read_once_and_sees_another_process_change_it(tmp_path, monkeypatch):
    lib = VoiceLibrary(tmp_path / "voices")
    ids = [lib.create(name=f"Voice {n}", engine="chatterbox", conds=saved_conds(tmp_path), reference_wav=b"RIFF").id
           for n in range(5)]
    reads = []
    real = VoiceLibrary._read
    monkeypatch.setattr(VoiceLibrary, "_read", lambda self, meta: reads.append(meta) or real(self, meta))
    assert lib.get("Voice 3", SYSTEM).id == ids[3]
    assert len(reads) == 5  # the library once, after the last change ...
    for n in range(5):
        assert VoiceLibrary(lib.dir).get(f"Voice {n}", SYSTEM).id == ids[n] and lib.get(ids[n], SYSTEM).name
    assert len(reads) == 5  # ... and not again: every lookup by name or id answered from it
    # A change made by another process (another worker, another machine on the shared volume) is seen at once.
    code = ("import sys; from chatterbox.access import SYSTEM; from chatterbox.voices import VoiceLibrary; "
            "lib = VoiceLibrary(sys.argv[1]); lib.update(sys.argv[2], SYSTEM, name='Renamed'); "
            "lib.delete(sys.argv[3], SYSTEM)")
    subprocess.run([sys.executable, "-c", code, str(lib.dir), ids[0], ids[1]], check=True, cwd=ROOT)
    assert lib.get("Renamed", SYSTEM).id == ids[0]
    with pytest.raises(VoiceError):
        lib.get("Voice 0", SYSTEM)
    with pytest.raises(VoiceError):
        lib.get(ids[1], SYSTEM)
    # What a caller changes in a voice it was given is not the library's until it is written.
    lib.get("Renamed", SYSTEM).name = "Scribbled"
    assert lib.get(ids[0], SYSTEM).name == "Renamed"


def test_reference_checks_on_generated_signals():
    ok, seconds = prepare_reference(audio.encode(speechlike(7), RATE, "flac"))
    assert 6.5 < seconds <= 7.01 and len(ok) > 6 * RATE
    assert abs(20 * np.log10(np.sqrt(np.mean(ok ** 2))) + 20) < 1.5  # loudness normalized to about -20 dBFS
    padded = np.concatenate([np.zeros(RATE * 2, np.float32), speechlike(6), np.zeros(RATE * 2, np.float32)])
    assert prepare_reference(audio.wav_bytes(padded, RATE))[1] < 6.5  # silence trimmed
    cases = [(audio.wav_bytes(speechlike(3), RATE), "too_short"),
             (audio.wav_bytes(np.zeros(RATE * 8, np.float32), RATE), "silent"),
             (audio.wav_bytes(np.clip(speechlike(8, amp=3.0), -1, 1), RATE), "clipped"),
             (b"definitely not audio" * 100, "not_audio"),
             (audio.wav_bytes(speechlike(70), RATE), "too_long")]
    for data, code in cases:
        with pytest.raises(VoiceError) as info:
            prepare_reference(data)
        assert info.value.code == code



def long_silence(seconds: int) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long.flac"
        subprocess.run([audio.ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                        "-t", str(seconds), "-c:a", "flac", str(path)], check=True)
        return path.read_bytes()


def clone(system, name, data, **form):
    return system.api.post("/voice-clone", files={"file": ("clip.webm", data)}, data={"name": name, **form}, timeout=60)


def test_clone_job_then_use_rename_and_delete_the_voice(cloning):
    response = clone(cloning, "Alice", audio.encode(speechlike(7), RATE, "ogg"), tags="bright", exaggeration="0.6")
    assert response.status_code == 202, response.text
    done = cloning.wait_job(response.json()["job_id"], timeout=180)
    assert done["status"] == "succeeded", done
    voice_id = done["voice_id"]
    saved = cloning.api.get("/saved-voices", timeout=10).json()["voices"]
    assert [v["name"] for v in saved] == ["Alice"] and saved[0]["tags"] == ["bright"]
    sample = cloning.api.get(f"/voices/{voice_id}/sample", timeout=10)
    assert sample.status_code == 200 and sample.content[:4] == b"RIFF"
    job = cloning.submit("Speaking as Alice.", voice="Alice", params={"max_new_tokens": 6, "steps": 2})
    assert cloning.wait_job(job["job_id"], timeout=180)["status"] == "succeeded"
    renamed = cloning.api.patch(f"/voices/{voice_id}", json={"name": "Alicia"}, timeout=10)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Alicia"
    exported = cloning.api.get(f"/voices/{voice_id}/export", timeout=10)
    assert cloning.api.delete(f"/voices/{voice_id}", timeout=10).status_code == 200
    assert cloning.api.get(f"/voices/{voice_id}", timeout=10).status_code == 404
    imported = cloning.api.post("/voices/import", files={"file": ("a.voice", exported.content)}, timeout=10)
    assert imported.status_code == 201 and imported.json()["name"] == "Alicia"
    assert cloning.api.delete("/voices/default", timeout=10).status_code == 400


def test_clone_refuses_bad_input_before_model_work(cloning, tmp_path):
    good = audio.encode(speechlike(7), RATE, "wav")
    (tmp_path / "elsewhere.wav").write_bytes(good)  # a good clip elsewhere on the server's disk
    cases = [(clone(cloning, "Bob", b"not audio at all" * 50), 400, "not_audio"),
             (clone(cloning, "Bob", audio.wav_bytes(speechlike(2), RATE)), 400, "too_short"),
             (clone(cloning, "../../etc", good), 400, "invalid_name"),
             (clone(cloning, "Bob", good, exaggeration="9"), 400, "out_of_range"),
             (cloning.api.post("/voice-clone", data={"name": "Bob"}, timeout=10), 400, "missing_file"),
             # Decoded in the web app only up to its cap (a 20-minute file costs what its first minute does), and
             # a playlist that would make ffmpeg read another file on the server is not audio.
             (clone(cloning, "Bob", long_silence(1200)), 400, "too_long"),
             (clone(cloning, "Bob", f"#EXTM3U\n#EXTINF:7,\nfile:{tmp_path}/elsewhere.wav\n".encode()), 400,
              "not_audio")]
    for response, status, code in cases:
        assert response.status_code == status and response.json()["error"]["code"] == code, response.text
    unknown = cloning.api.post("/synthesize", json={"text": "Hi.", "voice": "nobody"}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_voice"
    assert cloning.api.get("/voices/v_000000000000", timeout=10).status_code == 404


def clone_through_celery(system, clip: Path, name: str) -> dict:
    """A clone job sent as another program would: through the Celery API, from a process of its own."""
    script = ("import json; from tasks import clone_voice; "
              f"print(json.dumps(clone_voice.delay(file={str(clip)!r}, name={name!r}).get(timeout=240)))")
    out = subprocess.run([sys.executable, "-c", script], env=system.env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_clone_through_the_celery_api(cloning, tmp_path):
    clip = tmp_path / "clip.wav"
    clip.write_bytes(audio.wav_bytes(speechlike(7), RATE))
    result = clone_through_celery(cloning, clip, "Carol")
    assert result["status"] == "succeeded" and result["voice_id"].startswith("v_")
    assert clip.exists()  # the caller's file is theirs: only uploads are removed


def test_worker_cache_of_saved_voices_is_bounded(tmp_path, random_checkpoint):
    from chatterbox.engines import create_engine
    from chatterbox.settings import load

    settings = load({"data_dir": tmp_path, "model_dir": random_checkpoint, "voice_cache_size": 2}, environ={})
    engine = create_engine(settings, name="chatterbox")
    lib = VoiceLibrary(settings.voices_dir)
    ids = [lib.create(name=f"v{i}", engine="chatterbox", conds=saved_conds(tmp_path), reference_wav=b"").id
           for i in range(3)]
    first = engine.conditionals(ids[0])
    assert engine.conditionals(ids[0]) is first  # cached
    engine.conditionals(ids[1])
    engine.conditionals(ids[2])
    assert [voice for _, voice in engine._shared.cache] == ids[1:]  # the least recently used one left
    lib.delete(ids[2], SYSTEM)
    with pytest.raises(Exception, match="no longer exists"):
        engine.conditionals(ids[2])


def test_one_off_voice_with_the_request(cloning):
    clip = audio.encode(speechlike(6), RATE, "flac")
    response = cloning.api.post("/synthesize", data={"text": "A voice for one job.",
                                                     "params": json.dumps({"max_new_tokens": 6, "steps": 2})},
                                files={"audio_prompt": ("clip.flac", clip)}, timeout=60)
    assert response.status_code == 202, response.text
    done = cloning.wait_job(response.json()["job_id"], timeout=180)
    assert done["status"] == "succeeded", done
    assert not list((cloning.data / "uploads").glob(f"{done['id']}*"))  # the clip is not kept
    short = cloning.api.post("/synthesize", data={"text": "Hi."},
                             files={"audio_prompt": ("c.wav", audio.wav_bytes(speechlike(2), RATE))}, timeout=60)
    assert short.status_code == 400 and short.json()["error"]["param"] == "audio_prompt"
    assert short.json()["error"]["code"] == "too_short"


def test_a_second_worker_uses_the_saved_voice(cloning):
    import signal

    from .conftest import Process

    response = clone(cloning, "Shared", audio.encode(speechlike(7), RATE, "wav"))
    assert cloning.wait_job(response.json()["job_id"], timeout=180)["status"] == "succeeded"
    second = Process(["worker", "--name", "second"], cloning.env, cloning.root / "second.log").start()
    cloning.wait_worker(second)
    first = cloning.worker
    first.kill(signal.SIGKILL)
    try:
        job = cloning.submit("Spoken by the other worker.", voice="Shared", params={"max_new_tokens": 6, "steps": 2})
        done = cloning.wait_job(job["job_id"], timeout=180)
        assert done["status"] == "succeeded" and done["worker"].startswith("second@"), done
    finally:
        second.kill(signal.SIGKILL)
        cloning.start_worker()


def test_worker_killed_during_a_clone_leaves_one_whole_voice_or_none(cloning):
    import signal

    from .conftest import wait_until

    response = clone(cloning, "Dora", audio.encode(speechlike(7), RATE, "mp3"))
    job_id = response.json()["job_id"]
    wait_until(lambda: cloning.job(job_id)["status"] == "running", 60, 0.05, what="the clone to start")
    cloning.worker.kill(signal.SIGKILL)
    cloning.start_worker()
    final = cloning.wait_job(job_id, timeout=180)
    voices = [v for v in cloning.api.get("/saved-voices", timeout=10).json()["voices"]
              if v["name"] == "Dora"]
    if final["status"] == "succeeded":
        assert len(voices) == 1 and voices[0]["id"] == final["voice_id"]
        assert cloning.api.get(f"/voices/{final['voice_id']}/sample", timeout=10).status_code == 200
    else:
        assert voices == [] and "stopped while running" in final["error"]
    leftovers = [p.name for p in (cloning.data / "voices").iterdir()
                 if not p.name.startswith("v_") and p.name != ".generation"]
    assert all(p.startswith((".incoming-", ".deleted-")) for p in leftovers)  # hidden, swept later


def test_a_voice_made_for_another_engine_is_refused(tmp_path, random_checkpoint):
    from chatterbox.engines import InvalidRequest, create_engine
    from chatterbox.settings import load

    settings = load({"data_dir": tmp_path, "model_dir": random_checkpoint}, environ={})
    VoiceLibrary(settings.voices_dir).create(name="Elsewhere", engine="other", conds=saved_conds(tmp_path),
                                             reference_wav=b"")
    for name in ("chatterbox", "piper"):
        with pytest.raises(InvalidRequest) as info:
            create_engine(settings, name=name).check_voice("Elsewhere", SYSTEM)
        assert info.value.code == "wrong_engine"
