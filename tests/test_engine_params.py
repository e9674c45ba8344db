"""Every parameter of every engine reaches the model: changing that parameter alone changes the audio, on the engine
itself and through a job submitted over REST.

The cases are made from the engines' own parameter tables, so a parameter added to a table is tested here without
anyone remembering to, and fails until it really changes the output. (Two Chatterbox parameters were once dropped
by a stray comment on their way to the model, and every test stayed green.)
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from chatterbox import audio
from chatterbox.engines import ENGINES, Engine, Param, create_engine
from chatterbox.engines.models import MODELS
from chatterbox.settings import load

from .conftest import System

TEXT = "The lighthouse keeper counted the ships."
# What every case starts from, chosen so that the same request gives the same audio twice: Piper draws its noise
# unseeded, so the base has none; Chatterbox has a seed. Chatterbox runs are short (16 tokens: every parameter still
# changes the audio, for two thirds of 24's decoding): random weights rarely sample the stop token, so an utterance
# lasts max_new_tokens. Its temperature is low so that tokens repeat, as they do in real speech: at 0.8, random
# weights seldom sample a token twice in 24, and the repetition penalty may then change nothing (measured: 1.2 -> 2.0
# left the audio bit-identical; at 0.05 every parameter changes it). The tests' T3 has 2 layers (the small random
# checkpoint): exaggeration 0.5 -> 0.25 moves its logits too little to change a token chosen at 0.05, so the base sits
# at the bottom and the case moves it to the top (0.25 -> 2.0 changes it). Chatterbox's Turbo and Multilingual models
# are engines of their own here (the chatterbox engine's views of them).
BASE = {"piper": {"noise_scale": 0.0, "noise_w": 0.0},
        "chatterbox": {"seed": 7, "max_new_tokens": 16, "steps": 2, "temperature": 0.05, "exaggeration": 0.25},
        "turbo": {"seed": 7, "max_new_tokens": 16, "temperature": 0.05},
        "multilingual": {"seed": 7, "max_new_tokens": 16, "steps": 2, "temperature": 0.05, "exaggeration": 0.25}}
PARAMS = {"piper": ENGINES["piper"].params, "chatterbox": MODELS["original"].params,
          "turbo": MODELS["turbo"].params, "multilingual": MODELS["multilingual"].params}
# The matmul plans of the run (conftest): an engine loaded with a data directory of its own would plan every weight
# shape again there, and point this process's later decoding at that directory too.
RUNS_PLANS = {"plan_cache": os.environ["CHATTERBOX_PLAN_CACHE"]}
CASES = [pytest.param(name, spec.name, id=f"{name}-{spec.name}") for name, specs in PARAMS.items() for spec in specs]


def spec_of(engine_name: str, param: str) -> Param:
    return next(p for p in PARAMS[engine_name] if p.name == param)


def changed(engine_name: str, param: str) -> tuple[dict, dict]:
    """(base params, the same with only ``param`` moved to the bottom of its range, or the top when the base
    already is the bottom)."""
    spec = spec_of(engine_name, param)
    base = dict(BASE[engine_name])
    value = base.get(param, spec.default)
    assert value is not None, f"give {engine_name}'s {param} a value in BASE: it has no default"
    other = spec.maximum if value == spec.minimum else spec.minimum
    return base, {**base, param: spec.kind(other)}


def synthesize(engine: Engine, params: dict) -> np.ndarray:
    checked = engine.validate(params)
    return np.concatenate(list(engine.stream(TEXT, engine.default_voice, checked)))


@pytest.fixture(scope="module")
def engines(tmp_path_factory, random_checkpoint, turbo_checkpoint, mtl_checkpoint) -> dict[str, Engine]:
    # Engines of their own, loaded as a worker loads them (not the session's `tts`, whose current voice other tests
    # change with prepare_conditionals): the chatterbox one holds the three models.
    settings = load({"data_dir": tmp_path_factory.mktemp("params"), "model_dir": random_checkpoint,
                     "turbo_dir": turbo_checkpoint, "multilingual_dir": mtl_checkpoint, **RUNS_PLANS}, environ={})
    made = {name: create_engine(settings, "cpu", name) for name in ENGINES}
    for engine in made.values():
        engine.load()
    assert made["chatterbox"].models_held() == ["original", "turbo", "multilingual"]
    made["turbo"] = made["chatterbox"].for_model("turbo")
    made["multilingual"] = made["chatterbox"].for_model("multilingual", "de")
    return made


@pytest.fixture(scope="module")
def base_audio(engines) -> dict[str, np.ndarray]:
    made = {}
    for name, engine in engines.items():
        made[name] = synthesize(engine, BASE[name])
        # Else a change below could be the engine's own randomness rather than the parameter's doing.
        assert np.array_equal(made[name], synthesize(engine, BASE[name])), f"{name}: the base is not repeatable"
    return made


@pytest.mark.parametrize("engine_name, param", CASES)
def test_each_parameter_changes_the_engines_output(engines, base_audio, engine_name, param):
    base, other = changed(engine_name, param)
    first, moved = base_audio[engine_name], synthesize(engines[engine_name], other)
    assert first.shape != moved.shape or not np.array_equal(first, moved), \
        f"{engine_name}: {param} {base.get(param)} -> {other[param]} left the audio bit-identical"


def test_every_model_keyword_is_one_the_model_takes():
    import inspect

    from piper import SynthesisConfig

    from chatterbox.mtl_tts import ChatterboxMultilingualTTS
    from chatterbox.tts import ChatterboxTTS
    from chatterbox.tts_turbo import ChatterboxTurboTTS

    takes = {"chatterbox": ChatterboxTTS, "turbo": ChatterboxTurboTTS, "multilingual": ChatterboxMultilingualTTS}
    takes = {name: set(inspect.signature(cls.generate_stream).parameters) & set(inspect.signature(cls.generate).parameters)
             for name, cls in takes.items()}
    takes["piper"] = set(inspect.signature(SynthesisConfig).parameters)
    for name, specs in PARAMS.items():
        assert {p.keyword for p in specs} <= takes[name], name


# -- the same through the job system ------------------------------------------------------------------------------

def job_audio(system: System, jobs: dict[str, str]) -> dict[str, bytes]:
    out = {}
    for label, job_id in jobs.items():
        done = system.wait_job(job_id, timeout=300)
        assert done["status"] == "succeeded", done
        response = system.api.get(f"/jobs/{job_id}/audio", timeout=30)
        assert response.status_code == 200
        out[label] = response.content
    return out


def rest_cases(system: System, engine_name: str) -> None:
    listed = system.api.get("/engine", timeout=10).json()
    assert listed["name"] == engine_name
    # The parameters the running engine offers are the ones of its table, so every one of them is sent below.
    assert [p["name"] for p in listed["params"]] == [p.name for p in ENGINES[engine_name].params]
    submitted = {"base": system.submit(TEXT, params=BASE[engine_name], format="wav")["job_id"]}
    for spec in ENGINES[engine_name].params:
        _, other = changed(engine_name, spec.name)
        submitted[spec.name] = system.submit(TEXT, params=other, format="wav")["job_id"]
    made = job_audio(system, submitted)
    for spec in ENGINES[engine_name].params:
        assert made[spec.name] != made["base"], f"{spec.name} sent over REST left the audio unchanged"
    samples, rate = audio.decode(made["base"])
    assert rate == listed["sample_rate"] and samples.size


def test_each_piper_parameter_changes_a_rest_jobs_audio(live):
    rest_cases(live, "piper")


def test_each_chatterbox_parameter_changes_a_rest_jobs_audio(cloning):
    rest_cases(cloning, "chatterbox")


def test_multilingual_requests_are_decoded_together_as_each_alone(engines):
    """Multilingual's requests share a batch loop (as the original's do), each in its own language, and each one's
    audio is the audio it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    hub = engines["chatterbox"]
    views = {code: hub.for_model("multilingual", code) for code in ("de", "fr", "ja")}
    texts = {"de": "Guten Morgen.", "fr": "Bonjour à tous.", "ja": "こんにちは。"}
    params = {code: views[code].validate(BASE["multilingual"]) for code in views}

    def speak(code: str) -> np.ndarray:
        return np.concatenate(list(views[code].stream(texts[code], "default", params[code], priority="bulk")))

    alone = {code: speak(code) for code in views}
    with ThreadPoolExecutor(3) as pool:
        together = dict(zip(views, pool.map(speak, views)))
    loop = hub._shared.loops["multilingual"]
    assert loop.most >= 2, "the requests never shared a batch"
    for code in views:
        assert np.array_equal(alone[code], together[code]), code
    assert not np.array_equal(alone["de"][:2000], alone["fr"][:2000])


@pytest.mark.parametrize("graphs", [True, False])
def test_cuda_graphs_setting_reaches_the_model(tmp_path, random_checkpoint, graphs):
    """CHATTERBOX_CUDA_GRAPHS acts only on a GPU (chatterbox.model.t3_slots), but it must reach the model here too."""
    settings = load({"data_dir": tmp_path, "model_dir": random_checkpoint, "models": "original",
                     "cuda_graphs": graphs, **RUNS_PLANS}, environ={})
    engine = create_engine(settings, "cpu", "chatterbox")
    engine.load()
    assert engine.tts.speech.cuda_graphs is graphs


def test_plan_cache_setting_is_where_the_worker_keeps_its_plans(tmp_path, random_checkpoint, monkeypatch):
    """CHATTERBOX_PLAN_CACHE reaches the model: the plans a worker's decoding makes are written where it says."""
    from chatterbox.model import rowmatmul

    monkeypatch.setattr(rowmatmul, "_PLANS", {})  # nothing planned yet in this process
    monkeypatch.setattr(rowmatmul, "_plan_cache", rowmatmul._plan_cache)  # restored after the test
    path = tmp_path / "elsewhere" / "plans.json"
    settings = load({"data_dir": tmp_path, "model_dir": random_checkpoint, "models": "original",
                     "plan_cache": path}, environ={})
    engine = create_engine(settings, "cpu", "chatterbox")
    engine.load()
    assert not path.exists()  # plans are made at the first decoding step of each weight shape
    synthesize(engine, {**BASE["chatterbox"], "max_new_tokens": 2})
    assert path.is_file() and all(name.endswith(f"rows={engine.tts.speech.matmul.rows}")
                                  for name in json.loads(path.read_text()))
