"""Audio front-end pieces the models need, in plain torch: torchaudio's slaney mel filter bank, its Kaldi fbank
with the options CAMPPlus uses, and its sinc resampler with default settings.

Why not torchaudio: PyPI's torchaudio wheels are linked against one torch build (CUDA), so a CPU-only torch cannot
load them, and we use three small functions of it. Each one here repeats torchaudio's arithmetic step by step, in
the same dtypes and order (float32 where it uses the default dtype, float64 where it uses Python floats), so the
results agree to the last bit or nearly; tests/test_features.py holds them to torchaudio's output saved once.
Only the options we pass are implemented: anything else would be code no test checks.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

# ---- slaney mel filter bank (torchaudio.functional.melscale_fbanks(..., norm="slaney", mel_scale="slaney")) ----

_F_SP = 200.0 / 3  # Hz per mel below 1 kHz: the slaney scale is linear there...
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mels
_LOGSTEP = math.log(6.4) / 27.0  # ...and logarithmic above, 27 mels per factor 6.4


def _hz_to_mel(freq: float) -> float:
    """Python float in and out, as torchaudio computes the end points (in double precision)."""
    if freq >= _MIN_LOG_HZ:
        return _MIN_LOG_MEL + math.log(freq / _MIN_LOG_HZ) / _LOGSTEP
    return freq / _F_SP


def _mel_to_hz(mels: Tensor) -> Tensor:
    freqs = _F_SP * mels
    log_part = mels >= _MIN_LOG_MEL
    freqs[log_part] = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (mels[log_part] - _MIN_LOG_MEL))
    return freqs


def mel_filter_bank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> Tensor:
    """(n_freqs, n_mels) float32 triangular filters on the slaney mel scale, each divided by its width in Hz / 2
    (slaney area normalization): torchaudio's melscale_fbanks with norm="slaney", mel_scale="slaney", which
    librosa's default mel filters also are. Apply as ``power_or_magnitude (..., n_freqs) @ bank``."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float32)  # (n_freqs,) STFT bin centres
    m_pts = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2, dtype=torch.float32)
    f_pts = _mel_to_hz(m_pts)  # (n_mels + 2,) left edge, centres, right edge
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts[None, :] - all_freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]  # (n_freqs, n_mels): rises from the left edge to the centre
    up = slopes[:, 2:] / f_diff[1:]  # falls from the centre to the right edge
    bank = torch.clamp(torch.minimum(down, up), min=0.0)
    return bank * (2.0 / (f_pts[2:] - f_pts[:-2]))[None, :]


# ---- Kaldi fbank (torchaudio.compliance.kaldi.fbank with CAMPPlus's options) ----

_EPSILON = torch.finfo(torch.float32).eps  # Kaldi's floor under the mel energies before the log


def _kaldi_mel(freq: Tensor) -> Tensor:
    return 1127.0 * (1.0 + freq / 700.0).log()  # Kaldi's (HTK's natural-log) mel scale


@lru_cache(maxsize=8)
def _kaldi_mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float) -> Tensor:
    """(num_bins, padded_window // 2 + 1) triangles, equally spaced in Kaldi mel from low_freq to Nyquist, with
    weight 1 at each centre; the Nyquist column is zero, as in Kaldi. Built on the CPU in float32."""
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + 0.5 * sample_rate / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)  # num_bins + 1 steps: the outer triangles reach both ends
    bin_ = torch.arange(num_bins)[:, None]  # (num_bins, 1)
    left = mel_low + bin_ * delta
    centre = mel_low + (bin_ + 1.0) * delta
    right = mel_low + (bin_ + 2.0) * delta
    mel = _kaldi_mel((sample_rate / padded_window) * torch.arange(float(padded_window // 2)))[None, :]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    bank = torch.clamp(torch.minimum(up, down), min=0.0)  # (num_bins, padded_window // 2)
    return F.pad(bank, (0, 1))


def kaldi_fbank(wave: Tensor, num_mel_bins: int = 80, sample_rate: float = 16000.0) -> Tensor:
    """(L,) waveform -> (frames, num_mel_bins) Kaldi log mel filterbank, as torchaudio.compliance.kaldi.fbank gives
    with frame_length=25, frame_shift=10, dither=0, window_type="povey" and its other defaults: frames that fit
    wholly (snip_edges), each minus its mean, pre-emphasis 0.97, povey window (hann ** 0.85), zero-padded to a
    power of two, power spectrum, mel bins from 20 Hz to Nyquist, natural log floored at float32 epsilon.
    frames = 1 + (L - 400) // 160 at 16 kHz. Raises ValueError for a clip shorter than one window."""
    if wave.dim() != 1:
        raise ValueError(f"kaldi_fbank takes one channel (L,), got shape {tuple(wave.shape)}")
    window = int(sample_rate * 25.0 * 0.001)  # 400 samples at 16 kHz
    shift = int(sample_rate * 10.0 * 0.001)  # 160
    padded = 1 if window == 0 else 2 ** (window - 1).bit_length()  # 512: next power of two
    if wave.shape[0] < window:
        raise ValueError(f"the clip has {wave.shape[0]} samples, fewer than one {window}-sample fbank window")
    frames = wave.unfold(0, window, shift)  # (m, window)
    frames = frames - frames.mean(dim=1, keepdim=True)  # DC removal per frame
    # Pre-emphasis x[j] - 0.97 x[j-1], with x[-1] taken as x[0] (Kaldi's replicate edge).
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - 0.97 * previous
    povey = torch.hann_window(window, periodic=False, device=wave.device, dtype=wave.dtype).pow(0.85)
    frames = F.pad(frames * povey[None, :], (0, padded - window))  # (m, padded)
    power = torch.fft.rfft(frames).abs().pow(2.0)  # (m, padded // 2 + 1)
    bank = _kaldi_mel_banks(num_mel_bins, padded, float(sample_rate), 20.0).to(device=wave.device, dtype=wave.dtype)
    energies = torch.mm(power, bank.T)  # (m, num_mel_bins)
    return torch.clamp(energies, min=_EPSILON).log()


# ---- band-limited resampling (torchaudio.transforms.Resample(orig, new) with default settings) ----

_LOWPASS_WIDTH = 6  # zero crossings of the sinc kept each side
_ROLLOFF = 0.99  # cutoff as a fraction of the lower Nyquist


@lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int) -> tuple[Tensor, int]:
    """(new, 1, 2 * width + orig) float32 hann-windowed sinc filters, one per output phase (orig and new already
    divided by their gcd), and width. Computed in float64 on the CPU, then rounded, as Resample does."""
    cutoff = min(orig, new) * _ROLLOFF
    width = math.ceil(_LOWPASS_WIDTH * orig / cutoff)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    # torchaudio makes the phase offsets in the default dtype (float32) before adding the float64 taps: same here.
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + idx  # (new, 1, taps) float64
    t = (t * cutoff).clamp(-_LOWPASS_WIDTH, _LOWPASS_WIDTH)
    window = torch.cos(t * math.pi / _LOWPASS_WIDTH / 2) ** 2
    t = t * math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    return (kernels * (window * (cutoff / orig))).to(torch.float32), width  # torchaudio's order of products


def resample(wave: Tensor, orig_freq: int, new_freq: int) -> Tensor:
    """(..., L) float waveform at orig_freq -> (..., ceil(L * new / orig)) at new_freq, as
    torchaudio.transforms.Resample(orig_freq, new_freq) does (float32 kernel, zeros beyond both ends)."""
    if orig_freq == new_freq:
        return wave
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    kernel, width = _sinc_kernel(orig, new)
    shape = wave.shape
    flat = wave.reshape(-1, shape[-1])  # (N, L)
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel.to(device=wave.device, dtype=wave.dtype), stride=orig)  # (N, new, L/orig)
    # torchaudio rounds the length through a float32 tensor before its ceil; a long clip can land on either side.
    length = int(torch.ceil(torch.tensor(new * shape[-1] / orig, dtype=torch.float32)))
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[:, :length]
    return out.reshape(shape[:-1] + out.shape[-1:])
