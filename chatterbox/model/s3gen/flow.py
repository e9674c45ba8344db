"""The flow: speech tokens (with the voice's prompt tokens before them) -> 80-bin mels at 50 frames/s."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import DecoderConfig, FlowDecoder
from .encoder import EncoderConfig, UpsampleConformerEncoder, positions_mask

SPEECH_CODES = 6561
MELS_PER_TOKEN = 2


@dataclass(eq=False)
class FlowInput:
    """One utterance (or streaming window) of a batch: as ``Flow.forward`` takes it."""
    tokens: Tensor  # (1, N)
    prompt_tokens: Tensor  # (1, P)
    prompt_mels: Tensor  # (1, 2P, 80)
    xvector: Tensor  # (1, 192)
    generator: torch.Generator | None = None


def configs_of(tensors: dict[str, Tensor], decoder: DecoderConfig = DecoderConfig(),
               source: str = "s3gen.safetensors") -> tuple[EncoderConfig, DecoderConfig]:
    """The encoder's and decoder's configs as deep as a flow's tensors (``flow.*``, prefix removed) are: the
    official files' 6 + 4 conformer layers and 12 mid levels of 4 transformer blocks, or the first few of each in
    the tests' small random checkpoints."""
    from ..checkpoint import layer_count

    def depth(prefix: str, default: int) -> int:
        return layer_count(tensors, prefix, source) or default

    encoder = EncoderConfig()
    encoder = replace(encoder, blocks=depth("encoder.encoders.", encoder.blocks),
                      up_blocks=depth("encoder.up_encoders.", encoder.up_blocks))
    decoder = replace(decoder, mid_blocks=depth("decoder.estimator.mid_blocks.", decoder.mid_blocks),
                      transformer_blocks=depth("decoder.estimator.down_blocks.0.1.", decoder.transformer_blocks))
    return encoder, decoder


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
        noise = self.noise(mu, n_prompt, generator)
        mels = self.decoder(mu, spks, cond, noise, steps)
        return mels[:, :, n_prompt:]

    def noise(self, mu: Tensor, n_prompt: int, generator: torch.Generator | None) -> Tensor:
        """The starting noise (1, 80, T) over the prompt and new frames, drawn as the reference draws it."""
        return torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)

    @torch.inference_mode()
    def forward_batch(self, items: list[FlowInput], steps: int | None = None, finalize: bool = True) -> list[Tensor]:
        """Many utterances in one pass, each row padded at its end, with what each gets alone: its own noise from
        its own generator, masks that keep padding out of its real frames. -> one (1, 80, 2N) mel per item."""
        if len(items) == 1:
            one = items[0]
            return [self.forward(one.tokens, one.prompt_tokens, one.prompt_mels, one.xvector, one.generator, steps,
                                 finalize)]
        weight = self.encoder_proj.weight
        xvectors = torch.cat([F.normalize(it.xvector.float().view(1, -1), dim=1) for it in items])
        spks = self.spk_embed_affine_layer(xvectors.to(weight.device, weight.dtype))  # (B, 80)
        rows = [torch.cat([it.prompt_tokens.view(-1), it.tokens.view(-1)]).long().to(weight.device) for it in items]
        lengths = torch.tensor([len(r) for r in rows], device=weight.device)
        tokens = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long, device=weight.device)
        for b, row in enumerate(rows):
            tokens[b, : len(row)] = row
        h = self.encoder(self.input_embedding(tokens), lengths)  # (B, 2L, 512)
        frames = MELS_PER_TOKEN * lengths - (0 if finalize else self.lookahead * MELS_PER_TOKEN)
        mu = self.encoder_proj(h[:, : int(frames.max())]).transpose(1, 2)  # (B, 80, T)
        mask = positions_mask(frames, mu.shape[2])
        mu = mu * mask[:, None]
        cond = torch.zeros_like(mu)
        noise = torch.zeros_like(mu)
        for b, it in enumerate(items):
            n_prompt, n = it.prompt_mels.shape[1], int(frames[b])
            cond[b, :, :n_prompt] = it.prompt_mels[0].transpose(0, 1).to(mu.dtype)
            noise[b, :, :n] = self.noise(mu[b:b + 1, :, :n], n_prompt, it.generator)[0]  # as alone: its length
        mels = self.decoder(mu, spks, cond, noise, steps, mask)
        return [mels[b:b + 1, :, it.prompt_mels.shape[1]: int(frames[b])] for b, it in enumerate(items)]
