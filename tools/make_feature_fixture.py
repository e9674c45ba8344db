"""Write tests/fixtures/features_torchaudio.pt: what torchaudio computes for the three audio front-end functions
chatterbox/model/features.py reimplements, so that tests/test_features.py can check ours without torchaudio.

Needs torchaudio, which chatterbox-jobs no longer depends on: run it with a Python that has torch and a torchaudio
built for that torch (the project's .venv with PyPI's CUDA torch 2.14.1 and torchaudio 2.11.1 made the committed
file; a CPU-only torch cannot load PyPI's torchaudio). CPU, one thread, float32; a few seconds; about 80 KB.

    .venv/bin/python tools/make_feature_fixture.py [--out tests/fixtures/features_torchaudio.pt]

The inputs are drawn from a seeded generator and saved beside the outputs, so the test never regenerates them.
"""
from __future__ import annotations

import argparse
import datetime
import math
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

# (n_freqs, f_min, f_max, n_mels, sample_rate): the voice encoder's 16 kHz power mel and S3Gen's 24 kHz mel.
MEL_BANKS = {"voice_encoder": (201, 0.0, 8000.0, 40, 16000), "s3gen": (961, 0.0, 8000.0, 80, 24000)}


def voice_like(n: int, rate: int, g: torch.Generator) -> torch.Tensor:
    """(n,) float32: a few harmonics on a gliding pitch, an envelope and a little noise, with exact silence over
    its first 50 ms (an all-zero fbank frame: the log's epsilon floor) and a quiet tail."""
    t = torch.arange(n, dtype=torch.float64) / rate
    pitch = 2 * math.pi * torch.cumsum(140.0 + 40.0 * torch.sin(2 * math.pi * 1.5 * t), 0) / rate
    wav = sum(0.3 / k * torch.sin(k * pitch) for k in range(1, 8)) * torch.sin(math.pi * t / t[-1]).clamp(min=0)
    wav = wav + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)
    wav[: int(0.05 * rate)] = 0.0
    wav[-int(0.05 * rate):] *= 1e-4
    return wav.float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "features_torchaudio.pt")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import torchaudio
    import torchaudio.compliance.kaldi as kaldi

    g = torch.Generator().manual_seed(20261125)
    banks = {}
    for name, (n_freqs, f_min, f_max, n_mels, rate) in MEL_BANKS.items():
        bank = torchaudio.functional.melscale_fbanks(n_freqs, f_min, f_max, n_mels, rate, norm="slaney",
                                                     mel_scale="slaney")  # (n_freqs, n_mels)
        index = bank.nonzero()  # stored sparse: a dense (961, 80) float32 bank alone would be 300 KB
        banks[name] = {"args": [n_freqs, f_min, f_max, n_mels, rate], "index": index.int(),
                       "values": bank[index[:, 0], index[:, 1]].clone()}

    # CAMPPlus's call: kaldi_fbank in chatterbox/model/s3gen/campplus.py, before its mean subtraction.
    fbank = {}
    for name, wav in {"clip": voice_like(4960, 16000, g), "one_frame": torch.randn(400, generator=g)}.items():
        feats = kaldi.fbank(wav[None], num_mel_bins=80, sample_frequency=16000.0, frame_length=25.0,
                            frame_shift=10.0, dither=0.0, window_type="povey")
        fbank[name] = {"wav": wav.clone(), "fbank": feats.clone()}

    # chatterbox/tts.py's S3Gen.reference: Resample(24000, 16000) on a (1, L) clip; a batch of two and an odd length.
    resample = {}
    for name, wav in {"clip": voice_like(3601, 24000, g)[None], "batch": torch.randn(2, 301, generator=g)}.items():
        resample[name] = {"wav": wav.clone(), "orig": 24000, "new": 16000,
                          "out": torchaudio.transforms.Resample(24000, 16000)(wav).clone()}

    torch.save({"meta": {"torch": str(torch.__version__), "torchaudio": str(torchaudio.__version__),
                         "date": datetime.date.today().isoformat(), "threads": "1", "device": "cpu"},
                "mel_banks": banks, "fbank": fbank, "resample": resample}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
