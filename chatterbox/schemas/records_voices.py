"""Answers about the engine and its voices: ``GET /engine``, the voice listings, a saved voice."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .. import audio
from .base import Record
from .records_jobs import EngineName, ModelName, absent, one_of

OWNER_HELP = "the API key id that made it; empty: everyone's"
MODEL_HELP = "the weights it was made for"
JOB_HELP = "the clone job that made it"
AudioFormat = one_of(audio.FORMATS)


class Voice(Record):
    """A built-in voice of the engine, or a saved (cloned) voice."""
    id: str
    name: str
    engine: EngineName
    builtin: bool
    description: Optional[str] = absent()
    language: Optional[str] = absent(description="built-in Piper voices: the language code")
    tags: Optional[list[str]] = absent()
    owner: Optional[str] = absent(description=OWNER_HELP)
    created_at: Optional[float] = absent(description="Unix time")
    reference_seconds: Optional[float] = absent(description="seconds of speech in the reference clip")
    model: Optional[str] = absent(description=MODEL_HELP)
    job_id: Optional[str] = absent(description=JOB_HELP)


class SavedVoice(Voice):
    """A saved (cloned) voice."""
    description: str
    tags: list[str]
    owner: str = Field(description=OWNER_HELP)
    created_at: float = Field(description="Unix time")
    reference_seconds: float = Field(description="seconds of speech in the reference clip")
    model: str = Field(description=MODEL_HELP)
    job_id: str = Field(description=JOB_HELP)


class VoiceList(Record):
    """Built-in voices (``builtin: true``) and the saved voices this key may use."""
    engine: EngineName
    voices: list[Voice]


class SavedVoiceList(Record):
    """The saved voices this key may use."""
    voices: list[SavedVoice]


class VoiceDeleted(Record):
    """A saved voice, deleted."""
    id: str
    deleted: Literal[True]


# -- the engine -----------------------------------------------------------------------------------------------------

class EngineParam(Record):
    """A parameter of the engine, with its range (``name``: the document lists the engine's)."""
    name: str
    type: Literal["float", "int"]
    default: Optional[float]
    min: float
    max: float
    help: str


class ModelParam(EngineParam):
    """A parameter of one model, in that model's range."""


class ModelLanguage(Record):
    """A language a model speaks."""
    code: str
    name: str


class EngineModel(Record):
    """A Chatterbox model."""
    name: ModelName
    title: str
    description: Optional[str] = absent()
    available: bool = Field(description="some worker holds it (a job for a model no worker holds is refused)")
    languages: list[ModelLanguage]
    params: list[ModelParam]
    tags: list[str] = Field(description="Turbo's paralinguistic tags, said where they stand in the text")


class Engine(Record):
    """The engine: its parameters with their ranges, voices and formats."""
    name: EngineName
    sample_rate: int
    loaded: bool = Field(description="whether this web process loaded the model (it never does: the workers "
                                     "synthesize)")
    params: list[EngineParam]
    voices: list[Voice]
    reason: str = Field(description="why this engine was chosen")
    formats: list[AudioFormat]
    max_text_chars: int = Field(ge=1)
    model: Optional[ModelName] = absent(description="the model a job gets when it names none")
    language: Optional[str] = absent()
    default_model: Optional[ModelName] = absent()
    models: Optional[list[EngineModel]] = absent(description="Chatterbox's models (absent for Piper)")
