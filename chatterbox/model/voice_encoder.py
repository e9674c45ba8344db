"""The voice encoder: a 256-d speaker embedding from a 16 kHz clip (3-layer LSTM over 40-bin power mels)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .features import mel_filter_bank


@dataclass(frozen=True)
class VoiceEncoderConfig:
    sample_rate: int = 16000
    n_fft: int = 400
    hop: int = 160
    n_mels: int = 40
    fmax: float = 8000.0
    partial_frames: int = 160
    rate: float = 1.3  # partials per second: a new 160-frame window every 77 frames
    min_coverage: float = 0.8
    hidden: int = 256
    embed: int = 256
    trim_top_db: float = 20.0


def trim_silence(wav: np.ndarray, top_db: float, frame_length: int = 2048, hop_length: int = 512) -> np.ndarray:
    """Cut leading and trailing frames quieter than top_db below the loudest (as librosa.effects.trim does)."""
    padded = np.pad(wav, frame_length // 2)
    n_frames = 1 + (len(padded) - frame_length) // hop_length
    frames = np.lib.stride_tricks.as_strided(padded, (n_frames, frame_length),
                                             (padded.strides[0] * hop_length, padded.strides[0]))
    power = np.mean(np.abs(frames) ** 2, axis=-1)
    power = np.sqrt(power) ** 2  # librosa takes the RMS and squares it again: same rounding
    db = 10 * np.log10(np.maximum(1e-10, power)) - 10 * np.log10(np.maximum(1e-10, power.max()))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return wav[:0]
    return wav[loud[0] * hop_length: min(len(wav), (loud[-1] + 1) * hop_length)]


def frame_step(cfg: VoiceEncoderConfig) -> int:
    return int(np.round((cfg.sample_rate / cfg.rate) / cfg.partial_frames))


def partial_count(n_frames: int, cfg: VoiceEncoderConfig) -> tuple[int, int]:
    """How many partial windows cover n_frames, and the frame count they span (pad to it)."""
    step, win = frame_step(cfg), cfg.partial_frames
    n, remainder = divmod(max(n_frames - win + step, 0), step)
    if n == 0 or (remainder + (win - step)) / win >= cfg.min_coverage:
        n += 1
    return n, win + step * (n - 1)


class VoiceEncoder(nn.Module):
    def __init__(self, cfg: VoiceEncoderConfig = VoiceEncoderConfig()):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.n_mels, cfg.hidden, num_layers=3, batch_first=True)
        self.proj = nn.Linear(cfg.hidden, cfg.embed)
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, mels: Tensor) -> Tensor:
        # mels: (B, partial_frames, n_mels) -> (B, embed), each L2-normalized
        _, (hidden, _) = self.lstm(mels)
        raw = F.relu(self.proj(hidden[-1]))
        return raw / torch.linalg.norm(raw, dim=1, keepdim=True)

    def mel(self, wav: Tensor) -> Tensor:
        """(samples,) at 16 kHz -> (frames, n_mels) power mel, centred STFT with reflect padding."""
        cfg = self.cfg
        window = torch.hann_window(cfg.n_fft, periodic=True, device=wav.device)
        spec = torch.stft(wav, cfg.n_fft, cfg.hop, window=window, center=True, pad_mode="reflect",
                          return_complex=True).abs() ** 2  # (freqs, frames)
        bank = mel_filter_bank(cfg.n_fft // 2 + 1, 0.0, cfg.fmax, cfg.n_mels, cfg.sample_rate).to(wav.device)
        return spec.T @ bank  # (frames, n_mels)

    @torch.inference_mode()
    def embed(self, wav: np.ndarray | Tensor) -> Tensor:
        """Speaker embedding (1, embed) of a whole 16 kHz clip: trimmed, cut in partials, averaged."""
        cfg = self.cfg
        wav = np.asarray(wav.cpu() if torch.is_tensor(wav) else wav, dtype=np.float32)
        wav = trim_silence(wav, cfg.trim_top_db)
        if len(wav) < cfg.n_fft:
            raise ValueError("the clip has no audible speech to take a voice from")
        device = self.proj.weight.device
        mel = self.mel(torch.from_numpy(wav).to(device))
        n, target = partial_count(mel.shape[0], cfg)
        if target > mel.shape[0]:
            mel = torch.cat([mel, mel.new_zeros(target - mel.shape[0], cfg.n_mels)])
        step = frame_step(cfg)
        partials = torch.stack([mel[i * step: i * step + cfg.partial_frames] for i in range(n)])
        embeds = self(partials.to(self.proj.weight.dtype)).float()
        mean = embeds.mean(dim=0)
        return (mean / torch.linalg.norm(mean))[None]

