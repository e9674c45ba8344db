"""The engine interface: every TTS engine yields audio as it is made, so everything above it can stream."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from ..settings import Settings


class EngineError(Exception):
    """Base of the errors an engine raises on purpose."""


class EngineUnavailable(EngineError):
    """The engine cannot run on this machine (missing weights, missing implementation, missing package)."""


class InvalidRequest(EngineError, ValueError):
    """A request an engine refuses; ``field`` names the offending part of the request."""

    def __init__(self, field: str, message: str, code: str = "invalid_value"):
        super().__init__(field, message, code)  # all in args, so Celery can rebuild it from a JSON result
        self.field = field
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Param:
    """One tunable parameter of an engine, with its range."""

    name: str
    kind: type  # float or int
    default: float | int | None
    minimum: float
    maximum: float
    help: str

    def check(self, value: Any) -> float | int:
        field = f"params.{self.name}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(field, f"{field} must be a number, not {type(value).__name__}", "invalid_type")
        if self.kind is int and not float(value).is_integer():
            raise InvalidRequest(field, f"{field} must be a whole number", "invalid_type")
        if not math.isfinite(value) or not self.minimum <= value <= self.maximum:
            raise InvalidRequest(field, f"{field} must be between {self.minimum} and {self.maximum}, not {value}",
                                 "out_of_range")
        return self.kind(value)

    def describe(self) -> dict:
        return {"name": self.name, "type": self.kind.__name__, "default": self.default, "min": self.minimum,
                "max": self.maximum, "help": self.help}


class Engine(ABC):
    """A text-to-speech engine. Construct cheaply anywhere; call ``load()`` once in the process that synthesizes."""

    name: str = ""
    params: tuple[Param, ...] = ()
    words_per_minute: float = 160.0  # the usual pace of its voices: what a chunk's expected duration is based on

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
    def voices(self) -> list[dict]:
        """The voices this engine offers: dicts with at least ``id`` and ``name``."""

    @property
    def default_voice(self) -> str:
        return self.voices()[0]["id"]

    @abstractmethod
    def stream(self, text: str, voice: str, params: Mapping[str, Any]) -> Iterator[np.ndarray]:
        """Synthesize text, yielding mono float32 arrays at ``sample_rate`` as they are produced."""

    def model_version(self, voice: str) -> str:
        """Names the weights that speak ``voice``, so that audio cached from other weights is never reused."""
        return self.name

    def check_voice(self, voice: str | None) -> str:
        if voice is None or voice == "":
            return self.default_voice
        if not isinstance(voice, str):
            raise InvalidRequest("voice", "voice must be a string", "invalid_type")
        known = [v["id"] for v in self.voices()]
        if voice not in known:
            from ..voices import VoiceError, VoiceLibrary

            try:
                saved = VoiceLibrary(self.settings.voices_dir).get(voice)
            except VoiceError:
                saved = None
            if saved is not None and saved.engine != self.name:
                raise InvalidRequest("voice", f"voice {voice!r} was made for the {saved.engine} engine, not "
                                     f"{self.name}", "wrong_engine")
            raise InvalidRequest("voice", f"unknown voice {voice!r}; this engine has: {', '.join(known)}",
                                 "unknown_voice")
        return voice

    def validate(self, params: Mapping[str, Any] | None) -> dict:
        """Parameters checked against their ranges, defaults filled in."""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise InvalidRequest("params", "params must be a JSON object", "invalid_type")
        specs = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(specs))
        if unknown:
            raise InvalidRequest(f"params.{unknown[0]}", f"unknown parameter {unknown[0]!r} for engine {self.name}; "
                                 f"known: {', '.join(specs)}", "unknown_parameter")
        checked = {}
        for name, spec in specs.items():
            if params.get(name) is not None:
                checked[name] = spec.check(params[name])
            elif spec.default is not None:
                checked[name] = spec.default
        return checked

    def describe(self) -> dict:
        return {"name": self.name, "sample_rate": self.sample_rate, "loaded": self.loaded,
                "params": [p.describe() for p in self.params], "voices": self.voices()}
