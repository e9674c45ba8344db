"""OpenAI-compatible speech: POST /v1/audio/speech, GET /v1/models and GET /v1/models/<id>.

A speech request is an ordinary job (source "openai": listed in GET /jobs, run by the workers, cancellable). Its
response is the job's audio as the worker makes it: a thread follows the job's events and feeds every audio chunk
into one ffmpeg process (chatterbox.streaming), whose output goes to the client as soon as ffmpeg writes it. A
client that goes away before the end cancels the job.

The pieces a request goes through (its JSON body, the format, the speed, the voice, the job's synthesis request,
the job submitted and followed until its first audio) are functions of their own: web/captioned.py (Kokoro's
POST /dev/captioned_speech) is made of the same ones.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from flask import Blueprint, Response, abort, request, stream_with_context, url_for
from kombu.exceptions import OperationalError

from chatterbox import audio, jobs, lexicon as lexicon_mod
from chatterbox.access import SYSTEM, Caller
from chatterbox.engines import Engine, InvalidRequest
from chatterbox.schemas import requests as schemas
from chatterbox.streaming import CONTENT_TYPES, StreamEncoder, wav_samples
from chatterbox.synthesis import SynthesisRequest, parse_request, speech_plan

from .auth import caller
from .common import REDIS_ERRORS, Services, error_response, services
from .fanout import Fanout
from .lexicon import caller_entries

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
# The job's own file (GET /jobs/<id>/audio) in the closest of our formats.
# The job's own file, in our format nearest to each of OpenAI's: what GET /jobs/<id>/audio?format= makes of it.
NEAREST = {"mp3": "mp3", "opus": "ogg", "aac": "mp3", "flac": "flac", "wav": "wav", "pcm": "wav"}


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


def resolve_voice(value: Any, engine: Engine, mapping: dict[str, str], caller: Caller,
                  builtin: Callable[[str], bool] = OPENAI_VOICES.__contains__) -> tuple[str, Caller]:
    """Our voice id for OpenAI's ``voice`` (a mapped or unmapped OpenAI name, one of ours, or {"id": ...}), and
    whose rights it was found with: the caller's, or for a name CHATTERBOX_OPENAI_VOICES maps, the system's (the
    operator who wrote the mapping gave that voice to every key under that name). ``builtin`` says which other
    API's voice names (lowercase) speak, unmapped, in the engine's default voice: OpenAI's here."""
    if value is None:
        raise InvalidRequest(f"voice is required: one of OpenAI's voices ({', '.join(sorted(OPENAI_VOICES))}) "
                             "or a voice of GET /voices", "missing_field", "voice")
    if isinstance(value, dict):  # OpenAI's custom voice reference
        if set(value) != {"id"} or not isinstance(value["id"], str):
            raise InvalidRequest('a voice object must be {"id": "<voice id>"}', "invalid_type", "voice")
        return engine.check_voice(value["id"], caller), caller
    if not isinstance(value, str):
        raise InvalidRequest(f"voice must be a string, not {type(value).__name__}", "invalid_type", "voice")
    key = value.lower()
    if key in mapping:
        try:
            return engine.check_voice(mapping[key], SYSTEM), SYSTEM
        except InvalidRequest as exc:
            raise InvalidRequest(f"voice {value!r} is mapped to {mapping[key]!r} by CHATTERBOX_OPENAI_VOICES, "
                                 f"which this engine cannot use: {exc.message}", exc.code, "voice") from None
    if builtin(key):
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


def json_body() -> Any:
    """The request's JSON body; aborts with 415 (not JSON) or 400 (not valid JSON) in the one error shape."""
    if not request.is_json:
        abort(error_response(415, "send the request as JSON (Content-Type: application/json)",
                             "unsupported_media_type"))
    body = request.get_json(silent=True)
    if body is None:
        abort(error_response(400, "the request body is not valid JSON", "invalid_json"))
    return body


def speech_synthesis(svc: Services, caller: Caller, *, text: Any, voice: Any, fmt: str, speed: float,
                     model: str | None, language: Any, language_field: str = "language",
                     builtin: Callable[[str], bool] = OPENAI_VOICES.__contains__) -> tuple[SynthesisRequest, float]:
    """The job's synthesis request for a speech request of another API (its text is ``input``, its language
    ``language_field``), and the tempo left for atempo; raises InvalidRequest naming that API's fields. ``model``
    is our engine's model (engine_model()); ``voice`` goes through resolve_voice()."""
    def renamed(exc: InvalidRequest) -> InvalidRequest:
        if exc.field == "text":
            message = "input" + exc.message[4:] if exc.message.startswith("text") else exc.message
            return InvalidRequest(message, exc.code, "input", exc.status)
        if exc.field == "language" and language_field != "language":
            return InvalidRequest(exc.message, exc.code, language_field, exc.status)
        return exc

    try:
        engine = svc.engine.for_model(model, language)
        voice_id, rights = resolve_voice(voice, engine, voice_map(svc.settings.openai_voices), caller, builtin)
        params, tempo = split_speed(engine, speed)
        # Our own checks, so that the limits and their messages are those of POST /synthesize.
        # The answer is encoded once, as it streams, in the format asked for; the worker keeps the job's file
        # as WAV (written, not encoded), which GET /jobs/<id>/audio?format= encodes only if someone asks.
        synthesis = parse_request({"text": text, "voice": voice_id, "format": "wav", "params": params,
                                   "model": engine.model, "language": engine.language}, engine, svc.settings, rights,
                                  caller_entries())
    except InvalidRequest as exc:
        out = renamed(exc)
        if out is exc:
            raise
        raise out from None
    return synthesis, tempo


def parse_speech(body: Any, svc: Services, caller: Caller) -> SpeechRequest:
    """Check an OpenAI speech request; raises InvalidRequest naming the field at fault (OpenAI's names)."""
    request = schemas.SpeechRequest.check(body)
    if request.model not in served_models(svc):
        raise InvalidRequest(f"unknown model {request.model!r}; this server has: {', '.join(served_models(svc))}",
                             "model_not_found", "model")
    fmt, speed, stream_format = request.response_format or "mp3", request.speed or 1.0, request.stream_format or "audio"
    voice = request.voice.model_dump() if isinstance(request.voice, schemas.VoiceId) else request.voice
    synthesis, tempo = speech_synthesis(svc, caller, text=request.input, voice=voice, fmt=fmt, speed=speed,
                                        model=engine_model(svc, request.model), language=request.language)
    return SpeechRequest(model=request.model, response_format=fmt, stream_format=stream_format, speed=speed,
                         tempo=tempo, synthesis=synthesis)


def _job_failure(job_id: str, event: dict) -> tuple[int, str, str]:
    """(HTTP status, message, code) of a job that ended without its audio."""
    if event.get("status") == "cancelled":
        return 409, f"job {job_id} was cancelled", "job_cancelled"
    return 500, f"job {job_id} failed: {event.get('error') or 'unknown error'}", "job_failed"


def planned_gaps(svc: Services, job_id: str) -> Callable[[], list[float]]:
    """The silence after each text chunk of a job (CHATTERBOX_CHUNK_GAP_S, or the pause its text asks for there):
    from the plan kept in its record (a job queued by an older version: planned from its text and the lexicon its
    worker took), so that a stream is the job's audio to the sample and its word timestamps fall where they are
    said."""
    def gaps() -> list[float]:
        job = svc.store.get(job_id) or {}
        if job.get("plan"):  # planned once, when it was asked for
            return [float(gap) for _, gap, _ in job["plan"]]
        engine = svc.engine.for_model(job.get("model") or None, job.get("language") or None)
        plan = speech_plan(engine, job["text"], {}, svc.settings, lexicon_mod.loads(job.get("lexicon")))
        return [s.gap_s for s in plan]
    return gaps


class JobAudio:
    """One job's audio while it is made: a thread follows the job's events and feeds each chunk to one encoder;
    the response body reads what the encoder writes. The job's word timestamps (its ``words`` events) are kept
    too, in seconds of this stream (after the tempo change), for take_words()."""

    def __init__(self, fanout: Fanout, job_id: str, fmt: str, tempo: float, gap_s: float, stall_s: float,
                 gaps: Callable[[], list[float]] | None = None, gain: float = 1.0):
        """``gap_s``: the silence between text chunks, unless ``gaps()`` (planned_gaps()) says what each one is;
        ``gain``: a factor on the samples (clipped at full scale)."""
        self.fanout, self.store = fanout, fanout.store
        self.job_id, self.format, self.tempo, self.gain = job_id, fmt, tempo, gain
        self.gap_s, self.stall_s = gap_s, stall_s
        self._plan_gaps, self._gaps = gaps, None  # the job's gaps, asked for once, when the first is needed
        self.encoder: StreamEncoder | None = None  # made with the first chunk, at that chunk's sample rate
        self.failure: tuple[int, str, str] | None = None  # why the job's audio ended early, if it did
        self.fed_all = False  # every chunk of the job went into the encoder
        self.delivered = False  # the client read the stream to its end
        self._started = threading.Event()  # set at the first chunk, or when the job ends without one
        self._stop = threading.Event()
        self._closed = False
        self._last_event = time.monotonic()
        self._words: list[dict] = []  # words not yet taken
        self._words_lock = threading.Lock()
        self._worded: set[int] = set()  # text chunks whose words came (a run again may repeat a words event)
        self._thread = threading.Thread(target=self._pump, name=f"speech-{job_id[:8]}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_started(self, timeout: float) -> bool:
        return self._started.wait(timeout)

    def take_words(self) -> list[dict]:
        """The words ({"word", "start", "end"}, seconds of this stream) that came since the last call, in order."""
        with self._words_lock:
            words, self._words = self._words, []
        return words

    def _gap(self, text_index: int) -> float:
        """The silence after text chunk ``text_index``."""
        if self._gaps is None:
            self._gaps = []
            if self._plan_gaps is not None:
                try:
                    self._gaps = self._plan_gaps()
                except Exception:  # the usual gap everywhere: the audio still plays, pauses come out shorter
                    log.exception("could not plan the gaps of job %s", self.job_id)
        return self._gaps[text_index] if text_index < len(self._gaps) else self.gap_s

    def _add_words(self, event: dict) -> None:
        if event["text_index"] in self._worded:
            return
        self._worded.add(event["text_index"])
        words = [{"word": w["word"], "start": round(w["start"] / self.tempo, 3),
                  "end": round(w["end"] / self.tempo, 3)} for w in event.get("words") or []]
        with self._words_lock:
            self._words += words

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
                    # The silence a job puts after each text chunk (before the first, if that one made no audio).
                    for text_index in range(last_text, event["text_index"]):
                        self.encoder.write(audio.silence(self._gap(text_index), rate))
                    self.encoder.write(samples * self.gain if self.gain != 1.0 else samples)
                    last_index, last_text = event["index"], event["text_index"]
                    self._started.set()
                elif kind == "words":
                    self._add_words(event)
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

    def chunks(self) -> Iterator[bytes]:
        """The encoded stream as ffmpeg writes it; then records whether it was complete (``delivered``, else
        ``failure``). Every words event of the job has come by its end."""
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
            yield from self.chunks()
        finally:
            self.close()

    def sse_body(self, input_chars: int) -> Iterator[str]:
        """OpenAI's speech events: speech.audio.delta with base64 audio, then speech.audio.done (or error)."""
        try:
            for data in self.chunks():
                yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
            if self.delivered:
                # There is no tokenizer here: input_tokens counts characters, and no tokens are generated.
                yield _sse({"type": "speech.audio.done",
                            "usage": {"input_tokens": input_chars, "output_tokens": 0, "total_tokens": input_chars}})
            else:
                yield _sse({"type": "error", "error": self.error()})
        finally:
            self.close()

    def error(self) -> dict:
        """Why a stream that was not delivered ended, as the ``error`` of the one error shape (for a stream whose
        status has gone out already)."""
        _, message, code = self.failure or (500, "the stream ended early", "stream_failed")
        return {"message": message, "type": "server_error", "param": None, "code": code}

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


def start_speech(svc: Services, synthesis: SynthesisRequest, fmt: str, tempo: float, source: str,
                 gain: float = 1.0) -> tuple[JobAudio, dict[str, str]]:
    """Submit a speech job for the caller and follow it until its first audio: its stream, and the headers that
    name the job (X-Job-Id, X-Job-Url). A job that ends (or stalls) without audio aborts the request with its
    error. The caller answers with the stream, and must close() it when the answer is over."""
    job_id = jobs.new_job_id()
    svc.store.create(job_id, engine=svc.engine_name, source=source, **synthesis.as_dict(), owner=caller().id)
    try:
        svc.enqueue(job_id)
    except OperationalError as exc:
        svc.store.finish(job_id, "failed", error=f"could not be queued: {exc}")
        raise
    stream = JobAudio(svc.fanout, job_id, fmt, tempo, svc.settings.chunk_gap_s, svc.settings.wait_timeout_s,
                      gaps=planned_gaps(svc, job_id), gain=gain)
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
        abort(response)
    # Proxies such as nginx would otherwise hold the stream back until their buffer fills.
    headers.update({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    return stream, headers


@bp.post("/v1/audio/speech")
def speech():
    svc = services()
    req = parse_speech(json_body(), svc, caller())
    stream, headers = start_speech(svc, req.synthesis, req.response_format, req.tempo, source="openai")
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
