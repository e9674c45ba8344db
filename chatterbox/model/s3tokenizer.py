"""The S3 speech tokenizer (S3TokenizerV2, "speech_tokenizer_v2_25hz": 25 tokens/s, 3**8 = 6561 codes): our log-mel
front end, whose mel filters and window come from ``s3gen.safetensors`` (``tokenizer.*``) like the weights, and our
own copy of the network of the ``s3tokenizer`` package (0.3.0), which we no longer depend on (its utils import
torchaudio). The arithmetic repeats the package's op for op, so tokens and activations match it bit for bit on the
same machine (tests/test_model_s3tokenizer.py, against a fixture made with the package by
tools/make_s3tokenizer_fixture.py). Tensor names are the package's, as the checkpoint holds them.

The network: 128 log-mels (100 frames/s) -> two stride-2 convs with GELU (25 frames/s, 1280 wide) -> 6 pre-norm
blocks of rotary self-attention plus an FSMN memory (a depthwise conv over the values) and a GELU MLP -> FSQ: a
linear map to 8 numbers, each squashed by tanh and rounded to a base-3 digit; the token is the 8-digit number.
Clips over 30 s go through in 30 s windows 4 s apart; see ``S3TokenizerNet.quantize``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SAMPLE_RATE = 16000
HOP = 160
TOKENS_PER_SECOND = 25
MEL_FRAMES_PER_TOKEN = 4  # two stride-2 convs


@dataclass(frozen=True)
class S3TokenizerConfig:
    n_mels: int = 128
    dim: int = 1280
    n_heads: int = 20  # head size 64: the rotary table covers the whole head
    n_layers: int = 6
    fsmn_kernel: int = 31
    rope_base: float = 10000.0
    fsq_digits: int = 8  # base-3 digits of a token
    window_frames: int = 3000  # mel frames (30 s): longer clips go through in windows of this many frames...
    overlap_frames: int = 400  # ...overlapping by this many (4 s); a seam keeps half the overlap from each side

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def non_pad_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) -> (B, max_len) bool, True where the frame is within its clip's length."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


@lru_cache(maxsize=4)
def _rotary_table(rows: int, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(rows), inv_freq).float()  # (rows, head_dim/2)
    rot = torch.view_as_real(torch.polar(torch.ones_like(angles), angles))  # (rows, head_dim/2, 2)
    cos, sin = rot[..., 0], rot[..., 1]
    return torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)


def rotary_cos_sin(n: int, head_dim: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """(n, head_dim) cos and sin: angle t * base**(-2i/head_dim) for i < head_dim/2, the half repeated (the
    rotate-half layout). Made as the package makes it (a 2048-row table on the CPU through torch.polar, then
    moved), for the same bits."""
    cos, sin = _rotary_table(max(n, 2048), head_dim, base)
    return cos[:n].to(device), sin[:n].to(device)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, T, H, hd); cos, sin (T, hd)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[None, :, None, :] + rotated * sin[None, :, None, :]


class Attention(nn.Module):
    """Self-attention with rotary q/k, plus the FSMN memory: the values through a depthwise conv (kernel 31,
    centred), added to themselves, masked, and added to the attention's output."""

    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.query = nn.Linear(cfg.dim, cfg.dim)
        self.key = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.value = nn.Linear(cfg.dim, cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.fsmn_block = nn.Conv1d(cfg.dim, cfg.dim, cfg.fsmn_kernel, groups=cfg.dim, bias=False)
        self.pad = ((cfg.fsmn_kernel - 1) // 2, cfg.fsmn_kernel - 1 - (cfg.fsmn_kernel - 1) // 2)

    def fsmn(self, v: Tensor, mask_pad: Tensor) -> Tensor:
        """v (B, T, D), mask_pad (B, T, 1) bool -> (B, T, D)."""
        v = v * mask_pad
        memory = self.fsmn_block(F.pad(v.transpose(1, 2), self.pad)).transpose(1, 2)
        return (memory + v) * mask_pad

    def forward(self, x: Tensor, bias: Tensor, mask_pad: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x (B, T, D); bias (B, 1, 1, T): 0 or -1e10 by key; mask_pad (B, T, 1) bool."""
        B, T, D = x.shape
        q = self.query(x).view(B, T, self.n_heads, -1)  # (B, T, H, hd)
        k = self.key(x).view(B, T, self.n_heads, -1)
        v = self.value(x).view(B, T, self.n_heads, -1)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        memory = self.fsmn(v.view(B, T, D), mask_pad)
        scale = (D // self.n_heads) ** -0.25  # on q and on k, as the package does
        q = q.permute(0, 2, 1, 3) * scale  # (B, H, T, hd)
        k = k.permute(0, 2, 3, 1) * scale  # (B, H, hd, T)
        v = v.permute(0, 2, 1, 3)  # (B, H, T, hd)
        weights = torch.softmax((q @ k + bias).float(), dim=-1).to(q.dtype)  # (B, H, T, T)
        return self.out((weights @ v).permute(0, 2, 1, 3).flatten(start_dim=2)) + memory


class Block(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.attn_ln = nn.LayerNorm(cfg.dim, eps=1e-5)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, 4 * cfg.dim), nn.GELU(), nn.Linear(4 * cfg.dim, cfg.dim))
        self.mlp_ln = nn.LayerNorm(cfg.dim, eps=1e-5)

    def forward(self, x: Tensor, bias: Tensor, mask_pad: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x), bias, mask_pad, cos, sin)
        return x + self.mlp(self.mlp_ln(x))


class Encoder(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.dim, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.dim, cfg.dim, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))

    def forward(self, mel: Tensor, mel_len: Tensor) -> tuple[Tensor, Tensor]:
        """mel (B, n_mels, T), mel_len (B,) -> hidden (B, T', D) with T' = ceil(ceil(T/2)/2), lengths (B,)."""
        x, lengths, n = mel, mel_len, mel.shape[-1]
        for conv in (self.conv1, self.conv2):  # each input zeroed past its clip's length
            x = F.gelu(conv(x * non_pad_mask(lengths, n)[:, None, :]))
            lengths, n = (lengths - 1) // 2 + 1, (n - 1) // 2 + 1
        x = x.permute(0, 2, 1)  # (B, T', D)
        mask_pad = non_pad_mask(lengths, n)[:, :, None]  # (B, T', 1)
        bias = (1.0 - mask_pad.transpose(1, 2).to(x.dtype)) * -1.0e10  # (B, 1, T')
        cos, sin = rotary_cos_sin(n, self.cfg.head_dim, self.cfg.rope_base, x.device)
        for block in self.blocks:
            x = block(x, bias[:, None], mask_pad, cos.to(x.dtype), sin.to(x.dtype))
        return x, lengths


class FSQ(nn.Module):
    """Finite scalar quantization: 8 numbers -> tanh -> base-3 digits -> one token. (The package's names:
    ``quantizer._codebook.project_down``.)"""

    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self._codebook = nn.Module()
        self._codebook.project_down = nn.Linear(cfg.dim, cfg.fsq_digits)

    def project(self, hidden: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, 8) float32: the numbers the digits are rounded from."""
        flat = self._codebook.project_down(hidden.reshape(-1, hidden.shape[-1]))  # as the package: (B*T, D) rows
        return flat.view(*hidden.shape[:-1], -1).float()

    def forward(self, hidden: Tensor) -> Tensor:
        """(B, T, D) -> (B, T) int64 tokens in [0, 3**8)."""
        digits = (self.project(hidden).tanh() * 0.9990000128746033).round() + 1  # 0, 1, 2 (the float32 of 0.999)
        powers = 3.0 ** torch.arange(digits.shape[-1], device=digits.device, dtype=digits.dtype)
        return (digits * powers).sum(-1).long()


class S3TokenizerNet(nn.Module):
    """Log-mels to speech tokens: the package's ``S3TokenizerV2`` (its ``encoder`` and ``quantizer``)."""

    def __init__(self, cfg: S3TokenizerConfig = S3TokenizerConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = FSQ(cfg)

    def quantize(self, mel: Tensor, mel_len: Tensor) -> tuple[Tensor, Tensor]:
        """mel (B, n_mels, T), mel_len (B,) -> tokens (B, n) int64 (0 past each clip's length), lengths (B,).

        When every clip fits in a window (30 s), the batch goes through as it is. Otherwise, as the package does,
        every clip is cut into windows starting every window - overlap frames while the start is within the clip
        (a clip that fits: one window), each zero-padded to the full window, all encoded as one batch; a clip's
        windows are joined dropping half the overlap's tokens (50) at each seam: from the end of all but its last
        window, from the start of all but its first. (So a last window shorter than 2 s adds nothing, and the
        tokens of the 2 s before its start are lost, as with the package.)"""
        cfg = self.cfg
        if int(mel_len.max()) <= cfg.window_frames:
            hidden, lengths = self.encoder(mel, mel_len)
            return self.quantizer(hidden), lengths
        stride = cfg.window_frames - cfg.overlap_frames
        windows, window_len, owner = [], [], []
        for b in range(mel.shape[0]):
            n = int(mel_len[b])
            for start in range(0, n, stride) if n > cfg.window_frames else [0]:
                piece = mel[b, :, start: min(start + cfg.window_frames, n)]
                windows.append(F.pad(piece, (0, cfg.window_frames - piece.shape[1])))
                window_len.append(piece.shape[1])
                owner.append(b)
        hidden, lengths = self.encoder(torch.stack(windows), torch.tensor(window_len, device=mel.device))
        codes = self.quantizer(hidden)
        seam = cfg.overlap_frames // 2 // MEL_FRAMES_PER_TOKEN
        parts: list[list[Tensor]] = [[] for _ in range(mel.shape[0])]
        for i, b in enumerate(owner):
            parts[b].append(codes[i, : int(lengths[i])])
        joined = []
        for pieces in parts:
            joined.append(torch.cat([p[(seam if j > 0 else 0): (-seam if j < len(pieces) - 1 else len(p))]
                                     for j, p in enumerate(pieces)]))
        out_len = torch.tensor([len(t) for t in joined], device=mel.device)
        out = torch.zeros(len(joined), int(out_len.max()), dtype=torch.long, device=mel.device)
        for b, tokens in enumerate(joined):
            out[b, : len(tokens)] = tokens
        return out, out_len


class S3Tokenizer(nn.Module):
    """Built on the meta device (no memory, no random init): ``load_checkpoint_tensors`` gives it its tensors."""

    def __init__(self, config: S3TokenizerConfig = S3TokenizerConfig()):
        super().__init__()
        self.n_fft = 400
        with torch.device("meta"):
            self.model = S3TokenizerNet(config)
            self.register_buffer("_mel_filters", torch.zeros(config.n_mels, self.n_fft // 2 + 1))
            self.register_buffer("window", torch.zeros(self.n_fft))

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], source: str = "s3gen.safetensors") -> "S3Tokenizer":
        """The tokenizer of a checkpoint's ``tokenizer.*`` tensors (prefix removed), with as many layers as they
        hold (6 in the official files, fewer in the tests' small random checkpoints)."""
        from .checkpoint import layer_count

        layers = layer_count(tensors, "encoder.blocks.", source)
        tokenizer = cls(S3TokenizerConfig(n_layers=layers) if layers else S3TokenizerConfig())
        tokenizer.load_checkpoint_tensors(tensors, source)
        return tokenizer

    def load_checkpoint_tensors(self, tensors: dict[str, Tensor], source: str = "s3gen.safetensors") -> None:
        """Load the ``tokenizer.*`` tensors of s3gen.safetensors (prefix already removed)."""
        from .checkpoint import load_strict

        load_strict(self, {("model." + k if not k.startswith(("_mel_filters", "window")) else k): v
                           for k, v in tensors.items()}, f"{source} (tokenizer.*)", prefix_hint="tokenizer.")

    def log_mel(self, wav: Tensor) -> Tensor:
        """(samples,) at 16 kHz -> (128, frames) Whisper-style log-mel."""
        stft = torch.stft(wav, self.n_fft, HOP, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        mel = torch.clamp(self._mel_filters @ power, min=1e-10).log10()
        mel = torch.maximum(mel, mel.max() - 8.0)
        return (mel + 4.0) / 4.0

    @torch.inference_mode()
    def forward(self, wav: Tensor, max_tokens: int | None = None) -> Tensor:
        """Speech tokens (1, n) of a 16 kHz clip, at most max_tokens."""
        device = self.window.device
        mel = self.log_mel(torch.as_tensor(wav, dtype=torch.float32).to(device).view(-1))
        if max_tokens is not None:
            mel = mel[:, : max_tokens * MEL_FRAMES_PER_TOKEN]
        tokens, lengths = self.model.quantize(mel[None], torch.tensor([mel.shape[1]], device=device))
        return tokens[:, : int(lengths[0])].long()
