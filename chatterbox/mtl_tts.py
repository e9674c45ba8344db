"""ChatterboxMultilingualTTS: text in 23 languages -> 24 kHz speech, with the reference package's public names.

``from chatterbox.mtl_tts import ChatterboxMultilingualTTS`` works as with Resemble AI's package: ``from_local``,
``from_pretrained``, ``get_supported_languages``, ``prepare_conditionals``, ``generate(text, language_id)`` (a
``(1, samples)`` tensor at ``sr = 24000``), plus our ``voice=``, ``seed=``, ``steps=``, ``max_new_tokens=`` and
``generate_stream``. The model is the original's T3 with a 2454-id grapheme vocabulary and language tokens
(chatterbox.model.mtl_tokenizer), decoded with the alignment guard (chatterbox.model.alignment), and the same
voice encoder and S3Gen; its files share the Hugging Face repo (and ``conds.pt``) with the original's.

Differences from the reference 0.1.7, on purpose: ids >= 6561 that T3 samples are dropped before S3Gen (the
reference hands them over and fails); a Chinese front end that cannot load pkuseg's model degrades Chinese alone
(the reference fails to load at all); the default repetition penalty is 1.2 (0.1.7 has 2.0; later upstream
versions 1.2).

Batching: guarded requests batch in chatterbox.model.t3_batch like the original's (each request's attention
probe lives on its own KV cache), through ``speech.request(text, conds, language_id=..., ...)``.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from .model.checkpoint import CheckpointError, build, read_safetensors, resolve_model_dir
from .model.conds import Conditionals
from .model.languages import CANGJIE_FILE, SUPPORTED_LANGUAGES, check_language
from .model.mtl_tokenizer import TOKENIZER_FILE, MTLTokenizer
from .model.speech_tokens import SpeechTokenModel
from .model.t3 import T3, T3Config
from .model.t3_batch import T3Request
from .model.voice_encoder import VoiceEncoder
from .tts import CHUNK_GAP_S, MAX_CHUNK_CHARS, SAMPLE_RATE, ChatterboxTTS, S3Gen, _watermarker, load_s3gen

log = logging.getLogger(__name__)

T3_FILE = "t3_mtl23ls_v2.safetensors"
REQUIRED_FILES = ("ve.pt", T3_FILE, "s3gen.pt", TOKENIZER_FILE)
# What from_pretrained fetches (the reference's list): conds.pt is the built-in voice, shared with the original;
# without Cangjie5_TC.json Chinese characters are not encoded.
MTL_FILES = (*REQUIRED_FILES, "conds.pt", CANGJIE_FILE)


def load_pickled_state(path: Path, device) -> dict[str, Tensor]:
    """A state dict saved with torch.save (ve.pt, s3gen.pt), read without running any pickled code."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable torch state dict: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items()):
        raise CheckpointError(f"{path} does not hold a state dict (names -> tensors)")
    return data


class MultilingualSpeechTokenModel(SpeechTokenModel):
    """SpeechTokenModel whose requests take a language: ``request(text, conds, language_id="fr", ...)``."""

    tokenizer: MTLTokenizer

    def request(self, text: str, conds: Conditionals | None = None, *, language_id: str,
                **params) -> T3Request:
        return super().request(text, conds, text_tokens=self.tokenizer(text, language_id), **params)


class ChatterboxMultilingualTTS:
    sr = SAMPLE_RATE

    def __init__(self, speech: MultilingualSpeechTokenModel, s3gen: S3Gen, device: torch.device,
                 watermark: bool = False):
        self.speech, self.s3gen, self.device = speech, s3gen, device
        self.t3, self.tokenizer, self.ve = speech.t3, speech.tokenizer, speech.ve
        self.conds: Conditionals | None = speech.conds
        self.watermarker = _watermarker() if watermark else None
        self._lock = threading.Lock()

    @classmethod
    def get_supported_languages(cls) -> dict[str, str]:
        """Language code -> English name."""
        return dict(SUPPORTED_LANGUAGES)

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                   watermark: bool = False, max_batch: int = 1) -> "ChatterboxMultilingualTTS":
        path = resolve_model_dir(ckpt_dir, files=REQUIRED_FILES)
        dev = torch.device(device)
        t3_tensors = read_safetensors(path / T3_FILE, dev)
        if "model" in t3_tensors:
            raise CheckpointError(f"{path / T3_FILE} wraps its tensors in 'model'; unwrap it first")
        t3_config = T3Config.multilingual().with_layers_of(t3_tensors)
        t3 = build(lambda: T3(t3_config), t3_tensors, T3_FILE, dev, dtype)
        if not t3_config.can_align:
            log.warning("%s has %d transformer layers: decoding without the alignment guard (its heads are in "
                        "layers %s)", T3_FILE, t3_config.llama.n_layers,
                        sorted({layer for layer, _ in t3_config.alignment_heads}))
        ve = build(VoiceEncoder, load_pickled_state(path / "ve.pt", dev), "ve.pt", dev, torch.float32)
        s3gen, s3_tokenizer = load_s3gen(load_pickled_state(path / "s3gen.pt", dev), dev, dtype, "s3gen.pt")
        conds = Conditionals.load(path / "conds.pt", dev) if (path / "conds.pt").is_file() else None
        tokenizer = MTLTokenizer(path / TOKENIZER_FILE)
        speech = MultilingualSpeechTokenModel(t3, tokenizer, ve, s3_tokenizer, conds, dev, max_batch)
        return cls(speech, s3gen, dev, watermark)

    @classmethod
    def from_pretrained(cls, device: str = "cpu", **kwargs) -> "ChatterboxMultilingualTTS":
        """From CHATTERBOX_MODEL_DIR, else the Hugging Face hub's ResembleAI/chatterbox (the original's repo)."""
        return cls.from_local(resolve_model_dir(None, files=MTL_FILES), device=device, **kwargs)

    # Voices are made exactly as the original's: the same voice encoder, S3 tokenizer and S3Gen reference.
    prepare_conditionals = ChatterboxTTS.prepare_conditionals
    make_conditionals = ChatterboxTTS.make_conditionals
    _voice = ChatterboxTTS._voice
    _finish = ChatterboxTTS._finish
    _stream_tokens = ChatterboxTTS._stream_tokens

    @staticmethod
    def _chunks(text: str, language_id: str) -> list[str]:
        # One pass of T3 takes a sentence or a few; longer text goes sentence-aligned chunk by chunk.
        if len(text) <= MAX_CHUNK_CHARS:
            return [text]
        from .text import chunk_text

        return chunk_text(text, MAX_CHUNK_CHARS, language_id)

    def generate(self, text: str, language_id: str, audio_prompt_path=None, exaggeration: float = 0.5,
                 cfg_weight: float = 0.5, temperature: float = 0.8, repetition_penalty: float = 1.2,
                 min_p: float = 0.05, top_p: float = 1.0, *, voice=None, seed: int | None = None, steps: int = 10,
                 max_new_tokens: int = 1000) -> Tensor:
        """The whole utterance as a (1, samples) float tensor at 24 kHz."""
        language_id = check_language(language_id)
        conds = self._voice(audio_prompt_path, voice, exaggeration)
        generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
        parts = []
        for i, chunk in enumerate(self._chunks(text, language_id)):
            tokens = list(self.speech.generate(
                chunk, conds, language_id=language_id, exaggeration=exaggeration, cfg_weight=cfg_weight,
                temperature=temperature, min_p=min_p, top_p=top_p, repetition_penalty=repetition_penalty,
                max_new_tokens=max_new_tokens, generator=generator))  # ids >= 6561 already dropped
            if not tokens:
                raise ValueError(f"T3 produced no speech for {chunk[:40]!r}")
            with self._lock:
                wav = self._finish(self.s3gen(tokens, conds.gen, generator, steps))
            parts += [torch.zeros(1, int(CHUNK_GAP_S * self.sr)), wav] if i else [wav]
        return torch.cat(parts, dim=1)

    def generate_stream(self, text: str, language_id: str, audio_prompt_path=None, exaggeration: float = 0.5,
                        cfg_weight: float = 0.5, temperature: float = 0.8, repetition_penalty: float = 1.2,
                        min_p: float = 0.05, top_p: float = 1.0, *, voice=None, seed: int | None = None,
                        steps: int = 10, max_new_tokens: int = 1000, chunk_tokens: int = 25,
                        context_tokens: int = 25) -> Iterator[Tensor]:
        """Audio chunks ``(1, samples)`` while T3 is still producing tokens, as ChatterboxTTS.generate_stream:
        the speech tokens are generate's with the same seed; the waveform is made window by window."""
        language_id = check_language(language_id)
        conds = self._voice(audio_prompt_path, voice, exaggeration)
        seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        t3_gen = torch.Generator(device=self.device).manual_seed(seed)
        for i, chunk in enumerate(self._chunks(text, language_id)):
            if i:
                yield torch.zeros(1, int(CHUNK_GAP_S * self.sr))
            tokens = self.speech.generate(
                chunk, conds, language_id=language_id, exaggeration=exaggeration, cfg_weight=cfg_weight,
                temperature=temperature, min_p=min_p, top_p=top_p, repetition_penalty=repetition_penalty,
                max_new_tokens=max_new_tokens, generator=t3_gen)
            yield from self._stream_tokens(tokens, conds.gen, seed + i, steps, chunk_tokens, context_tokens)


__all__ = ["ChatterboxMultilingualTTS", "MultilingualSpeechTokenModel", "MTL_FILES", "SUPPORTED_LANGUAGES"]
