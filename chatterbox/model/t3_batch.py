"""T3 for many requests at once (continuous batching), each getting exactly the tokens it gets alone.

A request is prefilled by itself when it joins (its own text, voice, exaggeration and guidance), into a KV cache of
its own; then every step decodes one position of every request together: the matmuls over all rows (through a
RowMatmul, so that no row's bits depend on the others), attention per request over its own positions, and the
guidance, the logit processors and the draw per request with its own parameters and random generator. A request
that stops leaves at once; one that joins does so between steps. Alone is the same code with one request, so
alone and batched give the same tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from .alignment import AlignmentGuard
from .conds import T3Cond
from .llama import KVCache
from .rowmatmul import RowMatmul
from .sampling import SamplingParams, sample

# Positions a request's cache is made with past its prefill; it doubles when they run out.
CACHE_RESERVE = 128


@dataclass(eq=False)  # a request is itself: compared by identity, never by its tensors
class T3Request:
    cond: T3Cond
    text_tokens: Tensor  # (T,) framed with start and stop
    cfg_weight: float = 0.5
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = 1000
    generator: torch.Generator | None = None
    on_logits: object = None  # on_logits(step, guided_logits): for tests and analysis
    # Decode with the alignment guard (Multilingual; chatterbox.model.alignment). It reads attention weights of
    # this request's first row from its own cache, so guarded requests batch like any others.
    alignment: bool = False
    # The batch's state of the request:
    tokens: list[int] = field(default_factory=list)  # speech tokens so far (the stop token is not one)
    done: bool = False
    cache: KVCache | None = None
    hidden: Tensor | None = None  # (rows, dim): the last position's output, what the next logits come from
    generated: Tensor | None = None  # (1, n) every id so far, the start token first: the repetition penalty's
    guard: AlignmentGuard | None = None

    @property
    def guided(self) -> bool:
        return self.cfg_weight > 0

    @property
    def rows(self) -> int:
        return 2 if self.guided else 1


class DecodingBatch:
    """What T3's batches share (this one and Turbo's, chatterbox.model.t3_turbo_batch): the active requests and
    their rows, dropping one, retiring the finished, and running one request alone."""

    def __init__(self, t3, matmul: RowMatmul | None = None):
        self.t3 = t3
        self.matmul = matmul or RowMatmul()
        self.active: list = []

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.active)

    def remove(self, request) -> None:
        """Drop a request before it is done (cancelled): its slot and cache are free at once."""
        request.done = True
        self._release(request)
        self.active = [r for r in self.active if r is not request]

    def _retire(self, going: list) -> None:
        """After a step: the finished requests' caches freed, the others kept in order."""
        for request in self.active:
            if request.done:
                self._release(request)
        self.active = going

    def _release(self, request) -> None:
        request.cache = request.hidden = None

    @staticmethod
    def _take(request, token: int | None, out: list) -> bool:
        """A request's drawn token (None: it stopped) into ``out``; whether the request goes on (it stops at its
        max_new_tokens-th token too)."""
        if token is not None:
            request.tokens.append(token)
            out.append((request, token))
            if len(request.tokens) < request.max_new_tokens:
                return True
        out.append((request, None))
        request.done = True
        return False

    def alone(self, request) -> Iterator[int]:
        """One request decoded by itself (what ``generate`` is): its tokens as they are drawn."""
        self.add(request)
        while not request.done:
            for _, token in self.step():
                if token is not None:
                    yield token


class T3Batch(DecodingBatch):
    """The requests T3 is decoding together. ``add`` prefills a request; ``step`` gives every active request its
    next token (or finishes it)."""

    @torch.inference_mode()
    def add(self, request: T3Request) -> None:
        t3, cfg = self.t3, self.t3.cfg
        t3.check_text(request.text_tokens)
        if not 0 < request.max_new_tokens <= cfg.max_new_tokens:
            raise ValueError(f"max_new_tokens must be between 1 and {cfg.max_new_tokens}")
        embeds = t3.prefill_embeds(request.cond, request.text_tokens, request.guided)  # (rows, L, dim)
        request.cache = self._cache_for(request, embeds.shape[1])
        if request.alignment:
            if not cfg.can_align:
                raise ValueError(f"the alignment guard needs T3 layers {sorted({l for l, _ in cfg.alignment_heads})}"
                                 f"; this T3 has {cfg.llama.n_layers}")
            text_start = embeds.shape[1] - request.text_tokens.numel() - 2  # after the conditioning
            request.guard = AlignmentGuard(text_start, text_start + request.text_tokens.numel(), cfg.stop_speech,
                                           cfg.alignment_heads)
            request.cache.probe = request.guard.probe
        request.hidden = t3.tfmr(embeds, request.cache)[:, -1]
        request.generated = torch.tensor([[cfg.start_speech]], device=embeds.device)
        self.active.append(request)

    def _cache_for(self, request: T3Request, prefill: int):
        """A KV cache for the request's rows, its prefill and every token it may draw."""
        w = self.t3.speech_emb.weight
        return KVCache(self.t3.cfg.llama, request.rows, prefill + request.max_new_tokens, w.device, w.dtype,
                       reserve=prefill + CACHE_RESERVE)

    @torch.inference_mode()
    def step(self) -> list[tuple[T3Request, int | None]]:
        """One token for every active request: (request, token), or (request, None) for one that just finished
        (it sampled the stop token, or reached max_new_tokens after its last token)."""
        if not self.active:
            return []
        out: list[tuple[T3Request, int | None]] = []
        going = self._draw(self.active, out)
        self._retire(going)
        if going:
            self._decode(going)
        return out

    def _draw(self, requests: list[T3Request], out: list) -> list[T3Request]:
        """Each request's next token (into ``out``, as _take puts it); the requests that go on."""
        t3, cfg = self.t3, self.t3.cfg
        logits = self.matmul(t3.speech_head, torch.cat([r.hidden for r in requests])).float()  # (R, V)
        going: list[T3Request] = []
        start = 0
        for request in requests:
            rows = logits[start:start + request.rows]
            start += request.rows
            if request.guided:
                weight = torch.tensor(request.cfg_weight, dtype=torch.float32, device=rows.device)
                rows = rows[0:1] + weight * (rows[0:1] - rows[1:2])
            step = len(request.tokens)
            if request.on_logits is not None:
                request.on_logits(step, rows)
            if request.guard is not None:
                rows = request.guard(rows, int(request.generated[0, -1]))
            token = sample(rows, request.generated, request.sampling, request.generator)  # (1, 1)
            request.generated = torch.cat([request.generated, token], dim=1)
            value = int(token.item())
            if self._take(request, None if value == cfg.stop_speech else value, out):
                going.append(request)
        return going

    def _decode(self, going: list[T3Request]) -> None:
        """The next position of each request that goes on: its ``hidden`` for the next step."""
        t3 = self.t3
        positions = [len(r.tokens) for r in going]
        emb = torch.cat([(t3.speech_emb(r.generated[:, -1:]) + t3.speech_pos_emb(p, 1))[0].expand(r.rows, -1)
                         for r, p in zip(going, positions)])  # (R, dim)
        hidden = t3.tfmr.decode(emb, [r.cache for r in going], self.matmul)
        start = 0
        for request in going:
            request.hidden = hidden[start:start + request.rows]
            start += request.rows
