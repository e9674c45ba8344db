"""The alignment guard of Chatterbox Multilingual: when T3 may stop, read from its attention as it decodes.

A few attention heads of the multilingual T3 follow the text as the speech is produced (layer 12 head 15, layer 13
head 11, layer 9 head 2). Their mean attention of the newest position over the text positions says where in the
text the speech is. Each step, with the guided logits:

- the stop token's logit is set to -2**15 while that position is more than 3 tokens from the text's end (texts of
  over 5 tokens), so the model cannot stop early; this also renormalizes what the other tokens are drawn from;
- stop is forced (every logit -2**15, stop +2**15) once the text is done and the last 3 text tokens have held the
  attention for 5 frames in all (a long tail), or earlier text has taken it back for more than 5 frames (a
  repetition), or the previous two speech tokens are the same id.

This is what the reference 0.1.7 does (``AlignmentStreamAnalyzer``), computed our way: only the three heads' rows,
through chatterbox.model.llama.AttentionProbe, for the request's first (conditioned) row.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .llama import AttentionProbe

ALIGNMENT_HEADS: tuple[tuple[int, int], ...] = ((12, 15), (13, 11), (9, 2))  # (layer, head), in this order
MASKED = -(2.0**15)  # safe for every float type of 16 bits or more


class AlignmentGuard:
    def __init__(self, text_start: int, text_end: int, stop_token: int,
                 heads: tuple[tuple[int, int], ...] = ALIGNMENT_HEADS, prefill_queries: int = 2):
        # text_start:text_end: the text tokens' positions in the prefill; prefill_queries: positions after them
        # (the two start-of-speech ones), whose attention makes the first frames.
        self.start, self.end, self.stop = text_start, text_end, stop_token
        self.heads = heads
        self.probe = AttentionProbe(heads, queries=prefill_queries)
        self.size = text_end - text_start  # S: text tokens, start and stop included
        self.alignment = torch.zeros(0, self.size)  # (frames, S) on the CPU, as it grows
        self.frame = 0
        self.position = 0  # where in the text the speech is, followed only by small moves
        self.completed_at: int | None = None
        self.recent: list[int] = []  # the last ids fed back (the start token first)

    @property
    def complete(self) -> bool:
        return self.completed_at is not None

    def _frames(self) -> Tensor:
        # (F, S): mean attention of the new positions over the text; later text not reached yet masked out
        mean = torch.stack([self.probe.probs[h] for h in self.heads]).mean(dim=0)
        chunk = mean[:, self.start:self.end].float().cpu().clone()
        chunk[:, self.frame + 1:] = 0
        return chunk

    def __call__(self, logits: Tensor, last_token: int) -> Tensor:
        """Guided logits (1, V) of this step -> the logits to sample from. ``last_token``: the id fed back
        last (the start-of-speech token at the first step)."""
        chunk = self._frames()
        self.alignment = torch.cat([self.alignment, chunk])
        A, S = self.alignment, self.size
        here = int(chunk[-1].argmax())
        if -4 < here - self.position < 7:  # a jump further than that is taken for noise
            self.position = here
        if self.completed_at is None and self.position >= S - 3:
            self.completed_at = A.shape[0]
        long_tail = repetition = False
        if self.completed_at is not None:
            after = A[self.completed_at:]
            long_tail = after.shape[0] > 0 and bool(after[:, -3:].sum(dim=0).max() >= 5)
            # (The reference fails here on texts of at most 5 tokens; no earlier text then counts as repeated.)
            repetition = after.shape[0] > 0 and S > 5 and bool(after[:, :-5].max(dim=1).values.sum() > 5)
        self.recent = (self.recent + [int(last_token)])[-8:]
        repeated = len(self.recent) >= 3 and self.recent[-1] == self.recent[-2]
        logits = logits.clone()
        if here < S - 3 and S > 5:
            logits[..., self.stop] = MASKED
        if long_tail or repetition or repeated:
            logits = torch.full_like(logits, MASKED)
            logits[..., self.stop] = -MASKED
        self.frame += 1
        return logits
