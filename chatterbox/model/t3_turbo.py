"""Chatterbox Turbo's T3: text tokens -> speech tokens, a GPT-2 conditioned on a voice, no guidance.

The prefill is ``[speaker (1), prompt speech tokens (<= 375), text tokens, start-of-speech]``, each embedded by
T3's own tables with no position embeddings of its own (GPT-2 adds its learned positions over the whole
sequence). Unlike the original T3 there is no Perceiver, no exaggeration input, no text start/stop framing and no
classifier-free guidance: one row per request, decoded alone or batched (chatterbox.model.t3_turbo_batch).

Each step, as the reference (``T3.inference_turbo``) does, in its order: temperature, top-k, top-p, then the
repetition penalty over the tokens generated so far (at the first step, over the start-of-speech token instead),
softmax, one multinomial draw. The first token comes from the prefill; every further one from feeding the last
back; stop (6562) ends the utterance and is not returned.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
from torch import Tensor, nn

from .conds import T3Cond
from .gpt2 import GPT2, GPT2Config
from .rowmatmul import RowMatmul
from .sampling import repetition_penalty, top_p_filter


@dataclass(frozen=True)
class T3TurboConfig:
    text_vocab: int = 50276
    speech_vocab: int = 6563
    start_speech: int = 6561
    stop_speech: int = 6562
    speech_codes: int = 6561  # ids below this are speech codes
    speaker_dim: int = 256
    prompt_tokens: int = 375  # 15 s of the reference clip at 25 tokens/s
    gpt2: GPT2Config = field(default_factory=GPT2Config)

    @property
    def dim(self) -> int:
        return self.gpt2.dim

    def with_layers_of(self, tensors: dict[str, Tensor]) -> "T3TurboConfig":
        """This config with as many transformer blocks as a checkpoint's tensors hold: 24 in the official file,
        fewer in the small random checkpoints the tests make (chatterbox.model.random_checkpoint_turbo)."""
        from .checkpoint import layer_count

        layers = layer_count(tensors, "tfmr.h.", "t3_turbo_v1.safetensors")
        if layers in (0, self.gpt2.n_layers):
            return self
        return replace(self, gpt2=replace(self.gpt2, n_layers=layers))


@dataclass(frozen=True)
class TurboSampling:
    temperature: float = 0.8
    top_k: int = 1000
    top_p: float = 0.95
    repetition_penalty: float = 1.2

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be above 0, not {self.temperature}")
        if not (isinstance(self.top_k, int) and not isinstance(self.top_k, bool)) or self.top_k < 0:
            raise ValueError(f"top_k must be a whole number, 0 (off) or more, not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be above 0 and at most 1, not {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be above 0, not {self.repetition_penalty}")


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    # logits: (B, V). Everything below the k-th largest logit is removed (ties with it stay), as transformers does.
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k)[0][..., -1, None]
    return logits.masked_fill(logits < kth, float("-inf"))


def process_logits(logits: Tensor, previous: Tensor, params: TurboSampling) -> Tensor:
    """Raw logits (1, V) -> the logits the draw is made from. ``previous``: (1, N) ids the penalty applies to.
    Each step is skipped where the reference skips it (temperature 1, top_k 0, top_p 1, penalty 1)."""
    if params.temperature != 1.0:
        logits = logits / params.temperature
    if params.top_k > 0:
        logits = top_k_filter(logits, params.top_k)
    if params.top_p < 1.0:
        logits = top_p_filter(logits, params.top_p)
    if params.repetition_penalty != 1.0:
        logits = repetition_penalty(logits, previous, float(params.repetition_penalty))
    return logits


class CondEncoder(nn.Module):
    def __init__(self, cfg: T3TurboConfig):
        super().__init__()
        self.spkr_enc = nn.Linear(cfg.speaker_dim, cfg.dim)


class T3Turbo(nn.Module):
    def __init__(self, cfg: T3TurboConfig = T3TurboConfig()):
        super().__init__()
        self.cfg = cfg
        self.tfmr = GPT2(cfg.gpt2)
        self.cond_enc = CondEncoder(cfg)
        self.text_emb = nn.Embedding(cfg.text_vocab, cfg.dim)
        self.speech_emb = nn.Embedding(cfg.speech_vocab, cfg.dim)
        self.text_head = nn.Linear(cfg.dim, cfg.text_vocab, bias=False)  # in the checkpoint; unused at inference
        self.speech_head = nn.Linear(cfg.dim, cfg.speech_vocab)

    def conditioning(self, cond: T3Cond) -> Tensor:
        """(1, 1 + P, dim): the speaker embedding's projection, then the prompt's speech-token embeddings."""
        w = self.speech_emb.weight
        parts = [self.cond_enc.spkr_enc(cond.speaker_emb.to(w.device, w.dtype).view(-1, self.cfg.speaker_dim))[:, None]]
        if cond.cond_prompt_speech_tokens is not None:
            tokens = cond.cond_prompt_speech_tokens.to(w.device).view(1, -1)[:, : self.cfg.prompt_tokens]
            parts.append(self.speech_emb(tokens))
        return torch.cat(parts, dim=1)

    def prefill_embeds(self, cond: T3Cond, text_tokens: Tensor) -> Tensor:
        """(1, L, dim) from text_tokens (T,): conditioning, text, one start-of-speech."""
        w = self.speech_emb.weight
        text_tokens = text_tokens.view(1, -1).to(w.device)
        start = self.speech_emb.weight[self.cfg.start_speech].view(1, 1, -1)
        return torch.cat([self.conditioning(cond), self.text_emb(text_tokens), start], dim=1)

    def generate(self, cond: T3Cond, text_tokens: Tensor, *, sampling: TurboSampling = TurboSampling(),
                 max_new_tokens: int = 1000, generator: torch.Generator | None = None,
                 on_logits=None, matmul: RowMatmul | None = None) -> Iterator[int]:
        """Tokens one by one as they are sampled, until stop (not yielded) or ``max_new_tokens`` tokens: a batch of
        one (chatterbox.model.t3_turbo_batch), so that alone and batched are the same computation. Ids of 6561 and
        above can come too (T3 feeds them back as the reference does); they are not speech codes.

        ``max_new_tokens`` counts every sampled token, the one from the prefill included: the reference's
        ``inference_turbo(max_gen_len=n)`` samples up to n + 1. ``generator``: the draws' source (torch's global
        generator when None, as the reference). ``on_logits(step, logits)`` sees each step's raw logits (1, V).
        """
        from .t3_turbo_batch import T3TurboBatch, TurboRequest

        if matmul is None:  # one plan per model, probed once
            matmul = self.__dict__.setdefault("_matmul", RowMatmul())
        batch = T3TurboBatch(self, matmul)
        request = TurboRequest(cond, text_tokens.view(-1), sampling=sampling, max_new_tokens=max_new_tokens,
                               generator=generator, on_logits=on_logits)
        yield from batch.alone(request)
