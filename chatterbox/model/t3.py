"""T3: text tokens -> speech tokens, a Llama conditioned on a voice, decoded with classifier-free guidance.

The prefill is ``[conditioning (34), text + text positions, start-of-speech + position 0, start-of-speech +
position 0]`` (the start token appears twice, as in the reference); each sampled token is fed back with the next
speech position. With guidance, a second row has its text embeddings zeroed (before positions are added) and the
logits are combined as ``cond + w * (cond - uncond)``; with ``cfg_weight == 0`` only the conditioned row runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conds import T3Cond
from .llama import Llama, LlamaConfig
from .rowmatmul import RowMatmul
from .sampling import SamplingParams


@dataclass(frozen=True)
class T3Config:
    text_vocab: int = 704
    speech_vocab: int = 8194
    start_text: int = 255
    stop_text: int = 0
    start_speech: int = 6561
    stop_speech: int = 6562
    speech_codes: int = 6561  # ids below this are speech codes
    text_positions: int = 2050
    speech_positions: int = 4100
    speaker_dim: int = 256
    prompt_tokens: int = 150
    perceiver_queries: int = 32
    perceiver_heads: int = 4
    llama: LlamaConfig = field(default_factory=LlamaConfig)
    # (layer, head) pairs whose attention follows the text: the multilingual model decodes with an alignment guard
    # on them (chatterbox.model.alignment); empty for the original.
    alignment_heads: tuple[tuple[int, int], ...] = ()

    @classmethod
    def multilingual(cls) -> "T3Config":
        """Chatterbox Multilingual's T3 (t3_mtl23ls_v2.safetensors): the original's with 2454 text ids."""
        from .alignment import ALIGNMENT_HEADS

        return cls(text_vocab=2454, alignment_heads=ALIGNMENT_HEADS)

    @property
    def can_align(self) -> bool:
        """Whether the alignment guard can run: its heads' layers exist (not in the 2-layer test checkpoints)."""
        return bool(self.alignment_heads) and all(l < self.llama.n_layers for l, _ in self.alignment_heads)

    @property
    def dim(self) -> int:
        return self.llama.dim

    @property
    def max_text_tokens(self) -> int:
        """Text tokens one pass can take, start and stop included."""
        return self.text_positions

    @property
    def max_new_tokens(self) -> int:
        return self.speech_positions - 2

    def with_layers_of(self, tensors: dict[str, Tensor]) -> "T3Config":
        """This config with as many transformer layers as a checkpoint's tensors hold: 30 in the official file,
        fewer in the small random checkpoints the tests make (chatterbox.model.random_checkpoint), whose system
        tests would otherwise spend most of their time decoding with 2 GB of random weights."""
        from .checkpoint import layer_count

        layers = layer_count(tensors, "tfmr.layers.", "the T3 file")
        if layers in (0, self.llama.n_layers):
            return self
        return replace(self, llama=replace(self.llama, n_layers=layers))


class PerceiverAttention(nn.Module):
    """One attention block, used twice by the Perceiver: a LayerNorm shared by both inputs, no feed-forward."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        # x: (B, Q, dim) attends over context: (B, S, dim)
        B, Q, dim = x.shape
        q = self.to_q(self.norm(x)).view(B, Q, self.heads, -1).transpose(1, 2)
        ctx = self.norm(context)
        k = self.to_k(ctx).view(B, ctx.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(ctx).view(B, ctx.shape[1], self.heads, -1).transpose(1, 2)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, Q, dim)
        return x + self.proj_out(h)


class Perceiver(nn.Module):
    def __init__(self, queries: int, dim: int, heads: int):
        super().__init__()
        self.pre_attention_query = nn.Parameter(torch.empty(1, queries, dim))
        self.attn = PerceiverAttention(dim, heads)

    def forward(self, h: Tensor) -> Tensor:
        # (B, S, dim) -> (B, queries, dim): cross-attention over the prompt, then self-attention
        x = self.attn(self.pre_attention_query.expand(h.shape[0], -1, -1), h)
        return self.attn(x, x)


class CondEncoder(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.spkr_enc = nn.Linear(cfg.speaker_dim, cfg.dim)
        self.emotion_adv_fc = nn.Linear(1, cfg.dim, bias=False)
        self.perceiver = Perceiver(cfg.perceiver_queries, cfg.dim, cfg.perceiver_heads)

    def forward(self, speaker_emb: Tensor, prompt_emb: Tensor | None, emotion: Tensor) -> Tensor:
        # -> (B, 1 + queries + 1, dim)
        parts = [self.spkr_enc(speaker_emb.view(-1, speaker_emb.shape[-1]))[:, None]]
        if prompt_emb is not None:
            parts.append(self.perceiver(prompt_emb))
        parts.append(self.emotion_adv_fc(emotion.view(-1, 1, 1)))
        return torch.cat(parts, dim=1)


class PositionEmbedding(nn.Module):
    def __init__(self, positions: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(positions, dim)

    def forward(self, start: int, length: int) -> Tensor:
        return self.emb.weight[start:start + length]  # (length, dim)


class T3(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.cfg = cfg
        self.tfmr = Llama(cfg.llama)
        self.cond_enc = CondEncoder(cfg)
        self.text_emb = nn.Embedding(cfg.text_vocab, cfg.dim)
        self.speech_emb = nn.Embedding(cfg.speech_vocab, cfg.dim)
        self.text_pos_emb = PositionEmbedding(cfg.text_positions, cfg.dim)
        self.speech_pos_emb = PositionEmbedding(cfg.speech_positions, cfg.dim)
        self.text_head = nn.Linear(cfg.dim, cfg.text_vocab, bias=False)
        self.speech_head = nn.Linear(cfg.dim, cfg.speech_vocab, bias=False)

    def check_text(self, text_tokens: Tensor) -> None:
        n = text_tokens.shape[-1]
        if n <= 2:
            raise ValueError("the text is empty: there is nothing to speak")
        if n > self.cfg.max_text_tokens:
            raise ValueError(f"the text is {n} tokens long; T3 takes at most {self.cfg.max_text_tokens} in one "
                             "pass: split it into shorter chunks")

    def conditioning(self, cond: T3Cond) -> Tensor:
        """(1, 34, dim) conditioning positions for a voice."""
        w = self.speech_emb.weight
        prompt = None
        if cond.cond_prompt_speech_tokens is not None:
            tokens = cond.cond_prompt_speech_tokens.to(w.device).view(1, -1)
            prompt = self.speech_emb(tokens) + self.speech_pos_emb(0, tokens.shape[1])
        return self.cond_enc(cond.speaker_emb.to(w.device, w.dtype), prompt,
                             torch.as_tensor(cond.emotion_adv).to(w.device, w.dtype))

    def prefill_embeds(self, cond: T3Cond, text_tokens: Tensor, guided: bool) -> Tensor:
        """(B, L, dim) with B = 2 when guided. text_tokens: (T,) framed with start and stop."""
        text_tokens = text_tokens.view(-1).to(self.speech_emb.weight.device)
        cond_emb = self.conditioning(cond)  # (1, C, dim)
        text = self.text_emb(text_tokens)[None]  # (1, T, dim)
        if guided:
            text = torch.cat([text, torch.zeros_like(text)])  # the unconditioned row has no text
        text = text + self.text_pos_emb(0, text_tokens.shape[0])
        start = self.speech_emb.weight[self.cfg.start_speech] + self.speech_pos_emb(0, 1)  # (1, dim)
        rows = text.shape[0]
        return torch.cat([cond_emb.expand(rows, -1, -1), text, start.expand(rows, 2, -1)], dim=1)

    def generate(self, cond: T3Cond, text_tokens: Tensor, *, cfg_weight: float = 0.5,
                 sampling: SamplingParams = SamplingParams(), max_new_tokens: int = 1000,
                 generator: torch.Generator | None = None, on_logits=None,
                 matmul: RowMatmul | None = None, alignment: bool | None = None) -> Iterator[int]:
        """Speech tokens one by one as they are sampled, until stop or max_new_tokens: a batch of one
        (chatterbox.model.t3_batch), so that alone and batched are the same computation.

        ``on_logits(step, guided_logits)`` sees the guided logits before sampling (for tests and analysis).
        ``alignment``: decode with the alignment guard (None: when the config has alignment heads).
        """
        from .t3_batch import T3Batch, T3Request

        if matmul is None:  # one plan per model, probed once
            matmul = self.__dict__.setdefault("_matmul", RowMatmul())
        batch = T3Batch(self, matmul)
        request = T3Request(cond, text_tokens, cfg_weight=cfg_weight, sampling=sampling,
                            max_new_tokens=max_new_tokens, generator=generator, on_logits=on_logits,
                            alignment=self.cfg.can_align if alignment is None else alignment)
        yield from batch.alone(request)
