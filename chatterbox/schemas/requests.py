"""Every request body the API takes, as models: they check a body's shape (fields, JSON types, closed sets and
ranges that do not depend on the server) and give ``/openapi.json`` its request schemas.

What only the server can check (a voice this key may use, the engine's parameters, the text's markup and length
in spoken characters, a model some worker holds) is checked after the shape, by the code that owns those facts;
the document's copy of those limits is filled in by ``web/openapi.py`` from the same settings.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BeforeValidator, Field, create_model

from .. import audio
from ..books.assemble import CHAPTER_FORMATS
from ..books.reader import FORMATS as BOOK_FORMATS
from ..streaming import CONTENT_TYPES as SPEECH_TYPES, OUTPUT_RATE
from ..voices import MAX_TAGS, NAME as VOICE_NAME
from .base import Form, Request
from .lexicon_entry import KINDS, MAX_SAY, MAX_TERM, LexiconEntryRequest, LexiconImportEntry

# Requests are strict: a float field takes a JSON integer too, never a string or a boolean.
Number = float
SPEED_MIN, SPEED_MAX = 0.25, 4.0  # OpenAI's range for ``speed``
VOLUME_MIN, VOLUME_MAX = 0.0, 10.0  # Kokoro's volume_multiplier: silence to a lot


def _lower(value: Any) -> Any:
    """Formats are taken in any case ("MP3"), as clients send them."""
    return value.lower() if isinstance(value, str) else value


def _choice(values: Any) -> Any:
    """One of ``values``, any case."""
    return Annotated[Literal[tuple(values)], BeforeValidator(_lower)]  # type: ignore[misc]


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


AudioFormat = _choice(audio.FORMATS)
SpeechFormat = _choice(SPEECH_TYPES)
ChapterFormat = _choice(CHAPTER_FORMATS)

TEXT_HELP = ("what to say; it must contain a letter or digit. Plain text may hold pauses (`[pause:0.5s]`); a text "
             "that starts with `<speak>` is SSML (speak, p, s, break, sub, say-as, prosody, phoneme). The limit "
             "counts the spoken characters")
VOICE_HELP = "a voice of `GET /voices`, or a saved voice's id or unique name; left out: the engine's default"
MODEL_HELP = ("the Chatterbox model: `original`, `turbo` (fast, English, paralinguistic tags) or `multilingual` "
              "(23 languages); left out: the default, or `multilingual` for a language other than English. A model "
              "no worker holds is refused (`model_unavailable`)")
LANGUAGE_HELP = ("the language of the text, a code of `GET /engine`'s models (`de`, `fr`, `ja`, ...; `de-DE` is "
                 "taken as `de`); left out: English")
PARAMS_HELP = "the engine's parameters (`GET /engine` lists them with their ranges); left out: the defaults"


class SynthesizeRequest(Request):
    """``POST /synthesize`` as JSON."""
    codes: ClassVar[dict[str, str]] = {"text": "text_empty", "format": "unknown_format"}
    model_config = {"json_schema_extra": {"example": {"text": "Hello there.", "format": "mp3"}}}

    text: str = Field(description=TEXT_HELP, min_length=1)
    voice: Optional[str] = Field(None, description=VOICE_HELP)
    format: Annotated[Optional[AudioFormat], BeforeValidator(_blank_is_none)] = Field(
        None, description="the audio format (`ogg`: Opus); left out: `wav`")
    params: Optional[dict[str, Any]] = Field(None, description=PARAMS_HELP)
    model: Optional[str] = Field(None, description=MODEL_HELP)
    language: Optional[str] = Field(None, description=LANGUAGE_HELP)


class SynthesizeForm(Form):
    """``POST /synthesize`` as multipart: a one-off voice from a reference clip. Once ``params`` is read, the rest
    is checked as the JSON body is."""
    codes: ClassVar[dict[str, str]] = {"text": "text_empty", "format": "unknown_format"}
    text: str = Field(description="what to say", min_length=1)
    audio_prompt: bytes = Field(description="the reference clip of the one-off voice (any common audio format, 5 to "
                                            "60 s of speech); it is not kept", json_schema_extra={"format": "binary"})
    voice: str = Field("", description=VOICE_HELP)
    format: AudioFormat = Field("wav", description="the audio format")
    params: str = Field("", description="the engine's parameters as a JSON object (see `EngineParams`)")
    model: str = Field("", description=MODEL_HELP)
    language: str = Field("", description=LANGUAGE_HELP)


class PlanRequest(Request):
    text: str = Field(description="the text to split")


class VoicePatch(Request):
    codes: ClassVar[dict[str, str]] = {"name": "invalid_name", "tags": "invalid_tags"}
    model_config = {"json_schema_extra": {"example": {"name": "Narrator", "tags": ["calm", "deep"]}}}

    # The name's rule is the voice library's to check (its message says the rule): the document says it too.
    name: str = Field(None, description="1 to 64 letters, digits, spaces, dots, dashes or apostrophes, starting with "
                                        "a letter or digit; unique", json_schema_extra={"pattern": VOICE_NAME.pattern})
    description: Optional[str] = Field(None, description="cut at 500 characters")
    tags: Union[Annotated[list[Annotated[str, Field(min_length=1, max_length=32)]], Field(max_length=MAX_TAGS)],
                str, None] = Field(None, description="a list, or comma-separated")


class BookChapter(Request):
    title: str = ""
    text: str = Field(description="paragraphs separated by blank lines")


class BookLexiconEntry(Request):
    """An entry as ``PUT /lexicon`` takes it (see Lexicon)."""
    term: str = Field(description="matched as a whole word", min_length=1, max_length=MAX_TERM)
    say: str = Field(None, description="what is said in its place", min_length=1, max_length=MAX_SAY)
    phonemes: str = Field(None, description="IPA for engines that take phonemes (Piper); others say `say`")
    case_sensitive: bool = Field(False, description="match the term's case exactly (else any case)")
    kind: Literal[tuple(KINDS)] = None  # type: ignore[valid-type]


class BookRequest(Request):
    """``POST /audiobooks`` (and ``/audiobooks/parse``) as JSON: ``text`` or ``chapters`` is required."""
    model_config = {"json_schema_extra": {"example": {"text": "# Chapter One\n\nIt was a quiet morning.",
                                                      "source_format": "md"}}}
    codes: ClassVar[dict[str, str]] = {"format": "unknown_format", "source_format": "unsupported_format",
                                       "chapters": "invalid_chapters"}

    text: str = Field(None, description="the whole book, plain text or Markdown (`source_format`); chapters are "
                                        "found in it")
    source_format: Optional[Literal["txt", "md"]] = Field(None, description="left out: `txt`")
    chapters: list[BookChapter] = Field(None, description="reviewed chapters (from `POST /audiobooks/parse`); used "
                                                          "instead of `text`", min_length=1)
    title: Optional[str] = Field(None, description="the book's title (else its own, or the file's name)")
    author: Optional[str] = None
    language: Optional[str] = Field(None, description="the book's language (else its own, from the EPUB or front "
                                                      "matter): a language other than English is read by the "
                                                      "multilingual model")
    model: Optional[str] = Field(None, description=MODEL_HELP)
    voice: Optional[str] = Field(None, description=VOICE_HELP)
    format: Optional[ChapterFormat] = Field(None, description="the chapter files' format (`ogg`: Opus); the M4B is "
                                                              "always made")
    params: Optional[dict[str, Any]] = Field(None, description=PARAMS_HELP)
    lexicon: Any = Field(None, description="the book's own pronunciation entries (a list of `BookLexiconEntry`, or "
                                           "`GET /lexicon`'s answer), on top of the key's lexicon: a book entry wins "
                                           "over the key's for the same term (in any case). Kept with the book; a "
                                           "bad entry is a 400 naming it (`lexicon[1].say`)",
                         json_schema_extra={"nullable": True, "oneOf": [
                             {"type": "array", "items": {"$ref": "#/components/schemas/BookLexiconEntry"}},
                             {"type": "object"}]})


class BookForm(Form):
    """``POST /audiobooks`` (and ``/audiobooks/parse``) as multipart: a book file."""
    codes: ClassVar[dict[str, str]] = {"format": "unknown_format", "source_format": "unsupported_format"}
    file: bytes = Field(description="the book: `.txt` (UTF-8 or a legacy encoding), `.md`, or `.epub` 2 or 3",
                        json_schema_extra={"format": "binary"})
    source_format: Literal[tuple(BOOK_FORMATS)] = Field(  # type: ignore[valid-type]
        None, description="the file's format, when its name does not say")
    title: str = Field(None, description="the book's title (else its own, or the file's name)")
    author: str = None
    language: str = Field(None, description="the book's language (else its own)")
    model: str = Field(None, description=MODEL_HELP)
    voice: str = Field(None, description=VOICE_HELP)
    format: ChapterFormat = Field(None, description="the chapter files' format (`ogg`: Opus); the M4B is always made")
    params: str = Field(None, description="the engine's parameters as a JSON object (see `EngineParams`)")
    lexicon: str = Field(None, description="the book's own pronunciation entries as a JSON list (see `BookRequest`)")


class CloneForm(Form):
    """``POST /voice-clone``: a recording to clone (multipart)."""
    file: bytes = Field(description="the recording (any common audio format; `audio` is accepted as the field's "
                                    "name too)", json_schema_extra={"format": "binary"})
    # The name's rule is the voice library's to check (its message says the rule): the document says it too.
    name: str = Field(description="the new voice's unique name", json_schema_extra={"pattern": VOICE_NAME.pattern})
    description: str = Field(None, description="cut at 500 characters")
    tags: str = Field(None, description="comma-separated, at most 16 of up to 32 characters")
    exaggeration: float = Field(0.5, ge=0.25, le=2.0, description="emotion intensity the voice is prepared with")


class VoiceImportForm(Form):
    """``POST /voices/import``: an exported voice (``?name=`` renames it too)."""
    file: bytes = Field(description="the exported voice", json_schema_extra={"format": "binary"})
    name: str = Field(None, description="a new name for it", json_schema_extra={"pattern": VOICE_NAME.pattern})


class LoginForm(Form):
    ignored: ClassVar[tuple[str, ...]] = ()
    key: str = Field(description="the API key")
    next: str = Field(None, description="where to go after signing in (a path on this site)")
    csrf_token: str = Field(description="the token in the form of `GET /login`, which sets the cookie it is checked "
                                        "against")


class LexiconImport(Request):
    """``PUT /lexicon``: the whole lexicon (what ``GET /lexicon`` answers imports as it is)."""
    model_config = {"json_schema_extra": {"example": {"entries": [{"term": "SQL", "say": "sequel",
                                                                   "case_sensitive": True}]}}}
    entries: list[LexiconImportEntry]
    max_entries: int = Field(None, description="ignored (`GET /lexicon` answers it)")


class LexiconPreviewRequest(Request):
    model_config = {"json_schema_extra": {"example": {"text": "Dr. Nguyen"}}}
    text: str = Field(description="the text, as a job would take it", min_length=1)


class VoiceId(Request):
    id: str = Field(description="a voice of `GET /voices`")


class SpeechRequest(Request):
    """OpenAI's ``POST /v1/audio/speech``."""
    codes: ClassVar[dict[str, str]] = {"response_format": "unknown_format", "stream_format": "unknown_stream_format"}
    model_config = {"json_schema_extra": {"example": {"model": "tts-1", "input": "Hello there.", "voice": "alloy",
                                                      "response_format": "mp3"}}}

    model: str = Field(description="a model of `GET /v1/models`: `tts-1` is Chatterbox Turbo and `tts-1-hd` the "
                                   "original where they are held (else the default model), or a model's own name")
    input: str = Field(description="the text to say; it must contain a letter or digit", min_length=1)
    voice: Union[str, VoiceId, None] = Field(
        None, description="one of OpenAI's voices: as `CHATTERBOX_OPENAI_VOICES` maps it, else the engine's default "
                          "voice; or a voice of `GET /voices` (a saved voice by id or name)")
    response_format: Annotated[Optional[SpeechFormat], BeforeValidator(_blank_is_none)] = Field(
        None, description=f"the audio format, any case (`opus`: Opus in Ogg; `aac`: AAC in ADTS; `pcm`: raw 16-bit "
                          f"little-endian mono at {OUTPUT_RATE} Hz); left out: `mp3`")
    speed: Optional[Number] = Field(None, ge=SPEED_MIN, le=SPEED_MAX, description="tempo: the engine's own pace as "
                                    "far as it goes, then time-stretched; left out: 1")
    instructions: Optional[str] = Field(None, description="accepted for compatibility and ignored: no engine here "
                                                          "takes a style prompt")
    stream_format: Annotated[Optional[Literal["audio", "sse"]], BeforeValidator(_blank_is_none)] = Field(
        None, description="`audio`: the audio bytes as they are made; `sse`: server-sent events; left out: `audio`")
    language: Optional[str] = Field(None, description="ours, not OpenAI's: " + LANGUAGE_HELP)


class VoiceAlias(Request):
    voice: str = Field(min_length=1)
    rate: Optional[Number] = Field(None, ge=SPEED_MIN, le=SPEED_MAX)


class CaptionedSpeechRequest(Request):
    """Kokoro-FastAPI's ``POST /dev/captioned_speech``."""
    codes: ClassVar[dict[str, str]] = {"response_format": "unknown_format"}
    model_config = {"json_schema_extra": {"example": {"model": "kokoro", "input": "Hello there.",
                                                      "voice": "af_heart", "response_format": "mp3",
                                                      "stream": False}}}

    model: Optional[str] = Field(None, description="Kokoro's `kokoro` (the default model) or a model of "
                                                   "`GET /v1/models`")
    input: str = Field(description="the text to say (plain, with `[pause:1s]`, or SSML); it must contain a letter "
                                   "or digit", min_length=1)
    voice: Optional[str] = Field(None, description="OpenAI's or Kokoro's voice names (`af_heart`, `bm_george`, "
                                                   "`af_bella+af_sky`): as `CHATTERBOX_OPENAI_VOICES` maps them, else "
                                                   "the engine's default voice; or a voice of `GET /voices`")
    response_format: Annotated[Optional[SpeechFormat], BeforeValidator(_blank_is_none)] = Field(
        None, description="as `/v1/audio/speech`'s; left out: `mp3`")
    speed: Optional[Number] = Field(None, ge=SPEED_MIN, le=SPEED_MAX, description="as `/v1/audio/speech`'s")
    stream: Optional[bool] = Field(None, description="true (the default): newline-delimited JSON, a "
                                         "`CaptionedSpeechResponse` per piece of audio as it is made; false: one, "
                                         "with the whole file")
    return_timestamps: Optional[bool] = Field(None, description="false: `timestamps` is null (`[]` in each "
                                                    "streamed piece); left out: true")
    return_download_link: Optional[bool] = Field(None, description="true: `X-Download-Path` names the job's "
                                                       "own file (in our nearest format, without the atempo part of "
                                                       "the speed)")
    lang_code: Optional[str] = Field(None, description="Kokoro's language letter (`a`, `b`: English; `e`, `f`, `h`, "
                                                       "`i`, `j`, `p`, `z`) or " + LANGUAGE_HELP)
    volume_multiplier: Optional[Number] = Field(None, ge=VOLUME_MIN, le=VOLUME_MAX,
                                                description="a factor on the samples, clipped at full scale")
    normalization_options: Optional[dict[str, bool]] = Field(
        None, description="Kokoro's text options: accepted and ignored (text is always normalized, in its language)")
    allow_voice_tags: Optional[bool] = Field(None, description="only false: one voice speaks the whole input",
                                             json_schema_extra={"enum": [False, None]})
    ssml: Optional[bool] = Field(None, description="true: the input must be SSML (`<speak>`), which is read "
                                                         "whenever it is")
    voice_aliases: Optional[dict[str, Union[Annotated[str, Field(min_length=1)], VoiceAlias]]] = Field(
        None, description="names for voices, any case: `{\"narrator\": \"joe\"}`, or with a rate that multiplies "
                          "`speed`: `{\"fast\": {\"voice\": \"joe\", \"rate\": 1.2}}`")


def engine_params_model(described: dict) -> type[Request]:
    """The engine's parameters as a model (``GET /engine`` lists them): every model's parameters in the widest of
    their ranges (Chatterbox's three models each take some, each in its own range; the job's own model checks its
    own). A name not listed is refused; null means the default, as leaving it out does."""
    specs: dict[str, dict] = {}
    for spec in [*described["params"], *(p for m in described.get("models", []) for p in m["params"])]:
        if spec["name"] in specs:
            known = specs[spec["name"]]
            spec = {**known, "min": min(known["min"], spec["min"]), "max": max(known["max"], spec["max"])}
        specs[spec["name"]] = spec
    fields = {spec["name"]: (Optional[int if spec["type"] == "int" else float],
                             Field(spec["default"], ge=spec["min"], le=spec["max"], description=spec["help"]))
              for spec in specs.values()}
    return create_model("EngineParams", __base__=Request, __doc__=f"The {described['name']} engine's parameters "
                        "(`GET /engine` lists them); left out: the defaults", **fields)


REQUESTS: tuple[type[Request], ...] = (
    SynthesizeRequest, SynthesizeForm, PlanRequest, VoicePatch, CloneForm, VoiceImportForm, BookRequest, BookForm,
    BookLexiconEntry, LexiconEntryRequest, LexiconImport, LexiconPreviewRequest, LoginForm, SpeechRequest,
    CaptionedSpeechRequest)
