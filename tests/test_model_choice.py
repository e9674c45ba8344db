"""Which model and language a job gets: the rules of Engine.for_model, with each model's files present or not
(empty files: presence is all that is looked at before loading), and the settings that steer them."""
from __future__ import annotations

from pathlib import Path

import pytest

from chatterbox.engines import InvalidRequest, choose_engine, create_engine
from chatterbox.engines.models import MODELS, configured_models, present_models
from chatterbox.settings import load


def settings_with(tmp_path: Path, *models: str, **overrides):
    settings = load({"data_dir": tmp_path, **overrides}, environ={})
    for name in models:
        directory = MODELS[name].directory(settings)
        directory.mkdir(parents=True, exist_ok=True)
        for file in MODELS[name].files:
            (directory / file).write_bytes(b"x")
    return settings


def refused(engine, code: str, **choice) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        engine.for_model(choice.get("model"), choice.get("language"))
    assert caught.value.code == code, caught.value.message
    assert 400 <= caught.value.status < 500
    return caught.value


def test_models_are_found_by_their_files(tmp_path):
    settings = settings_with(tmp_path, "original", "turbo")
    assert present_models(settings) == ["original", "turbo"]
    assert configured_models(settings) == ["original", "turbo"]
    assert configured_models(settings.replace(models="turbo")) == ["turbo"]
    assert choose_engine(settings)[0] == "chatterbox"
    # Multilingual's files come in the original's repository, so they are looked for beside its files by default
    assert MODELS["multilingual"].directory(settings) == settings.chatterbox_dir
    assert MODELS["turbo"].directory(settings) == tmp_path / "models" / "chatterbox-turbo"


def test_turbo_alone_makes_the_chatterbox_engine_the_choice(tmp_path):
    settings = settings_with(tmp_path, "turbo")
    assert choose_engine(settings)[0] == "chatterbox"
    engine = create_engine(settings, name="chatterbox")
    assert engine.model == "turbo"  # the default is the original only where it is held


def test_the_default_model_and_language(tmp_path):
    engine = create_engine(settings_with(tmp_path, "original", "turbo", "multilingual"), name="chatterbox")
    assert (engine.model, engine.language) == ("original", "en")
    view = engine.for_model()
    assert (view.model, view.language) == ("original", "en")
    german = engine.for_model(None, "de-DE")  # a language other than English alone picks Multilingual
    assert (german.model, german.language) == ("multilingual", "de")
    assert engine.for_model("chatterbox-turbo").model == "turbo"
    assert engine.for_model("multilingual", "en").language == "en"
    # each view takes its own model's parameters
    assert "top_k" in german.for_model("turbo").validate({"top_k": 50})
    with pytest.raises(InvalidRequest, match="unknown parameter 'top_k'"):
        german.validate({"top_k": 50})
    with pytest.raises(InvalidRequest, match="unknown parameter 'cfg_weight'"):
        engine.for_model("turbo").validate({"cfg_weight": 0.3})


def test_what_cannot_be_had_is_refused_with_its_reason(tmp_path):
    engine = create_engine(settings_with(tmp_path, "original"), name="chatterbox")
    assert "no worker holds it" in refused(engine, "model_unavailable", model="turbo").message
    refused(engine, "model_unavailable", language="fr")  # French needs Multilingual, which is not here
    refused(engine, "unknown_model", model="tts-9")
    refused(engine, "unknown_language", language="klingon")
    both = create_engine(settings_with(tmp_path / "both", "original", "turbo"), name="chatterbox")
    assert "English only" in refused(both, "unsupported_language", model="turbo", language="fr").message


def test_settings_choose_the_default_and_the_models(tmp_path):
    settings = settings_with(tmp_path, "original", "turbo", default_model="turbo")
    assert create_engine(settings, name="chatterbox").model == "turbo"
    with pytest.raises(ValueError, match="CHATTERBOX_MODELS"):
        load({"models": "original,fast"}, environ={})
    with pytest.raises(ValueError, match="CHATTERBOX_DEFAULT_MODEL"):
        load(environ={"CHATTERBOX_DEFAULT_MODEL": "hd"})


def test_piper_speaks_english_and_is_its_own_only_model(tmp_path):
    engine = create_engine(load({"data_dir": tmp_path}, environ={}), name="piper")
    assert engine.for_model() is engine and engine.for_model("piper", "en") is engine
    assert "runs the piper engine" in refused(engine, "model_unavailable", model="turbo").message
    refused(engine, "unsupported_language", language="de")


def test_a_worker_that_lacks_a_models_files_says_which(tmp_path):
    from chatterbox.engines import EngineUnavailable

    engine = create_engine(settings_with(tmp_path, "original", models="original,turbo"), name="chatterbox")
    with pytest.raises(EngineUnavailable, match="turbo model's files are not in .*t3_turbo_v1.safetensors"):
        engine.load()


def test_a_model_or_language_the_system_lacks_is_a_clear_4xx_everywhere_jobs_are_made(live):
    cases = [("/synthesize", {"text": "Hello.", "model": "turbo"}, "model", "model_unavailable"),
             ("/synthesize", {"text": "Bonjour.", "language": "fr"}, "language", "unsupported_language"),
             ("/synthesize", {"text": "Hello.", "language": "xx"}, "language", "unknown_language"),
             ("/synthesize/plan", {"text": "Hallo.", "language": "de"}, "language", "unsupported_language"),
             ("/audiobooks", {"text": "Hello there.", "model": "multilingual"}, "model", "model_unavailable"),
             ("/v1/audio/speech", {"model": "tts-1", "input": "Hi.", "voice": "alloy", "language": "ja"},
              "language", "unsupported_language")]
    for path, body, param, code in cases:
        response = live.api.post(path, json=body, timeout=30)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, code), (path, error)
    # OpenAI's model names stay served by whatever engine there is: tts-1 is Turbo only where Turbo is held
    speech = live.api.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "alloy",
                                                       "response_format": "wav"}, timeout=120)
    assert speech.status_code == 200, speech.text
    listed = live.api.get("/engine", timeout=10).json()
    assert "models" not in listed  # Piper has one model, itself


def test_the_model_table_agrees_with_the_models_own_files():
    from chatterbox import tts_turbo
    from chatterbox.engines.models import TURBO_TAGS
    from chatterbox.model.random_checkpoint_turbo import TAGS

    assert set(MODELS["turbo"].files) == set(tts_turbo.TURBO_FILES)
    assert set(TURBO_TAGS) == set(TAGS)
