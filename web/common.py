"""What the web app's modules share: the services of the app, the one error shape, Redis' failures as answers, and
the links, uploads and voice errors of the API and the voice routes.

A module of its own, below the routes' modules, so that they import it rather than the package or each other.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import redis
from flask import abort, jsonify, request, url_for

from chatterbox import audio, settings as settings_mod
from chatterbox.engines import InvalidRequest, choose_engine, create_engine
from chatterbox.jobs import JobStore
from chatterbox.redis_client import redact_url, refusal


class Services:
    """What the request handlers share: settings, the job store, the fan-out of job events to their followers, an
    engine object for validation (never loaded here: the workers synthesize) and the task that runs a job."""

    def __init__(self, settings: settings_mod.Settings):
        from .fanout import Fanout

        self.settings = settings
        # redis-py's pool refuses connection 101 ("Too many connections", a 503): 150 websockets opened at once hit
        # it (measured). A thread uses one connection at a time (gunicorn's threads, a pump thread per streamed
        # speech response, the event listener), and the pool only grows as far as they need at once.
        self.store = JobStore.connect(settings, socket_timeout=5, max_connections=2 * settings.web_threads + 4)
        self.fanout = Fanout(self.store)
        self.engine_name, self.engine_reason = choose_engine(settings)
        self.engine = create_engine(settings, "cpu", self.engine_name)
        if hasattr(self.engine, "_shared"):  # a job may ask only for a model some worker holds
            self.engine._shared.availability = self.models_held

    def models_held(self) -> list[str]:
        """The Chatterbox models the workers hold that have loaded theirs; before any has, those whose files are
        here (or CHATTERBOX_MODELS names): a job sent while the first worker starts is queued, not refused."""
        from chatterbox.engines.models import MODELS, configured_models

        try:
            workers = [w for w in self.store.workers() if w.get("model_loaded")]
        except REDIS_ERRORS:
            workers = []
        if not workers:
            return configured_models(self.settings)
        held = {m for w in workers for m in w.get("models") or []}
        return [name for name in MODELS if name in held]

    def enqueue(self, job_id: str, attempt: int = 1) -> None:
        from tasks import synthesize  # Celery's app reads the same settings through celeryconfig

        synthesize.apply_async(kwargs={"job_id": job_id, "attempt": attempt}, task_id=job_id)


def services() -> Services:
    from flask import current_app

    return current_app.extensions["chatterbox"]


def error_response(status: int, message: str, code: str, param: str | None = None):
    """The one error shape of the API (the same as OpenAI's): {"error": {"message", "type", "param", "code"}}."""
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    response = jsonify(error={"message": message, "type": kind, "param": param, "code": code})
    response.status_code = status
    return response


def redis_down_response(exc: Exception):
    url = redact_url(services().settings.broker_url)
    return error_response(503, f"Redis is not reachable at {url} ({exc}); jobs cannot be queued or read until it is "
                          "back", "redis_unavailable")


def redis_refusal_response(exc: redis.exceptions.ResponseError):
    """A 503 for Redis refusing writes (chatterbox.redis_client.refusal): the operator must act, not the client."""
    reason = refusal(exc)
    if reason is None:
        raise exc  # a fault of ours, not of Redis' state: a 500 and a traceback in the log
    return error_response(503, f"Redis refuses to store anything right now ({reason}); retry once its operator has "
                          "made room", "redis_refuses_writes")


REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError)


def links(job_id: str, kind: str | None = None) -> dict:
    """A job's links; a synthesis' (``kind`` "synthesize") also its word timestamps and subtitles."""
    out = {"status_url": url_for("api.job_status", job_id=job_id),
           # a path, like the others: werkzeug would make it absolute with a ws:// scheme that a proxy may not keep
           "events_url": urlsplit(url_for("events.job_events", job_id=job_id)).path,
           "audio_url": url_for("api.job_audio", job_id=job_id)}
    if kind == "synthesize":
        out.update(words_url=url_for("api.job_words", job_id=job_id),
                   subtitles_url=url_for("api.job_subtitles", job_id=job_id))
    return out


def upload_path(settings: settings_mod.Settings, job_id: str) -> Path:
    return (settings.uploads_dir / f"{job_id}.audio").resolve()


def keep_upload(job_id: str, data: bytes) -> None:
    """The clip of a job just created, kept for the worker that runs it (atomically, readable by this user only);
    written after the job was admitted, so that a refused job leaves no file behind."""
    try:
        audio.write_atomic(upload_path(services().settings, job_id), data)
    except OSError as exc:
        services().store.finish(job_id, "failed", error=f"the upload could not be stored: {exc}")
        abort(error_response(503, f"the upload could not be stored: {exc.strerror or exc}", "storage_unavailable"))


def form_files(aliases: dict[str, str] | None = None) -> dict[str, bytes]:
    """Each file of this multipart request as bytes, by field name (``aliases`` maps another accepted name to the
    form's own, as ``audio`` -> ``file``): with the text fields, what a form model checks."""
    files: dict[str, bytes] = {}
    for name, upload in request.files.items():
        files.setdefault((aliases or {}).get(name, name), upload.read())
    return files


def decode_json_fields(body: dict, shapes: dict[str, str]) -> dict:
    """A form's fields that carry JSON (``params``), decoded in place; ``shapes`` says what each should be."""
    for name, shape in shapes.items():
        if name in body:
            try:
                body[name] = json.loads(body[name])
            except ValueError:
                raise InvalidRequest(f"{name} must be {shape}", "invalid_json", name) from None
    return body
