"""The flow: speech tokens (with the voice's prompt tokens before them) -> 80-bin mels at 50 frames/s."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import DecoderConfig, FlowDecoder
from .encoder import EncoderConfig, UpsampleConformerEncoder

SPEECH_CODES = 6561
MELS_PER_TOKEN = 2


class Flow(nn.Module):
    def __init__(self, encoder: EncoderConfig = EncoderConfig(), decoder: DecoderConfig = DecoderConfig()):
        super().__init__()
        self.input_embedding = nn.Embedding(SPEECH_CODES, encoder.dim)
        self.spk_embed_affine_layer = nn.Linear(192, decoder.out_channels)
        self.encoder = UpsampleConformerEncoder(encoder)
        self.encoder_proj = nn.Linear(encoder.dim, decoder.out_channels)
        self.decoder = FlowDecoder(decoder)
        self.lookahead = encoder.lookahead

    @torch.inference_mode()
    def forward(self, tokens: Tensor, prompt_tokens: Tensor, prompt_mels: Tensor, xvector: Tensor,
                generator: torch.Generator | None = None, steps: int | None = None, finalize: bool = True) -> Tensor:
        """tokens (1, N); prompt_tokens (1, P); prompt_mels (1, 2P, 80); xvector (1, 192) -> mels (1, 80, 2N).

        With ``finalize=False`` the last 3 tokens (the encoder's lookahead) give no frames yet: for streaming.
        """
        spks = self.spk_embed_affine_layer(F.normalize(xvector.float().view(1, -1), dim=1).to(
            self.encoder_proj.weight.dtype))
        all_tokens = torch.cat([prompt_tokens.view(1, -1), tokens.view(1, -1)], dim=1).long()
        h = self.encoder(self.input_embedding(all_tokens))  # (1, 2(P+N), 512)
        if not finalize:
            h = h[:, : -self.lookahead * MELS_PER_TOKEN]
        mu = self.encoder_proj(h).transpose(1, 2)  # (1, 80, T)
        n_prompt = prompt_mels.shape[1]
        cond = torch.zeros_like(mu)
        cond[:, :, :n_prompt] = prompt_mels.transpose(1, 2).to(mu.dtype)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        mels = self.decoder(mu, spks, cond, noise, steps)
        return mels[:, :, n_prompt:]
