"""The dashboard pages, and signing in and out with an API key."""
from __future__ import annotations

import hmac
import secrets

from flask import Blueprint, redirect, render_template, request, session, url_for

from chatterbox.errors import RequestError
from chatterbox.schemas.requests import LoginForm

from . import auth
from .common import error_response, services
from .events import check_request

bp = Blueprint("pages", __name__)


@bp.before_app_request
def refuse_bad_websockets():
    # Runs after web.auth.authenticate: a socket without a valid key never gets this far.
    if request.endpoint == "events.job_events":
        check_request(request.view_args["job_id"])


@bp.get("/")
def index():
    return render_template("index.html")


@bp.get("/voice-library")
def voices_page():
    return render_template("voices.html")


@bp.get("/books")
def books_page():
    return render_template("books.html")


@bp.get("/history")
def history_page():
    return render_template("history.html")


# /lexicon itself is the REST list of entries (JSON), as /voices is for the voices page (/voice-library).
@bp.get("/pronunciation")
def lexicon_page():
    return render_template("lexicon.html")


@bp.get("/ops")
def ops_page():
    return render_template("ops.html", flower_url=flower_url(), flower_up=flower_answers())


def flower_url() -> str:
    """Where Flower listens (CHATTERBOX_FLOWER_HOST and _PORT); a wildcard host means this server's own name."""
    settings = services().settings
    host = settings.flower_host.strip()
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{settings.flower_port}"


def flower_answers() -> bool:
    """Whether something listens on Flower's port (asked once, as the page is made; a short wait at most)."""
    import socket

    settings = services().settings
    host = settings.flower_host.strip().strip("[]")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    try:
        with socket.create_connection((host, settings.flower_port), timeout=0.3):
            return True
    except OSError:
        return False


@bp.get("/login")
def login():
    return _login_page(auth.safe_next(request.args.get("next")), None, 200)


def _login_page(target: str, error: str | None, status: int):
    # The form carries a token that only this browser's (signed) cookie also holds: a page elsewhere cannot sign this
    # browser in to an account of its choosing (login CSRF), since it can read neither.
    token = session.setdefault("login_csrf", secrets.token_urlsafe(24))
    return render_template("login.html", next=target, error=error, login_csrf=token), status


@bp.post("/login")
def login_submit():
    target = auth.safe_next(request.form.get("next"))
    expected = str(session.get("login_csrf", ""))
    try:
        form = LoginForm.check_form(request.form)
    except RequestError as exc:
        if exc.field != "csrf_token":
            return _login_page(target, f"The sign-in form was not as expected: {exc.message}.", 400)
        form = None
    if form is None or not expected or not hmac.compare_digest(form.csrf_token, expected):
        return _login_page(target, "The sign-in form had expired; please sign in again.", 403)
    key = auth.verify_token(form.key.strip())
    if key is None:
        return _login_page(target, "That key is not valid.", 401)
    auth.sign_in(key)
    return redirect(target)


@bp.post("/logout")
def logout():
    # A form on another site must not be able to sign this browser out: the form carries the session's token.
    if session.get("key_id") and not auth.csrf_ok():
        return error_response(403, "the sign-out form is missing its CSRF token; reload the page and try again",
                              "csrf_failed")
    auth.sign_out()
    return redirect(url_for("pages.login"))
