"""Chatterbox Turbo (chatterbox.tts_turbo) at full size against fixtures made by the reference package on the same
seeded random weights (tests/fixtures/reference_turbo.pt, made by tools/make_reference_fixtures_turbo.py), and
its API around the model on a small checkpoint (T3 cut to 2 of its 24 blocks).

The full-size weights are drawn once per module, in memory (about 15 s on 2 cores); the small checkpoint's files
are written from the same tensors, so nothing is drawn twice.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from chatterbox.model import random_checkpoint_turbo as rc
from chatterbox.model.checkpoint import CheckpointError, build, resolve_model_dir
from chatterbox.model.conds import Conditionals
from chatterbox.model.random_checkpoint import random_conds
from chatterbox.model.t3_turbo import TurboSampling
from chatterbox.model.tokenizer_turbo import TurboTokenizer, punc_norm
from chatterbox.model.voice_encoder import VoiceEncoder
from chatterbox.tts import load_s3gen
from chatterbox.tts_turbo import (MAX_CHUNK_CHARS, S3GEN_FILE, TURBO_FILES, ChatterboxTurboTTS, ReferenceClipError,
                                  load_t3, normalize_loudness)

FIXTURES = Path(__file__).parent / "fixtures" / "reference_turbo.pt"


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURES, weights_only=True)


@pytest.fixture(scope="module")
def tensors(reference) -> dict[str, dict[str, torch.Tensor]]:
    seed = int(reference["meta"]["weights_seed"])
    return {part: rc.random_state_dict(part, seed) for part in rc.FILES}


@pytest.fixture(scope="module")
def small_dir(turbo_checkpoint, reference) -> Path:
    """A small checkpoint: conftest's (rc.write_turbo_checkpoint(small=True)), whose seed is the fixtures' (one
    copy of its 1.8 GB on disk, not two)."""
    assert int(reference["meta"]["weights_seed"]) == 0
    return turbo_checkpoint


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("turbo-tokenizer")
    for name, text in rc.tokenizer_files().items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def model(tensors, tokenizer_dir, reference) -> Iterator[ChatterboxTurboTTS]:
    """The full-size model, built from the tensors in memory (as from_local builds it from the files)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fixtures were made
    t3 = load_t3(tensors["t3-turbo"], "cpu", torch.float32)
    ve = build(VoiceEncoder, tensors["ve"], "ve.safetensors", "cpu", torch.float32)
    s3gen, s3_tokenizer = load_s3gen(tensors["s3gen-meanflow"], "cpu", torch.float32, S3GEN_FILE, meanflow=True)
    conds = Conditionals.from_data(random_conds(int(reference["meta"]["weights_seed"]), prompt_tokens=150,
                                                gen_tokens=100))
    yield ChatterboxTurboTTS(t3, TurboTokenizer(tokenizer_dir), ve, s3gen, s3_tokenizer, conds, torch.device("cpu"))
    torch.set_num_threads(threads)  # the other modules of this test process run as usual


@pytest.fixture(scope="module")
def small(small_dir) -> ChatterboxTurboTTS:
    return ChatterboxTurboTTS.from_local(small_dir)


@pytest.fixture(scope="module")
def clip_conds(model, reference) -> Conditionals:
    return model.make_conditionals(reference["clip_24k"].numpy(), sample_rate=24000)


# ---- text ------------------------------------------------------------------------------------------------------


def test_text_normalization_and_token_ids(model, reference):
    assert len(model.tokenizer) == int(reference["meta"]["tokenizer_len"]) == 50276
    for raw, normalized, ids in zip(reference["texts"], reference["normalized"], reference["text_tokens"]):
        assert punc_norm(raw) == normalized
        assert model.tokenizer(normalized, normalize=False).tolist() == list(ids)
        if raw.strip():
            assert model.tokenizer(raw).tolist() == list(ids)


def test_tags_are_single_tokens(model):
    tokenizer = model.tokenizer
    assert {"[laugh]", "[sigh]", "[cough]", "[chuckle]", "[gasp]", "[clear throat]"} <= set(tokenizer.tags)
    for tag in tokenizer.tags:
        (only,) = tokenizer.encode(tag)
        assert only >= 50257 and tokenizer.decode([only]) == tag
    assert tokenizer.encode("Oh [laugh] no") == tokenizer.encode("Oh ") + tokenizer.encode("[laugh]") + \
        tokenizer.encode(" no")


def test_empty_text_is_refused(model):
    with pytest.raises(ValueError, match="empty"):
        model.tokenizer("   ")


# ---- voices ----------------------------------------------------------------------------------------------------


def test_clip_conditionals_match(clip_conds, reference):
    expected = reference["clip_conds"]
    normed = normalize_loudness(reference["clip_24k"].numpy(), 24000)
    np.testing.assert_allclose(normed, reference["clip_normalized"].numpy(), rtol=0, atol=1e-7)
    torch.testing.assert_close(clip_conds.t3.speaker_emb, expected["speaker_emb"], rtol=1e-4, atol=2e-5)
    assert clip_conds.t3.cond_prompt_speech_tokens.tolist() == expected["prompt_tokens"].tolist()
    assert clip_conds.gen["prompt_token"].tolist() == expected["gen_prompt_token"].tolist()
    torch.testing.assert_close(clip_conds.gen["prompt_feat"], expected["gen_prompt_feat"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(clip_conds.gen["embedding"], expected["gen_embedding"], rtol=1e-4, atol=1e-4)


def test_short_clip_is_refused(small, reference):
    clip = reference["clip_24k"].numpy()[: 24000 * 4]
    with pytest.raises(ReferenceClipError, match="more than 5 s"):
        small.make_conditionals(clip, sample_rate=24000)
    assert "5 seconds" in reference["short_clip_error"]  # the reference refuses it too


# ---- T3 --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_index", [0, 1, 2])
def test_speech_tokens_match(model, clip_conds, reference, case_index):
    case = reference["t3_cases"][case_index]
    conds = model.conds if case["cond"] == "builtin" else clip_conds
    sampling = TurboSampling(temperature=case["temperature"], top_k=case["top_k"], top_p=case["top_p"],
                             repetition_penalty=case["repetition_penalty"])
    logits = []
    text = model.tokenizer(reference["texts"][case["text_index"]])
    tokens = list(model.t3.generate(conds.t3, text, sampling=sampling, max_new_tokens=case["max_gen_len"] + 1,
                                    generator=torch.Generator().manual_seed(case["seed"]),
                                    on_logits=lambda step, x: logits.append(x[0].clone())))
    expected = case["logits"]
    torch.testing.assert_close(torch.stack(logits[: len(expected)]), expected, rtol=1e-4, atol=1e-4)
    assert tokens == case["speech_tokens"].view(-1).tolist()


# ---- S3Gen and the whole -----------------------------------------------------------------------------------------


def test_meanflow_s3gen_waveform(model, reference):
    case = reference["s3gen"]
    gen = model.conds.gen
    mels = model.s3gen.mels(case["tokens"], gen, generator=torch.Generator().manual_seed(case["seed"]))
    torch.testing.assert_close(mels, case["mels"], rtol=1e-4, atol=1e-4)
    wav = model.s3gen(case["tokens"], gen, torch.Generator().manual_seed(case["seed"]))
    assert wav.shape == case["wav"].shape
    torch.testing.assert_close(wav, case["wav"], rtol=0, atol=1e-4)


def test_generate_end_to_end(model, reference):
    case = reference["end_to_end"]
    wav = model.generate(reference["texts"][case["text_index"]], seed=case["seed"],
                         max_new_tokens=int(reference["meta"]["max_gen_len"]) + 1)
    assert wav.shape == case["wav"].shape
    torch.testing.assert_close(wav, case["wav"], rtol=0, atol=1e-4)


# ---- loading -----------------------------------------------------------------------------------------------------


def test_missing_files_are_named(tmp_path, small_dir):
    for name in TURBO_FILES:
        if name != "conds.pt":
            (tmp_path / name).symlink_to(small_dir / name)
    with pytest.raises(FileNotFoundError, match="conds.pt"):
        resolve_model_dir(tmp_path, files=TURBO_FILES)
    (tmp_path / "conds.pt").symlink_to(small_dir / "conds.pt")
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        ChatterboxTurboTTS.from_local(tmp_path)


def test_wrong_tensors_are_named(tensors):
    t3 = {k: v for k, v in tensors["t3-turbo"].items() if k != "tfmr.wte.weight"}
    with pytest.raises(CheckpointError, match="missing tensor tfmr.wte.weight"):
        load_t3(t3, "cpu", torch.float32)
    t3 = {k: v for k, v in tensors["t3-turbo"].items() if k != "speech_head.bias"}
    with pytest.raises(CheckpointError, match="t3_turbo_v1.safetensors .*missing tensor speech_head.bias"):
        load_t3(t3, "cpu", torch.float32)
    t3 = {k: v for k, v in tensors["t3-turbo"].items() if not k.startswith("tfmr.h.3.")}
    with pytest.raises(CheckpointError, match=r"has layers \[0, 1, 2, 4, .* under tfmr.h., not 0 to n-1"):
        load_t3(t3, "cpu", torch.float32)
    s3 = {k: v for k, v in tensors["s3gen-meanflow"].items() if "time_embed_mixer" not in k}
    with pytest.raises(CheckpointError, match="missing tensor flow.decoder.estimator.time_embed_mixer.weight"):
        load_s3gen(s3, "cpu", torch.float32, S3GEN_FILE, meanflow=True)


def test_small_checkpoint_loads_with_its_block_count(small):
    assert small.t3.cfg.gpt2.n_layers == rc.SMALL_T3_LAYERS == len(small.t3.tfmr.h)
    assert small.sr == 24000 and small.conds is not None
    assert not hasattr(small.t3.tfmr, "wte")


def test_tokenizer_files_as_the_reference_reads_them(small_dir):
    config = json.loads((small_dir / "tokenizer_config.json").read_text())
    added = json.loads((small_dir / "added_tokens.json").read_text())
    assert config["added_tokens_decoder"]["50256"]["content"] == "<|endoftext|>"
    assert sorted(added.values()) == list(range(50257, 50276))


# ---- generation API ----------------------------------------------------------------------------------------------


def _recording(model, monkeypatch) -> list[list[int]]:
    """Record the speech tokens each chunk hands to S3Gen."""
    seen: list[list[int]] = []
    original = model.speech.generate

    def generate(*args, **kwargs):
        tokens = []
        seen.append(tokens)
        for token in original(*args, **kwargs):
            tokens.append(token)
            yield token

    monkeypatch.setattr(model.speech, "generate", generate)
    return seen


def test_seed_repeats_and_stream_has_the_same_tokens(small, monkeypatch):
    seen = _recording(small, monkeypatch)
    text = "Hello there [laugh] you."
    first = small.generate(text, seed=11, max_new_tokens=30)
    again = small.generate(text, seed=11, max_new_tokens=30)
    small.generate(text, seed=12, max_new_tokens=30)
    assert torch.equal(first, again)
    assert seen[0] == seen[1] != seen[2]
    assert seen[0][-3:] == [4299] * 3 and all(t < 6561 for t in seen[0])
    assert first.shape == (1, len(seen[0]) * 960)
    pieces = list(small.generate_stream(text, seed=11, max_new_tokens=30, chunk_tokens=10))
    assert seen[3] == seen[0]
    assert len(pieces) >= 3 and all(p.dim() == 2 and p.shape[0] == 1 for p in pieces)
    assert abs(sum(p.shape[1] for p in pieces) - first.shape[1]) <= 960


def test_long_text_is_chunked(small):
    assert MAX_CHUNK_CHARS < 300
    text = " ".join(["This sentence is spoken by Turbo [sigh] in a chunk of its own."] * 6)
    chunks = small._chunks(text)
    assert len(chunks) > 1 and all(len(c) <= MAX_CHUNK_CHARS for c in chunks)
    assert sum(c.count("[sigh]") for c in chunks) == 6
