"""The flow-matching decoder: a 1-D U-Net estimator of the velocity field, integrated with Euler steps.

The estimator sees concat(x, mu, speaker, prompt mels) = 320 channels, a sinusoidal time embedding, and runs one
down level, 12 mid levels and one up level, each a causal ResNet block and 4 transformer blocks. One unpadded
utterance needs no mask. In a batch padded at the end of each row, only attention could carry padding into real
positions (every convolution is causal, every other layer acts on one position), so it masks the padded keys.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class DecoderConfig:
    in_channels: int = 320
    out_channels: int = 80
    channels: int = 256
    heads: int = 8
    head_dim: int = 64
    transformer_blocks: int = 4
    mid_blocks: int = 12
    steps: int = 10
    guidance: float = 0.7  # v = (1 + g) * v_cond - g * v_uncond
    meanflow: bool = False  # Turbo's estimator also takes the step's end time (chatterbox.model.s3gen.meanflow)


class CausalConv1d(nn.Conv1d):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.kernel_size[0] - 1, 0)))


class CausalBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        # indices as in the checkpoint: 0 conv, 2 layer norm (1 and 3 are transposes)
        self.block = nn.ModuleDict({"0": CausalConv1d(dim, dim_out, 3), "2": nn.LayerNorm(dim_out)})

    def forward(self, x: Tensor) -> Tensor:
        x = self.block["0"](x)
        x = self.block["2"](x.transpose(1, 2)).transpose(1, 2)
        return F.mish(x)


class CausalResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int):
        super().__init__()
        self.mlp = nn.ModuleDict({"1": nn.Linear(time_dim, dim_out)})  # index 0 is the Mish
        self.block1 = CausalBlock(dim, dim_out)
        self.block2 = CausalBlock(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = self.block1(x) + self.mlp["1"](F.mish(t)).unsqueeze(-1)
        return self.block2(h) + self.res_conv(x)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # mask: (B, T) True at real positions, or None
        B, T, _ = x.shape
        q, k, v = (proj(x).view(B, T, self.heads, -1).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        keys = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keys).transpose(1, 2).reshape(B, T, -1)
        return self.to_out[0](out)


class GeluProjection(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.ModuleDict({"0": GeluProjection(dim, hidden), "2": nn.Linear(hidden, dim)})

    def forward(self, x: Tensor) -> Tensor:
        return self.net["2"](self.net["0"](x))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SelfAttention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dim * 4)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn1(self.norm1(x), mask)
        return x + self.ff(self.norm3(x))


class TimeMLP(nn.Module):
    def __init__(self, dim: int, time_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(dim, time_dim)
        self.linear_2 = nn.Linear(time_dim, time_dim)

    def forward(self, t: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(t)))


def time_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """(B,) times in [0, 1] -> (B, dim) sinusoids."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    emb = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Level(nn.Module):
    """A ResNet block then transformer blocks, plus an optional third module (the level's resampling conv)."""

    def __init__(self, cfg: DecoderConfig, dim_in: int, time_dim: int, with_conv: bool):
        super().__init__()
        self.add_module("0", CausalResnetBlock(dim_in, cfg.channels, time_dim))
        self.add_module("1", nn.ModuleList(TransformerBlock(cfg.channels, cfg.heads, cfg.head_dim)
                                           for _ in range(cfg.transformer_blocks)))
        if with_conv:
            self.add_module("2", CausalConv1d(cfg.channels, cfg.channels, 3))

    def forward(self, x: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
        x = getattr(self, "0")(x, t).transpose(1, 2)  # (B, T, C)
        for block in getattr(self, "1"):
            x = block(x, mask)
        return x.transpose(1, 2)

    def resample(self, x: Tensor) -> Tensor:
        return getattr(self, "2")(x)


class Estimator(nn.Module):
    def __init__(self, cfg: DecoderConfig = DecoderConfig()):
        super().__init__()
        self.cfg = cfg
        time_dim = cfg.channels * 4
        self.time_mlp = TimeMLP(cfg.in_channels, time_dim)
        self.down_blocks = nn.ModuleList([Level(cfg, cfg.in_channels, time_dim, with_conv=True)])
        self.mid_blocks = nn.ModuleList(Level(cfg, cfg.channels, time_dim, with_conv=False)
                                        for _ in range(cfg.mid_blocks))
        self.up_blocks = nn.ModuleList([Level(cfg, cfg.channels * 2, time_dim, with_conv=True)])
        self.final_block = CausalBlock(cfg.channels, cfg.channels)
        self.final_proj = nn.Conv1d(cfg.channels, cfg.out_channels, 1)
        if cfg.meanflow:  # mixes the start and end times' embeddings: Linear(2 x 1024 -> 1024), no bias
            self.time_embed_mixer = nn.Linear(2 * time_dim, time_dim, bias=False)

    def forward(self, x: Tensor, mu: Tensor, t: Tensor, spks: Tensor, cond: Tensor, mask: Tensor | None = None,
                r: Tensor | None = None) -> Tensor:
        # x, mu, cond: (B, 80, T); t: (B,); spks: (B, 80); mask (B, T) or None; r: (B,) the step's end time,
        # mean-flow estimators only -> velocity (B, 80, T)
        t = self.time_mlp(time_embedding(t, self.cfg.in_channels).to(t.dtype))
        if self.cfg.meanflow:
            if r is None:
                raise ValueError("a mean-flow estimator needs the step's end time r")
            r = self.time_mlp(time_embedding(r, self.cfg.in_channels).to(r.dtype))
            t = self.time_embed_mixer(torch.cat([t, r], dim=1))
        x = torch.cat([x, mu, spks[:, :, None].expand(-1, -1, x.shape[-1]), cond], dim=1)
        down = self.down_blocks[0]
        skip = down(x, t, mask)
        x = down.resample(skip)
        for level in self.mid_blocks:
            x = level(x, t, mask)
        up = self.up_blocks[0]
        x = up.resample(up(torch.cat([x[:, :, : skip.shape[-1]], skip], dim=1), t, mask))
        return self.final_proj(self.final_block(x))


class FlowDecoder(nn.Module):
    """Conditional flow matching: Euler steps on the cosine schedule, with classifier-free guidance."""

    def __init__(self, cfg: DecoderConfig = DecoderConfig()):
        super().__init__()
        self.cfg = cfg
        self.estimator = Estimator(cfg)

    @torch.inference_mode()
    def forward(self, mu: Tensor, spks: Tensor, cond: Tensor, noise: Tensor, steps: int | None = None,
                mask: Tensor | None = None) -> Tensor:
        """mu, cond, noise: (B, 80, T); spks: (B, 80); mask (B, T) for rows padded at their end, or None -> mels
        (B, 80, T)."""
        steps = steps or self.cfg.steps
        if steps < 1:
            raise ValueError("the flow needs at least one step")
        t_span = torch.linspace(0, 1, steps + 1, device=mu.device, dtype=mu.dtype)
        t_span = 1 - torch.cos(t_span * 0.5 * torch.pi)
        x = noise
        g = self.cfg.guidance
        # The unconditioned row has mu, speaker and prompt zeroed; both rows share x and t.
        # The B conditioned rows first, then their B unconditioned twins.
        B = mu.shape[0]
        mu_in = torch.cat([mu, torch.zeros_like(mu)])
        spks_in = torch.cat([spks, torch.zeros_like(spks)])
        cond_in = torch.cat([cond, torch.zeros_like(cond)])
        mask_in = None if mask is None else torch.cat([mask, mask])
        for t, r in zip(t_span[:-1], t_span[1:]):
            v = self.estimator(torch.cat([x, x]), mu_in, t.expand(2 * B), spks_in, cond_in, mask_in)
            v = (1.0 + g) * v[:B] - g * v[B:]
            x = x + (r - t) * v
        return x
