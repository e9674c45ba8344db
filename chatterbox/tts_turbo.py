"""ChatterboxTurboTTS: Resemble AI's Chatterbox Turbo (350M, English) with the reference package's public names.

``from chatterbox.tts_turbo import ChatterboxTurboTTS`` works as with the reference: ``from_local``,
``from_pretrained``, ``prepare_conditionals``, ``generate`` (a ``(1, samples)`` tensor at ``sr = 24000``), plus our
``voice=`` (saved conditionals), ``seed=``, ``max_new_tokens=``, ``make_conditionals`` and ``generate_stream``.

Turbo differs from the original (chatterbox.tts) in every stage: a GPT-2 T3 without guidance or exaggeration,
sampled with top-k and top-p (chatterbox.model.t3_turbo); GPT-2's BPE text tokenizer with paralinguistic tags such
as ``[laugh]`` (chatterbox.model.tokenizer_turbo); a 2-step mean-flow decoder in S3Gen
(chatterbox.model.s3gen.meanflow); voices from clips longer than 5 s, brought to -27 LUFS, with 15 s of T3 prompt.
Three silence tokens close every utterance, as in the reference. ``cfg_weight``, ``min_p`` and ``exaggeration``
are accepted and ignored, as there.
"""
from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from .model.checkpoint import CheckpointError, build, read_safetensors, resolve_model_dir
from .model.conds import Conditionals, T3Cond
from .model.s3tokenizer import SAMPLE_RATE as S3_RATE
from .model.s3tokenizer import S3Tokenizer
from .model.speech_tokens import REFERENCE_RATE, ReferenceClipError, load_reference, resample
from .model.rowmatmul import RowMatmul
from .model.t3_turbo import T3Turbo, T3TurboConfig, TurboSampling
from .model.t3_turbo_batch import T3TurboBatch, TurboRequest
from .model.tokenizer_turbo import TurboTokenizer
from .model.voice_encoder import VoiceEncoder
from .tts import CHUNK_GAP_S, SAMPLE_RATE, S3Gen, _watermarker, load_s3gen, per_text, speak_together
from .tts_stream import TokenStream

log = logging.getLogger(__name__)

REPO_ID = "ResembleAI/chatterbox-turbo"
T3_FILE, S3GEN_FILE = "t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors"
TURBO_FILES = ("ve.safetensors", T3_FILE, S3GEN_FILE, "vocab.json", "merges.txt", "added_tokens.json", "conds.pt")
# Read when present (the reference's transformers tokenizer reads them): the added tokens' flags, the length cap.
OPTIONAL_FILES = ("tokenizer_config.json", "special_tokens_map.json")
# Turbo drifts into gibberish past about 20-25 s of audio in one pass (upstream issue #385): 200 characters are
# about 13 s of speech, against the original's 300 (chatterbox.tts.MAX_CHUNK_CHARS) with its 40 s of room.
MAX_CHUNK_CHARS = 200
SILENCE_TOKEN = 4299  # S3Gen's silence, three of which end every utterance
SILENCE_TOKENS = 3
MIN_REFERENCE_SECONDS = 5.0  # the reference refuses shorter clips ("must be longer than 5 seconds")
PROMPT_SECONDS = 15  # T3's speech prompt: the first 15 s (at most 375 tokens)
TARGET_LUFS = -27.0


def normalize_loudness(wav: np.ndarray, sr: int, target_lufs: float = TARGET_LUFS) -> np.ndarray:
    """The clip brought to target_lufs integrated loudness (ITU-R BS.1770, pyloudnorm's meter, as the reference);
    left as it is where loudness cannot be measured (too short, silent)."""
    try:
        import pyloudnorm

        loudness = pyloudnorm.Meter(sr).integrated_loudness(wav)
        gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    except Exception as exc:  # the reference skips the step on any failure too
        log.warning("loudness normalization skipped: %s", exc)
        return wav
    if not (math.isfinite(gain) and gain > 0.0):
        return wav
    # The reference multiplies its float32 samples by the gain in float32 (numpy < 2's casting): keep that.
    return (wav * np.float32(gain)).astype(np.float32)


def load_t3(tensors: dict[str, Tensor], device, dtype) -> T3Turbo:
    """T3 from the tensors of t3_turbo_v1.safetensors. The file holds GPT-2's token table ``tfmr.wte`` (T3 embeds
    its own tokens): required, as the reference loads the file strictly, then dropped as the reference deletes
    it."""
    if "model" in tensors:  # some exports wrap the state dict
        raise CheckpointError(f"{T3_FILE} wraps its tensors in 'model'; unwrap it first")
    cfg = T3TurboConfig().with_layers_of(tensors)
    tensors = dict(tensors)
    wte = tensors.pop("tfmr.wte.weight", None)
    if wte is None:
        raise CheckpointError(f"{T3_FILE} does not fit the model: missing tensor tfmr.wte.weight")
    if tuple(wte.shape) != (cfg.text_vocab, cfg.dim):
        raise CheckpointError(f"{T3_FILE} does not fit the model: tensor tfmr.wte.weight has shape "
                              f"{tuple(wte.shape)}, expected {(cfg.text_vocab, cfg.dim)}")
    t3 = build(lambda: T3Turbo(cfg), tensors, T3_FILE, device, dtype)
    t3.tfmr.to_linear_layout()  # for row-exact batched decoding (chatterbox.model.gpt2)
    return t3


class TurboSpeechTokens:
    """Turbo's text-and-voice -> speech-token side, alone or batched: what the worker's batch loop
    (chatterbox.engines.batch_loop) takes of a model, as SpeechTokenModel is the original's."""

    closing_tokens = (SILENCE_TOKEN,) * SILENCE_TOKENS  # appended to every utterance's codes, as the reference

    def __init__(self, t3: T3Turbo, tokenizer: TurboTokenizer, device: torch.device, max_batch: int = 1):
        self.t3, self.tokenizer, self.device = t3, tokenizer, torch.device(device)
        self.matmul = RowMatmul(max(1, max_batch))  # one row per request (no guidance)
        self._lock = threading.Lock()  # T3 decodes one batch at a time

    def new_batch(self) -> T3TurboBatch:
        return T3TurboBatch(self.t3, self.matmul)

    def request(self, text: str, conds: Conditionals, *, temperature: float = 0.8, top_k: int = 1000,
                top_p: float = 0.95, repetition_penalty: float = 1.2, max_new_tokens: int = 1000,
                seed: int | None = None, generator: torch.Generator | None = None) -> TurboRequest:
        """The T3 request for a text in a voice, for a batch or alone (``seed`` makes its own generator)."""
        sampling = TurboSampling(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                                 repetition_penalty=float(repetition_penalty))
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        return TurboRequest(conds.t3, self.tokenizer(text).to(self.device), sampling=sampling,
                            max_new_tokens=max_new_tokens, generator=generator)

    def speech_codes(self, tokens: list[int]) -> list[int]:
        """The tokens S3Gen takes: the speech codes T3 sampled (not the ids past them), then the three silence
        tokens; nothing when T3 sampled no code."""
        codes = [t for t in tokens if t < self.t3.cfg.speech_codes]
        return codes + list(self.closing_tokens) if codes else []

    def generate(self, text: str, conds: Conditionals, **params) -> Iterator[int]:
        """The tokens S3Gen gets for one chunk of text, yielded as T3 samples them (codes only), then the silence
        tokens; ``params`` as ``request`` takes."""
        request = self.request(text, conds, **params)
        batch = self.new_batch()
        count = 0
        with self._lock:
            batch.add(request)
            while not request.done:
                for _, token in batch.step():
                    if token is not None and token < self.t3.cfg.speech_codes:
                        count += 1
                        yield token
        if not count:
            raise ValueError(f"T3 produced no speech for {text[:40]!r}")
        yield from self.closing_tokens


class ChatterboxTurboTTS:
    sr = SAMPLE_RATE

    def __init__(self, t3: T3Turbo, tokenizer: TurboTokenizer, ve: VoiceEncoder, s3gen: S3Gen,
                 s3_tokenizer: S3Tokenizer, conds: Conditionals | None, device: torch.device,
                 watermark: bool = False, max_batch: int = 1):
        self.t3, self.tokenizer, self.ve, self.s3gen, self.s3_tokenizer = t3, tokenizer, ve, s3gen, s3_tokenizer
        self.speech = TurboSpeechTokens(t3, tokenizer, device, max_batch)
        self.conds = conds
        self.device = torch.device(device)
        self.watermarker = _watermarker() if watermark else None
        self._lock = threading.Lock()  # S3Gen and the voice encoders, one call at a time

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                   watermark: bool = False, max_batch: int = 1) -> "ChatterboxTurboTTS":
        """``max_batch``: how many texts the job system usually decodes together; the decoding step's matmuls are
        planned for it (chatterbox.model.rowmatmul), alone included."""
        path = resolve_model_dir(ckpt_dir, files=TURBO_FILES)
        device = torch.device(device)
        t3 = load_t3(read_safetensors(path / T3_FILE, device), device, dtype)
        tokenizer = TurboTokenizer(path)
        if len(tokenizer) > t3.cfg.text_vocab:
            raise CheckpointError(f"the tokenizer has {len(tokenizer)} ids; T3 embeds {t3.cfg.text_vocab}")
        ve = build(VoiceEncoder, read_safetensors(path / "ve.safetensors", device), "ve.safetensors", device,
                   torch.float32)
        s3gen, s3_tokenizer = load_s3gen(read_safetensors(path / S3GEN_FILE, device), device, dtype, S3GEN_FILE,
                                         meanflow=True)
        conds = Conditionals.load(path / "conds.pt", device) if (path / "conds.pt").is_file() else None
        return cls(t3, tokenizer, ve, s3gen, s3_tokenizer, conds, device, watermark, max_batch)

    @classmethod
    def from_pretrained(cls, device: str = "cpu", **kwargs) -> "ChatterboxTurboTTS":
        """The official weights from the Hugging Face hub (ResembleAI/chatterbox-turbo), downloaded once."""
        path = resolve_model_dir(None, files=TURBO_FILES + OPTIONAL_FILES, repo_id=REPO_ID)
        return cls.from_local(path, device=device, **kwargs)

    # ---- voices ----------------------------------------------------------------------------------------------

    def make_conditionals(self, wav_or_path_or_bytes, exaggeration: float = 0.0, sample_rate: int | None = None,
                          norm_loudness: bool = True) -> Conditionals:
        """A voice from a reference clip (a path, bytes, or samples with sample_rate) longer than 5 s, without
        changing the current one: T3's half (speaker embedding of the whole clip, S3 tokens of its first 15 s)
        and S3Gen's (mels, x-vector and tokens of its first 10 s), after bringing it to -27 LUFS."""
        wav24 = load_reference(wav_or_path_or_bytes, sample_rate)
        seconds = len(wav24) / REFERENCE_RATE
        if not seconds > MIN_REFERENCE_SECONDS:
            raise ReferenceClipError(f"the reference clip is {seconds:.2f} s long; Chatterbox Turbo needs more than "
                                     f"{MIN_REFERENCE_SECONDS:.0f} s of speech (5 to 10 s works best)")
        if norm_loudness:
            wav24 = normalize_loudness(wav24, REFERENCE_RATE)
        wav16 = resample(wav24, REFERENCE_RATE, S3_RATE)
        with self._lock, torch.inference_mode():
            gen = self.s3gen.reference(wav24, self.s3_tokenizer)
            prompt = self.s3_tokenizer(torch.from_numpy(wav16[: PROMPT_SECONDS * S3_RATE]),
                                       max_tokens=self.t3.cfg.prompt_tokens)
            speaker = self.ve.embed(wav16)
        t3 = T3Cond(speaker_emb=speaker.cpu(), cond_prompt_speech_tokens=prompt.cpu(),
                    emotion_adv=torch.full((1, 1, 1), float(exaggeration)))
        return Conditionals(t3, gen)

    def prepare_conditionals(self, wav_fpath, exaggeration: float = 0.0, norm_loudness: bool = True,
                             sample_rate: int | None = None) -> Conditionals:
        """A voice from a reference clip, made current (as the reference's); also returned."""
        self.conds = self.make_conditionals(wav_fpath, exaggeration, sample_rate, norm_loudness)
        return self.conds

    def _voice(self, audio_prompt_path, voice, exaggeration: float, norm_loudness: bool) -> Conditionals:
        if audio_prompt_path is not None:
            return self.prepare_conditionals(audio_prompt_path, exaggeration, norm_loudness)
        if voice is not None:
            return voice if isinstance(voice, Conditionals) else Conditionals.load(voice, self.device)
        if self.conds is None:
            raise ValueError("no voice: give audio_prompt_path or voice, or call prepare_conditionals first")
        return self.conds

    # ---- text --------------------------------------------------------------------------------------------------

    @staticmethod
    def _chunks(text: str) -> list[str]:
        # Turbo goes astray past about 20 s of speech in one pass: longer text goes chunk by chunk.
        if len(text) <= MAX_CHUNK_CHARS:
            return [text]
        from .text import chunk_text

        return chunk_text(text, MAX_CHUNK_CHARS)

    # ---- generation ----------------------------------------------------------------------------------------------

    @staticmethod
    def _sampling(temperature, top_k, top_p, repetition_penalty, cfg_weight, min_p, exaggeration) -> dict:
        """Turbo's sampling parameters, checked (TurboSampling raises for a bad one before anything runs)."""
        if cfg_weight > 0.0 or exaggeration > 0.0 or min_p > 0.0:
            log.warning("Chatterbox Turbo ignores cfg_weight, min_p and exaggeration")
        params = {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p),
                  "repetition_penalty": float(repetition_penalty)}
        TurboSampling(**params)
        return params

    def generate(self, text: str, repetition_penalty: float = 1.2, min_p: float = 0.0, top_p: float = 0.95,
                 audio_prompt_path=None, exaggeration: float = 0.0, cfg_weight: float = 0.0,
                 temperature: float = 0.8, top_k: int = 1000, norm_loudness: bool = True, *, voice=None,
                 seed: int | None = None, max_new_tokens: int = 1000) -> Tensor:
        """The whole utterance as a (1, samples) float tensor at 24 kHz. ``seed``: the same audio every time
        (one generator for T3's draws, the flow's noise and the vocoder's, in the reference's order); without it,
        torch's global generator, as the reference. Text longer than MAX_CHUNK_CHARS is spoken chunk by chunk,
        with 0.2 s of silence between chunks."""
        sampling = self._sampling(temperature, top_k, top_p, repetition_penalty, cfg_weight, min_p, exaggeration)
        conds = self._voice(audio_prompt_path, voice, exaggeration, norm_loudness)
        generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
        pieces = []
        for i, chunk in enumerate(self._chunks(text)):
            tokens = list(self.speech.generate(chunk, conds, **sampling, max_new_tokens=max_new_tokens,
                                               generator=generator))
            with self._lock:
                wav = self._finish(self.s3gen(tokens, conds.gen, generator))
            if i:
                pieces.append(torch.zeros(1, int(CHUNK_GAP_S * self.sr)))
            pieces.append(wav)
        return torch.cat(pieces, dim=1)

    def generate_batch(self, texts: list[str], *, seeds: list[int | None] | None = None,
                       voices: list | None = None, **params) -> list[Tensor]:
        """Many texts at once, T3 decoding them together: one (1, samples) tensor per text, each the very
        ``generate(text, seed=seed_i, voice=voice_i, **params_i)``. Each of ``temperature``, ``top_k``, ``top_p``,
        ``repetition_penalty`` and ``max_new_tokens`` is one value for all, or a list with one per text."""
        known = {"repetition_penalty": 1.2, "top_p": 0.95, "temperature": 0.8, "top_k": 1000, "max_new_tokens": 1000}
        p, seeds, voices = per_text(len(texts), params, known, seeds, voices)
        conds = [self._voice(None, v, 0.0, True) for v in voices]
        return speak_together(self, [self._chunks(t) for t in texts], conds, seeds, p, [None] * len(texts))

    def generate_stream(self, text: str, repetition_penalty: float = 1.2, min_p: float = 0.0, top_p: float = 0.95,
                        audio_prompt_path=None, exaggeration: float = 0.0, cfg_weight: float = 0.0,
                        temperature: float = 0.8, top_k: int = 1000, norm_loudness: bool = True, *, voice=None,
                        seed: int | None = None, max_new_tokens: int = 1000, chunk_tokens: int = 25,
                        context_tokens: int = 25) -> Iterator[Tensor]:
        """Audio pieces ``(1, samples)`` while T3 is still producing tokens: the first as soon as its first window
        of ``chunk_tokens`` tokens (1 s) is in, the way ChatterboxTTS.generate_stream makes them
        (chatterbox.tts_stream). The speech tokens are those ``generate`` makes with the same seed; the waveform
        is not sample-identical to ``generate``'s (the flow sees a window, not the whole utterance)."""
        sampling = self._sampling(temperature, top_k, top_p, repetition_penalty, cfg_weight, min_p, exaggeration)
        conds = self._voice(audio_prompt_path, voice, exaggeration, norm_loudness)
        seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        t3_gen = torch.Generator(device=self.device).manual_seed(seed)
        for i, chunk in enumerate(self._chunks(text)):
            if i:
                yield torch.zeros(1, int(CHUNK_GAP_S * self.sr))
            stream = TokenStream(self.s3gen, conds.gen, seed + i, None, chunk_tokens, context_tokens)
            for token in self.speech.generate(chunk, conds, **sampling, max_new_tokens=max_new_tokens,
                                              generator=t3_gen):
                stream.push(token)
                if stream.ready:
                    with self._lock:
                        piece = stream.window(finished=False)
                    yield self._finish(piece)
            with self._lock:
                piece = stream.window(finished=True)
            if piece is not None:
                yield self._finish(piece)

    def _finish(self, wav: Tensor) -> Tensor:
        wav = wav.detach().float().cpu()
        if self.watermarker is not None:
            wav = torch.from_numpy(self.watermarker.apply_watermark(wav[0].numpy(), sample_rate=self.sr))[None]
        return wav
