"""Checks on one synthesized chunk of a book: length, clipping, pauses, trailing noise and (optionally) what an
offline speech recognizer hears, with a score that ranks attempts at the same chunk."""
from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .audio import clipped_fraction
from .text import TextError, normalize

__all__ = ["Thresholds", "QualityReport", "Transcriber", "make_transcriber", "word_error_rate", "expected_duration",
           "speech_activity", "check_chunk"]

log = logging.getLogger(__name__)

ASR_RATE = 16000  # both recognizers take 16 kHz mono
_EPS = 1e-10  # -100 dBFS: the level given to digital silence
# Spectral flatness (geometric / arithmetic mean of the power spectrum) of a frame. White noise is about 0.56
# (never below 0.47 in 20 ms frames); Piper speech above -35 dB of its level stayed below 0.33 (median 0.001,
# fricatives included). So a loud but flat frame is noise, not speech.
_NOISE_FLATNESS = 0.4


@dataclass(frozen=True)
class Thresholds:
    """Limits for a chunk to pass; calibrated on the embedded Piper voice (numbers in the comments)."""

    # Speaking span / expected time, 34 texts of 1 to 22 words at length_scale 1.0: 0.74 to 1.34 (mean 1.00); 14 of
    # them at 0.8 and 1.2 (speed = 1/length_scale): 0.74 to 1.25. Audio cut to 40 % gives 0.3 to 0.53 and three
    # repeats 2.2 or more, so both fail; half the words missing (0.37 to 0.67) or one repeat (1.5 to 2.7) fail for
    # most texts, and the recognizer catches most of the rest.
    min_duration_ratio: float = 0.6
    max_duration_ratio: float = 1.7
    max_clipped_fraction: float = 0.001  # Piper peaks at full scale: 1e-5 to 9e-5 of its samples reach it
    max_silence_s: float = 2.0  # Piper's longest pause between sentences was 0.46 s
    max_trailing_noise_s: float = 0.6  # Piper: always 0.0
    # Measured with pocketsphinx on Piper (see _WER_NOTE). faster-whisper could not be measured here (not
    # installed); being more accurate, it only widens the gap on both sides of this limit.
    max_wer: float = 0.6


@dataclass
class QualityReport:
    """The outcome of check_chunk: ok, a score to rank attempts (0 is perfect) and the measurements.

    duration_s is the whole audio; the length check compares the speaking span (first to last speech frame, less
    pauses already reported as too long) with expected_s, so silence padding does not count as speech.
    """

    ok: bool
    score: float
    problems: list[str]
    codes: list[str]
    duration_s: float
    expected_s: float
    clipped_fraction: float
    longest_silence_s: float
    trailing_noise_s: float
    transcript: str | None = None
    wer: float | None = None
    asr: str = "off"

    def as_dict(self) -> dict:
        """Plain JSON-able values (floats rounded, lists copied)."""
        out: dict[str, Any] = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 4) if math.isfinite(value) else None
        return out


class Transcriber(Protocol):
    """An offline speech recognizer: mono float samples at any rate -> lowercase words."""

    name: str

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str: ...


def _resample(samples: np.ndarray, rate: int, target: int = ASR_RATE) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if rate == target or samples.size == 0:
        return samples
    import soxr  # a dependency already (the Chatterbox model uses it); far better than linear interpolation

    return soxr.resample(samples, rate, target).astype(np.float32)


class PocketsphinxTranscriber:
    """pocketsphinx 5 with the US English models inside its wheel. One decoder per process: loading it takes 0.27 s
    and a decoder is not thread-safe, so calls are serialized by a lock.

    Speed measured here (2-core Xeon VM, 34 Piper chunks of 0.6 to 6 s, 22 kHz resampled to 16 kHz included):
    0.145 x real time, i.e. about 7 times faster than real time, so a 15 s chunk costs about 2 s of one core.
    """

    name = "pocketsphinx"
    _decoder: Any = None
    _lock = threading.Lock()

    @classmethod
    def _get_decoder(cls) -> Any:
        if cls._decoder is None:
            import pocketsphinx

            # The defaults are the bundled en-us acoustic model, en-us.lm.bin and cmudict-en-us.dict.
            cls._decoder = pocketsphinx.Decoder(samprate=ASR_RATE, loglevel="FATAL")
        return cls._decoder

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str:
        audio = _resample(samples, sample_rate)
        pcm = (np.clip(np.nan_to_num(audio), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        with self._lock:
            decoder = self._get_decoder()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""


class FasterWhisperTranscriber:
    """faster-whisper with a model directory on disk (never downloaded); one model per process and directory."""

    name = "faster-whisper"
    _models: dict[str, Any] = {}
    _lock = threading.Lock()

    def __init__(self, model_dir: Path):
        self.model_dir = str(model_dir)

    def _model(self) -> Any:
        if self.model_dir not in self._models:
            from faster_whisper import WhisperModel

            self._models[self.model_dir] = WhisperModel(self.model_dir, device="auto", compute_type="default",
                                                        local_files_only=True)
        return self._models[self.model_dir]

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str:
        audio = _resample(samples, sample_rate)
        with self._lock:
            segments, _ = self._model().transcribe(audio, language="en", beam_size=1, vad_filter=False)
            return " ".join(s.text.strip() for s in segments).strip()


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def make_transcriber(kind: str = "auto", whisper_model: str | Path | None = None, *,
                     follows_text: bool = False) -> Transcriber | None:
    """The recognizer for `kind` ("auto", "pocketsphinx", "faster-whisper" or "off" -> None).

    "auto" prefers faster-whisper when its package is installed and `whisper_model` is an existing local directory,
    else pocketsphinx, else None; and none for an engine that ``follows_text`` (Piper speaks every phoneme of its
    text, so a recognizer finds nothing to catch, while it cost more than the synthesis: measured on the book tests,
    pocketsphinx 100 s against Piper's 66 s). Naming one that is unavailable raises ValueError saying what is missing.
    """
    if kind == "off" or (kind == "auto" and follows_text):
        return None
    if kind not in ("auto", "pocketsphinx", "faster-whisper"):
        raise ValueError(f"unknown transcriber {kind!r}; choose auto, pocketsphinx, faster-whisper or off")
    model_dir = Path(whisper_model).expanduser() if whisper_model else None
    if kind in ("auto", "faster-whisper"):
        missing = None
        if not _importable("faster_whisper"):
            missing = "the faster_whisper package is not installed (pip install faster-whisper)"
        elif model_dir is None:
            missing = "no model directory was given (set CHATTERBOX_WHISPER_MODEL to a local faster-whisper model)"
        elif not model_dir.is_dir():
            missing = f"the model directory {model_dir} does not exist (models are never downloaded)"
        if missing is None and model_dir is not None:
            return FasterWhisperTranscriber(model_dir)
        if kind == "faster-whisper":
            raise ValueError(f"faster-whisper is unavailable: {missing}")
    if not _importable("pocketsphinx"):
        if kind == "pocketsphinx":
            raise ValueError("pocketsphinx is unavailable: the pocketsphinx package is not installed")
        log.warning("no speech recognizer is installed; chunks are checked without one")
        return None
    return PocketsphinxTranscriber()


# ---------------------------------------------------------------------------------------------------------------
# Words

_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def _words(text: str, normalized: bool = False) -> list[str]:
    """Normalized, lowercase words: numbers spelled out, punctuation gone, hyphens split, inner apostrophes kept.
    normalized: the text is normalize()'s output already, as a planned chunk's is."""
    if not normalized:
        try:
            text = normalize(text)
        except TextError:
            return []
    text = text.lower().replace("\u2019", "'").replace("-", " ")
    return _WORD_RE.findall(text)


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / number of reference words (both sides normalized first)."""
    ref, hyp = _words(reference), _words(hypothesis)
    return _edit_distance(ref, hyp) / max(1, len(ref))


# Piper's joe voice, 34 texts: a least-squares fit of the speaking span (first to last speech frame) against the
# spoken words gave 0.26 s a word (230 words a minute) plus 0.28 s a chunk (breath in, last syllable's decay).
PIPER_WORDS_PER_MINUTE = 230.0
_CHUNK_OVERHEAD_S = 0.25
# Piper's length_scale does not stretch pauses and stresses as much as phonemes: the span scaled as
# length_scale ** 0.57 between 0.8 and 1.2, so the speed given to check_chunk is damped the same way.
_SPEED_EXPONENT = 0.6


def expected_duration(text: str, words_per_minute: float = PIPER_WORDS_PER_MINUTE, *,
                      normalized: bool = False) -> float:
    """Seconds a text should take to speak at normal speed (numbers and abbreviations counted as spoken).

    normalized: the text is normalize()'s output already (a planned chunk's): 40 times quicker.
    """
    words = len(_words(text, normalized))
    return 0.0 if words == 0 else words * 60.0 / words_per_minute + _CHUNK_OVERHEAD_S


# ---------------------------------------------------------------------------------------------------------------
# Signal

def _frames(samples: np.ndarray, sample_rate: int, frame_s: float) -> np.ndarray:
    n = max(1, int(round(frame_s * sample_rate)))
    samples = np.nan_to_num(np.asarray(samples, dtype=np.float64).reshape(-1))
    count = len(samples) // n
    return samples[: count * n].reshape(count, n)


def _levels(frames: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-frame RMS in dBFS and the activity threshold: 40 dB under the speech level (95th percentile), at least
    12 dB over the noise floor (5th percentile) so steady hiss is not speech, and never under -70 dBFS."""
    db = 10.0 * np.log10(np.mean(frames**2, axis=1) + _EPS)
    if db.size == 0:
        return db, 0.0
    floor, level = np.percentile(db, [5, 95])
    return db, float(max(level - 40.0, floor + 12.0, -70.0))


def _flatness(frames: np.ndarray) -> np.ndarray:
    power = np.abs(np.fft.rfft(frames * np.hanning(frames.shape[1]), axis=1)) ** 2 + _EPS
    return np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)


def _analyse(samples: np.ndarray, sample_rate: int, frame_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(speech per frame, sound per frame): sound is over the energy threshold, speech is sound that is not flat."""
    frames = _frames(samples, sample_rate, frame_s)
    if frames.shape[0] == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    db, threshold = _levels(frames)
    sound = db > threshold
    return sound & (_flatness(frames) < _NOISE_FLATNESS), sound


def speech_activity(samples: np.ndarray, sample_rate: int, frame_s: float = 0.02) -> np.ndarray:
    """One bool per frame: loud enough (adaptive energy threshold, see _levels) and not noise-like (flat)."""
    return _analyse(samples, sample_rate, frame_s)[0]


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in mask."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def _longest_run(mask: np.ndarray) -> int:
    runs = _runs(mask)
    return int(runs.max()) if runs.size else 0


def _long_runs(mask: np.ndarray, longer_than: int) -> int:
    """Frames in runs of True longer than longer_than frames."""
    runs = _runs(mask)
    return int(runs[runs > longer_than].sum())


# ---------------------------------------------------------------------------------------------------------------
# The check

# _WER_NOTE: pocketsphinx (its bundled en-us models) on Piper's joe voice, 34 texts of 1 to 22 words (one sentence
# each, or two short ones). WER of the audio against its own text: 0.00 to 0.43 for 33 of them (mean 0.16, twelve at
# 0.00), and one outlier at 0.67 ("Why would anyone build a house so far from the nearest road?" heard as "what would
# anyone bill but also for from the mirror swing"). WER of each audio against the 33 other texts (1122 pairs): 0.75
# at the lowest, mean 2.0. The default 0.6 sits between 0.43 and 0.75: a good reading of one sentence fails now and
# then (1 in 34 here: the caller regenerates and keeps the best), while the wrong text or babble always fails.
# Longer chunks average out the recognizer's slips, so they are separated better than single sentences.

_WEIGHTS = {"too_short": 2.0, "too_long": 2.0, "clipped": 1.0, "long_silence": 1.0, "trailing_noise": 1.0,
            "mismatch": 3.0}


def _silent_report(duration: float, expected: float, asr: str) -> QualityReport:
    return QualityReport(ok=False, score=1000.0, problems=["the audio is silent"], codes=["silent"],
                         duration_s=duration, expected_s=expected, clipped_fraction=0.0, longest_silence_s=duration,
                         trailing_noise_s=0.0, asr=asr)


def check_chunk(samples: np.ndarray, sample_rate: int, text: str, *, transcriber: Transcriber | None = None,
                thresholds: Thresholds | None = None, speed: float = 1.0,
                words_per_minute: float = PIPER_WORDS_PER_MINUTE) -> QualityReport:
    """Check one chunk's audio against its text. `speed` > 1 means faster speech (less time expected);
    `words_per_minute` is the voice's usual pace (engines differ: Engine.words_per_minute).

    The score is 0 for perfect audio; each metric adds 0.1 x (its value / its limit) while within the limit (at
    most 0.6 in all), and weight x (value / limit) >= 1 when over it, so any failing attempt ranks below any passing
    one, and among failing ones the further over, the worse.
    """
    limits = thresholds or Thresholds()
    samples = np.nan_to_num(np.asarray(samples, dtype=np.float32).reshape(-1))
    duration = len(samples) / float(sample_rate)
    expected = expected_duration(text, words_per_minute) / max(speed, 1e-3) ** _SPEED_EXPONENT
    asr = transcriber.name if transcriber is not None else "off"
    frame_s = 0.02
    active, sound = _analyse(samples, sample_rate, frame_s)
    # Anything under -50 dBFS peak is no speech worth keeping, whatever the activity threshold says.
    if not active.any() or float(np.max(np.abs(samples))) < 10 ** (-50 / 20):
        return _silent_report(duration, expected, asr)

    speaking = np.flatnonzero(active)
    first, last = int(speaking[0]), int(speaking[-1])
    span = (last - first + 1) * frame_s
    inside = ~active[first:last + 1]
    longest_silence = _longest_run(inside) * frame_s
    # A pause that is already reported as too long is not counted again as speech that goes on too long.
    span -= _long_runs(inside, int(limits.max_silence_s / frame_s)) * frame_s
    # Sound after the last speech frame: everything up to the last frame over the energy threshold (flat noise,
    # hum) counts, pure silence does not. Piper's own tail (the last syllable's decay) is speech, not flat.
    loud_after = np.flatnonzero(sound[last + 1:])
    trailing = (int(loud_after[-1]) + 1) * frame_s if loud_after.size else 0.0
    clipped = clipped_fraction(samples)

    norm: dict[str, float] = {}  # metric / its limit: 1.0 at the limit
    problems: list[str] = []
    ratio = span / expected if expected > 0 else 1.0
    if expected > 0:
        clamped = min(max(ratio, 0.01), 100.0)
        side = limits.min_duration_ratio if clamped < 1 else limits.max_duration_ratio
        code = "too_short" if clamped < 1 else "too_long"
        norm[code] = math.log(clamped) / math.log(side) if clamped != 1 else 0.0
        if norm[code] > 1:
            what = "words missing" if code == "too_short" else "repeats or babble"
            problems.append(f"{span:.1f} s of speech for text expected to take {expected:.1f} s ({ratio:.0%}): "
                            f"too {'short' if code == 'too_short' else 'long'}, {what}")
    norm["clipped"] = clipped / limits.max_clipped_fraction
    if norm["clipped"] > 1:
        problems.append(f"{clipped:.2%} of the samples are clipped (limit {limits.max_clipped_fraction:.2%})")
    norm["long_silence"] = longest_silence / limits.max_silence_s
    if norm["long_silence"] > 1:
        problems.append(f"a {longest_silence:.1f} s pause inside the speech (limit {limits.max_silence_s:.1f} s)")
    norm["trailing_noise"] = trailing / limits.max_trailing_noise_s
    if norm["trailing_noise"] > 1:
        problems.append(f"{trailing:.1f} s of noise after the last word (limit {limits.max_trailing_noise_s:.1f} s)")

    transcript = wer = None
    if transcriber is not None and _words(text):
        transcript = transcriber.transcribe(samples, sample_rate)
        wer = word_error_rate(text, transcript)
        norm["mismatch"] = wer / limits.max_wer
        if norm["mismatch"] > 1:
            problems.append(f"the recognizer heard {transcript!r}: word error rate {wer:.0%} "
                            f"(limit {limits.max_wer:.0%}) against the text")

    codes = [code for code, value in norm.items() if value > 1]
    score = sum(_WEIGHTS[c] * v if v > 1 else 0.1 * v for c, v in norm.items())
    return QualityReport(ok=not codes, score=float(score), problems=problems, codes=codes, duration_s=duration,
                         expected_s=expected, clipped_fraction=clipped, longest_silence_s=longest_silence,
                         trailing_noise_s=trailing, transcript=transcript, wer=wer, asr=asr)
