"""chatterbox/model/features.py (our torchaudio-free mel filter bank, Kaldi fbank and resampler) against torchaudio's
outputs saved once by tools/make_feature_fixture.py, and against closed-form facts. torchaudio is never imported."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chatterbox.model.features import kaldi_fbank, mel_filter_bank, resample

FIXTURES = Path(__file__).parent / "fixtures"
LOG_EPS = math.log(torch.finfo(torch.float32).eps)  # Kaldi's floor: the log of an all-zero frame's energies


@pytest.fixture(scope="module")
def saved() -> dict:
    return torch.load(FIXTURES / "features_torchaudio.pt", weights_only=True)


# ---- against torchaudio (saved) ----
# Ours repeats torchaudio's float32 arithmetic op for op and was bit-identical where the fixture was made; the
# tolerances leave room for another CPU's FFT, matmul and exp/log kernels rounding the last bit differently.

@pytest.mark.parametrize("name", ["voice_encoder", "s3gen"])
def test_mel_filter_bank_matches_torchaudio(saved, name):
    case = saved["mel_banks"][name]
    n_freqs, f_min, f_max, n_mels, rate = case["args"]
    expected = torch.zeros(n_freqs, n_mels)
    index = case["index"].long()
    expected[index[:, 0], index[:, 1]] = case["values"]
    ours = mel_filter_bank(n_freqs, f_min, f_max, n_mels, rate)
    assert ours.dtype == torch.float32 and ours.shape == (n_freqs, n_mels)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", ["clip", "one_frame"])
def test_kaldi_fbank_matches_torchaudio(saved, name):
    case = saved["fbank"][name]
    ours = kaldi_fbank(case["wav"], num_mel_bins=80, sample_rate=16000.0)
    assert ours.shape == case["fbank"].shape
    # Values span about -16..+5; the log of a quiet frame magnifies a last-bit difference in its energy.
    torch.testing.assert_close(ours, case["fbank"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["clip", "batch"])
def test_resample_matches_torchaudio(saved, name):
    case = saved["resample"][name]
    ours = resample(case["wav"], case["orig"], case["new"])
    assert ours.shape == case["out"].shape
    torch.testing.assert_close(ours, case["out"], rtol=1e-5, atol=1e-6)


def test_resample_matches_the_reference_packages_16k_clip():
    """The reference package's own 24 -> 16 kHz resampler (S3Gen.embed_ref's get_resampler) on its synthetic clip,
    from the two reference fixtures: the input in reference_s3gen.pt, the output in reference_campplus.pt."""
    clip24 = torch.load(FIXTURES / "reference_s3gen.pt", weights_only=True)["clip_24k"]  # (96000,)
    clip16 = torch.load(FIXTURES / "reference_campplus.pt", weights_only=True)["cases"]["clip"]["wav_16k"]
    torch.testing.assert_close(resample(clip24[None], 24000, 16000), clip16, rtol=1e-5, atol=1e-6)


# ---- closed-form facts ----

def _slaney_hz(mel: torch.Tensor) -> torch.Tensor:
    """float64 slaney mel -> Hz: 200/3 Hz per mel up to 15 mel (1 kHz), then a factor 6.4 per 27 mels."""
    return torch.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * 6.4 ** ((mel - 15.0) / 27.0))


@pytest.mark.parametrize("args", [(201, 0.0, 8000.0, 40, 16000), (961, 0.0, 8000.0, 80, 24000)])
def test_mel_filter_bank_is_slaney_normalized_triangles(args):
    n_freqs, f_min, f_max, n_mels, rate = args
    bank = mel_filter_bank(*args).double()
    mel_max = 15.0 + 27.0 * math.log(f_max / 1000.0) / math.log(6.4)
    edges = _slaney_hz(torch.linspace(0.0, mel_max, n_mels + 2, dtype=torch.float64))  # (n_mels + 2,)
    freqs = torch.linspace(0.0, rate / 2, n_freqs, dtype=torch.float64)[:, None]  # (n_freqs, 1)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    rise, fall = (freqs - left) / (centre - left), (right - freqs) / (right - centre)
    triangles = torch.clamp(torch.minimum(rise, fall), min=0.0)  # height 1 at each centre
    expected = triangles * (2.0 / (right - left))  # area 1 in Hz
    # float32 edges near 8 kHz are off by ~5e-4 Hz: a few 1e-6 of a triangle's height.
    torch.testing.assert_close(bank, expected, rtol=0, atol=1e-5 * float(expected.max()))
    # Adjacent triangles overlap so that, between the first and last centres, their heights add up to 1.
    inside = (freqs[:, 0] >= centre[0] + 1e-3) & (freqs[:, 0] <= centre[-1] - 1e-3)
    heights = (bank * ((right - left) / 2.0)).sum(dim=1)
    torch.testing.assert_close(heights[inside], torch.ones_like(heights[inside]), rtol=0, atol=1e-5)
    assert (bank[freqs[:, 0] > f_max + 1e-3] == 0).all()  # nothing above f_max


def test_kaldi_fbank_frames_and_floor():
    assert kaldi_fbank(torch.zeros(400)).shape == (1, 80)
    assert kaldi_fbank(torch.zeros(16000)).shape == (1 + (16000 - 400) // 160, 80)  # 25 ms windows every 10 ms
    assert kaldi_fbank(torch.zeros(559)).shape == (1, 80)  # snip_edges: a partial last window is dropped
    silent = kaldi_fbank(torch.zeros(1000))
    torch.testing.assert_close(silent, torch.full_like(silent, LOG_EPS))
    with pytest.raises(ValueError, match="fewer than one"):
        kaldi_fbank(torch.zeros(399))


def test_kaldi_fbank_is_a_log_power_spectrum_without_dc():
    wav = torch.randn(4000, generator=torch.Generator().manual_seed(3)) * 0.1
    feats = kaldi_fbank(wav)
    # Scaling by 4 is exact in floating point, so every power scales by 16 and every log moves by log 16.
    torch.testing.assert_close(kaldi_fbank(4.0 * wav), feats + math.log(16.0), rtol=0, atol=1e-5)
    # Each frame loses its mean before pre-emphasis: a constant offset leaves the features as they were.
    torch.testing.assert_close(kaldi_fbank(wav + 0.25), feats, rtol=0, atol=1e-3)


def test_kaldi_fbank_bins_sit_on_the_kaldi_mel_scale():
    """A tone at bin j's centre (equal steps of 1127 ln(1 + f/700) from 20 Hz to 8 kHz) is loudest in bin j."""
    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    step = (mel(8000.0) - mel(20.0)) / 81
    t = torch.arange(8000, dtype=torch.float64) / 16000
    for j in (10, 40, 70):
        centre = 700.0 * (math.exp((mel(20.0) + (j + 1) * step) / 1127.0) - 1.0)
        feats = kaldi_fbank(torch.sin(2 * math.pi * centre * t).float())
        assert (feats.argmax(dim=1) == j).all(), (j, centre)


def test_resample_length_and_a_sine():
    assert resample(torch.zeros(2, 3, 7), 24000, 16000).shape == (2, 3, 5)  # ceil(7 * 2 / 3), batch dims kept
    wav = torch.randn(100)
    assert resample(wav, 16000, 16000) is wav
    # A 440 Hz tone comes out as the same tone sampled at 16 kHz, away from the zero-padded ends.
    tone = torch.sin(2 * math.pi * 440.0 * torch.arange(24000, dtype=torch.float64) / 24000).float()
    out = resample(tone, 24000, 16000)
    expected = torch.sin(2 * math.pi * 440.0 * torch.arange(16000, dtype=torch.float64) / 16000).float()
    assert out.shape == (16000,)
    torch.testing.assert_close(out[200:-200], expected[200:-200], rtol=0, atol=2e-3)


def test_the_model_front_ends_run_without_torchaudio():
    """With torchaudio made unimportable, the three models' front ends still import and run (CI has none)."""
    code = (
        "import sys; sys.modules['torchaudio'] = None\n"  # any `import torchaudio` now raises ImportError
        "import torch\n"
        "from chatterbox.model.s3gen.mel import log_mel\n"
        "from chatterbox.model.s3gen.campplus import kaldi_fbank\n"
        "from chatterbox.model.voice_encoder import VoiceEncoder\n"
        "wav = torch.randn(8000)\n"
        "assert log_mel(wav).shape[:2] == (1, 80)\n"
        "assert kaldi_fbank(wav).shape == (48, 80)\n"
        "assert VoiceEncoder().mel(wav).shape == (51, 40)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
