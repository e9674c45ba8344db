"""Text -> speech tokens with a voice: the tokenizer, the voice encoder, the S3 tokenizer and T3, loaded from a
checkpoint directory. S3Gen (speech tokens -> audio) builds on this."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .checkpoint import CheckpointError, build, read_safetensors, resolve_model_dir, subset
from .conds import Conditionals, T3Cond
from .s3tokenizer import S3Tokenizer
from .s3tokenizer import SAMPLE_RATE as S3_RATE
from .rowmatmul import RowMatmul
from .sampling import SamplingParams
from .t3 import T3, T3Config
from .t3_batch import T3Batch, T3Request
from .t3_slots import SLOT_POSITIONS, SlotBatch, SlotStep
from .tokenizer import TextTokenizer
from .voice_encoder import VoiceEncoder

REFERENCE_RATE = 24000
PROMPT_SECONDS = 6  # T3's speech prompt: the first 6 s of the reference
GEN_SECONDS = 10  # S3Gen's reference: the first 10 s
MIN_REFERENCE_SECONDS = 1.5


class ReferenceClipError(ValueError):
    """A reference clip that cannot give a voice (too short, silent, clipped, not audio, odd sample rate)."""


def load_reference(source, sample_rate: int | None = None) -> np.ndarray:
    """A reference clip (path, bytes or samples) as float32 mono at 24 kHz, with clear errors."""
    from .. import audio

    if isinstance(source, (str, Path, bytes)):
        try:
            samples, sample_rate = audio.decode(source)
        except audio.AudioError as exc:
            raise ReferenceClipError(f"the reference clip is not usable audio: {exc}") from None
    else:
        samples = np.asarray(source, dtype=np.float32).reshape(-1)
        if sample_rate is None:
            raise ReferenceClipError("give the sample rate of the reference samples")
    if not 8000 <= sample_rate <= 192000:
        raise ReferenceClipError(f"the reference clip's sample rate {sample_rate} Hz is outside 8 kHz to 192 kHz")
    if not np.all(np.isfinite(samples)):
        raise ReferenceClipError("the reference clip contains NaN or infinite samples")
    seconds = len(samples) / sample_rate
    if seconds < MIN_REFERENCE_SECONDS:
        raise ReferenceClipError(f"the reference clip is {seconds:.2f} s long; at least {MIN_REFERENCE_SECONDS} s "
                                 "of speech is needed (5 to 10 s works best)")
    if audio.is_silent(samples):
        raise ReferenceClipError("the reference clip is silent")
    if audio.clipped_fraction(samples) > 0.01:
        raise ReferenceClipError(f"the reference clip is clipped ({audio.clipped_fraction(samples):.1%} of samples "
                                 "at full scale); record it quieter")
    return resample(samples, sample_rate, REFERENCE_RATE)


def resample(samples: np.ndarray, src: int, dst: int) -> np.ndarray:
    """High-quality resampling (soxr HQ, the resampler the reference uses through librosa)."""
    if src == dst:
        return samples.astype(np.float32)
    import soxr

    return soxr.resample(samples.astype(np.float32), src, dst, quality="HQ").astype(np.float32)


class SpeechTokenModel:
    """The first half of Chatterbox. Thread-safe: one generation at a time per instance."""

    def __init__(self, t3: T3, tokenizer: TextTokenizer, ve: VoiceEncoder, s3_tokenizer: S3Tokenizer | None,
                 conds: Conditionals | None, device: torch.device, max_batch: int = 1):
        self.t3, self.tokenizer, self.ve, self.s3_tokenizer = t3, tokenizer, ve, s3_tokenizer
        self.conds, self.device = conds, device
        # One plan for every decoding step of this model, alone or batched: what makes them equal. Planned for
        # max_batch guided requests (two rows each).
        self.matmul = RowMatmul(2 * max(1, max_batch))
        self.max_batch = max(1, max_batch)
        self._lock = threading.Lock()
        # On a GPU, batches decode in fixed KV slots with the step as CUDA graphs (chatterbox.model.t3_slots),
        # made at the first batch; cuda_graphs=False keeps the slots and runs the step's kernels one by one.
        self.cuda_graphs = True
        self.slots: SlotStep | None = None
        self._slots_lock = threading.Lock()

    @classmethod
    def from_local(cls, path: str | Path | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
                   t3_config: T3Config = T3Config(), max_batch: int = 1,
                   s3_tokenizer: S3Tokenizer | None = None) -> "SpeechTokenModel":
        """T3, its text tokenizer and the voice encoder from a checkpoint directory; the S3 tokenizer (for new
        voices) is ``s3_tokenizer`` when the caller has loaded s3gen.safetensors, else read from it if present."""
        path = resolve_model_dir(path, files=("ve.safetensors", "t3_cfg.safetensors", "tokenizer.json"))
        device = torch.device(device)
        t3_tensors = read_safetensors(path / "t3_cfg.safetensors", device)
        if "model" in t3_tensors:  # some exports wrap the state dict
            raise CheckpointError(f"{path / 't3_cfg.safetensors'} wraps its tensors in 'model'; unwrap it first")
        t3_config = t3_config.with_layers_of(t3_tensors)
        t3 = build(lambda: T3(t3_config), t3_tensors, "t3_cfg.safetensors", device, dtype)
        ve = build(VoiceEncoder, read_safetensors(path / "ve.safetensors", device), "ve.safetensors", device,
                   torch.float32)
        s3 = s3_tokenizer
        if s3 is None and (path / "s3gen.safetensors").is_file():
            s3 = S3Tokenizer.from_tensors(subset(read_safetensors(path / "s3gen.safetensors"), "tokenizer."))
            s3 = s3.to(device).eval()
        conds = Conditionals.load(path / "conds.pt", device) if (path / "conds.pt").is_file() else None
        return cls(t3, TextTokenizer(path / "tokenizer.json"), ve, s3, conds, device, max_batch)

    def prepare_conditionals(self, reference, exaggeration: float = 0.5, sample_rate: int | None = None
                             ) -> Conditionals:
        """A new voice from a reference clip: T3's half (speaker embedding, prompt tokens); S3Gen's half holds
        the clip's speech tokens (its mels and x-vector come with S3Gen)."""
        if self.s3_tokenizer is None:
            raise RuntimeError("s3gen.safetensors (which holds the S3 tokenizer) is not in the model directory")
        wav24 = load_reference(reference, sample_rate)
        wav16 = resample(wav24, REFERENCE_RATE, S3_RATE)
        with self._lock, torch.inference_mode():
            prompt = self.s3_tokenizer(torch.from_numpy(wav16[: PROMPT_SECONDS * S3_RATE]),
                                       max_tokens=self.t3.cfg.prompt_tokens)
            speaker = self.ve.embed(wav16)
            gen_tokens = self.s3_tokenizer(torch.from_numpy(resample(wav24[: GEN_SECONDS * REFERENCE_RATE],
                                                                     REFERENCE_RATE, S3_RATE)))
        t3 = T3Cond(speaker_emb=speaker.cpu(), cond_prompt_speech_tokens=prompt.cpu(),
                    emotion_adv=torch.full((1, 1, 1), float(exaggeration)))
        gen = {"prompt_token": gen_tokens.cpu(), "prompt_token_len": torch.tensor([gen_tokens.shape[1]])}
        return Conditionals(t3, gen)

    def request(self, text: str, conds: Conditionals | None = None, *, exaggeration: float = 0.5,
                cfg_weight: float = 0.5, temperature: float = 0.8, min_p: float = 0.05, top_p: float = 1.0,
                repetition_penalty: float = 1.2, max_new_tokens: int = 1000, seed: int | None = None,
                generator: torch.Generator | None = None, text_tokens: torch.Tensor | None = None,
                alignment: bool | None = None) -> T3Request:
        """The T3 request for a text in a voice, for a batch (chatterbox.model.t3_batch) or alone.

        ``text_tokens``: the framed ids to speak, made by the caller (the multilingual tokenizer), instead of
        tokenizing ``text``. ``alignment``: decode with the alignment guard (None: when T3's config has alignment
        heads and its layers are there, i.e. the full multilingual model)."""
        conds = conds or self.conds
        if conds is None:
            raise ValueError("no voice: the model directory has no conds.pt and no conditionals were given")
        sampling = SamplingParams(temperature=temperature, min_p=min_p, top_p=top_p,
                                  repetition_penalty=repetition_penalty)
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        if text_tokens is None:
            text_tokens = self.tokenizer(text)
        if alignment is None:
            alignment = self.t3.cfg.can_align
        return T3Request(conds.t3.with_exaggeration(exaggeration), text_tokens.view(-1).to(self.device),
                         cfg_weight=cfg_weight, sampling=sampling, max_new_tokens=max_new_tokens, generator=generator,
                         alignment=alignment)

    closing_tokens: tuple[int, ...] = ()  # none: the original's utterances end where T3 stops (Turbo's do not)

    def use_slots(self, graphs: bool = True, positions: int = SLOT_POSITIONS) -> SlotStep:
        """Decode batches in fixed KV slots for max_batch guided requests (what a GPU does by itself; on the CPU
        for tests, without graphs)."""
        self.slots = SlotStep.sized(self.t3, 2 * self.max_batch, positions, graphs)
        return self.slots

    def new_batch(self) -> T3Batch:
        with self._slots_lock:
            # Not for the multilingual model: its alignment guard reads attention the graph does not keep.
            if self.slots is None and self.device.type == "cuda" and not self.t3.cfg.can_align:
                self.use_slots(self.cuda_graphs)
        if self.slots is not None:
            return SlotBatch(self.t3, self.matmul, self.slots)
        return T3Batch(self.t3, self.matmul)

    def speech_codes(self, tokens: list[int]) -> list[int]:
        """The tokens S3Gen takes: T3 may also sample ids past the speech codes (other than stop), which it feeds
        back but which say nothing."""
        return [t for t in tokens if t < self.t3.cfg.speech_codes]

    def generate(self, text: str, conds: Conditionals | None = None, **params) -> Iterator[int]:
        """Speech tokens (0..6560) for text, yielded as T3 samples them (seeded by seed, or drawn from
        generator, else from torch's global generator as the reference does); ``params`` as ``request`` takes."""
        request = self.request(text, conds, **params)
        batch = self.new_batch()
        with self._lock:
            batch.add(request)
            while not request.done:
                for _, token in batch.step():
                    if token is not None and token < self.t3.cfg.speech_codes:
                        yield token
