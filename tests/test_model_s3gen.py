"""S3Gen parts against fixtures made by the reference package on the same seeded random weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chatterbox.model.checkpoint import CheckpointError, build, read_safetensors, subset
from chatterbox.model.random_checkpoint import (SMALL_DEPTHS, SMALL_HIFT_DILATIONS, SMALL_LEVEL_BLOCKS, layout,
                                                prompt_head, random_tensor)
from chatterbox.model.s3gen.decoder import DecoderConfig
from chatterbox.model.s3gen.encoder import EncoderConfig
from chatterbox.model.s3gen.flow import configs_of
from chatterbox.model.s3gen.hift import HiFT, HiFTConfig, hift_config_of
from chatterbox.model.s3gen.mel import log_mel
from chatterbox.tts import load_s3gen

FIXTURES = Path(__file__).parent / "fixtures" / "reference_s3gen.pt"


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURES, weights_only=True)


@pytest.fixture(scope="module")
def s3gen_tensors(reference) -> dict:
    """The flow's and HiFT's tensors at full size, with the fixtures' seed, drawn in memory (the session's small
    checkpoint keeps only the first layers of the flow)."""
    seed = int(reference["meta"]["weights_seed"])
    return {name: random_tensor(name, shape, dtype, seed) for name, (shape, dtype) in layout("s3gen").items()
            if name.startswith(("flow.", "mel2wav."))}


def test_s3gen_is_as_deep_as_its_file(random_checkpoint):
    """The loader reads each stack's depth from the file: the official one's whole, the small one's first layers."""
    tensors = read_safetensors(random_checkpoint / "s3gen.safetensors")
    s3gen, tokenizer = load_s3gen(tensors, "cpu", torch.float32)
    flow = s3gen.flow
    assert len(flow.encoder.encoders) == SMALL_DEPTHS["flow.encoder.encoders."] < EncoderConfig().blocks
    assert len(flow.decoder.estimator.mid_blocks) == SMALL_DEPTHS["flow.decoder.estimator.mid_blocks."] == 1
    assert len(getattr(flow.decoder.estimator.up_blocks[0], "1")) == SMALL_LEVEL_BLOCKS
    assert len(tokenizer.model.encoder.blocks) == SMALL_DEPTHS["tokenizer.encoder.blocks."]
    assert configs_of(subset(s3gen_layout_names(), "flow.")) == (EncoderConfig(), DecoderConfig())
    for block in (*s3gen.hift.resblocks, *s3gen.hift.source_resblocks):
        assert len(block.convs1) == len(block.convs2) == SMALL_HIFT_DILATIONS < len(HiFTConfig().resblock_dilations)
    assert hift_config_of(subset(s3gen_layout_names(), "mel2wav.")) == HiFTConfig()
    gap = {k: v for k, v in tensors.items() if not k.startswith("flow.encoder.encoders.0.")}
    gap.update({k.replace("encoders.0.", "encoders.2."): v for k, v in tensors.items()
                if k.startswith("flow.encoder.encoders.0.")})
    with pytest.raises(CheckpointError, match=r"s3gen.safetensors has layers \[1, 2\] under encoder.encoders."):
        load_s3gen(gap, "cpu", torch.float32)


def s3gen_layout_names() -> dict:
    return {name: torch.empty(0) for name in layout("s3gen")}


def test_reference_mel(reference):
    ours = log_mel(reference["clip_24k"])
    assert ours.shape == reference["mel_24k"].shape
    torch.testing.assert_close(ours, reference["mel_24k"], rtol=1e-4, atol=1e-4)


def test_hift_matches_the_reference(s3gen_tensors, reference):
    hift = build(HiFT, subset(s3gen_tensors, "mel2wav."), "s3gen.safetensors", "cpu", torch.float32,
                 prefix_hint="mel2wav.").fold_weight_norm()
    case = reference["hift"]
    with torch.inference_mode():
        torch.testing.assert_close(hift.f0_predictor(case["mel"]), case["f0"], rtol=1e-4, atol=1e-4)
        source = hift.source(case["mel"], torch.Generator().manual_seed(case["seed"]))
        torch.testing.assert_close(source, case["source"], rtol=1e-4, atol=1e-4)
        wav = hift(case["mel"], torch.Generator().manual_seed(case["seed"]))
    assert wav.shape == case["wav"].shape == (1, case["mel"].shape[-1] * 480)
    torch.testing.assert_close(wav, case["wav"], rtol=1e-3, atol=1e-3)


def test_hift_checkpoint_errors_name_the_tensor(s3gen_tensors):
    tensors = subset(s3gen_tensors, "mel2wav.")
    del tensors["conv_post.bias"]
    with pytest.raises(ValueError, match="missing tensor mel2wav.conv_post.bias"):
        build(HiFT, tensors, "s3gen.safetensors", "cpu", torch.float32, prefix_hint="mel2wav.")


@pytest.mark.parametrize("steps,key", [(10, "mels"), (3, "mels_3_steps")])
def test_flow_matches_the_reference(s3gen_tensors, reference, steps, key):
    from chatterbox.model.s3gen.flow import Flow
    from chatterbox.model.random_checkpoint import random_conds

    flow = build(Flow, subset(s3gen_tensors, "flow."), "s3gen.safetensors", "cpu", torch.float32, prefix_hint="flow.")
    case = reference["flow"]
    gen = prompt_head(random_conds(int(reference["meta"]["weights_seed"]))["gen"], case["prompt_tokens"])
    mels = flow(case["tokens"], gen["prompt_token"], gen["prompt_feat"], gen["embedding"],
                generator=torch.Generator().manual_seed(case["seed"]), steps=steps)
    assert mels.shape == case[key].shape == (1, 80, 2 * case["tokens"].shape[1])
    torch.testing.assert_close(mels, case[key], rtol=1e-3, atol=1e-3)
