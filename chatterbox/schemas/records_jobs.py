"""Answers about jobs (their records, links, listings, words and stats), the error shape, and the job record as Redis
holds it (``JobRecord``: chatterbox/jobs.py decodes a job hash by its annotations).

A field that an answer leaves out when it has no value (never null) is ``Optional[...] = absent()``: None in Python,
and neither required nor nullable in the document. ``Optional[...] = None`` is a field that may be null.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, Field, create_model

from .. import audio
from ..books.assemble import CHAPTER_FORMATS
from ..engines import ENGINES
from ..engines.models import MODELS
from .base import Record

# Defined here, not in chatterbox/jobs.py (which imports them from here): the models below need them, and jobs.py
# needs the models.
STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")  # only books pause
KINDS = ("synthesize", "clone", "audiobook")  # a record without a kind is a synthesis (older records)
# A job's format: a synthesis' audio format, or an audiobook's chapter files' format.
JOB_FORMATS = tuple(dict.fromkeys([*audio.FORMATS, *CHAPTER_FORMATS]))


def _never_null(schema: dict[str, Any]) -> None:
    # Optional[X] is written as a nullable X; an answer that leaves a field out never sends null, so it is not.
    schema.pop("nullable", None)
    if "enum" in schema:
        schema["enum"] = [v for v in schema["enum"] if v is not None]
    refs = schema.get("allOf", [])
    if len(refs) == 1 and set(schema) <= {"allOf", "default"}:  # OpenAPI30 wraps a nullable $ref in allOf
        schema.update(schema.pop("allOf")[0])


def absent(**field: Any) -> Any:
    """A field the answer leaves out when it has no value: None here, optional and not nullable in the document
    (``Field``'s keywords: description, ge, ...)."""
    return Field(None, json_schema_extra=_never_null, **field)


def one_of(values: Any) -> Any:
    """A Literal of ``values`` (a code constant: the enum follows the code)."""
    return Literal[tuple(values)]  # type: ignore[misc]


Kind = one_of(KINDS)
Status = one_of(STATUSES)
JobFormat = one_of(JOB_FORMATS)
EngineName = one_of(ENGINES)
ModelName = one_of(MODELS)


class ErrorDetail(Record):
    """What went wrong."""
    message: str = Field(description="for people")
    type: Literal["invalid_request_error", "server_error"] = Field(
        description="`invalid_request_error` for 4xx, `server_error` for 5xx")
    param: Optional[str] = Field(description="the request field at fault, when there is one")
    code: str = Field(description="for programs, e.g. `out_of_range`, `job_not_found`")


class Error(Record):
    """Every 4xx and 5xx answer."""
    model_config = {"json_schema_extra": {"example": {"error": {
        "message": "params.length_scale must be between 0.5 and 2.0, not 7", "type": "invalid_request_error",
        "param": "params.length_scale", "code": "out_of_range"}}}}

    error: ErrorDetail


# -- links ----------------------------------------------------------------------------------------------------------

class Links(Record):
    """A job's links (every kind of job)."""
    status_url: str = Field(description="`GET` this for the job's record")
    events_url: str = Field(description="the job's websocket (a path)")
    audio_url: str = Field(description="the finished audio")


class WordLinks(Record):
    """A synthesis' own links (not a clone's or a book's): its word timestamps and subtitles."""
    words_url: Optional[str] = absent(description="a synthesis': its word timestamps, once it has succeeded")
    subtitles_url: Optional[str] = absent(description="a synthesis': its subtitles (SRT, or `?format=vtt`)")


class JobLinks(Links, WordLinks):
    """A job just queued, and where to follow it."""
    job_id: str
    status: Literal["queued"]


class WaitPending(Links, WordLinks):
    """``?wait=1`` gave up waiting: the job is still queued or running."""
    job_id: str
    status: Literal["queued", "running"]
    message: str = Field(description="how long it waited")


# -- the job record -------------------------------------------------------------------------------------------------

class Job(Record):
    """A job record as clients see it (chatterbox.jobs.public_view): empty fields are left out, never null."""
    id: str = Field(description="the job's id")
    kind: Kind = Field(description="what the job does")
    status: Status = Field(description="`paused` only for audiobooks")
    progress: float = Field(ge=0, le=1)
    voice: Optional[str] = absent(description="the voice it speaks in (a clone job has none)")
    format: JobFormat = Field(description="the audio format (chapter files' format for an audiobook)")
    params: dict[str, Any] = Field(description="the engine's parameters with defaults filled in (a clone job: its "
                                               "request)")
    engine: EngineName
    model: Optional[ModelName] = absent(description="the Chatterbox model that speaks it (left out for Piper)")
    language: Optional[str] = absent(description="the language it is spoken in (a code of `GET /engine`'s models)")
    source: str = Field(description="how it was submitted: `rest`, `openai`, `captioned` or `celery`")
    created_at: float = Field(description="Unix time")
    started_at: Optional[float] = absent(description="Unix time")
    finished_at: Optional[float] = absent(description="Unix time")
    chunks_total: int = Field(ge=0)
    chunks_done: int = Field(ge=0)
    duration_s: Optional[float] = absent(description="seconds of audio (a clone job: of the reference clip)")
    sample_rate: Optional[int] = absent()
    synth_s: Optional[float] = absent(description="seconds spent synthesizing")
    encode_s: Optional[float] = absent(description="seconds spent encoding")
    queued_s: Optional[float] = absent(description="seconds from submission to start")
    total_s: Optional[float] = absent(description="seconds from submission to finish")
    first_chunk_s: Optional[float] = absent(description="seconds from start to the first audio chunk")
    rtf: Optional[float] = absent(description="real-time factor: synthesis time / audio duration")
    worker: Optional[str] = absent(description="the Celery hostname that ran it")
    attempt: int = Field(ge=1)
    max_attempts: int = Field(ge=1)
    error: Optional[str] = absent(description="why it failed or was cancelled")
    last_error: Optional[str] = absent(description="why an earlier attempt was abandoned")
    output: Optional[str] = absent(description="the output file's name")
    text_chars: int = Field(ge=0)
    voice_id: Optional[str] = absent(description="a clone job's new voice, once it succeeded")
    title: Optional[str] = absent(description="an audiobook's title")
    author: Optional[str] = absent(description="an audiobook's author")
    chapters_total: Optional[int] = absent(ge=0)
    chapters_done: Optional[int] = absent(ge=0)
    audio_s: Optional[float] = absent(description="seconds of audio made so far (audiobooks)")
    plan_s: Optional[float] = absent(description="seconds spent planning (audiobooks)")
    assembly_s: Optional[float] = absent(description="seconds spent assembling (audiobooks)")
    # last, as public_view has always listed it
    owner: Optional[str] = absent(description="the id of the API key that submitted it (left out for jobs sent "
                                              "through Celery)")


class JobRecord(Job):
    """Every field a job's Redis hash can hold (not an answer): Job's, and what only the workers and the web app
    read. Redis keeps text; chatterbox/jobs.py reads each field back as its type here (``hash_types``)."""
    text: Optional[str] = None  # what to say (a book's: its title; a clone's: the voice's name)
    # [[text, gap_s, rate], ...]: what is said, planned at submission (chatterbox.synthesis.SynthesisRequest.plan)
    plan: Optional[list[Any]] = None
    lexicon: Optional[str] = None  # the owner's lexicon as of the first attempt, as JSON text (lexicon.dumps)
    audio_prompt: Optional[str] = None  # a one-off voice's uploaded clip (a path on the server)
    words_file: Optional[str] = None  # a synthesis' word timestamps (a file of the outputs folder)
    lease: Optional[str] = None  # the token of the lease its holder runs it under ("": none)
    worker_instance: Optional[str] = None  # the holder's instance (the reaper's dead-worker check)
    cancel_requested: Optional[str] = None  # "1": a cancel asked for, seen by the worker at its next chunk
    pieces: Optional[int] = None  # audio pieces sent so far: the next piece's index
    synth_s_done: Optional[float] = None  # synthesis seconds of the chunks done (a resumed attempt adds to it)
    run_started_at: Optional[float] = None  # a book: when it last started running (its ETA's throughput)
    run_done_at_start: Optional[int] = None  # a book: chunks done when it last started running
    activity_at: Optional[float] = None  # a book: when an item was last taken (the stall watchdog)


def hash_types(model: type[BaseModel]) -> dict[str, type]:
    """Each field of ``model`` as a Redis hash holds it: int, float, dict or list (JSON text), or str."""
    out = {}
    for name, info in model.model_fields.items():
        kind = info.annotation
        while get_origin(kind) in (Union, Annotated):  # Optional[X], Annotated[X, ...]: X
            args = [a for a in get_args(kind) if a is not type(None)]
            if get_origin(kind) is Union and len(args) > 1:
                raise TypeError(f"{model.__name__}.{name}: one type per field, not {kind}")
            kind = args[0]
        kind = get_origin(kind) or kind
        if kind is Literal:
            kind = str
        if kind is bool or kind not in (int, float, str, dict, list):  # bool: stored as 0/1, read back as text
            raise TypeError(f"{model.__name__}.{name}: a job hash holds int, float, str, dict or list, not {kind}")
        out[name] = kind
    return out


class JobDetail(Job, Links, WordLinks):
    """A job's record with its links (``GET /jobs/{job_id}``)."""
    text: Optional[str] = absent(description="with `?text=1`: the text")


class JobListItem(Job, Links, WordLinks):
    """A job of a listing."""
    text_preview: str = Field(description="the text's first 200 characters")


class JobList(Record):
    """A page of jobs, newest first."""
    jobs: list[JobListItem]
    total: int = Field(ge=0, description="jobs that match the filters, on every page")
    offset: int = Field(ge=0)
    limit: int = Field(ge=1, le=500)
    total_exact: bool = Field(description="false when a `q` or `voice` search read its limit (the newest 20,000 "
                                          "jobs) and `total` counts only those")


class Purged(Record):
    """A finished job, forgotten: its record, events and audio."""
    job_id: str
    deleted: Literal[True]


class CancelResult(Record):
    """A job cancelled, or to stop after its current chunk."""
    job_id: str
    status: Literal["cancelled", "running"]
    message: Optional[str] = absent(description="a running job: it stops after its current chunk")


class TextPlan(Record):
    """How a text would be chunked; nothing is synthesized."""
    chunks: list[str] = Field(description="the sentence-aligned chunks it would be synthesized in (none for blank "
                                          "text)")
    pauses_s: Optional[list[Annotated[float, Field(ge=0)]]] = absent(
        description="the silence after each chunk but the last: a [pause:...] or SSML <break> where the text asks "
                    "for one, else the usual gap")
    chars: int = Field(ge=0, description="the spoken characters (markup not counted)")
    max_chars: int = Field(ge=1, description="the longest text one job takes")
    chunk_chars: int = Field(ge=1, description="the longest chunk")


# -- words ----------------------------------------------------------------------------------------------------------

class Word(Record):
    """A word of a synthesis, with its time in the job's audio."""
    word: str = Field(description="as written in the text, punctuation included (`$5`, `3rd`, `May.`)")
    start: float = Field(ge=0, description="seconds into the job's audio")
    end: float = Field(ge=0, description="seconds into the job's audio")


class Words(Record):
    """A synthesis' words, in order."""
    words: list[Word]
    aligned: bool = Field(description="whether speech recognition aligned them; false: spread over the speech by "
                                      "length")


class BookWord(Record):
    """A word of a book, with its time."""
    word: str = Field(description="as the book wrote it, punctuation included")
    start: float = Field(ge=0, description="seconds into the chapter's file (`?chapter=N`) or the M4B")
    end: float = Field(ge=0)


class BookWords(Record):
    """A book's (or a chapter's) words, in order."""
    words: list[BookWord]


# -- stats ----------------------------------------------------------------------------------------------------------

class StatsBucket(Record):
    """Five minutes of finished jobs."""
    start: float = Field(description="Unix time")
    jobs: int = Field(ge=0, description="jobs finished")
    failed: int = Field(ge=0, description="of which failed")
    audio_s: float = Field(ge=0, description="seconds of audio made")


class QueueLengths(Record):
    """Messages waiting in the Celery queues."""
    interactive: int = Field(ge=0)
    bulk: int = Field(ge=0)


# A field per status, from the statuses themselves.
StatusCounts = create_model("StatusCounts", __base__=Record, __doc__="Jobs on record in each status.",
                            **{status: (int, Field(ge=0)) for status in STATUSES})


class Stats(Record):
    """Throughput over the last hour."""
    window_s: int = Field(description="the window: the last hour")
    buckets: list[StatsBucket] = Field(description="5-minute buckets, oldest first")
    jobs: int = Field(ge=0)
    audio_s: float = Field(ge=0)
    queues: QueueLengths
    statuses: StatusCounts  # type: ignore[valid-type]
