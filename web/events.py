"""Websocket job events: replay from the job's stream after the client's last event id, then follow live."""
from __future__ import annotations

import json
import logging
import threading

from flask import Blueprint, Flask, abort, g, request, url_for
from flask_sock import Sock
from simple_websocket import ConnectionClosed
from wsproto.frame_protocol import CloseReason

from chatterbox.jobs import parse_event_id

from .api import job_or_404
from .common import REDIS_ERRORS, error_response, services

log = logging.getLogger(__name__)
sock = Sock()
bp = Blueprint("events", __name__)

RESUME_ARGS = ("after", "last_event_id")
# A client answers the server's close frame within milliseconds; one that has not answered after this is not waited for.
CLOSE_WAIT_S = 2.0
# Websockets opened together take turns, this many at a time, from authentication to the handshake: 500 opened at
# once otherwise had 500 threads queueing for the interpreter lock, and every other request waited behind them all
# (measured: /health up to 2.2 s; in turns of 4, 0.14 s, with all 500 open as soon: 2.5-2.8 s against 3.0-3.7 s).
OPENING_AT_ONCE = 4
_openings = threading.BoundedSemaphore(OPENING_AT_ONCE)


def init_app(app: Flask) -> None:
    """Websockets take turns to open; called before authentication is registered, which is part of the opening."""
    app.before_request(_take_turn)
    app.teardown_request(_end_turn)


def _take_turn() -> None:
    if request.endpoint == "events.job_events":
        _openings.acquire()
        g.opening = True


def _end_turn(exc: BaseException | None = None) -> None:
    if g.pop("opening", False):
        _openings.release()


def check_request(job_id: str) -> None:
    """Refuse before the handshake (flask-sock accepts the websocket before the handler runs)."""
    job_or_404(job_id)
    after = _after()
    if after is not None:
        try:
            parse_event_id(after)
        except ValueError:
            abort(error_response(400, f"after={after!r} is not an event id (like 1700000000000-0)",
                                 "invalid_event_id", "after"))


def _after() -> str | None:
    for name in RESUME_ARGS:
        if request.args.get(name):
            return request.args[name]
    return None


@sock.route("/ws/jobs/<job_id>", bp=bp)
def job_events(ws, job_id: str):
    _end_turn()  # accepted: the rest of its life is spent waiting for events
    code = message = None
    try:
        for event in services().fanout.follow(job_id, _after(), stop=lambda: not ws.connected):
            if event["type"] == "chunk":
                event["url"] = url_for("api.job_chunk", job_id=job_id, index=event["index"])
            elif event["type"] == "done":
                event["audio_url"] = url_for("api.job_audio", job_id=job_id)
                if event.get("kind", "synthesize") == "synthesize" and event.get("status") == "succeeded":
                    event["words_url"] = url_for("api.job_words", job_id=job_id)
                    event["subtitles_url"] = url_for("api.job_subtitles", job_id=job_id)
            ws.send(json.dumps(event))
    except REDIS_ERRORS as exc:
        # After the handshake an HTTP error response would land in the middle of the websocket's frames (clients
        # read it as a broken frame): the close frame says it instead.
        log.warning("websocket of job %s closed: Redis is not reachable (%s)", job_id, exc)
        code, message = CloseReason.INTERNAL_ERROR, "Redis is not reachable; reconnect with ?after=<last event id>"
    finally:
        _close(ws, code, message)


def _close(ws, code: int | None = None, message: str | None = None) -> None:
    """Close the websocket, wait briefly for the client's answer, and let go of the socket.

    Once the handler returns, gunicorn closes the socket on its one main thread, first waiting up to 2 s for the
    client to hang up; simple-websocket's reader thread, still reading the same socket, could take that hang-up, and
    the whole web app stood still for 2 s each time (measured with 300 websockets: /health up to 2.0 s while their
    jobs ended, and kept-alive connections reset). The reader thread ends at the client's answer and closes the
    socket; a socket left open by a client that never answered is closed here, so gunicorn has nothing to wait for.
    """
    try:
        ws.close(reason=code, message=message)
    except (ConnectionClosed, OSError):
        pass  # the client closed first, or is gone
    ws.thread.join(CLOSE_WAIT_S)
    ws.sock.close()
