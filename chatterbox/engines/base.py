"""The engine interface: every TTS engine yields audio as it is made, so everything above it can stream."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ..access import SYSTEM, Caller
from ..errors import RequestError
from ..settings import Settings


class EngineError(Exception):
    """Base of the errors an engine raises on purpose."""


class EngineUnavailable(EngineError):
    """The engine cannot run on this machine (missing weights, missing implementation, missing package)."""


class InvalidRequest(RequestError, EngineError):
    """A request an engine (or a synthesis request's checks) refuses: 400, or 404 when it names something that is
    not there (or is another key's)."""


@dataclass(frozen=True)
class Param:
    """One tunable parameter of an engine, with its range."""

    name: str
    kind: type  # float or int
    default: float | int | None
    minimum: float
    maximum: float
    help: str
    arg: str | None = None  # the keyword the model takes it as, when that is not its name

    @property
    def keyword(self) -> str:
        return self.arg or self.name

    def check(self, value: Any) -> float | int:
        field = f"params.{self.name}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f"{field} must be a number, not {type(value).__name__}", "invalid_type", field)
        if isinstance(value, float) and self.kind is int and not value.is_integer():
            raise InvalidRequest(f"{field} must be a whole number", "invalid_type", field)
        # Compared before any conversion: JSON may carry an integer of thousands of digits, which float() refuses.
        if (isinstance(value, float) and not math.isfinite(value)) or not self.minimum <= value <= self.maximum:
            raise InvalidRequest(f"{field} must be between {self.minimum} and {self.maximum}, not "
                                 f"{str(value)[:40]}", "out_of_range", field)
        return self.kind(value)

    def describe(self) -> dict:
        return {"name": self.name, "type": self.kind.__name__, "default": self.default, "min": self.minimum,
                "max": self.maximum, "help": self.help}


class Engine(ABC):
    """A text-to-speech engine. Construct cheaply anywhere; call ``load()`` once in the process that synthesizes."""

    name: str = ""
    params: tuple[Param, ...] = ()
    words_per_minute: float = 160.0  # the usual pace of its voices: what a chunk's expected duration is based on
    # Whether its speech is exactly its text's phonemes (Piper): it cannot skip, repeat or invent words, so a book's
    # recognizer would have nothing to catch, and CHATTERBOX_BOOK_ASR=auto does not listen to it.
    follows_text: bool = False
    model: str | None = None  # the model of the engine a job chose (Chatterbox has three); None: the engine's one
    language: str = "en"

    def __init__(self, settings: Settings, device: str = "cpu"):
        self.settings = settings
        self.device = device

    @property
    @abstractmethod
    def sample_rate(self) -> int: ...

    @property
    @abstractmethod
    def loaded(self) -> bool: ...

    @abstractmethod
    def load(self) -> None:
        """Load the model into memory (idempotent); raises EngineUnavailable with a reason a person can act on."""

    @abstractmethod
    def voices(self, caller: Caller) -> list[dict]:
        """The voices this engine offers ``caller``: dicts with at least ``id`` and ``name``; built-in ones first."""

    @property
    def default_voice(self) -> str:
        return self.voices(SYSTEM)[0]["id"]

    @abstractmethod
    def stream(self, text: str, voice: str, params: Mapping[str, Any], priority: str = "interactive",
               check: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        """Synthesize text, yielding mono float32 arrays at ``sample_rate`` as they are produced. ``priority``:
        "interactive" (a listener waits: the first audio as soon as possible) or "bulk" (a book chunk).
        ``check``: called now and then while a piece is being made; what it raises (a cancel) stops the work."""

    def for_model(self, model: Any = None, language: Any = None) -> "Engine":
        """The engine that speaks ``model`` in ``language`` for a job (see ChatterboxEngine); an engine of one
        English model takes its own name or none, and English or no language."""
        from ..text_languages import LANGUAGES, LanguageError, check_language

        try:
            code = check_language(language)
        except LanguageError as exc:
            raise InvalidRequest(str(exc), "unknown_language", "language") from None
        if model not in (None, "", self.name):
            raise InvalidRequest(f"the model {model!r} is not available: this system runs the {self.name} "
                                 "engine (no Chatterbox weights are installed)", "model_unavailable", "model")
        if code != "en":
            raise InvalidRequest(f"the {self.name} engine speaks English only, not {LANGUAGES[code]}; "
                                 "Chatterbox's multilingual model speaks 23 languages", "unsupported_language",
                                 "language")
        return self

    def models_held(self) -> list[str]:
        """The models this (loaded) engine can speak with, for its worker's heartbeat."""
        return []

    def max_chars(self, settings: Settings) -> int:
        """The longest chunk of English text one generation takes."""
        return settings.chunk_chars

    def chunks(self, text: str, settings: Settings) -> list[str]:
        """The text normalized and cut into the chunks this engine speaks one at a time (in its language)."""
        from ..text import chunk_text

        return chunk_text(text, self.max_chars(settings), self.language)

    def occupancy(self) -> dict | None:
        """How many requests the engine is running at once, for /health (None: one at a time, nothing to say)."""
        return None

    def model_version(self, voice: str) -> str:
        """Names the weights that speak ``voice``, so that audio cached from other weights is never reused."""
        return self.name

    def check_voice(self, voice, caller: Caller) -> str:
        """The id of the voice a request names (the default for none), among those ``caller`` may use; raises
        InvalidRequest (404 for a voice the caller cannot see, whether it exists or not)."""
        if voice is None or voice == "":
            return self.default_voice
        if not isinstance(voice, str):
            raise InvalidRequest("voice must be a string", "invalid_type", "voice")
        known = [v["id"] for v in self.voices(caller)]
        if voice in known:
            return voice
        from ..voices import VoiceError, VoiceLibrary

        try:
            saved = VoiceLibrary(self.settings.voices_dir).get(voice, caller)
        except VoiceError as exc:
            if exc.code == "ambiguous_voice":
                raise InvalidRequest(exc.message, exc.code, "voice") from None
            saved = None
        if saved is not None and saved.engine != self.name:
            raise InvalidRequest(f"voice {voice!r} was made for the {saved.engine} engine, not {self.name}",
                                 "wrong_engine", "voice")
        if saved is not None:
            return saved.id
        raise unknown_voice(voice, known)

    def validate(self, params: Mapping[str, Any] | None) -> dict:
        """Parameters checked against their ranges, defaults filled in."""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise InvalidRequest("params must be a JSON object", "invalid_type", "params")
        specs = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(specs))
        if unknown:
            raise InvalidRequest(f"unknown parameter {unknown[0]!r} for engine {self.name}; "
                                 f"known: {', '.join(specs)}", "unknown_parameter", f"params.{unknown[0]}")
        checked = {}
        for name, spec in specs.items():
            if params.get(name) is not None:
                checked[name] = spec.check(params[name])
            elif spec.default is not None:
                checked[name] = spec.default
        return checked

    def model_args(self, params: Mapping[str, Any]) -> dict:
        """The model call's keyword arguments, by name from ``params`` (one per entry of ``self.params``): the one
        way engines hand parameters on, so that none is dropped on the way (two once were, by a stray comment)."""
        return {p.keyword: params.get(p.name, p.default) for p in self.params}

    def describe(self, caller: Caller) -> dict:
        return {"name": self.name, "sample_rate": self.sample_rate, "loaded": self.loaded,
                "params": [p.describe() for p in self.params], "voices": self.voices(caller)}


def unknown_voice(voice: str, known: list[str]) -> InvalidRequest:
    return InvalidRequest(f"unknown voice {voice!r}; see GET /voices (this engine has: {', '.join(known)})",
                          "unknown_voice", "voice", 404)
