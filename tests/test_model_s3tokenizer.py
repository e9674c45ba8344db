"""Our S3 speech tokenizer network (chatterbox/model/s3tokenizer.py) against the ``s3tokenizer`` package's
S3TokenizerV2, from tests/fixtures/s3tokenizer_v2.pt, made once with the package by tools/make_s3tokenizer_fixture.py
(which draws the same inputs and weights through this module's functions). The package is never imported here.

The fixture's model is small (2 layers, 128 wide, 2 heads of 64: the package's rotary table is 64 wide) on seeded
random weights; the cases cover a single clip, a padded batch, a batch mixing a clip over 30 s (windows) with a
short one, and a long clip whose last window is under 2 s. Ours repeats the package's arithmetic op for op and was
bit-identical where the fixture was made; the tolerance leaves room for another CPU's kernels.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chatterbox.model.random_checkpoint import layout, random_tensor
from chatterbox.model.s3tokenizer import S3Tokenizer, S3TokenizerConfig, S3TokenizerNet

FIXTURE = Path(__file__).parent / "fixtures" / "s3tokenizer_v2.pt"
ROOT = Path(__file__).resolve().parent.parent
CONFIG = S3TokenizerConfig(dim=128, n_heads=2, n_layers=2)
WEIGHTS_SEED = 0
CASES = {"single": (1, [160]), "batch": (2, [300, 157]), "mixed_long": (3, [3400, 300]), "long": (4, [5300])}
SHORT_CASES = ("single", "batch")  # their encoder outputs are saved whole; the long ones' FSQ inputs only


def fixture_weights(names_shapes: dict[str, tuple[int, ...]], seed: int = WEIGHTS_SEED) -> dict[str, torch.Tensor]:
    """Seeded random tensors by name (the checkpoint's ``tokenizer.`` names), whatever module asks."""
    return {k: random_tensor("tokenizer." + k, tuple(shape), torch.float32, seed) for k, shape in names_shapes.items()}


def fixture_mels(seed: int, lengths: list[int], n_mels: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n_mels, max(lengths)) log-mel-like values in about [-1, 1.5], zero past each length, and the lengths.
    Integers from torch.randint over 128: the same bits on any machine."""
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    coarse = torch.randint(-96, 160, (len(lengths), n_mels, n // 8 + 1), generator=g).repeat_interleave(8, -1)
    mel = (coarse[..., :n] + torch.randint(-32, 32, (len(lengths), n_mels, n), generator=g)).float() / 128
    for b, length in enumerate(lengths):
        mel[b, :, length:] = 0.0
    return mel, torch.tensor(lengths)


def valid_rows(projected: torch.Tensor, window_lens: torch.Tensor) -> torch.Tensor:
    """(W * T', 8) FSQ inputs of W windows (or clips) -> their rows within each window's length, concatenated."""
    per_window = projected.view(len(window_lens), -1, projected.shape[-1])
    return torch.cat([per_window[i, : int(n)] for i, n in enumerate(window_lens)])


def run_with_taps(model: torch.nn.Module, encoder: torch.nn.Module, project_down: torch.nn.Module,
                  mel: torch.Tensor, mel_len: torch.Tensor) -> dict[str, torch.Tensor]:
    """model.quantize, with what its encoder and its FSQ projection computed on the way."""
    taps = {}
    hooks = [encoder.register_forward_hook(lambda m, i, o: taps.update(hidden=o[0].clone(), window_lens=o[1].clone())),
             project_down.register_forward_hook(lambda m, i, o: taps.update(projected=o.clone()))]
    try:
        with torch.inference_mode():
            tokens, token_lens = model.quantize(mel, mel_len)
    finally:
        for h in hooks:
            h.remove()
    return {"tokens": tokens.long(), "token_lens": token_lens.long(), "hidden": taps["hidden"],
            "projected": valid_rows(taps["projected"], taps["window_lens"]), "window_lens": taps["window_lens"].long()}


@pytest.fixture(scope="module")
def saved() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def net() -> S3TokenizerNet:
    with torch.device("meta"):
        model = S3TokenizerNet(CONFIG)
    weights = fixture_weights({k: v.shape for k, v in model.state_dict().items()})
    model.load_state_dict(weights, strict=True, assign=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fixture was made
    yield model.eval()
    torch.set_num_threads(threads)


def test_fixture_was_made_on_these_inputs(saved):
    assert saved["meta"]["weights_seed"] == str(WEIGHTS_SEED)
    assert saved["config"] == {"n_mels": CONFIG.n_mels, "dim": CONFIG.dim, "n_heads": CONFIG.n_heads,
                               "n_layers": CONFIG.n_layers}
    assert {name: (case["seed"], case["lengths"]) for name, case in saved["cases"].items()} == \
        {name: (seed, lengths) for name, (seed, lengths) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_tokens_and_activations_match_the_package(net, saved, name):
    case = saved["cases"][name]
    mel, mel_len = fixture_mels(case["seed"], case["lengths"], CONFIG.n_mels)
    ours = run_with_taps(net, net.encoder, net.quantizer._codebook.project_down, mel, mel_len)
    assert ours["window_lens"].tolist() == case["window_lens"].tolist()
    torch.testing.assert_close(ours["projected"], case["projected"], rtol=0, atol=1e-5)
    if name in SHORT_CASES:
        torch.testing.assert_close(ours["hidden"], case["hidden"], rtol=0, atol=1e-5)
    assert ours["token_lens"].tolist() == case["token_lens"].tolist()
    assert ours["tokens"].tolist() == case["tokens"].long().tolist()


def test_long_clip_windows_and_seams(saved):
    """5300 frames: windows at 0, 2600 and 5200 (750, 675 and 25 tokens); the seams drop 50 tokens a side, so the
    last window (under 2 s) adds nothing: 700 + 575 + 0."""
    case = saved["cases"]["long"]
    assert case["window_lens"].tolist() == [750, 675, 25] and case["token_lens"].tolist() == [1275]
    mixed = saved["cases"]["mixed_long"]  # the short clip of a mixed batch is padded to a window of its own
    assert mixed["window_lens"].tolist() == [750, 200, 75] and mixed["token_lens"].tolist() == [850, 75]


def test_names_and_shapes_are_the_official_checkpoints():
    """Built on the meta device; its tensors are exactly s3gen.safetensors' ``tokenizer.*``."""
    tokenizer = S3Tokenizer()
    assert all(t.is_meta for t in tokenizer.state_dict().values())
    official = {k.removeprefix("tokenizer."): shape for k, (shape, _) in layout("s3gen").items()
                if k.startswith("tokenizer.")}
    ours = {k.removeprefix("model."): tuple(v.shape) for k, v in tokenizer.state_dict().items()}
    assert ours == official


def small_tokenizer() -> S3Tokenizer:
    tokenizer = S3Tokenizer(CONFIG)
    names = {k.removeprefix("model."): v.shape for k, v in tokenizer.state_dict().items()}
    tokenizer.load_checkpoint_tensors(fixture_weights(names))
    return tokenizer.eval()


def test_forward_is_log_mel_then_quantize():
    tokenizer = small_tokenizer()
    g = torch.Generator().manual_seed(5)
    wav = 0.1 * torch.randn(16000 * 3 + 123, generator=g)
    mel = tokenizer.log_mel(wav)
    with torch.inference_mode():
        expected, lengths = tokenizer.model.quantize(mel[None], torch.tensor([mel.shape[1]]))
        assert tokenizer(wav).tolist() == expected[:, : int(lengths[0])].tolist()
        capped = tokenizer(wav, max_tokens=40)
        assert capped.shape == (1, 40) and capped.dtype == torch.long
        assert capped.tolist() == tokenizer.model.quantize(mel[None, :, :160], torch.tensor([160]))[0].tolist()
        long = tokenizer(0.1 * torch.randn(16000 * 31, generator=g))  # 3100 frames: windows of 3000 and 500
        assert long.shape == (1, (750 - 50) + (125 - 50))


def test_runs_without_torchaudio_or_the_package():
    code = ("import sys; sys.modules['torchaudio'] = None; sys.modules['s3tokenizer'] = None\n"
            "import torch\n"
            "from tests.test_model_s3tokenizer import small_tokenizer\n"
            "tokens = small_tokenizer()(0.1 * torch.randn(8000))\n"
            "assert tokens.shape == (1, 13), tokens.shape\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
