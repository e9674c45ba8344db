"""The three Chatterbox models in one running system (small random weights): each chosen per job through REST,
OpenAI's names, books and saved voices, and the worker that holds them says so."""
from __future__ import annotations

import numpy as np
import pytest

from chatterbox import audio

from .conftest import System, exported_voice
from .test_voices import RATE, speechlike

SHORT = {"max_new_tokens": 12, "seed": 3}


@pytest.fixture(scope="module")
def three(tmp_path_factory, random_checkpoint, turbo_checkpoint, mtl_checkpoint) -> System:
    system = System(tmp_path_factory.mktemp("three-models"))
    system.env.update(TTS_ENGINE="chatterbox", CHATTERBOX_MODEL_DIR=str(random_checkpoint),
                      CHATTERBOX_TURBO_DIR=str(turbo_checkpoint), CHATTERBOX_MULTILINGUAL_DIR=str(mtl_checkpoint),
                      CHATTERBOX_PREVIEW_MAX_TOKENS="6", CHATTERBOX_BOOK_QUALITY_CHECKS="0")
    system.start()
    yield system
    system.stop()


def wav_of(system: System, job_id: str) -> np.ndarray:
    done = system.wait_job(job_id, timeout=240)
    assert done["status"] == "succeeded", done
    samples, rate = audio.decode(system.api.get(f"/jobs/{job_id}/audio", timeout=30).content)
    assert rate == 24000 and samples.size
    return samples


def test_each_model_is_chosen_per_job(three):
    engine = three.api.get("/engine", timeout=10).json()
    assert [(m["name"], m["available"]) for m in engine["models"]] == \
        [("original", True), ("turbo", True), ("multilingual", True)]
    assert len(next(m for m in engine["models"] if m["name"] == "multilingual")["languages"]) == 23
    health = three.api.get("/health", timeout=10).json()
    assert health["workers"][0]["models"] == ["original", "turbo", "multilingual"]

    jobs = {"original": three.submit("Hello there.", params={**SHORT, "steps": 2})["job_id"],
            "turbo": three.submit("Hello [laugh] there.", model="turbo", params=SHORT)["job_id"],
            "multilingual": three.submit("Ich habe 3 Katzen.", language="de", params={**SHORT, "steps": 2})["job_id"]}
    for model, job_id in jobs.items():
        wav_of(three, job_id)
        record = three.job(job_id)
        assert record["model"] == model, record
    assert three.job(jobs["multilingual"])["language"] == "de"
    # a model's own parameters only: cfg_weight is not Turbo's
    refused = three.api.post("/synthesize", json={"text": "Hi.", "model": "turbo",
                                                  "params": {"cfg_weight": 0.3}}, timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_parameter"


def test_openai_names_pick_the_models(three):
    listed = [m["id"] for m in three.api.get("/v1/models", timeout=10).json()["data"]]
    assert listed[:3] == ["chatterbox", "chatterbox-turbo", "chatterbox-multilingual"] and "tts-1" in listed
    for name, model in (("tts-1", "turbo"), ("tts-1-hd", "original"), ("chatterbox-multilingual", "multilingual")):
        # Streamed: the answer starts with the first window of audio; OpenAI's API sends no token cap, and random
        # weights never say stop, so the rest is not waited for.
        with three.api.post("/v1/audio/speech", timeout=240, stream=True, json={
                "model": name, "input": "Bonjour à tous." if model == "multilingual" else "Hello.", "voice": "alloy",
                "response_format": "wav", **({"language": "fr"} if model == "multilingual" else {})}) as response:
            assert response.status_code == 200, response.text
            job_id = response.headers["X-Job-Id"]
            assert next(response.iter_content(4096))[:4] == b"RIFF"
        record = three.job(job_id)
        assert (record["model"], record["language"]) == (model, "fr" if model == "multilingual" else "en")
        three.api.delete(f"/jobs/{job_id}", timeout=10)
        three.wait_job(job_id, timeout=120)


def test_a_book_in_its_own_language_is_read_by_multilingual(three):
    response = three.api.post("/audiobooks", timeout=30, json={
        "chapters": [{"title": "Un", "text": "Il était une fois un petit chat."}], "language": "fr",
        "params": {"max_new_tokens": 10, "steps": 2}})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    record = three.job(job_id)
    assert (record["model"], record["language"]) == ("multilingual", "fr")
    done = three.wait_job(job_id, timeout=300)
    assert done["status"] == "succeeded", done


def test_a_saved_voice_serves_every_model_that_can_use_it(three, tmp_path):
    # Voices as cloning leaves them (conditionals and the cleaned recording; cloning has tests of its own): one from
    # 7 s of speech, and one whose recording is 0.1 s, which the original and multilingual models can use (they
    # read its conditionals) and Turbo cannot (it makes its own from the recording, which must be over 5 s).
    for name, seconds in (("Long", 7.0), ("Short", 0.1)):
        voice = exported_voice(tmp_path / name, name, audio.wav_bytes(speechlike(seconds), RATE))
        imported = three.api.post("/voices/import", timeout=30, files={"file": ("a.voice", voice)})
        assert imported.status_code == 201, imported.text
    for model in ("turbo", "multilingual", "original"):
        job = three.submit("Speaking as Long.", voice="Long", model=model,
                           params={**SHORT, **({"steps": 2} if model != "turbo" else {})})
        wav_of(three, job["job_id"])
    for model, status in (("turbo", 400), ("original", 202)):
        response = three.api.post("/synthesize", timeout=10, json={
            "text": "Hi.", "voice": "Short", "model": model, "params": {"max_new_tokens": 6}})
        assert response.status_code == status, response.text
    error = three.api.post("/synthesize", json={"text": "Hi.", "voice": "Short", "model": "turbo"},
                           timeout=10).json()["error"]
    assert error["code"] == "voice_too_short" and "longer than 5 s" in error["message"], error


def test_the_speak_page_switches_models_languages_and_tags(three, browser):
    from .conftest import shot
    from .test_dashboard import speak_page, wait_status

    page = speak_page(browser, three)
    assert not page.is_hidden("#model-choices")
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == \
        ["original", "turbo", "multilingual"]
    assert page.is_hidden("#tags") and page.locator("#param-cfg_weight").count() == 1
    page.select_option("#model", "turbo")  # Turbo's own parameters and its tags
    assert page.locator("#param-cfg_weight").count() == 0 and page.locator("#param-top_k").count() == 1
    assert page.is_visible("#tags") and page.is_disabled("#language")
    page.fill("#text", "Well")
    page.click("#tags button:has-text('[laugh]')")
    assert page.input_value("#text") == "Well [laugh]"
    page.fill("#param-max_new_tokens", "8")
    page.fill("#param-seed", "4")
    page.click("#submit")
    wait_status(page, timeout=180_000)
    assert three.job(page.text_content("#job-id"))["model"] == "turbo"
    page.select_option("#model", "multilingual")  # 23 languages; the plan follows the language
    assert page.locator("#language option").count() == 23 and page.is_hidden("#tags")
    page.select_option("#language", "de")
    page.fill("#text", "Ich habe 3 Katzen.")
    page.wait_for_function("document.querySelector('#plan-list li')?.textContent.includes('drei')")
    shot(page, "speak-models")
    assert not page.errors
    page.close()
