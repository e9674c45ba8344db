"""The REST API: submit, read, fetch and cancel jobs; voices, engine and health."""
from __future__ import annotations

import re
import time

import redis
from flask import Blueprint, Flask, abort, redirect, request, send_file, url_for
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from chatterbox import align, audio, jobs, retention, subtitles
from chatterbox.errors import RequestError
from chatterbox.synthesis import parse_request

from .auth import caller
from .common import (REDIS_ERRORS, decode_json_fields, error_response, form_files, keep_upload, links, redis_down_response,
                     redis_refusal_response, services, upload_path)

bp = Blueprint("api", __name__)

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def job_or_404(job_id: str) -> dict:
    job = services().store.get(job_id) if JOB_ID.match(job_id) else None
    if job is None or not caller().may_see(job.get("owner")):  # another key's job is as unknown as a missing one
        abort(error_response(404, f"no job with id {job_id!r}", "job_not_found", "job_id"))
    return job


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


@bp.post("/synthesize")
def submit():
    svc = services()
    clip = None
    job_id = jobs.new_job_id()
    if request.mimetype == "multipart/form-data":
        # A one-off voice: the reference clip comes with the request, like the reference package's audio_prompt_path.
        body, clip = _multipart_request()
        if not isinstance(body, dict):
            return body
    elif not request.is_json:
        return error_response(415, "send the request as JSON (Content-Type: application/json), or as multipart "
                              "form data with an audio_prompt file", "unsupported_media_type")
    else:
        body = request.get_json(silent=True)
        if body is None:
            return error_response(400, "the request body is not valid JSON", "invalid_json")
    from .lexicon import caller_entries

    req = parse_request(body, svc.engine, svc.settings, caller(), caller_entries())
    extra = {"audio_prompt": str(upload_path(svc.settings, job_id))} if clip is not None else {}
    svc.store.create(job_id, engine=svc.engine_name, source="rest", owner=caller().id, **req.as_dict(), **extra)
    if clip is not None:
        keep_upload(job_id, clip)
    try:
        svc.enqueue(job_id)
    except OperationalError as exc:
        svc.store.finish(job_id, "failed", error=f"could not be queued: {exc}")
        raise
    if truthy(request.args.get("wait")):
        return wait_for(job_id)
    return ({"job_id": job_id, "status": "queued", **links(job_id, "synthesize")}, 202,
            {"Location": links(job_id)["status_url"]})


def _multipart_request():
    """(body, the clip's bytes) of a multipart synthesis request, or an error response in place of body."""
    from chatterbox.schemas.requests import SynthesizeForm
    from chatterbox.voices import VoiceError, prepare_reference

    svc = services()
    files = form_files()
    if "audio_prompt" not in files:
        return error_response(400, "a multipart request carries the reference clip as a file field named "
                              "'audio_prompt'", "missing_file", "audio_prompt"), None
    if not hasattr(svc.engine, "clone"):
        return error_response(400, f"a one-off voice needs the chatterbox engine; this system runs "
                              f"{svc.engine_name}", "cloning_unavailable", "audio_prompt"), None
    data = files["audio_prompt"]
    body = decode_json_fields(SynthesizeForm.check_form(request.form, files).model_dump(
        exclude_unset=True, exclude={"audio_prompt"}), {"params": "a JSON object"})
    try:
        prepare_reference(data)
    except VoiceError as exc:
        exc.field = "audio_prompt"
        raise
    return body, data


def wait_for(job_id: str):
    svc = services()
    deadline = time.monotonic() + svc.settings.wait_timeout_s
    for event in svc.fanout.follow(job_id, stop=lambda: time.monotonic() > deadline):
        if event["type"] in jobs.FINAL_EVENTS:
            break
    job = svc.store.get(job_id)
    if job["status"] == "succeeded":
        return _send_audio(job)
    if job["status"] == "failed":
        return error_response(500, f"job {job_id} failed: {job.get('error', 'unknown error')}", "job_failed")
    if job["status"] == "cancelled":
        return error_response(409, f"job {job_id} was cancelled", "job_cancelled")
    body = {"job_id": job_id, "status": job["status"], **links(job_id, "synthesize"),
            "message": f"still {job['status']} after {svc.settings.wait_timeout_s:.0f} s; follow status_url"}
    return body, 202


def _whole(name: str, default: int, low: int, high: int) -> int:
    try:
        return min(high, max(low, int(request.args.get(name, default))))
    except ValueError:
        abort(error_response(400, f"{name} must be a whole number", "invalid_value", name))


@bp.get("/jobs")
def list_jobs():
    """Newest first, a page at a time: ?limit= (at most 500), ?offset=, and filters ?status=, ?kind=, ?voice= (an
    id, or a saved voice's name) and ?q= (words in the text). Owner, status and kind come from Redis' indices at
    the cost of the page; ?voice=, ?q= (and status with kind) read up to jobs.SEARCH_WINDOW of the newest jobs,
    and say ``total_exact`` false when there were more (then ``total`` counts the matches among those)."""
    from .auth import owner_filter

    limit, offset = _whole("limit", 50, 1, 500), _whole("offset", 0, 0, 10**7)
    status, kind, q = request.args.get("status"), request.args.get("kind"), (request.args.get("q") or "").lower()
    if status and status not in jobs.STATUSES:
        return error_response(400, f"status must be one of {', '.join(jobs.STATUSES)}", "invalid_value", "status")
    voice = (request.args.get("voice") or "").strip()
    page = services().store.page(owner=owner_filter(), status=status or None, kind=kind or None, text=q or None,
                                 voices=_voice_names(voice) if voice else None, offset=offset, limit=limit)
    return {"jobs": [{**jobs.public_view(j), "text_preview": j.get("text", "")[:200],
                      **links(j["id"], j.get("kind") or "synthesize")}
                     for j in page.jobs], "total": page.total, "total_exact": page.exact, "offset": offset,
            "limit": limit}


def _voice_names(voice: str) -> set[str]:
    """What a job's record may hold for this voice: as given, and a saved voice's id when given its name."""
    from chatterbox.voices import VoiceError, VoiceLibrary

    try:
        return {voice, VoiceLibrary(services().settings.voices_dir).get(voice, caller()).id}
    except VoiceError:
        return {voice}


@bp.get("/jobs/<job_id>")
def job_status(job_id: str):
    job = job_or_404(job_id)
    out = {**jobs.public_view(job), **links(job_id, job.get("kind") or "synthesize")}
    if truthy(request.args.get("text")):
        out["text"] = job["text"]
    return out


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str):
    job = job_or_404(job_id)
    if truthy(request.args.get("purge")):
        return _purge(job)
    if job["status"] in jobs.TERMINAL:
        return error_response(409, f"job {job_id} has already {job['status']}; nothing to cancel", "job_finished")
    status = services().store.cancel(job_id)
    if status == "cancelled":
        return {"job_id": job_id, "status": "cancelled"}
    return {"job_id": job_id, "status": status, "message": "cancelling: the job stops after its current chunk"}, 202


@bp.get("/jobs/<job_id>/audio")
def job_audio(job_id: str):
    job = job_or_404(job_id)
    if job["status"] != "succeeded":
        return error_response(409, f"job {job_id} is {job['status']}; its audio exists only once it has succeeded",
                              "audio_not_ready")
    wanted = (request.args.get("format") or job["format"]).lower()
    if wanted != job["format"] and job.get("kind") != "audiobook":
        return _transcoded(job, wanted)
    return _send_audio(job)


def _words_of(job_id: str) -> dict:
    """A finished synthesis' word timestamps, or the error response that says why there are none (aborted)."""
    job = job_or_404(job_id)
    if job.get("kind") not in (None, "", "synthesize"):
        abort(error_response(404, f"job {job_id} is a {job['kind']} job; only syntheses have word timestamps",
                             "words_not_found"))
    if job["status"] != "succeeded":
        abort(error_response(409, f"job {job_id} is {job['status']}; its words exist only once it has succeeded",
                             "words_not_ready"))
    path = (services().settings.outputs_dir / (job.get("words_file") or f"{job_id}.words.json")).resolve()
    try:
        return align.read(path)
    except FileNotFoundError:  # purged, swept, or made before jobs had word timestamps
        abort(error_response(410, f"the word timestamps of job {job_id} are not on disk", "words_gone"))


@bp.get("/jobs/<job_id>/words")
def job_words(job_id: str):
    return _words_of(job_id)


@bp.get("/jobs/<job_id>/subtitles")
def job_subtitles(job_id: str):
    """The job's words as subtitles: ?format=srt (default) or vtt; ?words=N: at most N words a cue, else a
    sentence a cue."""
    fmt, max_words = subtitle_args()
    return subtitle_response(_words_of(job_id)["words"], fmt, max_words, job_id)


def subtitle_args() -> tuple[str, int | None]:
    """?format= and ?words= of a subtitles request, or the 400 that names the one at fault (aborted)."""
    fmt = (request.args.get("format") or "srt").lower()
    if fmt not in subtitles.FORMATS:
        abort(error_response(400, f"unknown subtitle format {fmt!r}; choose one of {', '.join(subtitles.FORMATS)}",
                             "unknown_format", "format"))
    max_words = None
    if request.args.get("words") is not None:
        raw = request.args["words"]
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            abort(error_response(400, f"words must be a whole number from 1 to 1000, not {raw!r}", "invalid_value",
                                 "words"))
        max_words = int(raw)
    return fmt, max_words


def subtitle_response(words: list[dict], fmt: str, max_words: int | None, name: str, breaks: list[int] = ()):
    headers = {"Content-Type": f"{subtitles.FORMATS[fmt]}; charset=utf-8"}
    if truthy(request.args.get("download")):
        headers["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return subtitles.render(words, fmt, max_words, breaks), 200, headers


def _transcoded(job: dict, fmt: str):
    """The job's audio in another of the formats, made from its file the first time it is asked for and kept beside
    it (``<id>.<fmt>``, deleted with the job): each format is encoded once."""
    if fmt not in audio.FORMATS:
        return error_response(400, f"unknown format {fmt!r}; choose one of {', '.join(audio.FORMATS)}",
                              "unknown_format", "format")
    outputs = services().settings.outputs_dir
    source, made = (outputs / job["output"]).resolve(), (outputs / f"{job['id']}.{fmt}").resolve()
    if not source.is_file():
        return error_response(410, f"the audio of job {job['id']} is no longer on disk", "audio_gone")
    if not made.is_file():
        samples, rate = audio.decode(source)
        audio.write_atomic(made, audio.encode(samples, rate, fmt))  # two requests at once: the same bytes, once
    return send_file(made, mimetype=audio.FORMATS[fmt], conditional=True,
                     as_attachment=truthy(request.args.get("download")), download_name=f"{job['id']}.{fmt}")


def _purge(job: dict):
    """Forget a finished job: its record, events, audio and files (the chunk cache, shared by books, is the
    retention sweeper's)."""
    if job["status"] not in jobs.TERMINAL:
        return error_response(409, f"job {job['id']} is {job['status']}; cancel it before deleting it", "job_active")
    retention.delete_job(services().store, job)
    return {"job_id": job["id"], "deleted": True}


@bp.get("/storage")
def storage():
    """What is kept and what it takes (admin keys): jobs, disk per folder, Redis memory and AOF, retention and the
    last sweep; measured at most a minute ago."""
    from .auth import current_key

    if not current_key().admin:
        return error_response(403, "storage figures are for admin keys", "forbidden")
    return retention.last_usage(services().store)


@bp.get("/stats")
def stats():
    """Throughput over the last hour, in 5-minute buckets: jobs finished and audio made (the key's own jobs, or
    everyone's for an admin key), with the queue lengths and the jobs on record per status. Reads only the jobs
    that ended in the hour (the finished index) and the status indices' sizes, never the whole history."""
    from .auth import owner_filter

    now = time.time()
    store = services().store
    buckets = [{"start": now - 3600 + i * 300, "jobs": 0, "failed": 0, "audio_s": 0.0} for i in range(12)]
    for job in store.finished_since(now - 3600, owner=owner_filter()):
        bucket = buckets[min(11, int((job["finished_at"] - (now - 3600)) // 300))]
        bucket["jobs"] += 1
        bucket["failed"] += job["status"] == "failed"
        bucket["audio_s"] = round(bucket["audio_s"] + job["duration_s"], 2)
    return {"window_s": 3600, "buckets": buckets, "jobs": sum(b["jobs"] for b in buckets),
            "audio_s": round(sum(b["audio_s"] for b in buckets), 2),
            "queues": {name: store.r.llen(name) for name in ("interactive", "bulk")},
            "statuses": store.status_counts(owner=owner_filter())}


@bp.post("/synthesize/plan")
def plan_text():
    """How a text would be chunked for a model and language, without synthesizing it (the dashboard shows it as
    one types)."""
    from chatterbox import markup
    from chatterbox.synthesis import speech_plan
    from chatterbox.text import TextError

    from .lexicon import caller_entries

    body = request.get_json(silent=True)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        return error_response(400, "send JSON with the text", "missing_field", "text")
    settings = services().settings
    engine = services().engine.for_model(body.get("model"), body.get("language"))
    try:
        # The chunks as the caller's jobs speak them: its pronunciation lexicon applied (chatterbox.lexicon).
        plan = speech_plan(engine, text, {}, settings, caller_entries()) if text.strip() else []
        chars = len(markup.spoken_text(text))
    except markup.MarkupError as exc:
        return error_response(400, str(exc), "invalid_markup", "text")
    except TextError as exc:
        return error_response(400, str(exc), "text_empty", "text")
    return {"chunks": [s.text for s in plan], "pauses_s": [s.gap_s for s in plan[:-1]], "chars": chars,
            "max_chars": settings.max_text_chars, "chunk_chars": engine.max_chars(settings), "model": engine.model,
            "language": engine.language}


def _send_audio(job: dict):
    if job.get("kind") == "audiobook":
        return redirect(url_for("books.m4b", job_id=job["id"], **request.args))
    path = (services().settings.outputs_dir / job["output"]).resolve()
    if not path.is_file():
        return error_response(410, f"the audio of job {job['id']} is no longer on disk", "audio_gone")
    return send_file(path, mimetype=audio.FORMATS[job["format"]], conditional=True,
                     as_attachment=truthy(request.args.get("download")),
                     download_name=f"{job['id']}.{job['format']}")


@bp.get("/jobs/<job_id>/chunks/<int:index>")
def job_chunk(job_id: str, index: int):
    job_or_404(job_id)
    data = services().store.get_chunk(job_id, index)
    if data is None:
        return error_response(404, f"job {job_id} has no chunk {index} (yet, or any more)", "chunk_not_found")
    return data, 200, {"Content-Type": "audio/wav", "Cache-Control": "max-age=3600"}


@bp.get("/voices")
def voices():
    return {"engine": services().engine_name, "voices": services().engine.voices(caller())}


@bp.get("/engine")
def engine():
    svc = services()
    return {**svc.engine.describe(caller()), "reason": svc.engine_reason, "formats": list(audio.FORMATS),
            "max_text_chars": svc.settings.max_text_chars}


@bp.get("/health")
def health():
    """Without a key, only whether the system is up; with one, Redis, the engine, the queues and the workers (what
    they are working on for admin keys only: other keys' job ids are not this key's business)."""
    from .auth import request_key

    svc = services()
    try:
        key = request_key()
    except REDIS_ERRORS:
        key = None  # no key can be checked while Redis is away: answered as to anyone
    r = svc.store.r
    try:
        workers = svc.store.workers()
        if key is None:
            return {"status": "ok" if workers else "no_workers"}
        info = r.info()
        queue_names = sorted({q for w in workers for q in w.get("queues", [])} | {"interactive", "bulk"})
        queues = {name: r.llen(name) for name in queue_names}
    except REDIS_ERRORS as exc:
        if key is None:  # that Redis is away, in the one error shape; not where it is, nor why
            return {"status": "unavailable", **error_response(503, "Redis is not reachable; jobs cannot be queued or "
                                                              "read until it is back", "redis_unavailable").json}, 503
        return {"status": "unavailable", "redis": {"ok": False, "error": str(exc)},
                **redis_down_response(exc).json}, 503
    now = time.time()
    for w in workers:
        w["state"] = "busy" if w.get("busy") else "idle" if w.get("consuming", True) else "starting"
        w["seen_s_ago"] = round(now - w.get("seen_at", now), 2)
        if not key.admin:
            w.pop("current_job", None)
            w.pop("current_jobs", None)
    return {"status": "ok" if workers else "no_workers",
            "redis": {"ok": True, "version": info.get("redis_version"), "aof": bool(info.get("aof_enabled")),
                      "used_memory": info.get("used_memory_human")},
            "engine": {"name": svc.engine_name, "reason": svc.engine_reason},
            "workers": workers, "queues": queues}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(RequestError)
    def refused(exc: RequestError):
        return error_response(exc.status, exc.message, exc.code, exc.field)

    @app.errorhandler(jobs.QueueFull)
    def queue_full(exc: jobs.QueueFull):
        response = error_response(429, str(exc), "too_many_jobs")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.response is not None:
            return exc.response
        if exc.code == 413:
            from .auth import _size

            return error_response(413, f"the request body is over the limit of {_size(request.max_content_length or 0)}",
                                  "request_too_large")
        return error_response(exc.code or 500, exc.description or exc.name, exc.name.lower().replace(" ", "_"))

    for error in (*REDIS_ERRORS, OperationalError):
        app.register_error_handler(error, redis_down_response)
    app.register_error_handler(redis.exceptions.ResponseError, redis_refusal_response)
