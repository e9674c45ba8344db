"""HiFT: the vocoder of S3Gen, 80-bin mels at 50 frames/s -> 24 kHz waveform.

A neural source-filter: an F0 predictor drives a harmonic sine source, whose STFT is fused into an upsampling
generator (x8, x5, x3) that predicts the magnitude and phase of a 16-point STFT with hop 4; the inverse STFT gives
the waveform (480 samples per mel frame), clamped to +-0.99.

Many mels at once: the convolutions run over rows padded at their end, and every convolution's output is zeroed
past each row's end before the next one reads it, so that a row's last frames see what they see alone (zeros); the
source (with each row's own random draws), its STFT and the inverse STFT run row by row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm


@dataclass(frozen=True)
class HiFTConfig:
    in_channels: int = 80
    base_channels: int = 512
    harmonics: int = 8  # overtones above F0: 9 sines in all
    sample_rate: int = 24000
    sine_amp: float = 0.1
    noise_std: float = 0.003
    voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernels: tuple[int, ...] = (16, 11, 7)
    n_fft: int = 16
    hop: int = 4
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)
    source_resblock_kernels: tuple[int, ...] = (7, 7, 11)
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_channels: int = 512

    @property
    def samples_per_frame(self) -> int:
        return math.prod(self.upsample_rates) * self.hop  # 480


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


def _wn(module: nn.Module) -> nn.Module:
    return weight_norm(module)


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha, per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha[None, :, None]
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(_wn(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d)))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(_wn(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel)))
                                    for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # mask: (B, 1, T) 1 at each row's real positions, or None (one unpadded row)
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            h = _masked(conv1(act1(x)), mask)
            x = x + _masked(conv2(act2(h)), mask)
        return x


class F0Predictor(nn.Module):
    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [_wn(nn.Conv1d(in_channels if i == 0 else channels, channels, 3, padding=1)), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, 1)

    def forward(self, mel: Tensor, mask: Tensor | None = None) -> Tensor:
        # (B, 80, T) -> (B, T) Hz
        x = mel
        for layer in self.condnet:
            x = layer(x)
            if isinstance(layer, nn.ELU):
                x = _masked(x, mask)
        return torch.abs(self.classifier(x.transpose(1, 2)).squeeze(-1))


class SourceModule(nn.Module):
    """Harmonic sine source from F0, merged into one excitation."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        self.l_linear = nn.Linear(cfg.harmonics + 1, 1)

    def forward(self, f0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # f0: (B, L) at the audio rate -> (B, 1, L)
        cfg = self.cfg
        B, L = f0.shape
        harmonics = torch.arange(1, cfg.harmonics + 2, device=f0.device, dtype=f0.dtype)
        freqs = f0[:, None, :] * harmonics[None, :, None] / cfg.sample_rate  # (B, H, L) cycles per sample
        theta = 2 * math.pi * (torch.cumsum(freqs, dim=-1) % 1)
        # Random draws in the reference's order: phases, then per-harmonic noise, then an unused noise branch.
        phase = -math.pi + torch.rand(B, cfg.harmonics + 1, 1, generator=generator, device=f0.device) * (2 * math.pi)
        phase[:, 0, :] = 0
        sines = cfg.sine_amp * torch.sin(theta + phase)
        voiced = (f0[:, None, :] > cfg.voiced_threshold).to(f0.dtype)
        noise_amp = voiced * cfg.noise_std + (1 - voiced) * cfg.sine_amp / 3
        noise = noise_amp * torch.randn(sines.shape, generator=generator, device=f0.device, dtype=f0.dtype)
        sines = sines * voiced + noise
        torch.randn(B, L, 1, generator=generator, device=f0.device)  # the reference draws its noise branch
        return torch.tanh(self.l_linear(sines.transpose(1, 2))).transpose(1, 2)


def hift_config_of(tensors: dict[str, Tensor], source: str = "s3gen.safetensors") -> HiFTConfig:
    """HiFT's config with as many dilated convolutions a residual block as its tensors (``mel2wav.*``, prefix
    removed) hold: the official files' 3, or fewer in the tests' small random checkpoints."""
    from ..checkpoint import layer_count

    cfg = HiFTConfig()
    dilations = layer_count(tensors, "resblocks.0.convs1.", source)
    if dilations in (0, len(cfg.resblock_dilations)):
        return cfg
    return replace(cfg, resblock_dilations=cfg.resblock_dilations[:dilations])


class HiFT(nn.Module):
    def __init__(self, cfg: HiFTConfig = HiFTConfig()):
        super().__init__()
        self.cfg = cfg
        base = cfg.base_channels
        self.f0_predictor = F0Predictor(cfg.in_channels, cfg.f0_channels)
        self.m_source = SourceModule(cfg)
        self.conv_pre = _wn(nn.Conv1d(cfg.in_channels, base, 7, padding=3))
        self.ups = nn.ModuleList(
            _wn(nn.ConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernels)))
        # The source's STFT is brought down to each stage's rate: cumulative rates of the later stages.
        rates = [1, *cfg.upsample_rates[::-1][:-1]]
        cumulative = [math.prod(rates[: i + 1]) for i in range(len(rates))][::-1]
        stft_channels = cfg.n_fft + 2
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cumulative, cfg.source_resblock_kernels)):
            ch = base // 2 ** (i + 1)
            self.source_downs.append(nn.Conv1d(stft_channels, ch, 1) if u == 1
                                     else nn.Conv1d(stft_channels, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, cfg.resblock_dilations))
        self.resblocks = nn.ModuleList(
            ResBlock(base // 2 ** (i + 1), k, cfg.resblock_dilations)
            for i in range(len(cfg.upsample_rates)) for k in cfg.resblock_kernels)
        self.conv_post = _wn(nn.Conv1d(base // 2 ** len(cfg.upsample_rates), stft_channels, 7, padding=3))

    def fold_weight_norm(self) -> "HiFT":
        """Compute each weight-normed kernel once (after loading), instead of at every call."""
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self

    def _window(self, device) -> Tensor:
        return torch.hann_window(self.cfg.n_fft, periodic=True, device=device)

    def source(self, mel: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, 80, T) -> excitation (B, 1, T * 480)."""
        f0 = self.f0_predictor(mel)
        f0 = F.interpolate(f0[:, None], scale_factor=self.cfg.samples_per_frame, mode="nearest")[:, 0]
        return self.m_source(f0, generator)

    def _spectrum(self, source: Tensor) -> Tensor:
        """(B, 1, L) excitation -> (B, 18, L / hop + 1) its STFT, real and imaginary parts."""
        cfg = self.cfg
        spec = torch.stft(source[:, 0], cfg.n_fft, cfg.hop, cfg.n_fft, window=self._window(source.device),
                          return_complex=True)
        return torch.cat([spec.real, spec.imag], dim=1)

    def _generate(self, mel: Tensor, s: Tensor, masks: list[Tensor] | None = None) -> Tensor:
        """Mels and the source's STFT -> the STFT of the waveform (B, 18, frames) as log-magnitude and phase. With
        ``masks`` (one per resolution: mel frames, then each upsampling stage's), rows padded at their end."""
        cfg = self.cfg
        mask = (lambda i: None) if masks is None else masks.__getitem__
        x = _masked(self.conv_pre(mel), mask(0))
        n = len(cfg.resblock_kernels)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, cfg.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = _masked(x, mask(i + 1))
            x = x + self.source_resblocks[i](_masked(self.source_downs[i](s), mask(i + 1)), mask(i + 1))
            x = sum(self.resblocks[i * n + j](x, mask(i + 1)) for j in range(n)) / n
        return self.conv_post(F.leaky_relu(x))  # slope 0.01 here, as trained

    def _waveform(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        half = cfg.n_fft // 2 + 1
        magnitude = torch.clip(torch.exp(x[:, :half]), max=1e2)
        phase = torch.sin(x[:, half:])
        wav = torch.istft(torch.polar(magnitude, phase), cfg.n_fft, cfg.hop, cfg.n_fft,
                          window=self._window(x.device))
        return torch.clamp(wav, -cfg.audio_limit, cfg.audio_limit)

    def decode(self, mel: Tensor, source: Tensor) -> Tensor:
        return self._waveform(self._generate(mel, self._spectrum(source)))

    @torch.inference_mode()
    def forward(self, mel: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, 80, T) mels -> (B, T * 480) waveform."""
        return self.decode(mel, self.source(mel, generator))

    @torch.inference_mode()
    def forward_batch(self, mels: list[Tensor], generators: list[torch.Generator | None]) -> list[Tensor]:
        """Mels of any lengths, (1, 80, T_b) each, in one pass -> (1, T_b * 480) each, as each is alone."""
        if len(mels) == 1:
            return [self.forward(mels[0], generators[0])]
        cfg = self.cfg
        lengths = [m.shape[-1] for m in mels]
        mel = mels[0].new_zeros(len(mels), cfg.in_channels, max(lengths))
        for b, m in enumerate(mels):
            mel[b, :, : lengths[b]] = m[0]
        frames = torch.tensor(lengths, device=mel.device)
        f0 = self.f0_predictor(mel, positions(frames, mel.shape[-1]))  # (B, T)
        spectra = []
        for b, generator in enumerate(generators):  # each row's draws, as alone
            f0_b = F.interpolate(f0[b:b + 1, None, : lengths[b]], scale_factor=cfg.samples_per_frame,
                                 mode="nearest")[:, 0]
            spectra.append(self._spectrum(self.m_source(f0_b, generator)))
        s = mel.new_zeros(len(mels), spectra[0].shape[1], max(x.shape[-1] for x in spectra))
        for b, spectrum in enumerate(spectra):
            s[b, :, : spectrum.shape[-1]] = spectrum[0]
        # Lengths at each resolution: the mel frames, then each upsampling stage (the last one padded by a frame).
        scale, masks = 1, [positions(frames, mel.shape[-1])]
        for i, rate in enumerate(cfg.upsample_rates):
            scale *= rate
            extra = 1 if i == len(cfg.upsample_rates) - 1 else 0
            masks.append(positions(frames * scale + extra, mel.shape[-1] * scale + extra))
        x = self._generate(mel, s, masks)
        return [self._waveform(x[b:b + 1, :, : spectra[b].shape[-1]]) for b in range(len(mels))]


def positions(lengths: Tensor, size: int) -> Tensor:
    """(B,) lengths -> (B, 1, size) mask: 1.0 at each row's real positions."""
    return (torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]).float()[:, None]
