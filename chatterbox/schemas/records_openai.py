"""Answers of the OpenAI- and Kokoro-compatible routes: the models, and captioned speech."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import Record
from .records_jobs import one_of

# Kokoro's ``audio_format``: the MIME type it names each format by (web/captioned.py answers with these).
AUDIO_FORMATS = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/pcm"}
KokoroFormat = one_of(dict.fromkeys(AUDIO_FORMATS.values()))


class WordTimestamp(Record):
    """A word and its time."""
    word: str
    start_time: float = Field(ge=0, description="seconds of the answer's audio")
    end_time: float = Field(ge=0, description="seconds of the answer's audio")


class CaptionedSpeechResponse(Record):
    """Audio with word timestamps: the whole file, or a piece of a stream."""
    audio: str = Field(description="the audio (streamed: the next piece of one stream; the pieces joined are the "
                                   "file), base64", json_schema_extra={"format": "byte"})
    audio_format: KokoroFormat = Field(
        description="the format's MIME type, as Kokoro names it")
    timestamps: Optional[list[WordTimestamp]] = Field(description="the words, as written, in order (streamed: those "
                                                                  "whose times came since the last piece)")


class Model(Record):
    """A model, as OpenAI lists them."""
    id: str
    object: Literal["model"]
    created: int = Field(description="Unix time")
    owned_by: str


class ModelList(Record):
    """The models, as OpenAI lists them."""
    object: Literal["list"]
    data: list[Model]
