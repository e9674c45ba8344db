"""Turbo's T3 for many requests at once (continuous batching), each getting exactly the tokens it gets alone.

As the original's (chatterbox.model.t3_batch): a request is prefilled by itself when it joins, into a KV cache of
its own; every step then decodes one position of every request together, the matmuls over all rows through a
RowMatmul (so that no row's bits depend on the others), attention per request over its own positions, and the
logit processors and the draw per request, with its own parameters and generator. Turbo has no guidance, so each
request is one row. ``T3Turbo.generate`` is this with one request: alone and batched are the same code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .conds import T3Cond
from .llama import KVCache
from .t3_batch import DecodingBatch
from .t3_turbo import TurboSampling, process_logits

# Positions a request's cache is made with past its prefill; it doubles when they run out.
CACHE_RESERVE = 128


@dataclass(eq=False)  # a request is itself: compared by identity, never by its tensors
class TurboRequest:
    cond: T3Cond
    text_tokens: Tensor  # (T,) GPT-2 BPE ids, no framing
    sampling: TurboSampling = field(default_factory=TurboSampling)
    max_new_tokens: int = 1000  # every sampled id counts, the one from the prefill included (as the reference)
    generator: torch.Generator | None = None
    on_logits: object = None  # on_logits(step, raw_logits (1, V)): for tests and analysis
    # The batch's state of the request:
    tokens: list[int] = field(default_factory=list)  # every id drawn so far but the final stop (ids >= 6561 too)
    done: bool = False
    cache: KVCache | None = None
    hidden: Tensor | None = None  # (1, dim): the last position's output
    rows = 1  # no guidance: one row per request
    guided = False


class T3TurboBatch(DecodingBatch):
    """The Turbo requests T3 is decoding together: ``add`` prefills one, ``step`` gives every active request its
    next token (or finishes it). The same interface as T3Batch, so one batch loop drives either."""

    @torch.inference_mode()
    def add(self, request: TurboRequest) -> None:
        t3, cfg = self.t3, self.t3.cfg
        if request.text_tokens.numel() == 0:
            raise ValueError("the text is empty: there is nothing to speak")
        if request.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        embeds = t3.prefill_embeds(request.cond, request.text_tokens)  # (1, L, dim)
        length = embeds.shape[1] + request.max_new_tokens - 1
        if length > cfg.gpt2.positions:
            raise ValueError(f"the text and voice prompt take {embeds.shape[1]} of GPT-2's {cfg.gpt2.positions} "
                             f"positions, too many for {request.max_new_tokens} speech tokens: split the text into "
                             "shorter chunks")
        request.cache = t3.tfmr.new_cache(length, reserve=embeds.shape[1] + CACHE_RESERVE)
        request.hidden = t3.tfmr(embeds, request.cache)[:, -1]
        self.active.append(request)

    @torch.inference_mode()
    def step(self) -> list[tuple[TurboRequest, int | None]]:
        """One token for every active request: (request, token), or (request, None) for one that just finished
        (it drew the stop token after its first step, had nothing left to draw, or reached max_new_tokens)."""
        if not self.active:
            return []
        t3, cfg = self.t3, self.t3.cfg
        logits = self.matmul(t3.speech_head, torch.cat([r.hidden for r in self.active])).float()  # (R, V)
        out: list[tuple[TurboRequest, int | None]] = []
        going: list[TurboRequest] = []
        for i, request in enumerate(self.active):
            step = len(request.tokens)
            raw = logits[i:i + 1]
            if request.on_logits is not None:
                request.on_logits(step, raw)
            # The penalty's ids: the start token at the first step, every id drawn so far after it (as the reference).
            previous = torch.tensor([request.tokens or [cfg.start_speech]], device=raw.device)
            processed = process_logits(raw, previous, request.sampling)
            if step and bool(torch.all(processed == float("-inf"))):  # as the reference: nothing left to draw
                token = None
            else:
                probs = torch.softmax(processed, dim=-1)
                token = int(torch.multinomial(probs, num_samples=1, generator=request.generator))
                if token == cfg.stop_speech and step:  # the reference feeds back a stop drawn from the prefill
                    token = None
            if self._take(request, token, out):
                going.append(request)
        self._retire(going)
        if going:
            ids = torch.tensor([r.tokens[-1] for r in going], device=logits.device)
            hidden = t3.tfmr.decode(t3.speech_emb(ids), [r.cache for r in going], self.matmul)  # (R, dim)
            for i, request in enumerate(going):
                request.hidden = hidden[i:i + 1]
        return out
