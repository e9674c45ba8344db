"""The Llama backbone of T3, with a growing KV cache (our own module; same weights as transformers').

Two ways through it: ``forward`` for a block of positions of one request (the prefill, or a whole sequence), and
``decode`` for one new position of each of many requests at once, each with its own cache (continuous batching:
chatterbox.model.t3_batch). Decoding computes every row as it would be computed alone: the matmuls through a
RowMatmul, attention and rotary positions per request.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rowmatmul import RowMatmul


@dataclass(frozen=True)
class LlamaConfig:
    dim: int = 1024
    n_layers: int = 30
    n_heads: int = 16
    n_kv_heads: int = 16
    head_dim: int = 64
    hidden_dim: int = 4096
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    # llama3 rope scaling
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 8192


def rope_inv_freq(cfg: LlamaConfig) -> Tensor:
    """Inverse frequencies with llama3 scaling, computed as transformers does (fp32)."""
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.int64).float() / cfg.head_dim))
    low_wavelen = cfg.rope_original_context / cfg.rope_low_freq_factor
    high_wavelen = cfg.rope_original_context / cfg.rope_high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / cfg.rope_factor, inv)
    smooth = (cfg.rope_original_context / wavelen - cfg.rope_low_freq_factor) / (
        cfg.rope_high_freq_factor - cfg.rope_low_freq_factor)
    smoothed = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_cos_sin(inv_freq: Tensor, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    freqs = positions.float()[:, None] * inv_freq[None, :].to(positions.device)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x: (B, H, T, D); cos, sin: (T, D)
    return x * cos + _rotate_half(x) * sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class AttentionProbe:
    """Opt-in: the attention probabilities of a few (layer, head) pairs, for the first row of one request, over
    every position so far. Only those heads are computed again from q and k (the fast attention kernels do not
    return weights), as transformers' eager attention would: scores scaled by 1/sqrt(head_dim), causal mask,
    softmax in float32. Hung on a request's KVCache (``cache.probe``) so that batched decoding fills it too.

    ``probs[(layer, head)]``: (Q, L) for the last forward pass, Q its last ``queries`` query positions (one when
    decoding), L every key position so far."""

    def __init__(self, heads: tuple[tuple[int, int], ...], queries: int = 1):
        self.heads, self.queries = tuple(heads), queries
        self.layers = {layer for layer, _ in self.heads}
        self.probs: dict[tuple[int, int], Tensor] = {}

    def record(self, layer: int, q: Tensor, k: Tensor, past: int) -> None:
        # q: (H, T, D) queries at positions past..past+T-1; k: (H, L, D) keys at 0..L-1, L = past + T
        T, L = q.shape[1], k.shape[1]
        n = min(T, self.queries)
        pos = torch.arange(past + T - n, past + T, device=q.device)[:, None]  # (n, 1) query positions
        hidden = torch.arange(L, device=q.device)[None, :] > pos  # (n, L) keys in the query's future
        for lay, head in self.heads:
            if lay != layer:
                continue
            scores = (q[head, T - n:] @ k[head].transpose(0, 1)) * q.shape[-1] ** -0.5  # (n, L)
            scores = scores.masked_fill(hidden, float("-inf"))
            self.probs[(lay, head)] = torch.softmax(scores, dim=-1, dtype=torch.float32)


class KVCache:
    """Keys and values of every layer for ``rows`` rows of one request, up to max_len positions. Room for
    ``reserve`` positions is made at once and doubled when it runs out: a batch of requests then holds what their
    sequences use so far, not what they might (a guided request's 1,200 positions are 590 MB in fp32)."""

    def __init__(self, cfg: LlamaConfig, rows: int, max_len: int, device, dtype, reserve: int | None = None):
        self.rows, self.max_len = rows, max_len
        self.length = 0  # positions filled
        self.probe: AttentionProbe | None = None  # opt-in attention weights of a few heads (row 0)
        shape = (cfg.n_layers, rows, cfg.n_kv_heads, min(max_len, reserve or max_len), cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    def _room(self, end: int) -> None:
        if end > self.max_len:
            raise ValueError(f"the sequence is longer than the KV cache ({self.max_len} positions)")
        if end > self.k.shape[3]:
            size = min(self.max_len, max(end, 2 * self.k.shape[3]))
            grown = [t.new_zeros(*t.shape[:3], size, t.shape[4]) for t in (self.k, self.v)]
            for new, old in zip(grown, (self.k, self.v)):
                new[:, :, :, : self.length] = old[:, :, :, : self.length]
            self.k, self.v = grown

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        start, end = self.length, self.length + k.shape[2]
        self._room(end)
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None) -> Tensor:
        B, T, _ = x.shape
        cfg = self.cfg
        q = self.q_proj(x).view(B, T, cfg.n_heads, cfg.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if cfg.n_kv_heads != cfg.n_heads:
            k = k.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
            v = v.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
        if cache is not None and cache.probe is not None and self.layer in cache.probe.layers:
            cache.probe.record(self.layer, q[0], k[0], past)
        if T == 1:
            out = F.scaled_dot_product_attention(q, k, v)  # one new position sees everything before it
        elif past == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # a block of new positions after a cached prefix
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))

    def decode(self, x: Tensor, cos: Tensor, sin: Tensor, caches: list[KVCache], matmul: RowMatmul) -> Tensor:
        # x: (R, dim), one new position per row, rows grouped by request in the order of caches
        R, cfg = x.shape[0], self.cfg
        q = matmul(self.q_proj, x).view(R, cfg.n_heads, 1, cfg.head_dim)
        k = matmul(self.k_proj, x).view(R, cfg.n_kv_heads, 1, cfg.head_dim)
        v = matmul(self.v_proj, x).view(R, cfg.n_kv_heads, 1, cfg.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        outs, start = [], 0
        for cache in caches:  # each request attends over its own positions only: no padding, no mask
            rows = slice(start, start + cache.rows)
            keys, values = cache.update(self.layer, k[rows], v[rows])
            if cfg.n_kv_heads != cfg.n_heads:
                keys = keys.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
                values = values.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
            if cache.probe is not None and self.layer in cache.probe.layers:
                cache.probe.record(self.layer, q[rows][0], keys[0], cache.length)
            outs.append(F.scaled_dot_product_attention(q[rows], keys, values))
            start += cache.rows
        return matmul(self.o_proj, torch.cat(outs).reshape(R, -1))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def decode(self, x: Tensor, matmul: RowMatmul) -> Tensor:
        return matmul(self.down_proj, F.silu(matmul(self.gate_proj, x)) * matmul(self.up_proj, x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))

    def decode(self, x: Tensor, cos: Tensor, sin: Tensor, caches: list[KVCache], matmul: RowMatmul) -> Tensor:
        x = x + self.self_attn.decode(self.input_layernorm(x), cos, sin, caches, matmul)
        return x + self.mlp.decode(self.post_attention_layernorm(x), matmul)


class Llama(nn.Module):
    """Takes input embeddings (T3 has its own), returns the final normalized hidden states."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(8, cfg.dim)  # in the checkpoint, unused: T3 embeds its own tokens
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self._inv_freq: dict[torch.device, Tensor] = {}  # not a buffer: modules are built on the meta device

    def inv_freq(self, device: torch.device) -> Tensor:
        if device not in self._inv_freq:
            self._inv_freq[device] = rope_inv_freq(self.cfg).to(device)
        return self._inv_freq[device]

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        # x: (B, T, dim) -> (B, T, dim)
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        cos, sin = rope_cos_sin(self.inv_freq(x.device), positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, cache)
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm(x)

    def decode(self, x: Tensor, caches: list[KVCache], matmul: RowMatmul) -> Tensor:
        """x: (R, dim), the next position of each request's rows (grouped as ``caches``) -> (R, dim)."""
        positions = torch.cat([torch.full((c.rows,), c.length, device=x.device) for c in caches])
        cos, sin = rope_cos_sin(self.inv_freq(x.device), positions, x.dtype)  # (R, D)
        cos, sin = cos[:, None, None], sin[:, None, None]  # over (R, H, 1, D)
        for layer in self.layers:
            x = layer.decode(x, cos, sin, caches, matmul)
        for cache in caches:
            cache.length += 1
        return self.norm(x)
