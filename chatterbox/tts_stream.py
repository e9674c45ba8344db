"""One utterance's audio while its speech tokens are still coming: S3Gen window by window.

Every ``chunk_tokens`` tokens (1 s of speech), the new tokens go through the flow with the voice's prompt followed
by the last ``context_tokens`` tokens and their mels as extra prompt, and through HiFT with a few frames of mel
context; the seam with the previous window is cross-faded over 20 ms. A window is made in three steps (its flow
input, its HiFT input, its piece of audio), so that a batch can put the windows of many utterances through the
flow and HiFT together; ``ChatterboxTTS.generate_stream`` makes them one at a time.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .model.s3gen.flow import MELS_PER_TOKEN, FlowInput

SAMPLES_PER_FRAME = 480
FADE_SAMPLES = 24000 // 50  # 20 ms
MEL_CONTEXT = 8  # frames of mels before a window, so that HiFT's convolutions see across the seam


def trim_fade(wav: Tensor) -> Tensor:
    """The first 20 ms silenced and the next 20 ms faded in, as the reference does."""
    ramp = torch.zeros(2 * FADE_SAMPLES, device=wav.device, dtype=wav.dtype)
    ramp[FADE_SAMPLES:] = (torch.cos(torch.linspace(torch.pi, 0, FADE_SAMPLES, device=wav.device)) + 1) / 2
    n = min(len(ramp), wav.shape[-1])
    wav = wav.clone()
    wav[..., :n] *= ramp[:n]
    return wav


class TokenStream:
    def __init__(self, s3gen, gen: dict, seed: int, steps: int | None, chunk_tokens: int = 25,
                 context_tokens: int = 25):
        self.s3gen, self.gen, self.steps = s3gen, gen, steps
        self.chunk_tokens, self.context_tokens = chunk_tokens, context_tokens
        device = s3gen.device
        self.lookahead = s3gen.flow.lookahead
        self.flow_gen = torch.Generator(device=device).manual_seed(seed)
        self.hift_gen = torch.Generator(device=device).manual_seed(seed + 1)
        self.prompt_tokens = gen["prompt_token"].to(device)
        self.prompt_mels = gen["prompt_feat"].to(device)
        self.tokens: list[int] = []
        self.done = 0  # tokens whose mels exist
        self.mels = torch.zeros(1, 80, 0, device=device)
        self.tail: Tensor | None = None  # the last FADE_SAMPLES of audio, held back for the cross-fade
        self.pieces = 0
        self._end = 0
        self._left = 0
        self._new: Tensor | None = None

    def push(self, token: int) -> None:
        self.tokens.append(token)

    @property
    def ready(self) -> bool:
        """Whether a whole window of new tokens (and the lookahead after it) is waiting."""
        return len(self.tokens) - self.done >= self.chunk_tokens + self.lookahead

    def flow_input(self, finished: bool) -> FlowInput | None:
        """The flow's input for the next window (``finished``: the last one, all tokens in), or None when there
        is nothing left to make."""
        end = len(self.tokens) if finished else len(self.tokens) - self.lookahead
        if end <= self.done:
            if finished and not self.tokens:
                raise ValueError("T3 produced no speech tokens")
            return None
        self._end = end
        ctx = max(0, self.done - self.context_tokens)
        device = self.prompt_tokens.device
        extra = torch.tensor([self.tokens[ctx:self.done]], device=device, dtype=torch.long)
        prompt_mels = torch.cat([self.prompt_mels, self.mels[:, :, MELS_PER_TOKEN * ctx:].transpose(1, 2)], dim=1)
        window = self.tokens[self.done:end] if finished else self.tokens[self.done:]
        return FlowInput(self.s3gen.check_tokens(window), torch.cat([self.prompt_tokens, extra], dim=1),
                         prompt_mels, self.gen["embedding"].to(device), self.flow_gen)

    def vocode_input(self, mels: Tensor) -> Tensor:
        """The flow's mels for the window -> the mels HiFT takes (with context frames before them)."""
        self._new = mels[:, :, : MELS_PER_TOKEN * (self._end - self.done)]
        self._left = min(MEL_CONTEXT, self.mels.shape[2])
        return torch.cat([self.mels[:, :, self.mels.shape[2] - self._left:], self._new], dim=2).float()

    def piece(self, wav: Tensor, finished: bool) -> Tensor:
        """HiFT's waveform for the window -> the window's piece of audio (its end held back unless finished)."""
        wav = wav[:, self._left * SAMPLES_PER_FRAME - (FADE_SAMPLES if self.tail is not None else 0):].clone()
        self.mels = torch.cat([self.mels, self._new], dim=2)
        self.done = self._end
        if self.tail is not None:  # cross-fade the held-back tail into the new window's start
            fade = torch.linspace(0, 1, FADE_SAMPLES, device=wav.device)
            wav[:, :FADE_SAMPLES] = self.tail * (1 - fade) + wav[:, :FADE_SAMPLES] * fade
        if self.pieces == 0:
            wav = trim_fade(wav)
        self.pieces += 1
        if finished:
            return wav
        self.tail = wav[:, -FADE_SAMPLES:].clone()
        return wav[:, :-FADE_SAMPLES]

    def window(self, finished: bool) -> Tensor | None:
        """The next window's piece of audio, made alone; None when there is nothing left to make."""
        item = self.flow_input(finished)
        if item is None:
            return None
        mels = self.s3gen.flow.forward_batch([item], self.steps, finalize=finished)[0]
        wav = self.s3gen.hift.forward_batch([self.vocode_input(mels)], [self.hift_gen])[0]
        return self.piece(wav, finished)
