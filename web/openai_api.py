"""OpenAI-compatible speech: POST /v1/audio/speech, GET /v1/models and GET /v1/models/<id>.

A speech request is an ordinary job (source "openai": listed in GET /jobs, run by the workers, cancellable). Its
response is the job's audio as the worker makes it: a thread follows the job's events and feeds every audio chunk
into one ffmpeg process (chatterbox.streaming), whose output goes to the client as soon as ffmpeg writes it. A
client that goes away before the end cancels the job.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from flask import Blueprint, Response, request, stream_with_context, url_for
from kombu.exceptions import OperationalError

from chatterbox import audio, jobs
from chatterbox.access import SYSTEM, Caller
from chatterbox.engines import Engine, InvalidRequest
from chatterbox.streaming import CONTENT_TYPES, StreamEncoder, wav_samples
from chatterbox.synthesis import SynthesisRequest, parse_request

from .auth import caller
from .common import REDIS_ERRORS, Services, error_response, services
from .fanout import Fanout

log = logging.getLogger(__name__)

bp = Blueprint("openai", __name__)

# OpenAI's model names and the Chatterbox model each stands for (None: the default model): tts-1 is OpenAI's fast
# one, tts-1-hd its best. Where that model is not held, the default one answers: a client written for OpenAI works.
OPENAI_MODELS = {"tts-1": "turbo", "tts-1-hd": "original", "gpt-4o-mini-tts": None}
MODEL_ALIASES = tuple(OPENAI_MODELS)
# The Chatterbox models' own names here, as GET /v1/models lists them.
OWN_NAMES = {"original": "chatterbox", "turbo": "chatterbox-turbo", "multilingual": "chatterbox-multilingual"}
# A fixed date rather than the start time, so that the listing is the same after every restart (2025-01-01).
MODELS_CREATED = 1735689600
OWNED_BY = "chatterbox-jobs"

# OpenAI's built-in voices: each speaks as CHATTERBOX_OPENAI_VOICES maps it, or in the engine's default voice.
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                           "verse", "marin", "cedar"})
# "language" is ours (OpenAI's API has none): the multilingual model's language.
SPEECH_FIELDS = ("model", "input", "voice", "response_format", "speed", "instructions", "stream_format", "language")
STREAM_FORMATS = ("audio", "sse")
SPEED_MIN, SPEED_MAX = 0.25, 4.0
# The job's own file (GET /jobs/<id>/audio) in the closest of our formats.
JOB_FORMATS = {"mp3": "mp3", "opus": "ogg", "aac": "mp3", "flac": "flac", "wav": "wav", "pcm": "wav"}


@dataclass(frozen=True)
class SpeechRequest:
    model: str
    response_format: str  # one of CONTENT_TYPES
    stream_format: str  # "audio" or "sse"
    speed: float
    tempo: float  # the part of speed applied to the audio with atempo (what the engine could not do itself)
    synthesis: SynthesisRequest


def served_models(svc: Services) -> list[str]:
    own = [OWN_NAMES[m] for m in svc.engine.available()] if hasattr(svc.engine, "available") else [svc.engine_name]
    return [*own, *MODEL_ALIASES]


def engine_model(svc: Services, model: str) -> str | None:
    """The model of our engine that answers an OpenAI model name (None: the default one)."""
    if model in OPENAI_MODELS:
        wanted = OPENAI_MODELS[model]
        held = svc.engine.available() if hasattr(svc.engine, "available") else []
        return wanted if wanted in held else None
    return model


def model_card(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": OWNED_BY}


def voice_map(setting: str) -> dict[str, str]:
    """CHATTERBOX_OPENAI_VOICES ("alloy=joe,nova=<saved voice id>") as a dict; entries without "=" are skipped."""
    mapping = {}
    for entry in setting.split(","):
        name, sep, voice = entry.partition("=")
        if sep and name.strip() and voice.strip():
            mapping[name.strip().lower()] = voice.strip()
    return mapping


def resolve_voice(value: Any, engine: Engine, mapping: dict[str, str], caller: Caller) -> tuple[str, Caller]:
    """Our voice id for OpenAI's ``voice`` (a mapped or unmapped OpenAI name, one of ours, or {"id": ...}), and
    whose rights it was found with: the caller's, or for a name CHATTERBOX_OPENAI_VOICES maps, the system's (the
    operator who wrote the mapping gave that voice to every key under that name)."""
    if value is None:
        raise InvalidRequest("voice", f"voice is required: one of OpenAI's voices ({', '.join(sorted(OPENAI_VOICES))}) "
                             "or a voice of GET /voices", "missing_field")
    if isinstance(value, dict):  # OpenAI's custom voice reference
        if set(value) != {"id"} or not isinstance(value["id"], str):
            raise InvalidRequest("voice", 'a voice object must be {"id": "<voice id>"}', "invalid_type")
        return engine.check_voice(value["id"], caller), caller
    if not isinstance(value, str):
        raise InvalidRequest("voice", f"voice must be a string, not {type(value).__name__}", "invalid_type")
    key = value.lower()
    if key in mapping:
        try:
            return engine.check_voice(mapping[key], SYSTEM), SYSTEM
        except InvalidRequest as exc:
            raise InvalidRequest("voice", f"voice {value!r} is mapped to {mapping[key]!r} by CHATTERBOX_OPENAI_VOICES, "
                                 f"which this engine cannot use: {exc.message}", exc.code) from None
    if key in OPENAI_VOICES:
        try:
            return engine.check_voice(value, caller), caller  # a saved voice of ours may carry an OpenAI name
        except InvalidRequest:
            return engine.check_voice(None, caller), caller
    return engine.check_voice(value, caller), caller


def split_speed(engine: Engine, speed: float) -> tuple[dict, float]:
    """(engine params, tempo) for a speed: an engine with ``length_scale`` (Piper) takes as much of it as its range
    allows, since a voice made at that pace sounds more natural; atempo stretches the audio for the rest."""
    spec = next((p for p in engine.params if p.name == "length_scale"), None)
    if spec is None:
        return {}, speed
    scale = min(spec.maximum, max(spec.minimum, 1.0 / speed))
    tempo = speed * scale
    return ({"length_scale": scale} if speed != 1.0 else {}), (1.0 if math.isclose(tempo, 1.0) else tempo)


def parse_speech(body: Any, svc: Services, caller: Caller) -> SpeechRequest:
    """Check an OpenAI speech request; raises InvalidRequest naming the field at fault (OpenAI's names)."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "the request body must be a JSON object", "invalid_body")
    unknown = sorted(set(body) - set(SPEECH_FIELDS))
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field {unknown[0]!r}; known fields: {', '.join(SPEECH_FIELDS)}",
                             "unknown_field")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("model", "model is required", "missing_field")
    if model not in served_models(svc):
        raise InvalidRequest("model", f"unknown model {model!r}; this server has: {', '.join(served_models(svc))}",
                             "model_not_found")
    if body.get("input") is None:
        raise InvalidRequest("input", "input is required", "missing_field")
    fmt = body.get("response_format") or "mp3"
    if not isinstance(fmt, str) or fmt.lower() not in CONTENT_TYPES:
        raise InvalidRequest("response_format", f"unknown response_format {fmt!r}; choose one of "
                             f"{', '.join(CONTENT_TYPES)}", "unknown_format")
    speed = body.get("speed")
    speed = 1.0 if speed is None else speed
    if isinstance(speed, bool) or not isinstance(speed, (int, float)):
        raise InvalidRequest("speed", f"speed must be a number, not {type(speed).__name__}", "invalid_type")
    # Compared as it is: JSON may carry an integer of thousands of digits, which math.isfinite() refuses.
    if (isinstance(speed, float) and not math.isfinite(speed)) or not SPEED_MIN <= speed <= SPEED_MAX:
        raise InvalidRequest("speed", f"speed must be between {SPEED_MIN} and {SPEED_MAX}, not {str(speed)[:40]}",
                             "out_of_range")
    stream_format = body.get("stream_format") or "audio"
    if stream_format not in STREAM_FORMATS:
        raise InvalidRequest("stream_format", f"unknown stream_format {stream_format!r}; choose one of "
                             f"{', '.join(STREAM_FORMATS)}", "unknown_stream_format")
    # Accepted for compatibility and otherwise ignored: no engine here takes a style prompt (see the README).
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise InvalidRequest("instructions", "instructions must be a string", "invalid_type")
    engine = svc.engine.for_model(engine_model(svc, model), body.get("language"))
    voice, rights = resolve_voice(body.get("voice"), engine, voice_map(svc.settings.openai_voices), caller)
    params, tempo = split_speed(engine, float(speed))
    try:
        # Our own checks, so that the limits and their messages are those of POST /synthesize.
        synthesis = parse_request({"text": body["input"], "voice": voice, "format": JOB_FORMATS[fmt.lower()],
                                   "params": params, "model": engine.model, "language": engine.language},
                                  engine, svc.settings, rights)
    except InvalidRequest as exc:
        if exc.field != "text":
            raise
        raise InvalidRequest("input", "input" + exc.message[4:] if exc.message.startswith("text") else exc.message,
                             exc.code) from None
    return SpeechRequest(model=model, response_format=fmt.lower(), stream_format=stream_format, speed=float(speed),
                         tempo=tempo, synthesis=synthesis)


def _job_failure(job_id: str, event: dict) -> tuple[int, str, str]:
    """(HTTP status, message, code) of a job that ended without its audio."""
    if event.get("status") == "cancelled":
        return 409, f"job {job_id} was cancelled", "job_cancelled"
    return 500, f"job {job_id} failed: {event.get('error') or 'unknown error'}", "job_failed"


class JobAudio:
    """One job's audio while it is made: a thread follows the job's events and feeds each chunk to one encoder;
    the response body reads what the encoder writes."""

    def __init__(self, fanout: Fanout, job_id: str, fmt: str, tempo: float, gap_s: float, stall_s: float):
        self.fanout, self.store = fanout, fanout.store
        self.job_id, self.format, self.tempo = job_id, fmt, tempo
        self.gap_s, self.stall_s = gap_s, stall_s
        self.encoder: StreamEncoder | None = None  # made with the first chunk, at that chunk's sample rate
        self.failure: tuple[int, str, str] | None = None  # why the job's audio ended early, if it did
        self.fed_all = False  # every chunk of the job went into the encoder
        self.delivered = False  # the client read the stream to its end
        self._started = threading.Event()  # set at the first chunk, or when the job ends without one
        self._stop = threading.Event()
        self._closed = False
        self._last_event = time.monotonic()
        self._thread = threading.Thread(target=self._pump, name=f"speech-{job_id[:8]}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_started(self, timeout: float) -> bool:
        return self._started.wait(timeout)

    def _should_stop(self) -> bool:
        # A worker that died while it was the only one is never reaped: do not wait for its job forever.
        return self._stop.is_set() or time.monotonic() - self._last_event > self.stall_s

    def _pump(self) -> None:
        last_index, last_text = -1, 0
        try:
            for event in self.fanout.follow(self.job_id, stop=self._should_stop):
                self._last_event = time.monotonic()
                kind = event["type"]
                if kind == "chunk":
                    if event["index"] <= last_index:
                        continue  # a run again after its worker died repeats the chunks already sent
                    data = self.store.get_chunk(self.job_id, event["index"])
                    if data is None:
                        raise RuntimeError(f"chunk {event['index']} is not in Redis")
                    samples, rate = wav_samples(data)
                    if self.encoder is None:
                        self.encoder = StreamEncoder(self.format, rate, self.tempo)
                    elif event["text_index"] > last_text:  # the silence a job puts between its text chunks
                        self.encoder.write(audio.silence(self.gap_s * (event["text_index"] - last_text), rate))
                    self.encoder.write(samples)
                    last_index, last_text = event["index"], event["text_index"]
                    self._started.set()
                elif kind == "done" or (kind == "progress" and event.get("chunks_total")
                                        and event.get("chunks_done") == event["chunks_total"]):
                    # Every chunk is out: what remains for the worker (its own file) is not for this stream.
                    self.fed_all = True
                    break
                elif kind == "error":
                    self.failure = _job_failure(self.job_id, event)
                    break
            else:
                if not self._stop.is_set():
                    self.failure = (504, f"job {self.job_id} made no progress for {self.stall_s:.0f} s "
                                    "(CHATTERBOX_WAIT_TIMEOUT_S); it was cancelled", "job_stalled")
        except Exception as exc:
            if isinstance(exc, REDIS_ERRORS):
                log.warning("lost Redis while streaming the audio of job %s: %s", self.job_id, exc)
                self.failure = (503, f"Redis is not reachable ({exc}); the audio of job {self.job_id} cannot be "
                                "followed", "redis_unavailable")
            elif not self._stop.is_set():  # after a stop, errors are only the aborted encoder's
                log.exception("streaming the audio of job %s failed", self.job_id)
                self.failure = (500, f"streaming the audio of job {self.job_id} failed: {exc}", "stream_failed")
        finally:
            encoder = self.encoder
            if encoder is not None:
                try:
                    # A stopped stream is dropped; otherwise what was fed ends as a valid stream.
                    encoder.abort() if self._stop.is_set() else encoder.end()
                except Exception:
                    log.exception("ending the encoder of job %s failed", self.job_id)
            self._started.set()

    def _chunks(self) -> Iterator[bytes]:
        """The encoded stream as ffmpeg writes it; then records whether it was complete."""
        assert self.encoder is not None
        # Blocks until ffmpeg writes or ends; 10 ms more gather the packets it writes in a burst.
        while (data := self.encoder.read(linger=0.01)) is not None:
            if data:
                yield data
        self._thread.join(timeout=5)  # it has ended the encoder, unless ffmpeg ended on its own
        if self._thread.is_alive():
            self.failure = self.failure or (500, "the encoder stopped before the job's audio ended", "encode_failed")
        try:
            self.encoder.close()  # reaps ffmpeg; raises if it failed
        except Exception as exc:
            log.error("encoding job %s as %s failed: %s", self.job_id, self.format, exc)
            self.failure = self.failure or (500, f"encoding failed: {exc}", "encode_failed")
        if self.failure is not None:
            log.warning("the audio stream of job %s ended early: %s", self.job_id, self.failure[1])
        self.delivered = self.fed_all and self.failure is None

    def audio_body(self) -> Iterator[bytes]:
        try:
            yield from self._chunks()
        finally:
            self.close()

    def sse_body(self, input_chars: int) -> Iterator[str]:
        """OpenAI's speech events: speech.audio.delta with base64 audio, then speech.audio.done (or error)."""
        try:
            for data in self._chunks():
                yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
            if self.delivered:
                # There is no tokenizer here: input_tokens counts characters, and no tokens are generated.
                yield _sse({"type": "speech.audio.done",
                            "usage": {"input_tokens": input_chars, "output_tokens": 0, "total_tokens": input_chars}})
            else:
                _, message, code = self.failure or (500, "the stream ended early", "stream_failed")
                yield _sse({"type": "error", "error": {"message": message, "type": "server_error", "param": None,
                                                       "code": code}})
        finally:
            self.close()

    def close(self) -> None:
        """The response is over, read to its end or not: a job whose listener left early is cancelled."""
        if self._closed:
            return
        self._closed = True
        if self.delivered:
            return
        self._stop.set()
        if self.encoder is not None:
            self.encoder.abort()
        try:
            status = self.store.cancel(self.job_id)  # a no-op for a job that has already ended
        except REDIS_ERRORS as exc:
            log.warning("could not cancel job %s after its stream ended early: %s", self.job_id, exc)
            return
        log.info("the stream of job %s ended before its audio did; the job is now %s", self.job_id, status)


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event)}\n\n"


@bp.post("/v1/audio/speech")
def speech():
    svc = services()
    if not request.is_json:
        return error_response(415, "send the request as JSON (Content-Type: application/json)",
                              "unsupported_media_type")
    body = request.get_json(silent=True)
    if body is None:
        return error_response(400, "the request body is not valid JSON", "invalid_json")
    req = parse_speech(body, svc, caller())
    job_id = jobs.new_job_id()
    svc.store.create(job_id, engine=svc.engine_name, source="openai", **req.synthesis.as_dict(), owner=caller().id)
    try:
        svc.enqueue(job_id)
    except OperationalError as exc:
        svc.store.finish(job_id, "failed", error=f"could not be queued: {exc}")
        raise
    stream = JobAudio(svc.fanout, job_id, req.response_format, req.tempo, svc.settings.chunk_gap_s,
                      svc.settings.wait_timeout_s)
    stream.start()
    headers = {"X-Job-Id": job_id, "X-Job-Url": url_for("api.job_status", job_id=job_id)}
    # The status must be chosen before the first byte: wait for the job's first audio (or its end).
    stream.wait_started(svc.settings.wait_timeout_s + 5)
    if stream.encoder is None:
        stream.close()
        status, message, code = stream.failure or (504, f"job {job_id} made no audio in time; it was cancelled",
                                                   "job_stalled")
        response = error_response(status, message, code)
        response.headers.update(headers)
        return response
    # Proxies such as nginx would otherwise hold the stream back until their buffer fills.
    headers.update({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    if req.stream_format == "sse":
        response = Response(stream_with_context(stream.sse_body(len(req.synthesis.text))),
                            mimetype="text/event-stream", headers=headers)
    else:
        response = Response(stream_with_context(stream.audio_body()), content_type=CONTENT_TYPES[req.response_format],
                            headers=headers)
    # Runs even if the body is never iterated (a generator that never started has no finally to run).
    response.call_on_close(stream.close)
    return response


@bp.get("/v1/models")
def list_models():
    return {"object": "list", "data": [model_card(m) for m in served_models(services())]}


@bp.get("/v1/models/<model_id>")
def get_model(model_id: str):
    if model_id not in served_models(services()):
        return error_response(404, f"the model {model_id!r} does not exist; see GET /v1/models", "model_not_found",
                              "model")
    return model_card(model_id)
