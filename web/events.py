"""Websocket job events: replay from the job's stream after the client's last event id, then follow live."""
from __future__ import annotations

import json

from flask import Blueprint, abort, request, url_for
from flask_sock import Sock

from chatterbox.jobs import parse_event_id

from . import error_response, services
from .api import job_or_404

sock = Sock()
bp = Blueprint("events", __name__)

RESUME_ARGS = ("after", "last_event_id")


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
    store = services().store
    for event in store.follow(job_id, _after(), stop=lambda: not ws.connected):
        if event["type"] == "chunk":
            event["url"] = url_for("api.job_chunk", job_id=job_id, index=event["index"])
        elif event["type"] == "done":
            event["audio_url"] = url_for("api.job_audio", job_id=job_id)
        ws.send(json.dumps(event))
