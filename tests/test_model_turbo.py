"""Chatterbox Turbo (chatterbox.tts_turbo) against fixtures made by the reference package on the same seeded random
weights (tests/fixtures/reference_turbo.pt, made by tools/make_reference_fixtures_turbo.py), and its API around the
model.

Both sides run the small checkpoint that the suite's other Turbo tests use (conftest's turbo_checkpoint: GPT-2
with 2 of its 24 blocks, the S3 tokenizer and S3Gen's flow cut likewise, every width full, a short built-in
voice); the fixture script sets the reference's depths to match. At full size the module spent 37 s of a core
drawing and running weights for the same check of the same code (the depths are read from the files).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from chatterbox.model import random_checkpoint_turbo as rc
from chatterbox.model.checkpoint import CheckpointError, read_safetensors, resolve_model_dir
from chatterbox.model.conds import Conditionals
from chatterbox.model.t3_turbo import TurboSampling
from chatterbox.model.tokenizer_turbo import punc_norm
from chatterbox.tts import load_s3gen
from chatterbox.tts_turbo import (MAX_CHUNK_CHARS, S3GEN_FILE, TURBO_FILES, ChatterboxTurboTTS, ReferenceClipError,
                                  load_t3, normalize_loudness)

FIXTURES = Path(__file__).parent / "fixtures" / "reference_turbo.pt"


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURES, weights_only=True)


@pytest.fixture(scope="module")
def small_dir(turbo_checkpoint, reference) -> Path:
    """The small checkpoint: conftest's (rc.write_turbo_checkpoint(small=True)), whose seed is the fixtures'."""
    assert int(reference["meta"]["weights_seed"]) == 0
    return turbo_checkpoint


@pytest.fixture(scope="module")
def model(small_dir) -> Iterator[ChatterboxTurboTTS]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fixtures were made
    yield ChatterboxTurboTTS.from_local(small_dir)
    torch.set_num_threads(threads)  # the other modules of this test process run as usual


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


def test_short_clip_is_refused(model, reference):
    clip = reference["clip_24k"].numpy()[: 24000 * 4]
    with pytest.raises(ReferenceClipError, match="more than 5 s"):
        model.make_conditionals(clip, sample_rate=24000)
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


def test_wrong_tensors_are_named(small_dir):
    tensors = {part: read_safetensors(small_dir / name) for part, name in rc.FILES.items()}
    t3 = {k: v for k, v in tensors["t3-turbo"].items() if k != "tfmr.wte.weight"}
    with pytest.raises(CheckpointError, match="missing tensor tfmr.wte.weight"):
        load_t3(t3, "cpu", torch.float32)
    t3 = {k: v for k, v in tensors["t3-turbo"].items() if k != "speech_head.bias"}
    with pytest.raises(CheckpointError, match="t3_turbo_v1.safetensors .*missing tensor speech_head.bias"):
        load_t3(t3, "cpu", torch.float32)
    t3 = {k: v for k, v in tensors["t3-turbo"].items() if not k.startswith("tfmr.h.0.")}
    with pytest.raises(CheckpointError, match=r"has layers \[1\] under tfmr.h., not 0 to n-1"):
        load_t3(t3, "cpu", torch.float32)
    s3 = {k: v for k, v in tensors["s3gen-meanflow"].items() if "time_embed_mixer" not in k}
    with pytest.raises(CheckpointError, match="missing tensor flow.decoder.estimator.time_embed_mixer.weight"):
        load_s3gen(s3, "cpu", torch.float32, S3GEN_FILE, meanflow=True)


def test_small_checkpoint_loads_with_its_block_count(model):
    assert model.t3.cfg.gpt2.n_layers == rc.SMALL_T3_LAYERS == len(model.t3.tfmr.h)
    assert model.sr == 24000 and model.conds is not None
    assert not hasattr(model.t3.tfmr, "wte")


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


def test_seed_repeats_and_stream_has_the_same_tokens(model, monkeypatch):
    seen = _recording(model, monkeypatch)
    text = "Hello there [laugh] you."
    first = model.generate(text, seed=11, max_new_tokens=30)
    again = model.generate(text, seed=11, max_new_tokens=30)
    model.generate(text, seed=12, max_new_tokens=30)
    assert torch.equal(first, again)
    assert seen[0] == seen[1] != seen[2]
    assert seen[0][-3:] == [4299] * 3 and all(t < 6561 for t in seen[0])
    assert first.shape == (1, len(seen[0]) * 960)
    pieces = list(model.generate_stream(text, seed=11, max_new_tokens=30, chunk_tokens=10))
    assert seen[3] == seen[0]
    assert len(pieces) >= 3 and all(p.dim() == 2 and p.shape[0] == 1 for p in pieces)
    assert abs(sum(p.shape[1] for p in pieces) - first.shape[1]) <= 960


def test_long_text_is_chunked(model):
    assert MAX_CHUNK_CHARS < 300
    text = " ".join(["This sentence is spoken by Turbo [sigh] in a chunk of its own."] * 6)
    chunks = model._chunks(text)
    assert len(chunks) > 1 and all(len(c) <= MAX_CHUNK_CHARS for c in chunks)
    assert sum(c.count("[sigh]") for c in chunks) == 6
