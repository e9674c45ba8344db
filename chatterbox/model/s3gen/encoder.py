"""The flow's token encoder: a conformer (no convolution module) with relative-position attention, a 3-token
lookahead, then x2 upsampling to the 50 Hz mel rate and four more layers.

One utterance runs unpadded, with no mask. A batch of utterances is padded at the end of each row, and nothing past
a row's end reaches its real positions: attention masks the padded keys, the convolutions before the lookahead see
zeros there (the embedding is zeroed past each end: its bias and LayerNorm would otherwise leak in through the
3-token lookahead), and the upsampling convolution is causal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class EncoderConfig:
    dim: int = 512
    heads: int = 8
    ff_dim: int = 2048
    blocks: int = 6
    up_blocks: int = 4
    lookahead: int = 3
    up_stride: int = 2
    norm_eps: float = 1e-12  # the conformer layers' pre-norms
    out_norm_eps: float = 1e-5


def relative_positions(length: int, dim: int, device=None, dtype=torch.float32) -> Tensor:
    """(1, 2*length - 1, dim) sinusoids for relative positions length-1 .. -(length-1)."""
    position = torch.arange(0, length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    positive = torch.zeros(length, dim)
    negative = torch.zeros(length, dim)
    positive[:, 0::2] = torch.sin(position * div)
    positive[:, 1::2] = torch.cos(position * div)
    negative[:, 0::2] = torch.sin(-1 * position * div)
    negative[:, 1::2] = torch.cos(-1 * position * div)
    table = torch.cat([torch.flip(positive, [0]), negative[1:]], dim=0)
    return table[None].to(device=device, dtype=dtype)


class LinearEmbed(nn.Module):
    """Linear + LayerNorm, scaled by sqrt(dim); also returns the relative position table."""

    def __init__(self, dim: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim, eps=1e-5))
        self.scale = math.sqrt(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.out(x) * self.scale
        return x, relative_positions(x.shape[1], x.shape[2], x.device, x.dtype)


class RelPositionAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.d_k = heads, dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(heads, self.d_k))

    @staticmethod
    def _rel_shift(x: Tensor) -> Tensor:
        # (B, H, T, 2T-1) scores by relative offset -> (B, H, T, T) scores by key position
        B, H, T, P = x.shape
        padded = torch.cat([x.new_zeros(B, H, T, 1), x], dim=-1).view(B, H, P + 1, T)
        return padded[:, :, 1:].view_as(x)[:, :, :, : P // 2 + 1]

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor | None = None) -> Tensor:
        # mask: (B, T) True for a row's real positions, or None (one unpadded row)
        B, T, _ = x.shape
        q = self.linear_q(x).view(B, T, self.heads, self.d_k)  # (B, T, H, d)
        k = self.linear_k(x).view(B, T, self.heads, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(B, T, self.heads, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos).view(pos.shape[0], -1, self.heads, self.d_k).transpose(1, 2)  # (1, H, 2T-1, d)
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = self._rel_shift(torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1)))
        scores = (content + position) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(B, T, -1)
        return self.linear_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.self_attn = RelPositionAttention(cfg.dim, cfg.heads)
        self.feed_forward = FeedForward(cfg.dim, cfg.ff_dim)
        self.norm_mha = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.norm_ff = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos, mask)
        return x + self.feed_forward(self.norm_ff(x))


class Lookahead(nn.Module):
    """Each position also sees the next `lookahead` tokens (zeros past the end), then a causal conv."""

    def __init__(self, dim: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(dim, dim, lookahead + 1)
        self.conv2 = nn.Conv1d(dim, dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        # (B, T, C) -> (B, T, C)
        h = F.leaky_relu(self.conv1(F.pad(x.transpose(1, 2), (0, self.lookahead))))
        h = self.conv2(F.pad(h, (2, 0)))
        return h.transpose(1, 2) + x


class Upsample(nn.Module):
    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(dim, dim, stride * 2 + 1)

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, T) -> (B, C, stride * T), nearest then a causal conv
        x = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return self.conv(F.pad(x, (self.stride * 2, 0)))


class UpsampleConformerEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig = EncoderConfig()):
        super().__init__()
        self.cfg = cfg
        self.embed = LinearEmbed(cfg.dim)
        self.pre_lookahead_layer = Lookahead(cfg.dim, cfg.lookahead)
        self.encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.blocks))
        self.up_layer = Upsample(cfg.dim, cfg.up_stride)
        self.up_embed = LinearEmbed(cfg.dim)
        self.up_encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.up_blocks))
        self.after_norm = nn.LayerNorm(cfg.dim, eps=cfg.out_norm_eps)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        # (B, T, 512) token embeddings, row b real for its first lengths[b] -> (B, 2T, 512)
        mask = None if lengths is None else positions_mask(lengths, x.shape[1])
        x, pos = self.embed(x)
        if mask is not None:
            x = x * mask[..., None]
        x = self.pre_lookahead_layer(x)
        for layer in self.encoders:
            x = layer(x, pos, mask)
        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)
        up_mask = None if mask is None else mask.repeat_interleave(self.cfg.up_stride, dim=1)
        x, pos = self.up_embed(x)
        for layer in self.up_encoders:
            x = layer(x, pos, up_mask)
        return self.after_norm(x)


def positions_mask(lengths: Tensor, size: int) -> Tensor:
    """(B,) lengths -> (B, size) True at each row's real positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]
