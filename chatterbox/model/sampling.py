"""Choosing the next speech token: the reference's chain of logit processors, in its order.

Each step: classifier-free guidance (done by the caller), repetition penalty over every id generated so far
(the start token included), temperature, min-p, top-p, softmax, one multinomial draw from the global generator.
Written to give the same floats as transformers' processors, so that a seed gives the same tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    min_p: float = 0.05
    top_p: float = 1.0
    repetition_penalty: float = 1.2

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be above 0, not {self.temperature}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be between 0 and 1, not {self.min_p}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be above 0 and at most 1, not {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be above 0, not {self.repetition_penalty}")


def repetition_penalty(logits: Tensor, ids: Tensor, penalty: float) -> Tensor:
    # logits: (B, V), ids: (B, N). Positive scores shrink, negative ones grow, once per distinct id.
    score = torch.gather(logits, 1, ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, ids, score)


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    probs = torch.softmax(logits, dim=-1)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(remove, float("-inf"))  # the most likely token can never be removed


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1:] = False  # keep at least the most likely token
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def process_logits(logits: Tensor, generated: Tensor, params: SamplingParams) -> Tensor:
    """Guided logits (B, V) -> the logits the draw is made from."""
    logits = repetition_penalty(logits, generated, float(params.repetition_penalty))
    if params.temperature != 1.0:
        logits = logits / params.temperature
    logits = min_p_filter(logits, params.min_p)
    return top_p_filter(logits, params.top_p)


def sample(logits: Tensor, generated: Tensor, params: SamplingParams, generator: torch.Generator | None = None
           ) -> Tensor:
    """One token per row: (B, V) guided logits -> (B, 1) ids."""
    probs = torch.softmax(process_logits(logits, generated, params), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def sample_rows(logits: Tensor, seen: Tensor, params: list[SamplingParams],
                generators: list[torch.Generator | None]) -> Tensor:
    """``sample`` for many requests in one set of kernels: guided logits (N, V), ``seen`` (N, V) the ids each
    request has generated -> (N,) ids, row i drawn from generators[i] as ``sample`` would draw it.

    The same floats as ``sample``, element by element: the penalty applies where an id was generated (what the
    gather and scatter do), and the draw is torch.multinomial's for one sample, argmax(p / q) with q ~ Exp(1) from
    the request's generator, over a row of the same size."""
    def column(values: list[float]) -> Tensor:
        return torch.tensor(values, dtype=logits.dtype, device=logits.device)[:, None]

    penalty = column([p.repetition_penalty for p in params])
    logits = torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
    logits = logits / column([p.temperature for p in params])
    probs = torch.softmax(logits, dim=-1)
    remove = probs < column([p.min_p for p in params]) * probs.amax(dim=-1, keepdim=True)
    logits = logits.masked_fill(remove, float("-inf"))
    if any(p.top_p < 1.0 for p in params):  # at 1.0 it removes only ids of probability 0: nothing changes
        sorted_logits, sorted_idx = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - column([p.top_p for p in params]))
        remove_sorted[..., -1:] = False
        logits = logits.masked_fill(remove_sorted.scatter(1, sorted_idx, remove_sorted), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    q = torch.empty_like(probs)
    for i, generator in enumerate(generators):
        q[i:i + 1].exponential_(1, generator=generator)
    return (probs / q).argmax(dim=-1)
