"""ChatterboxTTS: text -> 24 kHz speech, with the reference package's public names.

``from chatterbox.tts import ChatterboxTTS`` works as it does with Resemble AI's package: ``from_local``,
``from_pretrained``, ``prepare_conditionals``, ``generate`` (a ``(1, samples)`` tensor at ``sr = 24000``), plus our
``voice=`` (saved conditionals), ``seed=``, ``steps=`` and ``generate_stream``.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from .model.checkpoint import CheckpointError, build, read_safetensors, resolve_model_dir, subset
from .model.conds import Conditionals
from .model.features import resample
from .model.s3gen.flow import MELS_PER_TOKEN, SPEECH_CODES, Flow, FlowInput, configs_of
from .model.s3gen.hift import HiFT, hift_config_of
from .model.s3gen.mel import log_mel
from .model.s3tokenizer import S3Tokenizer
from .model.speech_tokens import GEN_SECONDS, REFERENCE_RATE, SpeechTokenModel, load_reference
from .model.t3 import T3Config
from .tts_stream import TokenStream, trim_fade

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
SAMPLES_PER_TOKEN = 960  # 2 mel frames of 480 samples
CHUNK_GAP_S = 0.2
MAX_CHUNK_CHARS = 300


def load_s3gen(tensors: dict[str, Tensor], device, dtype, source: str = "s3gen.safetensors",
               meanflow: bool = False) -> tuple["S3Gen", S3Tokenizer]:
    """S3Gen (the flow, HiFT, CAMPPlus) and the S3 speech tokenizer from one state dict, every tensor used (the
    reference loads it strictly): the original's and Multilingual's file, or Turbo's (``meanflow``)."""
    from .model.s3gen.campplus import CAMPPlus
    from .model.s3gen.meanflow import MeanFlow, meanflow_config

    known = ("flow.", "mel2wav.", "speaker_encoder.", "tokenizer.")
    stray = sorted(k for k in tensors if not k.startswith(known))
    if stray:
        raise CheckpointError(f"{source} does not fit the model: unexpected tensor {stray[0]}")
    flow_tensors = subset(tensors, "flow.")
    if meanflow:
        configs = configs_of(flow_tensors, meanflow_config(), source)
        flow = build(lambda: MeanFlow(*configs), flow_tensors, source, device, dtype, prefix_hint="flow.")
    else:
        configs = configs_of(flow_tensors, source=source)
        flow = build(lambda: Flow(*configs), flow_tensors, source, device, dtype, prefix_hint="flow.")
    hift_tensors = subset(tensors, "mel2wav.")
    hift_config = hift_config_of(hift_tensors, source)
    hift = build(lambda: HiFT(hift_config), hift_tensors, source, device, torch.float32,
                 prefix_hint="mel2wav.").fold_weight_norm()
    campplus = build(CAMPPlus, subset(tensors, "speaker_encoder."), source, device, torch.float32,
                     prefix_hint="speaker_encoder.")
    s3_tokenizer = S3Tokenizer.from_tensors(subset(tensors, "tokenizer."), source).to(device).eval()
    return S3Gen(flow, hift, campplus, torch.device(device)), s3_tokenizer


class S3Gen:
    """Speech tokens -> waveform: the flow (tokens -> mels), HiFT (mels -> audio) and the reference conditioning
    (24 kHz mels, CAMPPlus x-vector, S3 tokens) of a voice."""

    def __init__(self, flow: Flow, hift: HiFT, speaker_encoder, device: torch.device):
        self.flow, self.hift, self.speaker_encoder, self.device = flow, hift, speaker_encoder, device

    def reference(self, wav24: np.ndarray, s3_tokenizer) -> dict:
        """The ``gen`` half of conditionals from a 24 kHz clip (its first 10 s)."""
        wav = torch.from_numpy(wav24[: GEN_SECONDS * REFERENCE_RATE]).float().to(self.device)[None]
        mels = log_mel(wav).transpose(1, 2)  # (1, T, 80)
        # The reference resamples S3Gen's 16 kHz copy as torchaudio's Resample does (T3's prompt uses soxr): both.
        wav16 = resample(wav, REFERENCE_RATE, 16000)
        xvector = self.speaker_encoder.xvector(wav16)
        tokens = s3_tokenizer(wav16[0])
        if mels.shape[1] != MELS_PER_TOKEN * tokens.shape[1]:
            tokens = tokens[:, : mels.shape[1] // MELS_PER_TOKEN]
            mels = mels[:, : MELS_PER_TOKEN * tokens.shape[1]]
        return {"prompt_token": tokens.cpu(), "prompt_token_len": torch.tensor([tokens.shape[1]]),
                "prompt_feat": mels.cpu(), "prompt_feat_len": None, "embedding": xvector.cpu()}

    def check_tokens(self, tokens) -> Tensor:
        tokens = torch.as_tensor(tokens, dtype=torch.long).view(1, -1)
        valid = (tokens >= 0) & (tokens < SPEECH_CODES)
        if not bool(valid.all()):
            log.warning("dropping %d speech tokens outside 0..%d", int((~valid).sum()), SPEECH_CODES - 1)
            tokens = tokens[valid].view(1, -1)
        if tokens.shape[1] == 0:
            raise ValueError("there are no speech tokens to turn into audio")
        return tokens.to(self.device)

    def mels(self, tokens, gen: dict, prompt_tokens: Tensor | None = None, prompt_mels: Tensor | None = None,
             generator=None, steps: int | None = None, finalize: bool = True) -> Tensor:
        tokens = self.check_tokens(tokens)
        p_tokens = gen["prompt_token"].to(self.device) if prompt_tokens is None else prompt_tokens
        p_mels = gen["prompt_feat"].to(self.device) if prompt_mels is None else prompt_mels
        return self.flow(tokens, p_tokens, p_mels, gen["embedding"].to(self.device), generator, steps, finalize)

    def vocode(self, mels: Tensor, generator=None) -> Tensor:
        return self.hift(mels.float(), generator)

    def __call__(self, tokens, gen: dict, generator=None, steps: int | None = None) -> Tensor:
        """Whole utterance: (1, samples), faded in like the reference's."""
        return trim_fade(self.vocode(self.mels(tokens, gen, generator=generator, steps=steps), generator))

    def batch(self, tokens: list, gens: list[dict], generators: list, steps: list[int | None]) -> list[Tensor]:
        """Whole utterances, each as ``__call__`` makes it. On a GPU the flow and HiFT take them together (those
        with the same number of flow steps); on a CPU, where both are compute-bound, padding only costs (measured:
        three of mixed lengths 6.9 s together, 5.0 s one by one; four of one length 9.9 s and 9.7 s), so one by
        one."""
        groups: dict = {}
        for i, n in enumerate(steps):
            groups.setdefault(i if self.device.type == "cpu" else n, []).append(i)
        out: list[Tensor | None] = [None] * len(tokens)
        for members in groups.values():
            items = [FlowInput(self.check_tokens(tokens[i]), gens[i]["prompt_token"].to(self.device),
                               gens[i]["prompt_feat"].to(self.device), gens[i]["embedding"].to(self.device),
                               generators[i]) for i in members]
            mels = self.flow.forward_batch(items, steps[members[0]])
            wavs = self.hift.forward_batch([m.float() for m in mels], [generators[i] for i in members])
            for i, wav in zip(members, wavs):
                out[i] = trim_fade(wav)
        return out


class ChatterboxTTS:
    sr = SAMPLE_RATE

    def __init__(self, speech: SpeechTokenModel, s3gen: S3Gen, device: torch.device, watermark: bool = False):
        self.speech, self.s3gen, self.device = speech, s3gen, device
        self.t3, self.tokenizer, self.ve = speech.t3, speech.tokenizer, speech.ve
        self.conds: Conditionals | None = speech.conds
        self.watermarker = _watermarker() if watermark else None
        self._lock = threading.Lock()

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                   watermark: bool = False, max_batch: int = 1) -> "ChatterboxTTS":
        """``max_batch``: how many texts ``generate_batch`` (or the job system) usually runs together; the
        decoding step's matmuls are planned for it (chatterbox.model.rowmatmul), alone included."""
        path = resolve_model_dir(ckpt_dir)
        s3gen, s3_tokenizer = load_s3gen(read_safetensors(path / "s3gen.safetensors", device), device, dtype)
        speech = SpeechTokenModel.from_local(path, device=device, dtype=dtype, t3_config=T3Config(),
                                             max_batch=max_batch, s3_tokenizer=s3_tokenizer)
        return cls(speech, s3gen, torch.device(device), watermark)

    @classmethod
    def from_pretrained(cls, device: str = "cpu", **kwargs) -> "ChatterboxTTS":
        return cls.from_local(resolve_model_dir(None), device=device, **kwargs)

    def prepare_conditionals(self, wav_fpath, exaggeration: float = 0.5, sample_rate: int | None = None
                             ) -> Conditionals:
        """A voice from a reference clip (a path, bytes, or samples with sample_rate); also made current."""
        self.conds = self.make_conditionals(wav_fpath, exaggeration, sample_rate)
        return self.conds

    def make_conditionals(self, wav_fpath, exaggeration: float = 0.5, sample_rate: int | None = None
                          ) -> Conditionals:
        """A voice from a reference clip, without changing the current one."""
        conds = self.speech.prepare_conditionals(wav_fpath, exaggeration, sample_rate)
        wav24 = load_reference(wav_fpath, sample_rate)
        with self._lock:
            conds.gen = self.s3gen.reference(wav24, self.speech.s3_tokenizer)
        return conds

    def _voice(self, audio_prompt_path, voice, exaggeration) -> Conditionals:
        if audio_prompt_path is not None:
            return self.prepare_conditionals(audio_prompt_path, exaggeration)
        if voice is not None:
            return voice if isinstance(voice, Conditionals) else Conditionals.load(voice, self.device)
        if self.conds is None:
            raise ValueError("no voice: give audio_prompt_path or voice, or call prepare_conditionals first")
        return self.conds

    @staticmethod
    def _chunks(text: str) -> list[str]:
        # One pass of T3 takes a sentence or a few; longer text goes chunk by chunk, like the job system's.
        if len(text) <= MAX_CHUNK_CHARS:
            return [text]
        from .text import chunk_text

        return chunk_text(text, MAX_CHUNK_CHARS)

    def generate(self, text: str, repetition_penalty: float = 1.2, min_p: float = 0.05, top_p: float = 1.0,
                 audio_prompt_path=None, exaggeration: float = 0.5, cfg_weight: float = 0.5,
                 temperature: float = 0.8, *, voice=None, seed: int | None = None, steps: int = 10,
                 max_new_tokens: int = 1000) -> Tensor:
        """The whole utterance as a (1, samples) float tensor at 24 kHz."""
        return torch.cat([c for c in self._generate_chunks(
            text, repetition_penalty, min_p, top_p, audio_prompt_path, exaggeration, cfg_weight, temperature,
            voice, seed, steps, max_new_tokens)], dim=1)

    def _generate_chunks(self, text, repetition_penalty, min_p, top_p, audio_prompt_path, exaggeration,
                         cfg_weight, temperature, voice, seed, steps, max_new_tokens) -> Iterator[Tensor]:
        conds = self._voice(audio_prompt_path, voice, exaggeration)
        generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
        gap = torch.zeros(1, int(CHUNK_GAP_S * self.sr))
        for i, chunk in enumerate(self._chunks(text)):
            tokens = list(self.speech.generate(
                chunk, conds, exaggeration=exaggeration, cfg_weight=cfg_weight, temperature=temperature,
                min_p=min_p, top_p=top_p, repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens,
                generator=generator))
            if not tokens:
                raise ValueError(f"T3 produced no speech for {chunk[:40]!r}")
            with self._lock:
                wav = self._finish(self.s3gen(tokens, conds.gen, generator, steps))
            if i:
                yield gap
            yield wav

    def generate_batch(self, texts: list[str], *, seeds: list[int | None] | None = None,
                       voices: list | None = None, **params) -> list[Tensor]:
        """Many texts at once, T3 decoding them together: one (1, samples) tensor per text, each the very
        ``generate(text, seed=seed_i, voice=voice_i, **params_i)``. Each parameter (those of ``generate``) is one
        value for all, or a list with one per text."""
        known = {"repetition_penalty": 1.2, "min_p": 0.05, "top_p": 1.0, "exaggeration": 0.5, "cfg_weight": 0.5,
                 "temperature": 0.8, "steps": 10, "max_new_tokens": 1000}
        p, seeds, voices = per_text(len(texts), params, known, seeds, voices)
        steps = p.pop("steps")  # S3Gen's; the rest are the T3 request's
        conds = [self._voice(None, v, e) for v, e in zip(voices, p["exaggeration"])]
        return speak_together(self, [self._chunks(t) for t in texts], conds, seeds, p, steps)

    def _finish(self, wav: Tensor) -> Tensor:
        wav = wav.detach().float().cpu()
        if self.watermarker is not None:
            wav = torch.from_numpy(self.watermarker.apply_watermark(wav[0].numpy(), sample_rate=self.sr))[None]
        return wav

    def generate_stream(self, text: str, repetition_penalty: float = 1.2, min_p: float = 0.05, top_p: float = 1.0,
                        audio_prompt_path=None, exaggeration: float = 0.5, cfg_weight: float = 0.5,
                        temperature: float = 0.8, *, voice=None, seed: int | None = None, steps: int = 10,
                        max_new_tokens: int = 1000, chunk_tokens: int = 25, context_tokens: int = 25
                        ) -> Iterator[Tensor]:
        """Audio chunks ``(1, samples)`` while T3 is still producing tokens.

        Every ``chunk_tokens`` tokens (1 s of speech), the new tokens go through the flow with the voice's prompt
        followed by the last ``context_tokens`` tokens and their mels as extra prompt, and through HiFT with a few
        frames of mel context; the seam with the previous chunk is cross-faded over 20 ms. The speech tokens are
        the ones ``generate`` makes with the same seed; the waveform is not sample-identical to ``generate``'s,
        because the flow attends over its window rather than the whole utterance and the vocoder's noise is drawn
        per window, which is inaudible at the seams. Chunks of long text are separated by short silences.
        """
        conds = self._voice(audio_prompt_path, voice, exaggeration)
        seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        t3_gen = torch.Generator(device=self.device).manual_seed(seed)
        for i, chunk in enumerate(self._chunks(text)):
            if i:
                yield torch.zeros(1, int(CHUNK_GAP_S * self.sr))
            tokens = self.speech.generate(
                chunk, conds, exaggeration=exaggeration, cfg_weight=cfg_weight, temperature=temperature,
                min_p=min_p, top_p=top_p, repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens,
                generator=t3_gen)
            yield from self._stream_tokens(tokens, conds.gen, seed + i, steps, chunk_tokens, context_tokens)

    def _stream_tokens(self, tokens: Iterator[int], gen: dict, seed: int, steps: int, chunk_tokens: int,
                       context_tokens: int) -> Iterator[Tensor]:
        stream = TokenStream(self.s3gen, gen, seed, steps, chunk_tokens, context_tokens)
        for token in tokens:
            stream.push(token)
            if stream.ready:
                with self._lock:
                    piece = stream.window(finished=False)
                yield self._finish(piece)
        with self._lock:
            piece = stream.window(finished=True)
        if piece is not None:
            yield self._finish(piece)


def per_text(n: int, params: dict, known: dict, seeds, voices) -> tuple[dict[str, list], list, list]:
    """``generate_batch``'s arguments, one value per text: each parameter given once for all or as a list of n."""
    def each(name: str, value) -> list:
        if isinstance(value, (list, tuple)):
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} values for {n} texts")
            return list(value)
        return [value] * n

    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TypeError(f"generate_batch() got an unexpected keyword argument {unknown[0]!r}")
    return ({name: each(name, params.get(name, default)) for name, default in known.items()}, each("seeds", seeds),
            each("voices", voices))


def speak_together(tts, chunks: list[list[str]], conds: list, seeds: list, t3_params: dict[str, list],
                   steps: list) -> list[Tensor]:
    """The texts' audio (each text as its chunks), T3 decoding their chunks together and S3Gen making them; each
    text's audio is what ``generate`` gives it alone (``t3_params``: the T3 request's parameters, a list each)."""
    n = len(chunks)
    generators = [torch.Generator(device=tts.device).manual_seed(int(s)) if s is not None else None for s in seeds]
    parts: list[list[Tensor]] = [[] for _ in range(n)]
    gap = torch.zeros(1, int(CHUNK_GAP_S * tts.sr))
    # Round k speaks every text's k-th chunk: each text's generator is drawn from in its own order, as alone.
    for k in range(max(len(c) for c in chunks)):
        group = [i for i in range(n) if k < len(chunks[i])]
        requests = [tts.speech.request(chunks[i][k], conds[i], generator=generators[i],
                                       **{name: values[i] for name, values in t3_params.items()}) for i in group]
        batch = tts.speech.new_batch()
        with tts.speech._lock:
            for request in requests:
                batch.add(request)
            while batch.active:
                batch.step()
        tokens = [tts.speech.speech_codes(r.tokens) for r in requests]
        for i, t in zip(group, tokens):
            if not t:
                raise ValueError(f"T3 produced no speech for {chunks[i][k][:40]!r}")
        with tts._lock:
            wavs = tts.s3gen.batch(tokens, [conds[i].gen for i in group], [generators[i] for i in group],
                                   [steps[i] for i in group])
        for i, wav in zip(group, wavs):
            parts[i] += [gap, tts._finish(wav)] if k else [tts._finish(wav)]
    return [torch.cat(p, dim=1) for p in parts]


def _watermarker():
    try:
        import perth
    except ImportError:
        raise RuntimeError("watermarking needs the resemble-perth package (pip install resemble-perth)") from None
    return perth.PerthImplicitWatermarker()
