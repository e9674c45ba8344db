"""Kokoro-FastAPI's POST /dev/captioned_speech: speech with its word timestamps, for clients written against Kokoro.

The request is Kokoro's CaptionedSpeechRequest (its OpenAI speech request with ``stream`` and ``return_timestamps``);
the answer is Kokoro's CaptionedSpeechResponse, ``{"audio": <base64>, "audio_format": <MIME type>, "timestamps":
[{"word", "start_time", "end_time"}]}``: once, with the whole file, or (``stream``, the default) as newline-delimited
JSON objects, each with the next piece of the one encoded stream and the words whose timestamps came since the
last. Times are seconds of the answer's audio.

It is a job like /v1/audio/speech's (source "captioned"), made and followed by the same functions
(web/openai_api.py): the voice lookup, the limits, the speed split between the engine and atempo, the stream of the
job's audio; the words are the job's ``words`` events (chatterbox/align.py), one per text chunk as its audio is
complete.
"""
from __future__ import annotations

import base64
import json
import re
from typing import Any, Iterator

from flask import Blueprint, Response, jsonify, stream_with_context, url_for

from chatterbox import markup
from chatterbox.engines import InvalidRequest
from chatterbox.schemas import requests as schemas
from chatterbox.schemas.records_openai import AUDIO_FORMATS  # Kokoro's names for the formats

from .auth import caller
from .common import Services, error_response, services
from .openai_api import (NEAREST, OPENAI_VOICES, JobAudio, engine_model, json_body, served_models, speech_synthesis,
                         start_speech)

bp = Blueprint("captioned", __name__)

KOKORO_MODEL = "kokoro"  # Kokoro's default model name: our default model
DEFAULT_VOICE = "af_heart"  # Kokoro's default voice: the engine's default, unless CHATTERBOX_OPENAI_VOICES maps it
# Kokoro's voice names: a letter for the language, f or m, "_", a name (af_heart, bm_george); mixed with "+" and
# weighted with "(2)". Like OpenAI's names, they speak in the engine's default voice unless mapped.
_KOKORO_NAME = r"[abefhijpz][fm]_[a-z0-9]+(?:\(\d+(?:\.\d+)?\))?"
KOKORO_VOICE = re.compile(rf"{_KOKORO_NAME}(?:\s*\+\s*{_KOKORO_NAME})*")
# Kokoro's one-letter language codes (its pipelines'), as our languages; anything else is taken as our code.
LANG_CODES = {"a": "en", "b": "en", "e": "es", "f": "fr", "h": "hi", "i": "it", "j": "ja", "p": "pt", "z": "zh"}
NDJSON = "application/x-ndjson"
FLAGS = {"stream": True, "return_timestamps": True, "return_download_link": False, "allow_voice_tags": False,
         "ssml": False}


def kokoro_voice(name: str) -> bool:
    """A voice of OpenAI's or Kokoro's (lowercase), which speaks in the engine's default voice unless mapped."""
    return name in OPENAI_VOICES or KOKORO_VOICE.fullmatch(name) is not None


def _aliased(voice: Any, aliases: dict[str, str | schemas.VoiceAlias] | None) -> tuple[Any, float]:
    """Kokoro's ``voice_aliases`` ({"narrator": "af_bella", "fast": {"voice": "am_adam", "rate": 1.2}}, names in
    any case) applied to ``voice``: (the voice meant, the alias' rate, 1 without one)."""
    for name, target in (aliases or {}).items():
        rate = 1.0
        if isinstance(target, schemas.VoiceAlias):
            target, rate = target.voice, target.rate or 1.0
        if not target.strip():
            raise InvalidRequest(f"voice_aliases.{name} must name a voice", "invalid_type", f"voice_aliases.{name}")
        if isinstance(voice, str) and name.lower() == voice.strip().lower():
            return target.strip(), rate
    return voice, 1.0


def _language(value: Any) -> Any:
    """Kokoro's ``lang_code`` (a, b, e, f, h, i, j, p, z) as our language; other values as they are (en-us, fr)."""
    if isinstance(value, str):
        return LANG_CODES.get(value.strip().lower(), value)
    return value


def parse_captioned(body: Any, svc: Services) -> tuple[dict, Any, float]:
    """Check a captioned speech request; raises InvalidRequest naming the field at fault (Kokoro's names). Returns
    the answer's options ({"format", "stream", "timestamps", "download", "gain"}), the job's synthesis request and
    the tempo left for atempo."""
    request = schemas.CaptionedSpeechRequest.check(body)
    model = request.model or KOKORO_MODEL
    models = [*served_models(svc), KOKORO_MODEL]
    if model not in models:
        raise InvalidRequest(f"unknown model {model[:80]!r}; this server has: {', '.join(models)}", "model_not_found",
                             "model")
    fmt = request.response_format or "mp3"
    flags = {name: default if getattr(request, name) is None else getattr(request, name)
             for name, default in FLAGS.items()}
    if flags["allow_voice_tags"]:
        raise InvalidRequest("[voice:name] tags are not supported here: one voice speaks the whole input",
                             "unsupported", "allow_voice_tags")
    if flags["ssml"] and not markup.is_ssml(request.input):
        raise InvalidRequest("ssml is true, but the input is not SSML: it must start with <speak> (SSML is read "
                             "whenever it does)", "not_ssml", "ssml")
    # normalization_options are accepted and ignored: text here is always normalized, in its language (README).
    gain = 1.0 if request.volume_multiplier is None else request.volume_multiplier
    speed = request.speed or 1.0
    voice, rate = _aliased(request.voice or DEFAULT_VOICE, request.voice_aliases)
    synthesis, tempo = speech_synthesis(
        svc, caller(), text=request.input, voice=voice, fmt=fmt,
        speed=min(schemas.SPEED_MAX, max(schemas.SPEED_MIN, speed * rate)),
        model=None if model == KOKORO_MODEL else engine_model(svc, model), language=_language(request.lang_code),
        language_field="lang_code", builtin=kokoro_voice)
    answer = {"format": fmt, "stream": flags["stream"], "timestamps": flags["return_timestamps"],
              "download": flags["return_download_link"], "gain": gain}
    return answer, synthesis, tempo


def _timestamps(words: list[dict]) -> list[dict]:
    """Our words ({"word", "start", "end"}) as Kokoro's WordTimestamp."""
    return [{"word": w["word"], "start_time": w["start"], "end_time": w["end"]} for w in words]


def _piece(data: bytes, fmt: str, words: list[dict] | None) -> dict:
    return {"audio": base64.b64encode(data).decode("ascii"), "audio_format": AUDIO_FORMATS[fmt],
            "timestamps": None if words is None else _timestamps(words)}


def _lines(stream: JobAudio, fmt: str, timestamps: bool) -> Iterator[str]:
    """Kokoro's stream: a JSON object a line for each piece of audio as it is encoded, with the words that came
    since the previous line ([] without return_timestamps); words that come after the last piece get a line with
    no audio; a job that fails on the way ends it with a line in the error shape."""
    def line(obj: dict) -> str:
        return json.dumps(obj, separators=(",", ":")) + "\n"

    try:
        for data in stream.chunks():
            yield line(_piece(data, fmt, stream.take_words() if timestamps else []))
        if not stream.delivered:
            yield line({"error": stream.error()})
        elif timestamps and (rest := stream.take_words()):
            yield line(_piece(b"", fmt, rest))
    finally:
        stream.close()


@bp.post("/dev/captioned_speech")
def captioned_speech():
    svc = services()
    answer, synthesis, tempo = parse_captioned(json_body(), svc)
    stream, headers = start_speech(svc, synthesis, answer["format"], tempo, source="captioned", gain=answer["gain"])
    if answer["download"]:  # the job's own file: our nearest format, without the atempo part of the speed
        headers["X-Download-Path"] = url_for("api.job_audio", job_id=headers["X-Job-Id"],
                                             format=NEAREST[answer["format"]])
    if answer["stream"]:
        response = Response(stream_with_context(_lines(stream, answer["format"], answer["timestamps"])),
                            mimetype=NDJSON, headers=headers)
        response.call_on_close(stream.close)  # also when the body is never read
        return response
    try:
        data = b"".join(stream.chunks())
    finally:
        stream.close()
    if not stream.delivered:
        status, message, code = stream.failure or (500, "the audio ended early", "stream_failed")
        response = error_response(status, message, code)
    else:
        response = jsonify(_piece(data, answer["format"], stream.take_words() if answer["timestamps"] else None))
    response.headers.update(headers)
    return response
