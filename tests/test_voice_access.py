"""Who may use a saved voice, decided in one place (the voice lookup) and seen the same from every route: another
key's voice is answered exactly like a voice that does not exist; names are unique per owner; shared voices (made
through Celery) are everyone's to use and only admins' to change."""
from __future__ import annotations

import threading
import time

import pytest
import requests
import websocket

from chatterbox import audio
from chatterbox.keys import KeyStore

from .conftest import System, exported_voice, wait_until
from .test_voices import RATE, clone_through_celery, saved_conds, speechlike

SHORT = {"max_new_tokens": 6, "steps": 1, "seed": 1}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def clip_wav(seconds: float = 7.0) -> bytes:
    """A speech-like clip that passes the reference checks (voiced, not clipped, over 5 s)."""
    return audio.wav_bytes(speechlike(seconds), RATE)


@pytest.fixture(scope="module")
def keys(cloning: System) -> dict[str, str]:
    store = KeyStore(cloning.store.r)
    tag = str(time.monotonic_ns())
    return {"alice": store.create(f"alice-{tag}")[1], "bob": store.create(f"bob-{tag}")[1]}


def import_voice(system: System, token: str, name: str, tmp_path) -> dict:
    response = requests.post(system.url + "/voices/import", headers=bearer(token), timeout=30,
                             files={"file": ("a.voice", exported_voice(tmp_path, name))})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def alices(cloning, keys, tmp_path_factory) -> dict:
    """Alice's voice, named like one of OpenAI's voices too."""
    return import_voice(cloning, keys["alice"], "alloy", tmp_path_factory.mktemp("alice"))


def refused_like_a_missing_voice(response: requests.Response, what: str) -> None:
    assert response.status_code == 404, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.json()["error"]["code"] == "unknown_voice", what


def test_another_keys_voice_is_unknown_on_every_route_that_takes_a_voice(cloning, keys, alices):
    url, bob = cloning.url, bearer(keys["bob"])
    for voice in (alices["id"], alices["name"]):
        refused_like_a_missing_voice(requests.post(url + "/synthesize", headers=bob, timeout=30, json={
            "text": "Hello.", "voice": voice, "params": SHORT}), f"/synthesize {voice}")
        refused_like_a_missing_voice(requests.post(url + "/synthesize", headers=bob, timeout=30, data={
            "text": "Hello.", "voice": voice}, files={"audio_prompt": ("c.wav", clip_wav())}),
            f"/synthesize one-off upload {voice}")
        refused_like_a_missing_voice(requests.post(url + "/audiobooks", headers=bob, timeout=30, json={
            "text": "A short book.", "voice": voice}), f"/audiobooks {voice}")
        refused_like_a_missing_voice(requests.post(url + "/audiobooks", headers=bob, timeout=30, data={
            "voice": voice}, files={"file": ("b.txt", b"A short book.")}), f"/audiobooks upload {voice}")
        refused_like_a_missing_voice(requests.get(f"{url}/voices/{voice}", headers=bob, timeout=10),
                                     f"GET /voices/{voice}")
        refused_like_a_missing_voice(requests.get(f"{url}/voices/{voice}/export", headers=bob, timeout=10),
                                     f"export {voice}")
    refused_like_a_missing_voice(requests.post(url + "/v1/audio/speech", headers=bob, timeout=30, json={
        "model": "tts-1", "input": "Hello.", "voice": alices["id"]}), "OpenAI speech by id")
    refused_like_a_missing_voice(requests.post(url + "/v1/audio/speech", headers=bob, timeout=30, json={
        "model": "tts-1", "input": "Hello.", "voice": {"id": alices["id"]}}), "OpenAI speech by voice object")
    for method in ("PATCH", "DELETE"):
        refused_like_a_missing_voice(requests.request(method, f"{url}/voices/{alices['id']}", headers=bob,
                                                      json={"name": "Mine now"}, timeout=10), method)
    refused_like_a_missing_voice(requests.get(f"{url}/voices/{alices['id']}/sample", headers=bob, timeout=10),
                                 "sample")
    # ... and is not listed anywhere Bob looks.
    for path in ("/voices", "/saved-voices", "/engine"):
        assert alices["id"] not in requests.get(url + path, headers=bob, timeout=10).text, path
    # A missing voice is answered the same, word for word but for the name.
    missing = requests.post(url + "/synthesize", headers=bob, timeout=30,
                            json={"text": "Hi.", "voice": "v_0123456789ab"})
    theirs = requests.post(url + "/synthesize", headers=bob, timeout=30, json={"text": "Hi.", "voice": alices["id"]})
    assert missing.json()["error"]["message"].replace("v_0123456789ab", alices["id"]) == \
        theirs.json()["error"]["message"]


def test_an_openai_name_of_another_keys_voice_speaks_in_the_callers_default(cloning, keys, alices):
    """Alice named her voice "alloy": Bob's "alloy" is OpenAI's name for him, never Alice's voice."""
    for token, expected in ((keys["bob"], "default"), (keys["alice"], alices["id"])):
        listed = requests.get(cloning.url + "/jobs", headers=bearer(token), timeout=10).json()["jobs"]
        before = {j["id"] for j in listed}
        # The request's job is all this needs, and it exists as soon as the request is taken: it is read from the
        # key's job list and cancelled, rather than heard (the OpenAI request has no max_new_tokens, and random
        # weights would speak for 40 s).
        speech = threading.Thread(target=requests.post, args=(cloning.url + "/v1/audio/speech",), kwargs=dict(
            headers=bearer(token), timeout=300, json={"model": "tts-1", "input": "Hello.", "voice": "alloy"}))
        speech.start()
        job = wait_until(lambda: next((j for j in requests.get(cloning.url + "/jobs", headers=bearer(token),
                                                                timeout=10).json()["jobs"]
                                       if j["id"] not in before), None), 30, what="the speech job")
        assert job["source"] == "openai" and job["voice"] == expected
        cloning.api.delete(f"/jobs/{job['id']}", timeout=10)
        cloning.wait_job(job["id"], timeout=120)
        speech.join(120)


def test_the_owner_and_admins_use_the_voice(cloning, keys, alices):
    for token in (keys["alice"], cloning.api_key):
        sent = requests.post(cloning.url + "/synthesize", headers=bearer(token), timeout=30,
                             json={"text": "In my voice.", "voice": alices["name"], "params": SHORT})
        assert sent.status_code == 202, sent.text
        done = cloning.wait_job(sent.json()["job_id"], timeout=180)
        assert done["status"] == "succeeded" and done["voice"] == alices["id"], done


def test_a_job_in_another_keys_voice_is_not_followed_by_others(cloning, keys, alices):
    sent = requests.post(cloning.url + "/synthesize", headers=bearer(keys["alice"]), timeout=30,
                         json={"text": "Private.", "voice": alices["id"], "params": SHORT}).json()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"{cloning.ws_url}/ws/jobs/{sent['job_id']}",
                                    header=[f"Authorization: Bearer {keys['bob']}"], timeout=10)
    assert refused.value.status_code == 404
    cloning.wait_job(sent["job_id"], timeout=180)


def test_names_are_unique_per_owner(cloning, keys, alices, tmp_path):
    # Bob may have an "alloy" of his own: a 409 would tell him that someone else has one.
    bobs = import_voice(cloning, keys["bob"], "alloy", tmp_path / "bob")
    assert bobs["id"] != alices["id"] and bobs["owner"] != alices["owner"]
    again = requests.post(cloning.url + "/voices/import", headers=bearer(keys["alice"]), timeout=30,
                          files={"file": ("a.voice", exported_voice(tmp_path / "alice", "alloy"))})
    assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_name"
    # Each resolves the name to their own voice.
    for token, expected in ((keys["alice"], alices["id"]), (keys["bob"], bobs["id"])):
        sent = requests.post(cloning.url + "/synthesize", headers=bearer(token), timeout=30,
                             json={"text": "Mine.", "voice": "alloy", "params": SHORT}).json()
        assert cloning.job(sent["job_id"])["voice"] == expected
        cloning.wait_job(sent["job_id"], timeout=180)
    renamed = requests.patch(f"{cloning.url}/voices/{bobs['id']}", headers=bearer(keys["bob"]), timeout=10,
                             json={"name": "Bob's own"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Bob's own"
    # The admin sees both "alloy"s: Alice's is the only one left, so her name resolves.
    assert cloning.api.get("/voices/alloy", timeout=10).json()["id"] == alices["id"]


def test_shared_voices_are_everyones_to_use_and_only_admins_to_change(cloning, keys, tmp_path):
    from chatterbox.access import SYSTEM
    from chatterbox.voices import VoiceLibrary

    clip = tmp_path / "clip.wav"
    clip.write_bytes(clip_wav())
    job = clone_through_celery(cloning, clip, f"Shared {time.monotonic_ns()}")  # it belongs to no key
    assert job["status"] == "succeeded", job
    shared = VoiceLibrary(cloning.settings.voices_dir).get(job["voice_id"], SYSTEM)
    assert shared.owner == ""
    bob = bearer(keys["bob"])
    sent = requests.post(cloning.url + "/synthesize", headers=bob, timeout=30,
                         json={"text": "A shared voice.", "voice": shared.name, "params": SHORT})
    assert sent.status_code == 202 and cloning.wait_job(sent.json()["job_id"], timeout=180)["status"] == "succeeded"
    assert shared.id in requests.get(cloning.url + "/saved-voices", headers=bob, timeout=10).text
    for method, body in (("PATCH", {"name": "Taken over"}), ("DELETE", None)):
        response = requests.request(method, f"{cloning.url}/voices/{shared.id}", headers=bob, json=body, timeout=10)
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden", response.text
    assert VoiceLibrary(cloning.settings.voices_dir).get(shared.id, SYSTEM).name == shared.name
    admin = cloning.api.patch(f"/voices/{shared.id}", json={"name": f"{shared.name} renamed"}, timeout=10)
    assert admin.status_code == 200
    assert cloning.api.delete(f"/voices/{shared.id}", timeout=10).status_code == 200


def test_the_lookup_itself_takes_the_caller(tmp_path):
    """Below the routes: the library finds for a caller only what that caller may use."""
    from chatterbox.access import SYSTEM, Caller
    from chatterbox.model.conds import Conditionals
    from chatterbox.voices import VoiceError, VoiceLibrary

    lib = VoiceLibrary(tmp_path / "voices")
    conds: Conditionals = saved_conds(tmp_path)
    a = lib.create(name="Narrator", engine="chatterbox", conds=conds, reference_wav=b"", owner="ka")
    b = lib.create(name="Narrator", engine="chatterbox", conds=conds, reference_wav=b"", owner="kb")
    shared = lib.create(name="Narrator", engine="chatterbox", conds=conds, reference_wav=b"")
    alice, bob, carol = Caller("ka"), Caller("kb"), Caller("kc")
    assert lib.get("Narrator", alice).id == a.id and lib.get("Narrator", bob).id == b.id
    assert lib.get("Narrator", carol).id == shared.id
    with pytest.raises(VoiceError) as missing:
        lib.get(b.id, alice)
    assert missing.value.code == "unknown_voice"
    assert [v.id for v in lib.list(alice)] == [a.id, shared.id]
    assert lib.get("Narrator", SYSTEM).id == shared.id
    with pytest.raises(VoiceError) as forbidden:
        lib.delete(shared.id, alice)
    assert forbidden.value.code == "forbidden"
    with pytest.raises(VoiceError):
        lib.update(b.id, alice, name="Stolen")
    assert sorted(v.id for v in lib.all()) == sorted([a.id, b.id, shared.id])
