"""The GPT-2 backbone of Chatterbox Turbo's T3 (our own module; the same weights and numbers as transformers').

GPT-2 medium: 24 pre-norm blocks of width 1024, 16 heads of 64, learned absolute positions (``wpe``, 8196 rows),
LayerNorm (eps 1e-5), a 4096-wide MLP with the tanh GELU ("gelu_new"). The weights keep the layout the checkpoint
stores: GPT-2's "Conv1D" projections hold ``(in, out)`` matrices, applied as ``bias + x @ weight``. T3 embeds its
own tokens, so ``wte`` (in the checkpoint) is never used here.

Decoding runs on a static KV cache: room for the whole sequence is made once, each step writes one position.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GPT2Config:
    dim: int = 1024
    n_layers: int = 24
    n_heads: int = 16
    hidden_dim: int = 4096
    positions: int = 8196
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class Conv1D(nn.Module):
    """GPT-2's projection: weight ``(in, out)``, computed as ``addmm(bias, x, weight)`` like transformers' (the
    same float order, so the same numbers)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.empty(n_out))

    def forward(self, x: Tensor) -> Tensor:
        # (..., in) -> (..., out)
        out = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return out.view(*x.shape[:-1], out.shape[-1])


def gelu_new(x: Tensor) -> Tensor:
    """The tanh approximation of GELU, written out as GPT-2 (and transformers' ``gelu_new``) computes it;
    ``F.gelu(approximate="tanh")`` rounds differently in the last bits."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class StaticKVCache:
    """Keys and values of every layer for a batch of ``rows``, ``max_len`` positions allocated at once."""

    def __init__(self, cfg: GPT2Config, rows: int, max_len: int, device, dtype):
        if max_len > cfg.positions:
            raise ValueError(f"a sequence of {max_len} positions is longer than GPT-2's {cfg.positions}")
        self.max_len = max_len
        self.length = 0  # positions filled
        shape = (cfg.n_layers, rows, cfg.n_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # k, v: (B, H, T, D) of the new positions -> every position so far
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"the sequence is longer than the KV cache ({self.max_len} positions)")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: GPT2Config, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.c_attn = Conv1D(cfg.dim, 3 * cfg.dim)  # q, k, v side by side
        self.c_proj = Conv1D(cfg.dim, cfg.dim)

    def forward(self, x: Tensor, cache: StaticKVCache | None) -> Tensor:
        B, T, _ = x.shape
        cfg = self.cfg
        q, k, v = (t.view(B, T, cfg.n_heads, cfg.head_dim).transpose(1, 2)
                   for t in self.c_attn(x).split(cfg.dim, dim=2))  # (B, H, T, D) each
        past = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if T == 1:
            out = F.scaled_dot_product_attention(q, k, v)  # one new position sees everything before it
        elif past == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # a block of new positions after a cached prefix
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(out.transpose(1, 2).reshape(B, T, cfg.dim))


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = Conv1D(cfg.dim, cfg.hidden_dim)
        self.c_proj = Conv1D(cfg.hidden_dim, cfg.dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(gelu_new(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.ln_2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cache: StaticKVCache | None) -> Tensor:
        x = self.attn(self.ln_1(x), cache) + x
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """Takes input embeddings (T3 has its own), adds the learned positions, returns the final normalized hidden
    states. Positions continue from what the cache holds."""

    def __init__(self, cfg: GPT2Config = GPT2Config()):
        super().__init__()
        self.cfg = cfg
        self.wpe = nn.Embedding(cfg.positions, cfg.dim)
        self.h = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)

    def new_cache(self, rows: int, max_len: int) -> StaticKVCache:
        w = self.wpe.weight
        return StaticKVCache(self.cfg, rows, max_len, w.device, w.dtype)

    def forward(self, x: Tensor, cache: StaticKVCache | None = None) -> Tensor:
        # x: (B, T, dim) -> (B, T, dim)
        start = cache.length if cache is not None else 0
        if start + x.shape[1] > self.cfg.positions:
            raise ValueError(f"GPT-2 takes at most {self.cfg.positions} positions")
        x = x + self.wpe.weight[start:start + x.shape[1]]
        for block in self.h:
            x = block(x, cache)
        if cache is not None:
            cache.length += x.shape[1]
        return self.ln_f(x)
