"""S3Gen's 24 kHz log-mel front end (50 frames/s, 80 bins up to 8 kHz), for reference prompts."""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from ..features import mel_filter_bank

SAMPLE_RATE = 24000
N_FFT = 1920
HOP = 480
N_MELS = 80
FMAX = 8000.0


@lru_cache(maxsize=4)
def _filters(device: str) -> Tensor:
    bank = mel_filter_bank(N_FFT // 2 + 1, 0.0, FMAX, N_MELS, SAMPLE_RATE)  # (961, 80), slaney scale and norm
    return bank.T.contiguous().to(device)  # (80, 961)


def log_mel(wav: Tensor) -> Tensor:
    """(L,) or (B, L) at 24 kHz -> (B, 80, frames): uncentred STFT after (n_fft - hop) / 2 samples of reflect
    padding each side, magnitude with a 1e-9 floor under the root, natural log clamped at 1e-5."""
    wav = wav.float()
    if wav.dim() == 1:
        wav = wav[None]
    pad = (N_FFT - HOP) // 2
    wav = torch.nn.functional.pad(wav[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(wav, N_FFT, HOP, N_FFT, window=torch.hann_window(N_FFT, device=wav.device), center=False,
                      return_complex=True)
    magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    return torch.log(torch.clamp(_filters(str(wav.device)) @ magnitude, min=1e-5))
