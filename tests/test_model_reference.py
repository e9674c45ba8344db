"""Our Chatterbox part 1 against fixtures made by the reference package on the same random weights.

The fixtures (tests/fixtures/reference_t3.pt) come from tools/make_reference_fixtures.py, which ran the reference
in its own throwaway environment on the small checkpoint the rest of the suite uses (T3 with 2 of its 30 layers,
the S3 tokenizer with 1 of its 6 blocks, every width full; the reference's depths were set to match), so the
weights are the session's, bit for bit. The full depth is loaded and run by test_model_mtl, whose T3 is the same
Llama at 30 layers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chatterbox.model.speech_tokens import ReferenceClipError, SpeechTokenModel, load_reference
from chatterbox.model.tokenizer import punc_norm

FIXTURES = Path(__file__).parent / "fixtures" / "reference_t3.pt"


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURES, weights_only=True)


@pytest.fixture(scope="module")
def model(random_checkpoint, reference) -> SpeechTokenModel:
    assert reference["meta"]["weights_seed"] == "0"  # the seed of the session's random checkpoint
    directory = random_checkpoint
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fixtures were made
    yield SpeechTokenModel.from_local(directory, device="cpu")
    torch.set_num_threads(threads)


def test_text_normalization_and_token_ids(model, reference):
    for raw, normalized, ids in zip(reference["texts"], reference["normalized"], reference["text_tokens"]):
        assert punc_norm(raw) == normalized
        assert model.tokenizer(normalized, normalize=False).tolist() == list(ids)
        if raw.strip():  # ours refuses empty text instead of speaking a stock sentence
            assert model.tokenizer(raw).tolist() == list(ids)


def test_voice_encoder_embedding(model, reference):
    ours = model.ve.embed(reference["clip_16k"].numpy())
    torch.testing.assert_close(ours, reference["ve_embedding"].float(), rtol=1e-4, atol=2e-5)


def test_resampling_like_the_reference(reference):
    ours = load_reference(reference["clip_24k"].numpy(), sample_rate=24000)
    from chatterbox.model.speech_tokens import resample
    np.testing.assert_allclose(resample(ours, 24000, 16000), reference["clip_16k"].numpy(), atol=1e-5)


def test_s3_prompt_tokens(model, reference):
    clip16 = reference["clip_16k"]
    ours = model.s3_tokenizer(clip16[: 6 * 16000], max_tokens=150)
    assert ours.tolist() == reference["s3_tokens"].view(1, -1).tolist()


def test_prepared_conditionals_match(model, reference):
    conds = model.prepare_conditionals(reference["clip_24k"].numpy(), sample_rate=24000)
    torch.testing.assert_close(conds.t3.speaker_emb, reference["ve_embedding"].float(), rtol=1e-4, atol=2e-5)
    assert conds.t3.cond_prompt_speech_tokens.tolist() == reference["s3_tokens"].view(1, -1).tolist()


@pytest.mark.parametrize("case_index", [0, 1, 2])
def test_t3_guided_logits_and_sampled_tokens(model, reference, case_index):
    case = reference["t3_cases"][case_index]
    if case["cond"] == "builtin":
        conds = model.conds
    else:
        conds = model.prepare_conditionals(reference["clip_24k"].numpy(), sample_rate=24000)
    text_tokens = torch.tensor(reference["text_tokens"][case["text_index"]])
    from chatterbox.model.sampling import SamplingParams

    logits = []
    generator = torch.Generator().manual_seed(int(case["seed"]))
    tokens = list(model.t3.generate(
        conds.t3.with_exaggeration(case["exaggeration"]), text_tokens, cfg_weight=case["cfg_weight"],
        sampling=SamplingParams(temperature=case["temperature"], min_p=case["min_p"], top_p=case["top_p"],
                                repetition_penalty=case["repetition_penalty"]),
        max_new_tokens=case["max_new_tokens"], generator=generator,
        on_logits=lambda step, l: logits.append(l[0].clone())))
    expected = case["guided_logits"].float()
    torch.testing.assert_close(torch.stack(logits[: len(expected)]), expected, rtol=1e-4, atol=1e-4)
    ref_tokens = [t for t in case["speech_tokens"].view(-1).tolist() if t != 6562]
    assert tokens == ref_tokens


def test_bad_reference_clips(model, tmp_path):
    rate = 24000
    t = np.arange(rate * 3) / rate
    voice = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    with pytest.raises(ReferenceClipError, match="at least 1.5 s"):
        model.prepare_conditionals(voice[: rate // 2], sample_rate=rate)
    with pytest.raises(ReferenceClipError, match="silent"):
        model.prepare_conditionals(np.zeros(rate * 3, np.float32), sample_rate=rate)
    with pytest.raises(ReferenceClipError, match="clipped"):
        model.prepare_conditionals(np.sign(voice), sample_rate=rate)
    with pytest.raises(ReferenceClipError, match="sample rate 4000 Hz"):
        model.prepare_conditionals(voice, sample_rate=4000)
    junk = tmp_path / "voice.wav"
    junk.write_bytes(b"RIFF....WAVEjunk" * 50)
    with pytest.raises(ReferenceClipError, match="not usable audio"):
        model.prepare_conditionals(str(junk))


def test_generation_with_and_without_guidance(model):
    for cfg_weight in (0.0, 0.5):
        tokens = list(model.generate("A short test.", cfg_weight=cfg_weight, max_new_tokens=8, seed=3))
        assert len(tokens) <= 8 and all(0 <= t < 6561 for t in tokens)
    assert list(model.generate("Same seed.", max_new_tokens=6, seed=5)) == \
        list(model.generate("Same seed.", max_new_tokens=6, seed=5))
    with pytest.raises(ValueError, match="empty"):
        list(model.generate("   ", max_new_tokens=2))
