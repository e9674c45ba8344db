"""A small typed client for the chatterbox-jobs REST API and its job-events websocket.

    from web.client import Client
    client = Client("http://127.0.0.1:5000", api_key="cbx_...")
    client.say("Hello there.", "hello.mp3")

Answers are the API's own models (chatterbox/schemas: the ones /openapi.json is made from): ``job.status``, or
``job["status"]`` as with the JSON. Nothing here imports Flask or touches the web app, so other programs can use it
without the server's dependencies being initialised.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Union, get_args, get_origin
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import requests
import websocket
from pydantic import TypeAdapter, ValidationError

from chatterbox.schemas import records as r

log = logging.getLogger(__name__)

DEFAULT_SERVER = "http://127.0.0.1:5000"
FINAL_EVENTS = frozenset({"done", "error"})
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

FileInput = Union[str, os.PathLike, bytes, IO[bytes]]
EventCallback = Callable[[dict], None]


class ChatterboxError(Exception):
    """Base of every error this client raises."""


class ApiError(ChatterboxError):
    """The server refused or failed a request; ``str(err)`` is the server's own message."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, message={self.message!r}, code={self.code!r}, " \
               f"param={self.param!r})"


class AuthError(ApiError):
    """401: the API key is missing, wrong or revoked."""


class NotFound(ApiError):
    """404: no such job, voice, book, chapter or chunk."""


class RateLimited(ApiError):
    """429: too many requests or queued jobs for this key; ``retry_after`` seconds from the Retry-After header."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 retry_after: float | None = None):
        super().__init__(status, message, code, param)
        self.retry_after = retry_after


class ConnectionFailed(ApiError):
    """The server could not be reached (refused, timed out, or the event stream could not be re-established)."""

    def __init__(self, message: str):
        super().__init__(0, message, "connection_failed")


class JobFailed(ChatterboxError):
    """A job or book ended ``failed`` or ``cancelled``; ``job`` is its final record, ``str(err)`` its error."""

    def __init__(self, job: dict):
        self.job = job
        self.status: str = job.get("status", "failed")
        default = "cancelled" if self.status == "cancelled" else "failed without an error message"
        super().__init__(f"job {job.get('id', '?')} {self.status}: {job.get('error') or default}")


class WaitTimeout(ChatterboxError, TimeoutError):
    """``wait``/``events`` gave up after their ``timeout``; the job goes on running on the server."""


def _error_from_response(response: requests.Response) -> ApiError:
    """The exception for an error response, with the message of the API's one error shape when it has it."""
    message, code, param = None, None, None
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message, code, param = error.get("message"), error.get("code"), error.get("param")
        elif isinstance(error, str):
            message = error
    except ValueError:
        pass
    if not message:
        # Not our JSON (a proxy's page, say): the reason and the start of the body are the best we have.
        text = " ".join(response.text.split())[:200]
        message = f"HTTP {response.status_code} {response.reason or ''}".strip() + (f": {text}" if text else "")
    return _error(response.status_code, message, code, param, response.headers)


def _error(status: int, message: str, code: str | None, param: str | None,
           headers: Mapping[str, str] | None = None) -> ApiError:
    if status == 401:
        return AuthError(status, message, code, param)
    if status == 404:
        return NotFound(status, message, code, param)
    if status == 429:
        return RateLimited(status, message, code, param, _retry_after((headers or {}).get("Retry-After")))
    return ApiError(status, message, code, param)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough that "unknown" is the honest answer


class EventStream(Iterator[dict]):
    """The events of one job, in order, across reconnections, ending after the final ``done`` or ``error``.

    On a dropped connection it reconnects with ``?after=<last event id>``, so no event is missed or repeated;
    ``reconnects`` counts how often. ``last_id`` is the id of the last event delivered.
    """

    def __init__(self, client: "Client", job_id: str, after: str | None = None, timeout: float | None = None,
                 retries: int = 5, backoff_s: float = 0.5, idle_s: float = 60.0):
        self.client, self.job_id, self.last_id = client, job_id, after
        self.reconnects = 0
        self.finished = False
        self._deadline = time.monotonic() + timeout if timeout is not None else None
        self._retries, self._backoff_s, self._idle_s = retries, backoff_s, idle_s
        self._conn: websocket.WebSocket | None = None
        self._gen = self._run()

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> dict:
        return next(self._gen)

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop following; the job itself goes on."""
        self._gen.close()
        self._drop_conn()

    def drop(self) -> None:
        """Break the current connection as a network failure would; the next event comes over a new one."""
        self._drop_conn()

    def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.shutdown()  # no closing handshake: the server may be gone, and a drop should look like one
            except (OSError, websocket.WebSocketException):
                pass  # already broken; it is gone either way

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"job {self.job_id} did not finish in time")
        return left

    def _run(self) -> Iterator[dict]:
        failures = 0
        while True:
            left = self._remaining()
            try:
                self._conn = self.client._ws_connect(self.job_id, self.last_id, min(self._idle_s, left or self._idle_s))
            except ConnectionFailed as exc:
                failures += 1
                if failures > self._retries:
                    raise ConnectionFailed(f"{exc}; gave up after {failures} attempts") from None
                time.sleep(min(self._backoff_s * 2 ** (failures - 1), 10.0))
                self.reconnects += 1
                continue
            try:
                while True:
                    conn = self._conn
                    if conn is None:
                        break  # dropped by drop()
                    left = self._remaining()
                    conn.settimeout(min(self._idle_s, left) if left is not None else self._idle_s)
                    message = conn.recv()
                    if not message:
                        failures += 1  # closed without a final event: resume, but not forever
                        break
                    event = json.loads(message)
                    failures = 0  # the connection works: only consecutive failures count against the budget
                    self.last_id = event.get("id", self.last_id)
                    yield event
                    if event.get("type") in FINAL_EVENTS:
                        self.finished = True
                        return
            except websocket.WebSocketTimeoutException:
                # Quiet for idle_s (a queued book, say): a fresh connection also proves the server still lives.
                pass
            except (websocket.WebSocketException, OSError, ValueError):
                failures += 1
            finally:
                self._drop_conn()
            if failures > self._retries:
                raise ConnectionFailed(f"lost the events of job {self.job_id} after {failures} dropped connections")
            if failures:
                time.sleep(min(self._backoff_s * 2 ** (failures - 1), 10.0))
            self.reconnects += 1


class Client:
    """The REST API and job events of one chatterbox-jobs server.

    ``base_url`` defaults to the settings' server, ``$CHATTERBOX_SERVER`` (else http://127.0.0.1:5000), ``api_key``
    to their api_key, ``$CHATTERBOX_API_KEY``; with a key, every request and websocket handshake carries
    ``Authorization: Bearer``.
    ``websockets=False`` makes ``wait`` poll the job instead of following its events.
    Errors are raised as ``ApiError`` and its subclasses, carrying the server's message.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30, *,
                 websockets: bool = True):
        self.websockets = websockets  # False: wait() polls (for proxies that do not pass websockets)
        if base_url is None or api_key is None:
            # chatterbox.settings needs nothing beyond the standard library: this module stays free of the server's
            # dependencies.
            from chatterbox.settings import load

            configured = load()
            base_url = base_url or configured.server
            api_key = api_key if api_key is not None else configured.api_key
        self.base_url = (base_url or DEFAULT_SERVER).rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{self.base_url!r} is not a server URL like http://127.0.0.1:5000")
        self.api_key = api_key or None
        self.timeout = timeout
        self.session = requests.Session()
        # Sent with each request rather than as a session default, so that it is visibly part of every call.
        self._auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, api_key={'***' if self.api_key else None})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any) -> requests.Response:
        """One request; raises the matching ApiError for any status >= 400 not listed in ``ok``."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **self._auth}
        try:
            response = self.session.request(method, self._url(path), **kwargs)
        except requests.ConnectionError as exc:
            raise ConnectionFailed(f"cannot reach {self.base_url} ({_reason(exc)})") from None
        except requests.Timeout:
            raise ConnectionFailed(f"{self.base_url} did not answer within {kwargs['timeout']} s") from None
        except requests.RequestException as exc:  # a connection cut mid-answer, a broken redirect, ...
            raise ConnectionFailed(f"the request to {self.base_url} failed ({_reason(exc)})") from None
        if response.status_code >= 400 and response.status_code not in ok:
            raise _error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def _as(self, model: Any, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> Any:
        """The answer as ``model`` (a Record class, or ``list[Record]`` for the list under ``key``)."""
        body = self._json(method, path, **kwargs)
        return _parsed(model, body[key] if key else body, f"{method} {path}")

    def _bytes(self, path: str, **kwargs: Any) -> bytes:
        return self.request("GET", path, **kwargs).content

    def _download(self, path: str, dest: str | os.PathLike | None, default_name: str) -> bytes | Path:
        """The body of GET ``path``; with ``dest`` written there atomically (into it under the server's file name
        when ``dest`` is a directory) and the file's path returned."""
        if dest is None:
            return self._bytes(path)
        dest = Path(dest)
        params = {"download": 1} if dest.is_dir() else None
        with self.request("GET", path, params=params, stream=True) as response:
            if dest.is_dir():
                dest = dest / (_attachment_name(response.headers.get("Content-Disposition")) or default_name)
            tmp = dest.with_name(f".{dest.name}.part")
            try:
                with open(tmp, "wb") as f:
                    for block in response.iter_content(1 << 16):
                        f.write(block)
                os.replace(tmp, dest)  # never a half-written file under the real name
            except requests.RequestException as exc:
                tmp.unlink(missing_ok=True)
                raise ConnectionFailed(f"the download from {self.base_url} broke off ({_reason(exc)})") from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return dest

    def _ws_url(self, job_id: str, after: str | None) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = urlencode({"after": after}) if after else ""
        return urlunsplit((scheme, parts.netloc, f"{parts.path}/ws/jobs/{quote(job_id, safe='')}", query, ""))

    def _ws_connect(self, job_id: str, after: str | None, timeout: float) -> websocket.WebSocket:
        """An open websocket on the job's events; raises ApiError for a refused handshake (unknown job: NotFound),
        ConnectionFailed when the server cannot be reached."""
        header = [f"Authorization: Bearer {self.api_key}"] if self.api_key else []
        try:
            return websocket.create_connection(self._ws_url(job_id, after), timeout=timeout, header=header,
                                               enable_multithread=True)
        except websocket.WebSocketBadStatusException as exc:
            raise _handshake_error(exc) from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectionFailed(f"cannot reach {self.base_url} for the events of job {job_id} "
                                   f"({_reason(exc)})") from None

    # -- service -----------------------------------------------------------------------------------------------
    def health(self) -> r.Health | r.HealthDown | r.HealthStatus:
        """Redis, engine, queues and workers; HealthDown (the 503's body) when Redis is not reachable; only the
        status (HealthStatus) without a valid key."""
        body = self._json("GET", "/health", ok=(503,))
        if "redis" not in body:
            return _parsed(r.HealthStatus, body, "GET /health")
        return _parsed(r.HealthDown if body.get("status") == "unavailable" else r.Health, body, "GET /health")

    def engine(self) -> r.Engine:
        """The engine's description: parameters and their ranges, formats, the text limit."""
        return self._as(r.Engine, "GET", "/engine")

    # -- jobs --------------------------------------------------------------------------------------------------
    def synthesize(self, text: str, voice: str | None = None, format: str = "wav",
                   params: Mapping[str, Any] | None = None, model: str | None = None,
                   language: str | None = None) -> r.JobLinks:
        """Queue a synthesis job (``model``: original, turbo or multilingual; ``language``: a code such as "de");
        the 202 body (``job_id`` and its links)."""
        body: dict[str, Any] = {"text": text, "format": format}
        for name, value in (("voice", voice), ("model", model), ("language", language)):
            if value is not None:
                body[name] = value
        if params:
            body["params"] = dict(params)
        return self._as(r.JobLinks, "POST", "/synthesize", json=body)

    def job(self, id: str, text: bool = False) -> r.JobDetail:
        """A job's record (any kind: synthesis, clone, audiobook)."""
        return self._as(r.JobDetail, "GET", f"/jobs/{_seg(id)}", params={"text": 1} if text else None)

    def jobs(self, limit: int = 50) -> list[r.JobListItem]:
        """Recent jobs, newest first."""
        return self._as(list[r.JobListItem], "GET", "/jobs", key="jobs", params={"limit": limit})

    def cancel(self, id: str) -> r.CancelResult:
        """Cancel a job: ``status`` is ``cancelled`` at once for a queued one, else it stops after its chunk."""
        return self._as(r.CancelResult, "DELETE", f"/jobs/{_seg(id)}")

    def events(self, id: str, after: str | None = None, *, timeout: float | None = None,
               retries: int = 5) -> EventStream:
        """The job's events from the start (or after event id ``after``), following it live with automatic resume,
        ending after ``done`` or ``error``. ``retries`` consecutive failed reconnections raise ConnectionFailed."""
        return EventStream(self, id, after, timeout=timeout, retries=retries)

    def wait(self, id: str, on_event: EventCallback | None = None, timeout: float | None = None,
             poll_s: float = 1.0) -> r.JobDetail:
        """Wait for the job to finish and return its final record (whatever its status). ``on_event`` gets every
        event; when the websocket cannot be used, the record is polled and fed to it as ``progress`` events."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        if not self.websockets:
            return self._poll(id, on_event, deadline, poll_s)
        stream = self.events(id, timeout=timeout)
        try:
            for event in stream:
                if on_event is not None:
                    on_event(event)
            return self.job(id)
        except (AuthError, RateLimited):
            raise
        except NotFound as exc:
            if exc.code in ("job_not_found", "book_not_found"):
                raise
            # a 404 that is not ours: a proxy that does not route websockets
        except ConnectionFailed:
            pass  # maybe only websockets are blocked; polling says soon enough if the server is gone
        except ApiError as exc:
            if exc.status in (400, 403) and exc.code:
                raise  # the server itself refused (a malformed id): polling would not help
        finally:
            stream.close()
        return self._poll(id, on_event, deadline, poll_s)

    def _poll(self, id: str, on_event: EventCallback | None, deadline: float | None, poll_s: float) -> r.JobDetail:
        seen: tuple | None = None
        while True:
            job = self.job(id)
            state = (job.get("status"), job.get("progress"), job.get("chunks_done"))
            if on_event is not None and state != seen:
                final = job.get("status") in TERMINAL
                kind = ("done" if job["status"] == "succeeded" else "error") if final else "progress"
                # no "id": in events that is a stream id, which a polled record does not have
                fields = {k: v for k, v in job.as_dict().items() if k != "id"}
                on_event({**fields, "type": kind, "job_id": id})
            seen = state
            if job.get("status") in TERMINAL:
                return job
            if deadline is not None and time.monotonic() + poll_s > deadline:
                raise WaitTimeout(f"job {id} did not finish in time")
            time.sleep(poll_s)

    def download(self, id: str, path: str | os.PathLike | None = None) -> bytes | Path:
        """The finished job's audio: bytes, or written to ``path`` (a file, or a directory to put it in)."""
        return self._download(f"/jobs/{_seg(id)}/audio", path, f"{id}.audio")

    def say(self, text: str, path: str | os.PathLike, voice: str | None = None, format: str | None = None,
            params: Mapping[str, Any] | None = None, on_event: EventCallback | None = None,
            timeout: float | None = None) -> Path:
        """Synthesize ``text`` into the file ``path`` (format from its suffix unless given) and return the path;
        raises JobFailed when the job fails or is cancelled."""
        path = Path(path)
        fmt = format or (path.suffix.lstrip(".").lower() or "wav")
        submitted = self.synthesize(text, voice=voice, format=fmt, params=params)
        job = self.wait(submitted["job_id"], on_event=on_event, timeout=timeout)
        if job.get("status") != "succeeded":
            raise JobFailed(job)
        result = self.download(submitted["job_id"], path)
        assert isinstance(result, Path)
        return result

    # -- voices ------------------------------------------------------------------------------------------------
    def voices(self) -> list[r.Voice]:
        """Every voice of the engine (built-in ones marked ``builtin``) and the saved ones it can use."""
        return self._as(list[r.Voice], "GET", "/voices", key="voices")

    def saved_voices(self) -> list[r.SavedVoice]:
        return self._as(list[r.SavedVoice], "GET", "/saved-voices", key="voices")

    def voice(self, id: str) -> r.Voice:
        return self._as(r.Voice, "GET", f"/voices/{_seg(id)}")

    def clone_voice(self, file: FileInput, name: str, description: str = "", tags: list[str] | str | None = None,
                    exaggeration: float | None = None) -> r.JobLinks:
        """Queue a clone job from a recording (a path, bytes or a binary file); the 202 body. The job's record
        gets ``voice_id`` when it succeeds."""
        form: dict[str, Any] = {"name": name, "description": description}
        if tags:
            form["tags"] = tags if isinstance(tags, str) else ",".join(tags)
        if exaggeration is not None:
            form["exaggeration"] = str(exaggeration)
        with _FilePart(file, "clip.wav") as part:
            return self._as(r.JobLinks, "POST", "/voice-clone", data=form, files={"file": part})

    def update_voice(self, id: str, **fields: Any) -> r.SavedVoice:
        """Change a saved voice's ``name``, ``description`` or ``tags``."""
        return self._as(r.SavedVoice, "PATCH", f"/voices/{_seg(id)}", json=fields)

    def delete_voice(self, id: str) -> r.VoiceDeleted:
        return self._as(r.VoiceDeleted, "DELETE", f"/voices/{_seg(id)}")

    def voice_sample(self, id: str) -> bytes:
        """A short WAV preview in the voice."""
        return self._bytes(f"/voices/{_seg(id)}/sample")

    def export_voice(self, id: str) -> bytes:
        """The voice as one file (metadata, conditionals, clips) for import_voice elsewhere."""
        return self._bytes(f"/voices/{_seg(id)}/export")

    def import_voice(self, data: FileInput, name: str | None = None) -> r.SavedVoice:
        """Save an exported voice here (``name`` renames it); the new voice."""
        with _FilePart(data, "voice.voice") as part:
            return self._as(r.SavedVoice, "POST", "/voices/import", files={"file": part},
                            params={"name": name} if name else None)

    # -- the pronunciation lexicon -----------------------------------------------------------------------------
    def lexicon(self) -> list[r.LexiconEntry]:
        """This key's lexicon entries (``term``, ``say``, ``case_sensitive``, ...), by term."""
        return self._as(list[r.LexiconEntry], "GET", "/lexicon", key="entries")

    def set_lexicon_entry(self, term: str, say: str, case_sensitive: bool = False) -> r.LexiconEntry:
        """Say ``term`` (a whole word) as ``say`` in this key's jobs; the stored entry."""
        return self._as(r.LexiconEntry, "PUT", f"/lexicon/{_seg(term)}",
                        json={"say": say, "case_sensitive": case_sensitive})

    def remove_lexicon_entry(self, term: str) -> r.LexiconEntryDeleted:
        return self._as(r.LexiconEntryDeleted, "DELETE", f"/lexicon/{_seg(term)}")

    def replace_lexicon(self, entries: list[dict]) -> list[r.LexiconEntry]:
        """The whole lexicon at once (each entry ``term``, ``say``, optional ``case_sensitive``): all or nothing."""
        return self._as(list[r.LexiconEntry], "PUT", "/lexicon", key="entries", json={"entries": entries})

    def preview_lexicon(self, text: str) -> str:
        """``text`` as this key's jobs would say it (the lexicon applied)."""
        return self._json("POST", "/lexicon/preview", json={"text": text})["text"]

    # -- audiobooks --------------------------------------------------------------------------------------------
    def parse_book(self, file: FileInput | None = None, text: str | None = None,
                   source_format: str | None = None) -> r.BookSummary:
        """The chapters the server would read the book as (nothing is queued): ``{"book": {...}}``."""
        return _parsed(r.BookSummary, self._book_request("/audiobooks/parse", file, text, None,
                                                         {"source_format": source_format}), "POST /audiobooks/parse")

    def submit_book(self, file: FileInput | None = None, text: str | None = None,
                    chapters: list[dict] | None = None, **options: Any) -> r.BookSubmitted:
        """Queue an audiobook from a file (.txt, .md, .epub), ``text`` or reviewed ``chapters``; options: title,
        author, language, model, voice, format (mp3/ogg), params, source_format, and ``lexicon``: the book's own
        pronunciation entries (``[{"term", "say", "case_sensitive"}, ...]``, as ``replace_lexicon`` takes them),
        which win over the key's own for the same term. The 202 body."""
        return _parsed(r.BookSubmitted, self._book_request("/audiobooks", file, text, chapters, options),
                       "POST /audiobooks")

    def _book_request(self, path: str, file: FileInput | None, text: str | None, chapters: list[dict] | None,
                      options: Mapping[str, Any]) -> dict:
        options = {k: v for k, v in options.items() if v is not None}
        if sum(x is not None for x in (file, text, chapters)) != 1:
            raise ValueError("give exactly one of file, text or chapters")
        if file is None:
            body = {**options, **({"text": text} if text is not None else {"chapters": chapters})}
            return self._json("POST", path, json=body)
        form = {k: json.dumps(v) if k in ("params", "lexicon") else str(v) for k, v in options.items()}
        suffix = options.get("source_format") or "txt"
        with _FilePart(file, f"book.{suffix}") as part:
            return self._json("POST", path, data=form, files={"file": part})

    def book(self, id: str, text: bool = False) -> r.Book:
        """A book's state: plan, chapters, chunks done, ETA, quality, files."""
        return self._as(r.Book, "GET", f"/audiobooks/{_seg(id)}", params={"text": 1} if text else None)

    def books(self) -> list[r.BookListItem]:
        return self._as(list[r.BookListItem], "GET", "/audiobooks", key="audiobooks")

    def pause_book(self, id: str) -> r.BookAction:
        return self._as(r.BookAction, "POST", f"/audiobooks/{_seg(id)}/pause")

    def resume_book(self, id: str) -> r.BookAction:
        return self._as(r.BookAction, "POST", f"/audiobooks/{_seg(id)}/resume")

    def cancel_book(self, id: str) -> r.BookAction:
        return self._as(r.BookAction, "POST", f"/audiobooks/{_seg(id)}/cancel")

    def regenerate_chunk(self, id: str, index: int) -> r.Regenerated:
        """Make chunk ``index`` again with a new seed, then re-assemble its chapter and the book."""
        return self._as(r.Regenerated, "POST", f"/audiobooks/{_seg(id)}/chunks/{int(index)}/regenerate")

    def download_chapter(self, id: str, index: int, path: str | os.PathLike | None = None) -> bytes | Path:
        """Chapter ``index`` (0-based): bytes, or written to ``path`` (a directory: under the server's name)."""
        return self._download(f"/audiobooks/{_seg(id)}/chapters/{int(index)}", path, f"{index + 1:03d}.audio")

    def download_m4b(self, id: str, path: str | os.PathLike | None = None) -> bytes | Path:
        """The whole book as M4B with chapter markers: bytes, or written to ``path`` (file or directory)."""
        return self._download(f"/audiobooks/{_seg(id)}/m4b", path, f"{id}.m4b")


def _parsed(model: Any, data: Any, what: str) -> Any:
    """``data`` as ``model``; an answer the model does not fit (a server of another version) is kept as it came,
    unchecked, rather than lost: read by key it is the same."""
    try:
        return TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        log.warning("the answer to %s is not what this client expects (%s); kept unchecked", what,
                    str(exc).splitlines()[0])
    if get_origin(model) is list:
        return [get_args(model)[0].model_construct(**item) for item in data]
    return model.model_construct(**data)


def _seg(value: str) -> str:
    """One URL path segment: an id with a slash must not reach another route."""
    return quote(str(value), safe="")


def _reason(exc: BaseException) -> str:
    """The innermost useful cause, e.g. 'Connection refused', instead of urllib3's nested repr."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^')\]]+)", text)
    if match:
        return match.group(1).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _handshake_error(exc: websocket.WebSocketBadStatusException) -> ApiError:
    body = getattr(exc, "resp_body", None) or b""
    headers = {str(k).title(): str(v) for k, v in (getattr(exc, "resp_headers", None) or {}).items()}
    try:
        error = json.loads(body).get("error") or {}
        if isinstance(error, dict) and error.get("message"):
            return _error(exc.status_code, error["message"], error.get("code"), error.get("param"), headers)
    except (ValueError, AttributeError):
        pass
    return _error(exc.status_code, f"the websocket handshake was refused: HTTP {exc.status_code} "
                  f"{getattr(exc, 'status_message', '') or ''}".strip(), None, None, headers)


def _attachment_name(header: str | None) -> str | None:
    """The file name of a Content-Disposition header (RFC 6266 ``filename*`` first), reduced to a bare name."""
    if not header:
        return None
    match = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", header)
    name = unquote(match.group(1).strip()) if match else None
    if name is None:
        match = re.search(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"|filename\s*=\s*([^;]+)', header)
        name = (match.group(1) or match.group(2) or "").strip() if match else None
    name = Path(name.replace("\\", "/")).name if name else None  # never a path from the server
    return name if name and name not in (".", "..") else None


class _FilePart:
    """A multipart file part from a path, bytes or an open binary file; opens (and closes) paths itself."""

    def __init__(self, file: FileInput, default_name: str):
        self.file, self.default_name = file, default_name
        self._opened: IO[bytes] | None = None

    def __enter__(self) -> tuple[str, Any]:
        if isinstance(self.file, (str, os.PathLike)):
            path = Path(self.file)
            self._opened = open(path, "rb")
            return path.name, self._opened
        if isinstance(self.file, (bytes, bytearray)):
            return self.default_name, bytes(self.file)
        name = Path(str(getattr(self.file, "name", "") or self.default_name)).name
        return name, self.file

    def __exit__(self, *exc: object) -> None:
        if self._opened is not None:
            self._opened.close()
