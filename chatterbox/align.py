"""Word timestamps: forced alignment of each synthesized text chunk against its text with pocketsphinx, mapped back
onto the words as the user wrote them ("$5", "3rd", not "five dollars", "third").

A job's text is normalized before it is chunked (chatterbox/text.py), so the chunks hold spoken words, not the
user's. plan() matches the user's words (whitespace-separated tokens, punctuation kept as written, as Whisper's word
timestamps keep it) to the chunks' spoken words once per job; align_chunk() times the spoken words that the
recognizer's dictionary knows, and every user word gets the span of its spoken words. Words with no timed spoken
word (out of the dictionary, a symbol, a stretch the aligner rejected) share the time between their timed
neighbours by character length. Alignment never fails a job: without a usable alignment the chunk's words are
spread over its speech span and marked ``aligned: false``.

An engine that knows how long it made each word (Piper: its phoneme durations, chatterbox/engines/piper.py) times
its chunks itself: its stream carries a ``timing`` (stream_timing), and the recognizer is not run for that chunk
(faster, and exact). Such a Timing says ``source: "engine"``; the recognizer's says ``"asr"``.
"""
from __future__ import annotations

import difflib
import json
import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .audio import write_atomic
from .quality import ASR_RATE, _resample, speech_activity

__all__ = ["Word", "Timing", "plan", "spoken_words", "time_chunk", "stream_timing", "place_words", "align_chunk",
           "chunk_offset", "JobWords"]

log = logging.getLogger(__name__)

_FRAME_S = 0.01  # pocketsphinx's default frame rate: 100 frames a second
_SPOKEN_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_ALT = re.compile(r"\(\d+\)$")  # an alternative pronunciation: "costs(2)"
# Only English has a dictionary and acoustic model in pocketsphinx's wheel; other languages get proportional timing.
ALIGN_LANGUAGES = frozenset({"en"})


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float

    def as_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3)}


# A plan of one chunk: its user words, each with the indices of the chunk's spoken words it became.
ChunkPlan = list[tuple[str, list[int]]]


def spoken_words(text: str) -> list[str]:
    """Lowercase words of normalized text as a recognizer's dictionary spells them (hyphens split). A phoneme token
    (chatterbox.text: a word Piper is given as IPA) is one word, its IPA between slashes ("/ˈaɪpiːeɪ/"), which the
    aligner knows by its phones (_ipa_phones) and plan() matches to the user's word like any other respelling."""
    if "\u27e6" in text:
        from .text import PHONEME_TOKEN

        words, at = [], 0
        for token in PHONEME_TOKEN.finditer(text):
            words += spoken_words(text[at:token.start()]) + ["/" + "".join(token.group(1).split()) + "/"]
            at = token.end()
        return words + spoken_words(text[at:])
    return _SPOKEN_RE.findall(text.lower().replace("\u2019", "'").replace("-", " "))


@lru_cache(maxsize=8192)
def _expansion(token: str, language: str) -> tuple[str, ...]:
    """What one user word is spoken as, normalized on its own (context can change it: the matching absorbs that)."""
    from .text import TextError
    from .text_languages import normalize_in

    try:
        return tuple(spoken_words(normalize_in(token, language)))
    except (TextError, ValueError):
        return ()


def plan(text: str, chunks: list[str], language: str = "en") -> list[ChunkPlan]:
    """The user's words per chunk, each with the indices of the chunk's spoken words it matches (possibly none)."""
    tokens = text.split()
    expanded = [(w, t) for t, token in enumerate(tokens) for w in _expansion(token, language)]
    spoken = [(w, c, i) for c, chunk in enumerate(chunks) for i, w in enumerate(spoken_words(chunk))]
    matcher = difflib.SequenceMatcher(None, [w for w, _ in expanded], [w for w, _, _ in spoken], autojunk=False)
    owned: list[list[int]] = [[] for _ in tokens]  # per token: indices into spoken
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op not in ("equal", "replace"):
            continue  # words only one side has: a token with no spoken word is timed from its neighbours
        ni, nj = i2 - i1, j2 - j1
        for k in range(ni):  # equal: one to one; replace: each side's words shared out in order
            owned[expanded[i1 + k][1]].extend(range(j1 + k * nj // ni, j1 + (k + 1) * nj // ni))
    plans: list[ChunkPlan] = [[] for _ in chunks]
    chunk = 0
    for t, token in enumerate(tokens):
        if owned[t]:
            chunk = max(chunk, spoken[owned[t][0]][1])  # never back: words stay in order
        plans[chunk].append((token, [spoken[j][2] for j in owned[t] if spoken[j][1] == chunk]))
    return plans


class _Aligner:
    """One pocketsphinx decoder per process (0.2 s to load, not thread-safe): calls are serialized by a lock. Its
    own, not the quality checker's: alignment mode replaces a decoder's search."""

    _decoder: Any = None
    _lock = threading.Lock()

    @classmethod
    def _get(cls) -> Any:
        if cls._decoder is None:
            import pocketsphinx

            # No language model: alignment searches only the given words (and loading the LM costs time and memory).
            # ds=2 scores every other frame and topn=2 fewer Gaussians: half the time (0.38 -> 0.20 s for 25 s of
            # Piper speech), word starts within 30 ms of the full search's (mean 5 ms; bench/align.py).
            cls._decoder = pocketsphinx.Decoder(samprate=ASR_RATE, loglevel="FATAL", lm=None, ds=2, topn=2)
        return cls._decoder

    @classmethod
    def align(cls, samples: np.ndarray, rate: int, words: list[str]) -> list[tuple[float, float]] | None:
        """(start, end) in seconds per word of ``words`` (all in the dictionary), or None if it did not align."""
        pcm = (np.clip(np.nan_to_num(_resample(samples, rate)), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        with cls._lock:
            decoder = cls._get()
            decoder.set_align_text(" ".join(words))
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            segments = [(_ALT.sub("", s.word), s.start_frame * _FRAME_S, (s.end_frame + 1) * _FRAME_S)
                        for s in decoder.seg() if not s.word.startswith(("<", "["))]
        if [w for w, _, _ in segments] != words:
            return None
        return [(start, end) for _, start, end in segments]

    @classmethod
    def ensure(cls, word: str) -> bool:
        """Whether ``word`` can be aligned: in the dictionary, or added now with a spelling-based guess at its
        phones. A rough guess still gives the word its own stretch of audio; without one, the aligner stretches its
        neighbours over it ("said Zorblax" timed "said" over both)."""
        with cls._lock:
            decoder = cls._get()
            if decoder.lookup_word(word) is not None:
                return True
            phones = _ipa_phones(word[1:-1]) if word.startswith("/") else _guess_phones(word)
            if not phones:
                return False
            decoder.add_word(word, " ".join(phones), True)
            return True


# IPA (as espeak-ng writes English, two symbols first) -> ARPAbet phones of the en-us model, for a word Piper was
# given as phonemes; stress, length and other marks are left out, as is what has no English phone.
_IPA_PHONES = {"aɪ": "AY", "aʊ": "AW", "ɔɪ": "OY", "eɪ": "EY", "oʊ": "OW", "əʊ": "OW", "tʃ": "CH", "dʒ": "JH",
               "ɑ": "AA", "ɒ": "AA", "a": "AA", "æ": "AE", "ʌ": "AH", "ə": "AH", "ɐ": "AH", "ɔ": "AO", "o": "OW",
               "e": "EH", "ɛ": "EH", "ɪ": "IH", "ᵻ": "IH", "ɨ": "IH", "i": "IY", "ʊ": "UH", "u": "UW", "ɚ": "ER",
               "ɝ": "ER", "ɜ": "ER", "b": "B", "d": "D", "ð": "DH", "f": "F", "ɡ": "G", "g": "G", "h": "HH",
               "j": "Y", "k": "K", "l": "L", "ɫ": "L", "m": "M", "n": "N", "ŋ": "NG", "p": "P", "ɹ": "R", "r": "R",
               "ɾ": "D", "s": "S", "ʃ": "SH", "t": "T", "θ": "TH", "v": "V", "w": "W", "z": "Z", "ʒ": "ZH",
               "x": "K", "ç": "HH"}


def _ipa_phones(ipa: str) -> list[str]:
    """ARPAbet phones for IPA; [] when none of it is an English phone."""
    phones: list[str] = []
    i = 0
    while i < len(ipa):
        if ipa[i:i + 2] in _IPA_PHONES:
            phones.append(_IPA_PHONES[ipa[i:i + 2]])
            i += 2
            continue
        if ipa[i] in _IPA_PHONES:
            phones.append(_IPA_PHONES[ipa[i]])
        i += 1
    return phones


# Letters (digraphs first) -> ARPAbet phones of the en-us model: crude, but close enough in length and manner.
_LETTER_PHONES = [("tch", "CH"), ("th", "TH"), ("sh", "SH"), ("ch", "CH"), ("ph", "F"), ("ck", "K"), ("ng", "NG"),
                  ("qu", "K W"), ("wh", "W"), ("ee", "IY"), ("oo", "UW"), ("ou", "AW"), ("ai", "EY"), ("ay", "EY"),
                  ("ea", "IY"), ("oa", "OW"), ("a", "AE"), ("b", "B"), ("c", "K"), ("d", "D"), ("e", "EH"),
                  ("f", "F"), ("g", "G"), ("h", "HH"), ("i", "IH"), ("j", "JH"), ("k", "K"), ("l", "L"), ("m", "M"),
                  ("n", "N"), ("o", "AA"), ("p", "P"), ("q", "K"), ("r", "R"), ("s", "S"), ("t", "T"), ("u", "AH"),
                  ("v", "V"), ("w", "W"), ("x", "K S"), ("y", "IY"), ("z", "Z")]


def _guess_phones(word: str) -> list[str]:
    """A spelling-based pronunciation for a word the dictionary lacks; [] when it has no Latin letters."""
    letters = re.sub(r"(.)\1", r"\1", re.sub(r"[^a-z]", "", word.lower()))  # doubled letters sound once
    if len(letters) > 3 and letters.endswith("e") and letters[-2] not in "aeiou":
        letters = letters[:-1]  # a silent final e
    phones: list[str] = []
    i = 0
    while i < len(letters):
        for spelling, sound in _LETTER_PHONES:
            if letters.startswith(spelling, i):
                phones.extend(sound.split())
                i += len(spelling)
                break
        else:
            i += 1
    return phones


def _speech_span(samples: np.ndarray, rate: int) -> tuple[float, float]:
    duration = len(samples) / float(rate)
    active = np.flatnonzero(speech_activity(samples, rate)) if len(samples) else np.zeros(0, dtype=int)
    if not active.size:
        return 0.0, duration
    return float(active[0]) * 0.02, min(duration, float(active[-1] + 1) * 0.02)


@dataclass
class Timing:
    """A chunk's spoken words timed against its audio: what alignment learns, independent of the user's wording
    (a book keeps it with the chunk's cached audio, whose key hashes only the spoken text)."""

    spans: dict[int, tuple[float, float]]  # spoken word index -> (start, end) in seconds of the chunk's audio
    speech: tuple[float, float]  # where speech starts and ends in it
    aligned: bool
    source: str = "asr"  # who timed the words: "asr" (the recognizer, time_chunk) or "engine" (its own durations)

    def as_dict(self) -> dict[str, Any]:
        return {"spans": {str(i): [round(a, 3), round(b, 3)] for i, (a, b) in self.spans.items()},
                "speech": [round(self.speech[0], 3), round(self.speech[1], 3)], "aligned": self.aligned,
                "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> "Timing":
        return cls({int(i): (float(a), float(b)) for i, (a, b) in data["spans"].items()},
                   (float(data["speech"][0]), float(data["speech"][1])), bool(data["aligned"]),
                   str(data.get("source") or "asr"))  # reports from before engines timed words: the recognizer's


def stream_timing(stream: Any) -> Timing | None:
    """The engine's own timing of a chunk it has finished streaming (``engine.stream``'s ``timing``, set once the
    stream is exhausted), or None: an engine without one (Chatterbox), or words it could not map."""
    timing = getattr(stream, "timing", None)
    return timing if isinstance(timing, Timing) else None


def time_chunk(samples: np.ndarray, rate: int, chunk: str, language: str = "en") -> Timing:
    """Time the spoken words of ``chunk`` in ``samples`` (its audio alone); unaligned: no spans, the speech span."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    span = _speech_span(samples, rate)
    if language in ALIGN_LANGUAGES and samples.size:
        try:
            spoken = spoken_words(chunk)
            known = [i for i, w in enumerate(spoken) if _Aligner.ensure(w)]
            times = _Aligner.align(samples, rate, [spoken[i] for i in known]) if known else None
            if times is not None:
                duration = len(samples) / float(rate)  # the last frame may run past the end
                return Timing({i: (min(a, duration), min(b, duration)) for i, (a, b) in zip(known, times)}, span,
                              True)
        except Exception:  # never the job's failure: the words are spread over the speech instead
            log.warning("alignment failed for chunk %r; timing its words proportionally", chunk[:60], exc_info=True)
    return Timing({}, span, False)


def place_words(words: ChunkPlan, timing: Timing) -> list[Word]:
    """The user's words of one chunk, each spanning its spoken words' times (untimed ones filled between)."""
    spans: list[tuple[float, float] | None] = []
    for _, indices in words:
        got = [timing.spans[i] for i in indices if i in timing.spans]
        spans.append((min(s for s, _ in got), max(e for _, e in got)) if got else None)
    return _fill(words, spans, timing.speech)


def align_chunk(samples: np.ndarray, rate: int, chunk: str, words: ChunkPlan, language: str = "en",
                timing: Timing | None = None) -> tuple[list[Word], bool]:
    """Times (seconds into ``samples``) for a chunk's user words, and whether they were aligned: by ``timing``, the
    engine's own (stream_timing) where it gave one, else by the recognizer."""
    if not words:
        return [], False
    if timing is None:
        timing = time_chunk(samples, rate, chunk, language)
    return place_words(words, timing), timing.aligned


def _fill(words: ChunkPlan, spans: list[tuple[float, float] | None], span: tuple[float, float]) -> list[Word]:
    """Untimed words share the time between their timed neighbours (or the speech's edges) by character length;
    every span is clamped so that times never go back."""
    out: list[Word] = []
    n = len(words)
    i = 0
    cursor = span[0]
    while i < n:
        if spans[i] is not None:
            start, end = spans[i]
            start = max(start, cursor)
            end = max(end, start)
            out.append(Word(words[i][0], start, end))
            cursor = end
            i += 1
            continue
        j = i
        while j < n and spans[j] is None:
            j += 1
        until = spans[j][0] if j < n else max(span[1], cursor)
        until = max(until, cursor)
        lengths = [max(1, len(words[k][0])) for k in range(i, j)]
        total, at = float(sum(lengths)), cursor
        for k, length in zip(range(i, j), lengths):
            step = (until - cursor) * length / total
            out.append(Word(words[k][0], at, at + step))
            at += step
        cursor = until
        i = j
    return out


def chunk_offset(parts: list[np.ndarray], index: int, rate: int, gaps: list[float]) -> float:
    """Where chunk ``index`` starts in the joined audio, exactly as audio.concat(parts, rate, gaps=gaps) joins
    them: the chunks before it, each followed by its gap of round(gap * rate) samples."""
    silence = sum(max(0, int(round(g * rate))) for g in gaps[:index])
    return (sum(len(p) for p in parts[:index]) + silence) / float(rate)


class JobWords:
    """A job's words, chunk by chunk as run_job completes them, and the file they are kept in."""

    def __init__(self, text: str, chunks: list[str], rate: int, gaps: list[float], language: str = "en"):
        """``text``: what is said, as written (markup removed); ``gaps``: the silence after each chunk."""
        self.chunks, self.rate, self.gaps, self.language = chunks, rate, gaps, language
        self.plans = plan(text, chunks, language)
        self.words: dict[int, list[Word]] = {}
        self.aligned: dict[int, bool] = {}

    def add(self, index: int, parts: list[np.ndarray], timing: Timing | None = None) -> list[dict]:
        """Align chunk ``index`` (its audio is parts[index], complete; ``timing``: the engine's own timing of exactly
        that audio, if it gave one); its words in seconds of the final audio."""
        words, aligned = align_chunk(parts[index], self.rate, self.chunks[index], self.plans[index], self.language,
                                     timing)
        offset = chunk_offset(parts, index, self.rate, self.gaps)
        self.words[index] = [Word(w.word, w.start + offset, w.end + offset) for w in words]
        self.aligned[index] = aligned
        return [w.as_dict() for w in self.words[index]]

    def record(self, parts: list[np.ndarray]) -> dict:
        """{"words", "aligned"} of the whole job; chunks an earlier attempt made (a resumed job) are aligned now."""
        for index in range(len(parts)):
            if index not in self.words:
                self.add(index, parts)
        return {"words": [w.as_dict() for i in sorted(self.words) for w in self.words[i]],
                "aligned": all(self.aligned.values()) if self.aligned else False}

    def write(self, path: Path, parts: list[np.ndarray]) -> Path:
        """The record as JSON, written atomically like the audio beside it."""
        return write_atomic(path, json.dumps(self.record(parts), separators=(",", ":")).encode())


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())
