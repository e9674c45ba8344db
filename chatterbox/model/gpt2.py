"""The GPT-2 backbone of Chatterbox Turbo's T3 (our own module; the same weights and numbers as transformers').

GPT-2 medium: 24 pre-norm blocks of width 1024, 16 heads of 64, learned absolute positions (``wpe``, 8196 rows),
LayerNorm (eps 1e-5), a 4096-wide MLP with the tanh GELU ("gelu_new"). The weights keep the layout the checkpoint
stores: GPT-2's "Conv1D" projections hold ``(in, out)`` matrices, applied as ``bias + x @ weight``. T3 embeds its
own tokens, so ``wte`` (in the checkpoint) is never used here.

Two ways through it, as the Llama of the original T3 has: ``forward`` for a block of positions of one request (the
prefill), and ``decode`` for one new position of each of many requests at once, each with its own KV cache
(continuous batching: chatterbox.model.t3_turbo_batch), every row computed as it is alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .llama import KVCache
from .rowmatmul import RowMatmul


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

    @property
    def n_kv_heads(self) -> int:  # what the KV cache (chatterbox.model.llama.KVCache) holds per layer
        return self.n_heads


class Conv1D(nn.Module):
    """GPT-2's projection. As stored in the checkpoint, its weight is ``(in, out)``, computed as
    ``addmm(bias, x, weight)`` like transformers' (the same float order, so the same numbers). ``to_linear_layout``
    turns it into nn.Linear's ``(out, in)`` (the layout RowMatmul's row-exact decoding is planned for, and the
    faster one there: measured below)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.empty(n_out))
        self.linear_layout = False

    def to_linear_layout(self) -> None:
        if not self.linear_layout:
            self.weight = nn.Parameter(self.weight.detach().t().contiguous(), requires_grad=False)
            self.linear_layout = True

    def forward(self, x: Tensor) -> Tensor:
        # (..., in) -> (..., out)
        if self.linear_layout:
            return F.linear(x, self.weight, self.bias)
        out = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return out.view(*x.shape[:-1], out.shape[-1])


def gelu_new(x: Tensor) -> Tensor:
    """The tanh approximation of GELU, written out as GPT-2 (and transformers' ``gelu_new``) computes it;
    ``F.gelu(approximate="tanh")`` rounds differently in the last bits."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Attention(nn.Module):
    def __init__(self, cfg: GPT2Config, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.c_attn = Conv1D(cfg.dim, 3 * cfg.dim)  # q, k, v side by side
        self.c_proj = Conv1D(cfg.dim, cfg.dim)

    def forward(self, x: Tensor, cache: KVCache | None) -> Tensor:
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

    def decode(self, x: Tensor, caches: list[KVCache], matmul: RowMatmul) -> Tensor:
        # x: (R, dim), one new position per request (one row each), in the order of caches
        R, cfg = x.shape[0], self.cfg
        q, k, v = (t.reshape(R, cfg.n_heads, 1, cfg.head_dim) for t in matmul(self.c_attn, x).split(cfg.dim, dim=1))
        outs = []
        for i, cache in enumerate(caches):  # each request attends over its own positions only: no padding
            keys, values = cache.update(self.layer, k[i:i + 1], v[i:i + 1])
            outs.append(F.scaled_dot_product_attention(q[i:i + 1], keys, values))
        return matmul(self.c_proj, torch.cat(outs).reshape(R, cfg.dim))


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = Conv1D(cfg.dim, cfg.hidden_dim)
        self.c_proj = Conv1D(cfg.hidden_dim, cfg.dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(gelu_new(self.c_fc(x)))

    def decode(self, x: Tensor, matmul: RowMatmul) -> Tensor:
        return matmul(self.c_proj, gelu_new(matmul(self.c_fc, x)))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.ln_2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cache: KVCache | None) -> Tensor:
        x = self.attn(self.ln_1(x), cache) + x
        return x + self.mlp(self.ln_2(x))

    def decode(self, x: Tensor, caches: list[KVCache], matmul: RowMatmul) -> Tensor:
        x = self.attn.decode(self.ln_1(x), caches, matmul) + x
        return x + self.mlp.decode(self.ln_2(x), matmul)


class GPT2(nn.Module):
    """Takes input embeddings (T3 has its own), adds the learned positions, returns the final normalized hidden
    states. Positions continue from what the cache holds."""

    def __init__(self, cfg: GPT2Config = GPT2Config()):
        super().__init__()
        self.cfg = cfg
        self.wpe = nn.Embedding(cfg.positions, cfg.dim)
        self.h = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)

    def to_linear_layout(self) -> "GPT2":
        """Every projection in nn.Linear's layout, one matrix at a time (the memory of one more at most): what
        ``decode`` needs. Kept as stored, a row-exact decoding step took 4.4 s for 30 tokens of a 2-block model
        (the only row-exact form on the transposed weight is a slow kernel), against 0.5 s."""
        for module in self.modules():
            if isinstance(module, Conv1D):
                module.to_linear_layout()
        return self

    def new_cache(self, max_len: int, reserve: int | None = None) -> KVCache:
        """A request's cache (one row): room for ``reserve`` positions at once, grown up to ``max_len``."""
        if max_len > self.cfg.positions:
            raise ValueError(f"a sequence of {max_len} positions is longer than GPT-2's {self.cfg.positions}")
        w = self.wpe.weight
        return KVCache(self.cfg, 1, max_len, w.device, w.dtype, reserve=reserve)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
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

    def decode(self, x: Tensor, caches: list[KVCache], matmul: RowMatmul) -> Tensor:
        """x: (R, dim), the next position of each request (one row each, in the order of caches) -> (R, dim).
        Needs the projections in nn.Linear's layout (``to_linear_layout``)."""
        if not self.h[0].attn.c_attn.linear_layout:
            raise RuntimeError("GPT2.decode needs to_linear_layout() first (RowMatmul takes (out, in) weights)")
        x = x + self.wpe.weight[torch.tensor([c.length for c in caches], device=x.device)]
        for block in self.h:
            x = block.decode(x, caches, matmul)
        for cache in caches:
            cache.length += 1
        return self.ln_f(x)
