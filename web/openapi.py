"""The OpenAPI 3.0.3 description of the REST API, built at request time.

Its schemas are generated from the models that check the requests and describe the answers (chatterbox/schemas,
completed with this server's engine, limits and models in web/openapi_schemas.py); this module holds what the
models do not: the operations, their parameters, answers and error codes. ``tests/test_openapi.py`` runs it
against a live server.
"""
from __future__ import annotations

from typing import Any, Iterable

from chatterbox import audio, jobs
from chatterbox.access import ANYONE
from chatterbox.books.assemble import CHAPTER_FORMATS
from chatterbox.engines.models import ALIASES, MODELS
from chatterbox.settings import Settings
from chatterbox.streaming import CONTENT_TYPES as SPEECH_TYPES
from chatterbox.voices import NAME as VOICE_NAME

from . import captioned, openai_api
from .common import Services
from .openapi_schemas import component_schemas

Schema = dict[str, Any]

OPENAPI_VERSION = "3.0.3"
JSON = "application/json"
MULTIPART = "multipart/form-data"
# Values the code writes as literals (web/api.py, web/voices.py, chatterbox/books/control.py, web/books.py):
JOB_KINDS = ("synthesize", "clone", "audiobook")
CHAPTER_STATUSES = ("waiting", "running", "assembling", "assembled")
CHAPTER_MIME = {"mp3": "audio/mpeg", "ogg": "audio/ogg"}
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # web.api.JOB_ID: anything else is answered like an unknown job
TRUTHY = "`1`, `true` or `yes`"

TAGS = [
    {"name": "Synthesis", "description": "Text in, audio out: a job per request, followed by polling, the websocket "
                                         "or `?wait=1`."},
    {"name": "Jobs", "description": "Every job (synthesis, voice clone, audiobook): its record, audio and cancel."},
    {"name": "Engine", "description": "What the engine offers: voices, parameters with their ranges, formats."},
    {"name": "Voices", "description": "Cloned voices: clone jobs and the saved-voice library."},
    {"name": "Audiobooks", "description": "A whole book in; a file per chapter and an M4B with chapter markers out."},
    {"name": "Lexicon", "description": "How words are said: each key's respellings, applied to its jobs' text."},
    {"name": "OpenAI-compatible", "description": "OpenAI's speech API shape, so OpenAI clients can point here."},
    {"name": "Kokoro-compatible", "description": "Kokoro-FastAPI's captioned speech: audio with word timestamps."},
    {"name": "Service", "description": "Health, this document, and signing in to the dashboard."},
]


# -- small builders ------------------------------------------------------------------------------------------------

def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def string(description: str | None = None, **extra: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **extra}


def integer(description: str | None = None, **extra: Any) -> Schema:
    return {"type": "integer", **({"description": description} if description else {}), **extra}


def json_content(schema: Schema, example: Any = None) -> dict:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {JSON: media}


def ok(description: str, schema: Schema, headers: dict | None = None) -> dict:
    response: dict[str, Any] = {"description": description, "content": json_content(schema)}
    if headers:
        response["headers"] = headers
    return response


def err(description: str) -> dict:
    """A 4xx/5xx answer: always the one error shape."""
    return {"description": description, "content": json_content(ref("Error"))}


UNKNOWN_VOICE = err("the `voice` is not one this key may use (`unknown_voice`): there is none of that id or name, "
                    "or it is another key's (the same answer)")
SHARED_VOICE = err("a shared voice (made through the Celery API), which only an admin key may change (`forbidden`); "
                   "or, signed in with the session cookie, a request without the session's CSRF token (`csrf_failed`)")


def binary(description: str, media_types: Iterable[str], headers: dict | None = None) -> dict:
    response: dict[str, Any] = {"description": description,
                                "content": {m: {"schema": {"type": "string", "format": "binary"}}
                                            for m in dict.fromkeys(media_types)}}
    if headers:
        response["headers"] = headers
    return response


def header(description: str, schema: Schema | None = None, required: bool = False) -> dict:
    return {"description": description, "schema": schema or {"type": "string"}, "required": required}


def path_param(name: str, description: str, schema: Schema, example: Any = None) -> dict:
    param = {"name": name, "in": "path", "required": True, "description": description, "schema": schema}
    if example is not None:
        param["example"] = example
    return param


def query_param(name: str, description: str, schema: Schema, example: Any = None) -> dict:
    param = {"name": name, "in": "query", "required": False, "description": description, "schema": schema}
    if example is not None:
        param["example"] = example
    return param


def job_id_param(what: str = "job") -> dict:
    # Inline, not a shared component: the tests give each operation its own example id.
    return path_param("job_id", f"the {what}'s id (`job_id` of the answer that created it)",
                      string(pattern=JOB_ID_PATTERN), "4c0f4b2a9d6e4f7e8a1b2c3d4e5f6a7b")


def voice_id_param(by_name: bool) -> dict:
    what = "a saved voice's id (`v_` and 12 hex digits)" + (", its unique name, or a built-in voice's id"
                                                            if by_name else "")
    return path_param("voice_id", what, string(minLength=1), "v_0123456789ab")


def index_param(description: str) -> dict:
    return path_param("index", description, integer(minimum=0), 0)


def download_param(values: str = TRUTHY) -> dict:
    return query_param("download", f"{values}: answer as an attachment (Content-Disposition) to save", string(),
                       "1")


# -- the document -------------------------------------------------------------------------------------------------

class _Paths:
    """Collects operations, adding the answers every operation of its kind can give (auth, limits, Redis down)."""

    def __init__(self) -> None:
        self.paths: dict[str, dict] = {}

    def add(self, method: str, path: str, operation_id: str, tag: str, summary: str, responses: dict, *,
            description: str | None = None, parameters: Iterable[dict] = (), body: dict | None = None,
            public: bool = False, optional_key: bool = False, creates_job: bool = False,
            redis: bool = True) -> None:
        responses = dict(responses)
        params = list(parameters)
        if any(p["in"] == "path" for p in params):
            responses.setdefault("404", err("no such resource (or another key's: the same answer)"))
        if body is not None:
            responses.setdefault("413", {"$ref": "#/components/responses/TooLarge"})
        if not public:
            responses.setdefault("401", {"$ref": "#/components/responses/Unauthorized"})
            if method != "get":
                responses.setdefault("403", err("signed in with the session cookie, but without the session's CSRF "
                                                "token (`csrf_failed`); API keys need none"))
            responses.setdefault("429", {"$ref": "#/components/responses/TooManyJobs" if creates_job
                                         else "#/components/responses/RateLimited"})
        if redis:
            responses.setdefault("503", {"$ref": "#/components/responses/Unavailable"})
        op: dict[str, Any] = {"operationId": operation_id, "tags": [tag], "summary": summary}
        if description:
            op["description"] = description
        if params:
            op["parameters"] = params
        if body is not None:
            op["requestBody"] = body
        op["responses"] = dict(sorted(responses.items()))
        if optional_key:  # open to anyone, but a valid key makes the answer say more
            op["security"] = [{}, {"bearerAuth": []}, {"sessionCookie": []}]
        elif public:
            op["security"] = []
        self.paths.setdefault(path, {})[method] = op


def build_document(svc: Services) -> dict:
    """The whole OpenAPI document for this server's settings and engine."""
    settings, engine_name = svc.settings, svc.engine_name
    described = svc.engine.describe(ANYONE)  # open to anyone: it lists built-in voices only
    schemas = component_schemas(settings, described, openai_api.served_models(svc))
    paths = _Paths()
    _synthesis_and_jobs(paths, settings, described)
    _voices(paths)
    _audiobooks(paths)
    _lexicon(paths, settings)
    _openai(paths)
    _service(paths)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "chatterbox-jobs", "version": "1", "description": _description(settings, engine_name)},
        "servers": [{"url": "/", "description": "this server"}],
        "tags": TAGS,
        "security": [{"bearerAuth": []}, {"sessionCookie": []}],
        "paths": paths.paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "An API key (`chatterbox keys create NAME`), as "
                                              "`Authorization: Bearer <key>`."},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "cbx_session",
                                  "description": "The dashboard's sign-in cookie (`POST /login`). Requests other "
                                                 "than GET that ride on it must carry the session's CSRF token as "
                                                 "`X-CSRF-Token` (or the form field `csrf_token`), else 403."},
            },
            "schemas": schemas,
            "responses": _shared_responses(settings),
        },
    }


def _description(settings: Settings, engine_name: str) -> str:
    # CHATTERBOX_RATE_LIMIT_PER_MINUTE=0 turns the limit off (chatterbox.limits)
    rate = (f"{settings.rate_limit_per_minute} requests a minute per key" if settings.rate_limit_per_minute > 0
            else "No limit on requests a minute (`CHATTERBOX_RATE_LIMIT_PER_MINUTE=0`)")
    return f"""Text to speech as jobs: submit, follow, fetch. This server runs the **{engine_name}** engine.

**Authentication.** Every operation needs an API key as `Authorization: Bearer <key>`, except `GET /health`, \
`GET /openapi.json`, the page `/docs` and signing in and out. A missing, wrong or revoked key gets 401. A job, \
book or saved voice of another key is answered exactly like one that does not exist (404); admin keys see all.

**Errors** always have one shape, `{{"error": {{"message", "type", "param", "code"}}}}` (the `Error` schema): \
4xx for bad input, 5xx when a job or the server fails (503 while Redis is unreachable).

**Limits.** {rate}, and {settings.max_queued_jobs} jobs queued or running per key: beyond either, 429 with \
`Retry-After` (seconds). Request bodies: {settings.max_body_kb} KB, \
uploads (`/synthesize` multipart, `/voice-clone`, `/voices/import`) {settings.max_upload_mb} MB, books \
{settings.book_max_mb} MB; larger ones get 413. Texts: at most {settings.max_text_chars} characters per \
synthesis job (an audiobook has no such limit).

**Websocket** `/ws/jobs/{{job_id}}` (OpenAPI cannot describe it as an operation). Connect with the same key \
(`Authorization: Bearer` on the handshake, or the session cookie from a page of this site; other browser origins \
are refused with 403 unless listed in `CHATTERBOX_ALLOWED_ORIGINS`). Unknown jobs and malformed ids are refused \
before the handshake (404, or 400 for a malformed `after`), with the JSON error. Every message is a JSON object with \
a `type` and an `id` (the event's Redis Stream id, increasing):

- `progress`: `status`, `progress`, `chunks_done`, `chunks_total` (and `message` when a job is paused, resumed or \
run again after its worker died); for audiobooks also `audio_s`, `eta_s`, `worker` and `chapter` (`index`, \
`chunks_done`, `chunks_total`)
- `chunk`: a piece of audio as soon as the engine made it: `index` (playing order), `text_index`, `text`, \
`duration_s`, `sample_rate`, `url` of its WAV (`GET /jobs/{{job_id}}/chunks/{{index}}`)
- `chapter` (audiobooks): a chapter file is ready
- `done`: the finished job's fields and `audio_url`
- `error`: the job's fields; `status` is `failed` (with `error`) or `cancelled`

`done` or `error` is always the last event; then the server closes the socket. A client connecting late gets every \
event from the start; reconnecting with `?after=<last id seen>` (or `?last_event_id=`) resumes right after it."""


def _shared_responses(settings: Settings) -> dict:
    retry_after = header("seconds until a request would be accepted again", integer(minimum=1), required=True)
    return {
        "Unauthorized": {"description": "no valid API key: missing, malformed, unknown or revoked (one answer for all)",
                         "headers": {"WWW-Authenticate": header("`Bearer realm=\"chatterbox-jobs\"`")},
                         "content": json_content(ref("Error"))},
        "RateLimited": {"description": "more than `CHATTERBOX_RATE_LIMIT_PER_MINUTE` requests a minute with this key "
                                       "(`rate_limited`), or too many failed authentications from this address "
                                       "(`auth_rate_limited`)",
                        "headers": {"Retry-After": retry_after}, "content": json_content(ref("Error"))},
        "TooManyJobs": {"description": "over the per-key rate limit (`rate_limited`), the key already has "
                                       "`CHATTERBOX_MAX_QUEUED_JOBS` jobs queued, running or paused (`too_many_jobs`), "
                                       "or too many failed authentications from this address (`auth_rate_limited`)",
                        "headers": {"Retry-After": retry_after}, "content": json_content(ref("Error"))},
        "AuthRateLimited": {"description": "more than `CHATTERBOX_AUTH_FAILURES_PER_MINUTE` failed authentications "
                                           "from this address this minute (`auth_rate_limited`)",
                            "headers": {"Retry-After": retry_after}, "content": json_content(ref("Error"))},
        "TooLarge": err("the request body is over its limit (`request_too_large`, or `too_large` for a book file)"),
        "Unavailable": err("Redis is not reachable (`redis_unavailable`), or refuses writes: out of memory, a failed "
                           "snapshot on a full disk (`redis_refuses_writes`); retry when it is back"),
    }


MODEL_NAMES = [*MODELS, *ALIASES]
MODEL_HELP = ("the Chatterbox model: `original`, `turbo` (fast, English, paralinguistic tags) or `multilingual` "
              "(23 languages); left out: the default, or `multilingual` for a language other than English. A model "
              "no worker holds is refused (`model_unavailable`)")
LANGUAGE_HELP = ("the language of the text, a code of `GET /engine`'s models (`de`, `fr`, `ja`, ...; `de-DE` is "
                 "taken as `de`); left out: English")


# -- schemas ------------------------------------------------------------------------------------------------------

# -- operations ---------------------------------------------------------------------------------------------------

def _synthesis_and_jobs(paths: _Paths, settings: Settings, described: dict) -> None:
    audio_types = list(audio.FORMATS.values())
    paths.add("post", "/synthesize", "synthesize", "Synthesis", "Submit a synthesis job", {
        "200": binary("with `?wait=1`: the finished audio, in the requested format", audio_types),
        "202": {"description": "queued (`JobLinks`, with a `Location` header); with `?wait=1`, still not finished "
                               "after `CHATTERBOX_WAIT_TIMEOUT_S` (`WaitPending`)",
                "headers": {"Location": header("the job's status URL (left out by a `?wait=1` timeout)")},
                # anyOf: a still-queued WaitPending is also a valid JobLinks
                "content": json_content({"anyOf": [ref("JobLinks"), ref("WaitPending")]})},
        "400": err("invalid request: the error names the field (`param`), e.g. `text_too_long`, "
                   "`invalid_markup`, `unknown_format`, `out_of_range`, `unknown_field`, `cloning_unavailable`"),
        "404": UNKNOWN_VOICE,
        "409": err("with `?wait=1`: the job was cancelled meanwhile (`job_cancelled`)"),
        "410": err("with `?wait=1`: the audio is no longer on disk (`audio_gone`)"),
        "415": err("neither JSON nor multipart form data (`unsupported_media_type`)"),
        "500": err("with `?wait=1`: the job failed (`job_failed`)"),
    }, description=(
        "Text in, a job out. As multipart form data with the clip as `audio_prompt`, the job speaks in a one-off "
        "voice cloned from it (the `chatterbox` engine only; the clip is not kept)."),
        parameters=[query_param("wait", f"{TRUTHY}: wait for the job and answer its audio (or its error)", string(),
                                "1")],
        body={"required": True, "content": {
            JSON: {"schema": ref("SynthesizeRequest"), "example": {"text": "Hello there.", "format": "mp3"}},
            MULTIPART: {"schema": ref("SynthesizeForm")}}},
        creates_job=True)
    paths.add("post", "/synthesize/plan", "planText", "Synthesis", "How a text would be chunked", {
        "200": ok("the chunks; nothing is synthesized or queued", ref("TextPlan")),
        "400": err("no JSON object with a string `text` (`missing_field`), nothing speakable in it "
                   "(`text_empty`), or its pauses or SSML are wrong (`invalid_markup`, naming the element)"),
    }, body={"required": True, "content": json_content(ref("PlanRequest"), {"text": "Hello there. How are you?"})})
    paths.add("get", "/jobs", "listJobs", "Jobs", "Jobs, newest first, a page at a time", {
        "200": ok("this key's jobs (every job for an admin key) that match the filters", ref("JobList")),
        "400": err("`limit` or `offset` is not a whole number, or an unknown `status` (`invalid_value`)"),
    }, parameters=[
        query_param("limit", "how many (values outside 1 to 500 are clamped)", integer(default=50), 20),
        query_param("offset", "how many to skip (clamped at 0)", integer(default=0), 0),
        query_param("status", "only jobs in this status", string(enum=list(jobs.STATUSES))),
        query_param("kind", f"only jobs of this kind ({', '.join(f'`{k}`' for k in JOB_KINDS)}; others match none)",
                    string()),
        query_param("voice", "only jobs in this voice (an id from `GET /voices`, or a saved voice's name)",
                    string()),
        query_param("q", "only jobs whose text has all these words (any case)", string()),
    ])
    paths.add("get", "/stats", "stats", "Jobs", "Throughput over the last hour", {
        "200": ok("jobs finished and audio made in 5-minute buckets (this key's, or everyone's for an admin key), "
                  "with the queue lengths", ref("Stats")),
    })
    paths.add("get", "/storage", "storage", "Service", "What is kept and what it takes", {
        "200": ok("jobs on record, disk per folder of the data directory, Redis' memory and AOF, the retention "
                  "period and the last sweep", ref("Storage")),
        "403": err("not an admin key (`forbidden`)"),
    })
    paths.add("get", "/jobs/{job_id}", "getJob", "Jobs", "A job's record", {
        "200": ok("the job", ref("JobDetail")),
        "404": err("no such job (`job_not_found`), or another key's"),
    }, parameters=[job_id_param(), query_param("text", f"{TRUTHY}: include the text", string(), "1")])
    paths.add("delete", "/jobs/{job_id}", "cancelJob", "Jobs", "Cancel a job, or forget a finished one", {
        "200": ok("a queued job, cancelled at once (`CancelResult`); with `?purge=1`, the finished job forgotten: "
                  "its record, events and audio (`Purged`)", {"anyOf": [ref("CancelResult"), ref("Purged")]}),
        "202": ok("a running job: it stops after its current chunk, then its status becomes `cancelled`",
                  ref("CancelResult")),
        "404": err("no such job (`job_not_found`), or another key's"),
        "409": err("the job has already finished (`job_finished`); with `?purge=1`, it has not finished yet "
                   "(`job_active`)"),
    }, parameters=[job_id_param(), query_param("purge", f"{TRUTHY}: delete the finished job instead", string())])
    paths.add("get", "/jobs/{job_id}/audio", "getJobAudio", "Jobs", "A finished job's audio", {
        "200": binary("the audio, in the job's format (ranges and conditional requests work), or in `?format=`, "
                      "made from it on request", audio_types),
        "400": err("an unknown `format` (`unknown_format`)"),
        "302": {"description": "an audiobook: redirected to `GET /audiobooks/{job_id}/m4b`",
                "headers": {"Location": header("the M4B's URL", required=True)}},
        "404": err("no such job (`job_not_found`), or another key's"),
        "409": err("the job has not succeeded (`audio_not_ready`)"),
        "410": err("the audio is no longer on disk (`audio_gone`)"),
    }, parameters=[job_id_param(), download_param(),
                   query_param("format", "another of the formats to have it in, any case (not for audiobooks)",
                               string(enum=list(audio.FORMATS)), "ogg")])
    paths.add("get", "/jobs/{job_id}/words", "getJobWords", "Jobs", "A finished synthesis' word timestamps", {
        "200": ok("every word of the text as written, in order, with its time in the audio", ref("Words")),
        "404": err("no such job (`job_not_found`), or another key's; not a synthesis (`words_not_found`)"),
        "409": err("the job has not succeeded (`words_not_ready`)"),
        "410": err("the word timestamps are no longer on disk (`words_gone`)"),
    }, parameters=[job_id_param()])
    paths.add("get", "/jobs/{job_id}/subtitles", "getJobSubtitles", "Jobs", "A finished synthesis' subtitles", {
        "200": binary("SRT (`00:00:01,234 --> ...`) or WebVTT (`WEBVTT`, `00:00:01.234 --> ...`): a sentence a cue, "
                      "or at most `?words=` words", ["application/x-subrip", "text/vtt"]),
        "400": err("an unknown `format` (`unknown_format`), or `words` not a whole number from 1 to 1000 "
                   "(`invalid_value`)"),
        "404": err("no such job (`job_not_found`), or another key's; not a synthesis (`words_not_found`)"),
        "409": err("the job has not succeeded (`words_not_ready`)"),
        "410": err("the word timestamps are no longer on disk (`words_gone`)"),
    }, parameters=[job_id_param(), download_param(),
                   query_param("format", "`srt` (default) or `vtt`, any case", string(enum=["srt", "vtt"]), "vtt"),
                   query_param("words", "at most this many words a cue (default: a sentence a cue)",
                               integer(minimum=1, maximum=1000), 7)])
    paths.add("get", "/jobs/{job_id}/chunks/{index}", "getJobChunk", "Jobs", "One audio chunk as soon as it is made", {
        "200": binary("the chunk's WAV", ["audio/wav"], {"Cache-Control": header("`max-age=3600`")}),
        "404": err("no such job (`job_not_found`), or no such chunk yet or any more (`chunk_not_found`)"),
    }, parameters=[job_id_param(), index_param("the chunk's index, as the websocket's `chunk` events give it")])
    paths.add("get", "/voices", "listVoices", "Engine", "Every voice of the engine", {
        "200": ok("built-in voices (`builtin: true`) and the saved voices this key may use", ref("VoiceList")),
    })
    paths.add("get", "/engine", "getEngine", "Engine", "The engine: parameters with ranges, voices, formats", {
        "200": ok(f"the {described['name']} engine", ref("Engine")),
    })


def _voices(paths: _Paths) -> None:
    paths.add("post", "/voice-clone", "cloneVoice", "Voices", "Clone a voice from a recording", {
        "202": ok("the clone job, queued; its record gets `voice_id` when it succeeds", ref("JobLinks")),
        "400": err("no `file` (`missing_file`), not the `chatterbox` engine (`cloning_unavailable`), a bad name, "
                   "tags or exaggeration, or a recording that is not decodable, silent, clipped, under 5 s of "
                   "speech or over 60 s (`not_audio`, `silent`, `clipped`, `too_short`, `too_long`)"),
        "409": err("a voice with that name exists (`duplicate_name`)"),
    }, description="The recording is checked at once, then a clone job runs on a worker and is followed like a "
                   "synthesis job (same links and websocket). Needs the `chatterbox` engine.",
        body={"required": True, "content": {MULTIPART: {"schema": ref("CloneForm")}}}, creates_job=True)
    paths.add("get", "/saved-voices", "listSavedVoices", "Voices", "The saved voices", {
        "200": ok("the saved voices this key may use", ref("SavedVoiceList")),
    })
    not_found = err("no such voice (`unknown_voice`), or another key's")
    paths.add("get", "/voices/{voice_id}", "getVoice", "Voices", "A voice", {
        "200": ok("a built-in voice, or a saved one", ref("Voice")), "404": not_found,
    }, parameters=[voice_id_param(by_name=True)])
    paths.add("patch", "/voices/{voice_id}", "updateVoice", "Voices", "Rename, describe or tag a saved voice", {
        "200": ok("the updated voice", ref("SavedVoice")),
        "400": err("not a JSON object (`invalid_body`), an unknown field (`unknown_field`), a bad name "
                   "(`invalid_name`) or tags (`invalid_tags`)"),
        "403": SHARED_VOICE,
        "404": not_found,
        "409": err("another voice has that name (`duplicate_name`)"),
    }, parameters=[voice_id_param(by_name=False)],
        body={"required": True, "content": json_content(ref("VoicePatch"))})
    paths.add("delete", "/voices/{voice_id}", "deleteVoice", "Voices", "Delete a saved voice", {
        "200": ok("deleted", ref("VoiceDeleted")),
        "400": err("a built-in voice (`builtin_voice`)"), "403": SHARED_VOICE, "404": not_found,
    }, parameters=[voice_id_param(by_name=False)])
    paths.add("get", "/voices/{voice_id}/sample", "getVoiceSample", "Voices", "A short preview in the voice", {
        "200": binary("the preview", ["audio/wav"]),
        "404": err("no such voice (`unknown_voice`), another key's, or it has no sample (`not_found`)"),
    }, parameters=[voice_id_param(by_name=False)])
    paths.add("get", "/voices/{voice_id}/export", "exportVoice", "Voices", "Export a saved voice as one file", {
        "200": binary("the metadata, the conditionals and the clips (a `torch.save` of tensors and plain data)",
                      ["application/octet-stream"],
                      {"Content-Disposition": header("`attachment; filename=\"<id>.voice\"`", required=True)}),
        "404": not_found,
    }, parameters=[voice_id_param(by_name=True)])
    paths.add("post", "/voices/import", "importVoice", "Voices", "Import an exported voice", {
        "201": ok("the new saved voice (owned by this key)", ref("SavedVoice")),
        "400": err("no file (`missing_file`), not an exported voice (`invalid_voice_file`), a bad name"),
        "409": err("a voice with that name exists (`duplicate_name`): import it under another `name`"),
    }, description="The file of `GET /voices/{voice_id}/export`, as the multipart field `file` or as the raw body. "
                   "It is read without unpickling anything.",
        parameters=[query_param("name", "a new name for it (else the exported one)",
                                string(pattern=VOICE_NAME.pattern))],
        body={"required": True, "content": {
            MULTIPART: {"schema": ref("VoiceImportForm")},
            "application/octet-stream": {"schema": string("the exported voice", format="binary")}}})


def _audiobooks(paths: _Paths) -> None:
    book_body = {"required": True, "content": {
        JSON: {"schema": ref("BookRequest"),
               "example": {"text": "# Chapter One\n\nIt was a quiet morning.", "source_format": "md"}},
        MULTIPART: {"schema": ref("BookForm")}}}
    bad_book = ("a book that cannot be read or spoken, named in `code` and `param`: `missing_file`, "
                "`unsupported_format`, `corrupt_epub`, `drm_protected`, `binary_file`, `empty_book`, "
                "`chapter_empty` (naming the chapter), `invalid_chapters`, `unknown_field`, `too_slow` (reading it "
                "took over `CHATTERBOX_BOOK_PARSE_TIMEOUT_S`), `parse_failed`, and the synthesis "
                "options' errors (`unknown_format`, `out_of_range`), and a bad `lexicon` entry, named as "
                "`lexicon[i].say`")
    not_found = err("no such audiobook (`book_not_found`), or another key's")
    book = [job_id_param("audiobook")]
    paths.add("get", "/audiobooks", "listAudiobooks", "Audiobooks", "The audiobooks, newest first", {
        "200": ok("this key's audiobooks (every one for an admin key)", ref("BookList")),
    })
    paths.add("post", "/audiobooks", "submitAudiobook", "Audiobooks", "Submit a book", {
        "202": ok("planned and queued", ref("BookSubmitted"), {"Location": header("the book's URL", required=True)}),
        "400": err(bad_book),
        "404": UNKNOWN_VOICE,
        "413": err("the book is over `CHATTERBOX_BOOK_MAX_MB` (`too_large` or `request_too_large`)"),
        "415": err("neither multipart form data nor JSON (`unsupported_media_type`)"),
    }, description="A file (`.txt`, `.md`, `.epub`) as multipart form data, or JSON with `text` or reviewed "
                   "`chapters`. Bad books are refused before anything is queued.",
        body=book_body, creates_job=True)
    paths.add("post", "/audiobooks/parse", "parseAudiobook", "Audiobooks", "The chapters a book would be read as", {
        "200": ok("the book, for review; nothing is stored or queued", ref("BookSummary")),
        "400": err(bad_book),
        "413": err("the book is over `CHATTERBOX_BOOK_MAX_MB` (`too_large` or `request_too_large`)"),
        "415": err("neither multipart form data nor JSON (`unsupported_media_type`)"),
    }, body=book_body)
    paths.add("get", "/audiobooks/{job_id}", "getAudiobook", "Audiobooks", "A book's plan and progress", {
        "200": ok("the job's fields, the plan and per-chapter state", ref("Book")), "404": not_found,
    }, parameters=[*book, query_param("text", "`1` or `true`: include every chunk's text", string(), "1")])
    actions = {
        "pause": ("pauseAudiobook", "Pause a book", "paused: chunks in flight finish, nothing new starts",
                  "the book is not queued or running (`not_running`)"),
        "resume": ("resumeAudiobook", "Resume a book", "queued again: finished work is kept",
                   "the book is not paused, failed or cancelled (`not_resumable`)"),
        "cancel": ("cancelAudiobook", "Cancel a book", "cancelled: finished chunks are kept, resume continues",
                   "the book has already finished (`job_finished`)"),
    }
    for action, (operation_id, summary, done, refused) in actions.items():
        paths.add("post", f"/audiobooks/{{job_id}}/{action}", operation_id, "Audiobooks", summary, {
            "200": ok(done, ref("BookAction")), "404": not_found, "409": err(refused),
        }, parameters=book, creates_job=action == "resume")  # a book queued again counts like a new job
    paths.add("delete", "/audiobooks/{job_id}", "deleteAudiobook", "Audiobooks", "Cancel a book (as `/cancel`)", {
        "200": ok("cancelled: finished chunks are kept, resume continues", ref("BookAction")), "404": not_found,
        "409": err("the book has already finished (`job_finished`)"),
    }, parameters=book)
    chunk = index_param("the chunk's index in the book (0-based)")
    paths.add("post", "/audiobooks/{job_id}/chunks/{index}/regenerate", "regenerateChunk", "Audiobooks",
              "Make a chunk again with a new seed", {
                  "202": ok("queued; its chapter and the book are assembled again after it", ref("Regenerated")),
                  "404": err("no such audiobook (`book_not_found`) or chunk (`chunk_not_found`)"),
                  "409": err("the chunk is not made yet (`chunk_pending`)"),
              }, parameters=[*book, chunk], creates_job=True)
    paths.add("get", "/audiobooks/{job_id}/chunks/{index}/audio", "getBookChunkAudio", "Audiobooks", "A chunk's WAV", {
        "200": binary("the chunk's audio", ["audio/wav"]),
        "404": err("no such audiobook (`book_not_found`) or chunk (`chunk_not_found`)"),
        "409": err("the chunk is not made yet (`chunk_not_ready`)"),
    }, parameters=[*book, chunk])
    paths.add("get", "/audiobooks/{job_id}/chapters/{index}", "getChapter", "Audiobooks", "A chapter's audio file", {
        "200": binary("the chapter, in the book's chapter format", [CHAPTER_MIME[f] for f in CHAPTER_FORMATS]),
        "404": err("no such audiobook (`book_not_found`) or chapter (`chapter_not_found`)"),
        "409": err("the chapter is not assembled yet (`chapter_not_ready`)"),
    }, parameters=[*book, index_param("the chapter's index (0-based)"), download_param("`1` or `true`")])
    paths.add("get", "/audiobooks/{job_id}/m4b", "getM4b", "Audiobooks", "The whole book as an M4B", {
        "200": binary("the M4B (AAC) with chapter markers, title, author and cover", ["audio/mp4"]),
        "404": not_found,
        "409": err("the book has not succeeded (`audio_not_ready`)"),
    }, parameters=[*book, download_param("`1` or `true`")])
    chapter_param = query_param("chapter", "one chapter (0-based), in seconds of its file; without it the whole book "
                                "in seconds of the M4B", integer(minimum=0), 0)
    paths.add("get", "/audiobooks/{job_id}/words", "getBookWords", "Audiobooks", "Word timestamps of a book", {
        "200": ok("every word as the book wrote it (spoken titles included), with its time", ref("BookWords")),
        "400": err("`chapter` is not a number (`chapter_not_found`)"),
        "404": err("no such audiobook (`book_not_found`) or chapter (`chapter_not_found`)"),
        "409": err("the chapter is not assembled, or the book has not succeeded (`words_not_ready`)"),
        "410": err("the book was made before books had word timestamps (`words_gone`)"),
    }, parameters=[*book, chapter_param])
    paths.add("get", "/audiobooks/{job_id}/subtitles", "getBookSubtitles", "Audiobooks", "Subtitles of a book", {
        "200": binary("SRT or WebVTT of a chapter (`?chapter=N`) or the whole M4B: a sentence or a heading a cue, or "
                      "at most `?words=` words", ["application/x-subrip", "text/vtt"]),
        "400": err("an unknown `format` (`unknown_format`), `words` out of range (`invalid_value`), or a `chapter` "
                   "that is not a number (`chapter_not_found`)"),
        "404": err("no such audiobook (`book_not_found`) or chapter (`chapter_not_found`)"),
        "409": err("the chapter is not assembled, or the book has not succeeded (`words_not_ready`)"),
        "410": err("the book was made before books had word timestamps (`words_gone`)"),
    }, parameters=[*book, chapter_param, download_param(),
                   query_param("format", "`srt` (default) or `vtt`, any case", string(enum=["srt", "vtt"]), "vtt"),
                   query_param("words", "at most this many words a cue (default: a sentence a cue)",
                               integer(minimum=1, maximum=1000), 7)])
    paths.add("get", "/audiobooks/{job_id}/epub", "getBookEpub", "Audiobooks", "The read-along EPUB 3", {
        "200": binary("an EPUB 3 of the book's text and chapter audio with Media Overlays: a reading system that "
                      "supports them (Thorium, Apple Books, Storyteller) lights each sentence as it is read",
                      ["application/epub+zip"]),
        "404": not_found,
        "409": err("the book has not succeeded, or was made before read-along EPUBs (`epub_not_ready`)"),
    }, parameters=[*book, download_param("`1` or `true`")])
    paths.add("get", "/audiobooks/{job_id}/cover", "getCover", "Audiobooks", "The book's cover image", {
        "200": binary("the cover", ["image/png", "image/jpeg"]),
        "404": err("no such audiobook (`book_not_found`), or it has no cover (`no_cover`)"),
    }, parameters=book)


def _service(paths: _Paths) -> None:
    paths.add("get", "/health", "health", "Service", "Redis, the engine, the queues and the live workers", {
        "200": ok("Redis answers: with a valid key, the details; without one, only `status`",
                  {"anyOf": [ref("Health"), ref("HealthStatus")]}),
        "429": {"$ref": "#/components/responses/AuthRateLimited"},
        "503": {"description": "Redis is down: the web app recovers by itself when it returns (with a key, the "
                               "details; without one, only `status`)",
                "content": json_content({"anyOf": [ref("HealthDown"), ref("HealthStatus")]})},
    }, public=True, optional_key=True)
    paths.add("get", "/openapi.json", "openapi", "Service", "This document", {
        "200": ok("the OpenAPI document", {"type": "object"}),
    }, public=True, redis=False)
    html = {"text/html": {"schema": string()}}
    paths.add("post", "/login", "login", "Service", "Sign in to the dashboard with an API key", {
        "302": {"description": "signed in: the session cookie is set, and the browser is sent to `next`",
                "headers": {"Location": header("`next` when it is a path on this site, else the dashboard",
                                               required=True),
                            "Set-Cookie": header("`cbx_session=...; HttpOnly; SameSite=Lax`")}},
        "400": {"description": "a form that is not the sign-in page's (an unknown field, no `key`): the sign-in page "
                               "again, with the error", "content": html},
        "401": {"description": "not a valid key: the sign-in page again, with the error", "content": html},
        "403": {"description": "the form's `csrf_token` is missing or is not the one `GET /login` gave this browser "
                               "(with its cookie): the sign-in page again", "content": html},
        "429": {"$ref": "#/components/responses/AuthRateLimited"},
    }, body={"required": True, "content": {"application/x-www-form-urlencoded": {"schema": ref("LoginForm")}}},
        public=True)
    paths.add("post", "/logout", "logout", "Service", "Sign out of the dashboard", {
        "302": {"description": "signed out: the session cookie is cleared, and the browser is sent to the sign-in page",
                "headers": {"Location": header("the sign-in page", required=True)}},
    }, public=True, redis=False)


# -- the pronunciation lexicon (web/lexicon.py) ---------------------------------------------------------------------

def _lexicon(paths: _Paths, settings: Settings) -> None:
    from chatterbox.lexicon import MAX_TERM

    owner = query_param("owner", "admin keys: another key's lexicon by its id (`-`: the jobs that belong to no key)",
                        string())
    term = path_param("term", "the term, as stored (case and all)", string(minLength=1, maxLength=MAX_TERM), "Nguyen")
    bad_owner = err("`owner` names another key's lexicon and this is not an admin key (`forbidden`)")
    entry = ref("LexiconEntry")
    paths.add("get", "/lexicon", "listLexicon", "Lexicon", "The key's pronunciation lexicon", {
        "200": ok("every entry, by term", ref("Lexicon")), "403": bad_owner,
    }, parameters=[owner], description="Entries respell whole words (any case unless `case_sensitive`; the longest "
                                       "term first) in the text of every job of the key, before it is normalized "
                                       "and chunked. A job speaks by the lexicon as it was when it started.")
    paths.add("put", "/lexicon", "replaceLexicon", "Lexicon", "Replace the whole lexicon (an import)", {
        "200": ok("the lexicon now", ref("LexiconEntries")),
        "400": err("not `{\"entries\": [...]}` (`invalid_body`), or an entry at fault, named as `entries[i].say`"),
        "403": bad_owner,
        "409": err(f"more entries than a lexicon may have (`too_many_entries`, {settings.lexicon_max_entries})"),
    }, parameters=[owner], body={"required": True, "content": json_content(ref("LexiconImport"))})
    paths.add("delete", "/lexicon", "clearLexicon", "Lexicon", "Remove every entry", {
        "200": ok("how many entries there were", ref("LexiconCleared")), "403": bad_owner,
    }, parameters=[owner])
    paths.add("get", "/lexicon/{term}", "getLexiconEntry", "Lexicon", "One entry", {
        "200": ok("the entry", entry), "403": bad_owner, "404": err("no entry for that term (`unknown_term`)"),
    }, parameters=[term, owner])
    paths.add("put", "/lexicon/{term}", "setLexiconEntry", "Lexicon", "Set how a term is said", {
        "200": ok("the entry, replaced", entry), "201": ok("the entry, new", entry),
        "400": err("a field at fault, named in `param`: an empty or too long `term` or `say`, a line break in one "
                   "(`missing_field`, `too_long`, `invalid_value`), an unknown field (`unknown_field`), or IPA the "
                   "voice cannot say (`unknown_phoneme`)"),
        "403": bad_owner,
        "409": err(f"the lexicon is full (`too_many_entries`, {settings.lexicon_max_entries} entries)"),
    }, parameters=[term, owner], body={"required": True, "content": json_content(ref("LexiconEntryRequest"))})
    paths.add("delete", "/lexicon/{term}", "deleteLexiconEntry", "Lexicon", "Remove an entry", {
        "200": ok("removed", ref("LexiconEntryDeleted")),
        "403": bad_owner, "404": err("no entry for that term (`unknown_term`)"),
    }, parameters=[term, owner])
    paths.add("post", "/lexicon/preview", "previewLexicon", "Lexicon", "A text as the key's jobs would say it", {
        "200": ok("the text with the lexicon applied (markup left out, before the engine's normalization)",
                  ref("LexiconPreview")),
        "400": err("no text (`missing_field`), too long (`text_too_long`), or bad markup (`invalid_markup`)"),
        "403": bad_owner,
    }, parameters=[owner], body={"required": True, "content": json_content(ref("LexiconPreviewRequest"))})


# -- OpenAI-compatible ----------------------------------------------------------------------------------------------

def _openai(paths: _Paths) -> None:
    job = {"X-Job-Id": header("the job's id: it is an ordinary job, listed in `GET /jobs`", required=True),
           "X-Job-Url": header("the job's status URL", required=True)}
    failed = {"description": "", "headers": job, "content": json_content(ref("Error"))}
    paths.add("post", "/v1/audio/speech", "createSpeech", "OpenAI-compatible", "Text to speech, as OpenAI's API", {
        "200": {"description": "the audio as it is made (chunked), with the format's Content-Type; with "
                               "`stream_format: sse`, server-sent events: `speech.audio.delta` with base64 `audio`, "
                               "then `speech.audio.done` with `usage` (or `error`, in the error shape)",
                "headers": job,
                "content": {**{m: {"schema": {"type": "string", "format": "binary"}}
                               for m in dict.fromkeys(SPEECH_TYPES.values())},
                            "text/event-stream": {"schema": string()}}},
        "400": err("invalid request, naming the field (OpenAI's names) in `param`: `missing_field`, "
                   "`model_not_found`, `unknown_format`, `unknown_stream_format`, `out_of_range`, "
                   "`unknown_field`, `text_too_long`, `text_empty`"),
        "404": UNKNOWN_VOICE,
        "409": {**failed, "description": "the job was cancelled before it made any audio (`job_cancelled`)"},
        "415": err("not JSON (`unsupported_media_type`)"),
        "500": {**failed, "description": "the job failed before it made any audio (`job_failed`)"},
        "504": {**failed, "description": "the job made no audio within `CHATTERBOX_WAIT_TIMEOUT_S` (`job_stalled`); "
                                         "it was cancelled"},
    }, description="A job like `POST /synthesize` (source `openai`), answered with its audio while the worker makes "
                   "it. A client that goes away before the end cancels the job.",
        body={"required": True, "content": json_content(ref("SpeechRequest"))}, creates_job=True)
    paths.add("post", "/dev/captioned_speech", "createCaptionedSpeech", "Kokoro-compatible",
              "Text to speech with word timestamps, as Kokoro-FastAPI's", {
        "200": {"description": "`stream: false`: one `CaptionedSpeechResponse`, the whole file; else (the default) "
                               "newline-delimited JSON, a `CaptionedSpeechResponse` per piece of audio as it is made; "
                               "a job that fails on the way ends it with a line in the error shape",
                "headers": {**job, "X-Download-Path": header("with `return_download_link`: the job's audio URL")},
                "content": {**json_content(ref("CaptionedSpeechResponse")),
                            captioned.NDJSON: {"schema": string("CaptionedSpeechResponse objects, one a line")}}},
        "400": err("invalid request, naming the field (Kokoro's names) in `param`: as `/v1/audio/speech`'s, and "
                   "`unsupported` (`allow_voice_tags`), `not_ssml`, `unknown_language` (`lang_code`)"),
        "404": UNKNOWN_VOICE,
        "409": {**failed, "description": "the job was cancelled before its audio was complete (`job_cancelled`)"},
        "415": err("not JSON (`unsupported_media_type`)"),
        "500": {**failed, "description": "the job failed (`job_failed`)"},
        "504": {**failed, "description": "the job made no progress within `CHATTERBOX_WAIT_TIMEOUT_S` "
                                         "(`job_stalled`); it was cancelled"},
    }, description="A job like `/v1/audio/speech`'s (source `captioned`), for clients of Kokoro-FastAPI; the word "
                   "timestamps are the job's (`GET /jobs/{job_id}/words`), in seconds of the answer's audio. A client "
                   "that goes away before the end of a stream cancels the job.",
        body={"required": True, "content": json_content(ref("CaptionedSpeechRequest"))}, creates_job=True)
    paths.add("get", "/v1/models", "listModels", "OpenAI-compatible", "The models, as OpenAI lists them", {
        "200": ok("the active engine under its own name and OpenAI's model names", ref("ModelList")),
    })
    paths.add("get", "/v1/models/{model_id}", "getModel", "OpenAI-compatible", "A model", {
        "200": ok("the model", ref("Model")),
        "404": err("no such model (`model_not_found`)"),
    }, parameters=[path_param("model_id", "a model id of `GET /v1/models`", string(), "tts-1")])
