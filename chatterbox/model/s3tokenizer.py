"""The S3 speech tokenizer (25 tokens/s, 6561 codes): the ``s3tokenizer`` package's model with our log-mel front
end, whose mel filters and window come from ``s3gen.safetensors`` (``tokenizer.*``) like the weights."""
from __future__ import annotations

import torch
from torch import Tensor, nn

SAMPLE_RATE = 16000
HOP = 160
TOKENS_PER_SECOND = 25


class S3Tokenizer(nn.Module):
    def __init__(self):
        super().__init__()
        from s3tokenizer.model_v2 import S3TokenizerV2

        self.model = S3TokenizerV2("speech_tokenizer_v2_25hz")
        self.n_fft = 400
        self.register_buffer("_mel_filters", torch.zeros(128, self.n_fft // 2 + 1))
        self.register_buffer("window", torch.zeros(self.n_fft))

    def load_checkpoint_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Load the ``tokenizer.*`` tensors of s3gen.safetensors (prefix already removed)."""
        from .checkpoint import load_strict

        load_strict(self, {("model." + k if not k.startswith(("_mel_filters", "window")) else k): v
                           for k, v in tensors.items()}, "s3gen.safetensors (tokenizer.*)", prefix_hint="tokenizer.")

    def log_mel(self, wav: Tensor) -> Tensor:
        """(samples,) at 16 kHz -> (128, frames) Whisper-style log-mel."""
        stft = torch.stft(wav, self.n_fft, HOP, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        mel = torch.clamp(self._mel_filters @ power, min=1e-10).log10()
        mel = torch.maximum(mel, mel.max() - 8.0)
        return (mel + 4.0) / 4.0

    @torch.inference_mode()
    def forward(self, wav: Tensor, max_tokens: int | None = None) -> Tensor:
        """Speech tokens (1, n) of a 16 kHz clip, at most max_tokens."""
        device = self.window.device
        mel = self.log_mel(torch.as_tensor(wav, dtype=torch.float32).to(device).view(-1))
        if max_tokens is not None:
            mel = mel[:, : max_tokens * 4]  # four mel frames per token
        tokens, lengths = self.model.quantize(mel[None], torch.tensor([mel.shape[1]], device=device))
        return tokens[:, : int(lengths[0])].long()
