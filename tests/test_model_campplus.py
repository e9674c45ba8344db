"""CAMPPlus (S3Gen's speaker x-vector) against fixtures made by the reference package on the same seeded random
weights (tools/make_reference_fixtures_campplus.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from chatterbox.model.checkpoint import CheckpointError, build, read_safetensors, subset
from chatterbox.model.s3gen.campplus import CAMPPlus

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "reference_campplus.pt"
PREFIX = "speaker_encoder."


def _fixture_tool():
    spec = importlib.util.spec_from_file_location("make_reference_fixtures_campplus",
                                                  ROOT / "tools" / "make_reference_fixtures_campplus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURES, weights_only=True)


@pytest.fixture(scope="module")
def weight_sets(random_checkpoint, reference) -> dict:
    assert int(reference["meta"]["weights_seed"]) == 0  # the session checkpoint's seed: its s3gen file is ours
    seed0 = subset(read_safetensors(random_checkpoint / "s3gen.safetensors"), PREFIX)
    return {"seed0": seed0, "normalized": _fixture_tool().normalized_batchnorms(seed0)}


@pytest.fixture(scope="module")
def encoders(weight_sets) -> dict:
    return {name: build(CAMPPlus, tensors, "s3gen.safetensors", "cpu", torch.float32, prefix_hint=PREFIX)
            for name, tensors in weight_sets.items()}


@pytest.mark.parametrize("case", ["clip", "short"])
def test_fbank_matches_the_reference(encoders, reference, case):
    data = reference["cases"][case]
    feats = encoders["seed0"].features(data["wav_16k"])
    assert feats.shape == data["fbank"].shape
    # The reference ran this same torchaudio fbank; it matched exactly on the CPU the fixture was made on, and to
    # 6.6e-5 on another (AMD EPYC): the FFT and mel matmul kernels differ by CPU, and the log of a quiet frame's
    # energy magnifies the last-bit differences. Values span about +-10, so 1e-4 is still a float32-level match.
    torch.testing.assert_close(feats, data["fbank"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("weights", ["seed0", "normalized"])
@pytest.mark.parametrize("case", ["clip", "short"])
def test_xvector_matches_the_reference(encoders, reference, weights, case):
    expected = reference["xvectors"][weights][case]
    xvec = encoders[weights].xvector(reference["cases"][case]["wav_16k"])
    assert xvec.shape == expected.shape == (1, 192)
    assert torch.isfinite(xvec).all()
    torch.testing.assert_close(xvec, expected, rtol=1e-4, atol=1e-4)


def test_xvector_depends_on_the_audio(encoders, reference):
    """Guards the comparison above against weights under which every input gives the same vector."""
    a, b = (encoders["normalized"].xvector(reference["cases"][c]["wav_16k"]) for c in ("clip", "short"))
    assert (a - b).abs().max() > 1e-2


def test_accepts_a_flat_waveform_and_a_batch(encoders, reference):
    encoder = encoders["normalized"]
    wav = reference["cases"]["short"]["wav_16k"]
    expected = reference["xvectors"]["normalized"]["short"]
    torch.testing.assert_close(encoder.xvector(wav[0]), expected, rtol=1e-4, atol=1e-4)
    batch = encoder.xvector(torch.cat([wav, wav.flip(-1)]))
    assert batch.shape == (2, 192)
    torch.testing.assert_close(batch[:1], expected, rtol=1e-4, atol=1e-4)


def test_campplus_checkpoint_errors_name_the_tensor(weight_sets):
    tensors = dict(weight_sets["seed0"])
    del tensors["xvector.block2.tdnnd7.cam_layer.linear1.bias"]
    with pytest.raises(CheckpointError, match=r"missing tensor speaker_encoder\.xvector\.block2\.tdnnd7\.cam_layer"
                                              r"\.linear1\.bias"):
        build(CAMPPlus, tensors, "s3gen.safetensors", "cpu", torch.float32, prefix_hint=PREFIX)
    tensors = dict(weight_sets["seed0"])
    tensors["head.bn1.running_var"] = torch.ones(31)
    with pytest.raises(CheckpointError, match=r"speaker_encoder\.head\.bn1\.running_var has shape \(31,\)"):
        build(CAMPPlus, tensors, "s3gen.safetensors", "cpu", torch.float32, prefix_hint=PREFIX)
