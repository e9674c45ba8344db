"""Chatterbox Turbo's flow: the original's token-to-mel flow with a distilled mean-flow decoder.

The encoder, speaker projection and U-Net estimator are the original's (chatterbox.model.s3gen.flow, decoder); the
estimator also embeds each step's end time ``r`` as it embeds its start ``t`` and mixes the two (``time_embed_mixer``,
a Linear 2048 -> 1024). Integration: 2 Euler steps on a uniform schedule (t = 0, 0.5, 1), no classifier-free
guidance (the model was distilled from guided outputs), so one estimator pass per step.

Noise, in the reference's order: first ``randn(1, 80, 2N)`` for the N new tokens' frames, then
``randn(1, 80, prompt + new frames)``, whose new frames are then overwritten by the first draw.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .decoder import DecoderConfig, Estimator
from .encoder import EncoderConfig
from .flow import Flow

MEANFLOW_STEPS = 2


def meanflow_config() -> DecoderConfig:
    return DecoderConfig(meanflow=True, steps=MEANFLOW_STEPS)


class MeanFlowDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig = meanflow_config()):
        super().__init__()
        self.cfg = cfg
        self.estimator = Estimator(cfg)

    @torch.inference_mode()
    def forward(self, mu: Tensor, spks: Tensor, cond: Tensor, noise: Tensor, steps: int | None = None,
                mask: Tensor | None = None) -> Tensor:
        """mu, cond, noise: (B, 80, T); spks: (B, 80); mask (B, T) or None -> mels (B, 80, T)."""
        steps = steps or self.cfg.steps
        if steps < 1:
            raise ValueError("the flow needs at least one step")
        t_span = torch.linspace(0, 1, steps + 1, device=mu.device, dtype=mu.dtype)
        x = noise
        B = mu.shape[0]
        for t, r in zip(t_span[:-1], t_span[1:]):
            v = self.estimator(x, mu, t.expand(B), spks, cond, mask, r=r.expand(B))
            x = x + (r - t) * v
        return x


class MeanFlow(Flow):
    """``Flow`` with the mean-flow decoder: the same tensor names (``flow.*`` of s3gen_meanflow.safetensors), and
    the same batching (``forward_batch``: padded rows with masks, each row's noise drawn as alone)."""

    def __init__(self, encoder: EncoderConfig = EncoderConfig(), decoder: DecoderConfig = meanflow_config()):
        super().__init__(encoder, decoder)
        self.decoder = MeanFlowDecoder(decoder)

    def noise(self, mu: Tensor, n_prompt: int, generator: torch.Generator | None) -> Tensor:
        new = torch.randn((1, mu.shape[1], mu.shape[2] - n_prompt), generator=generator, device=mu.device,
                          dtype=mu.dtype)
        z = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z[:, :, n_prompt:] = new
        return z
