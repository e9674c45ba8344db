"""The dashboard pages, and signing in and out with an API key."""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from . import auth
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


@bp.get("/ops")
def ops_page():
    return render_template("ops.html")


@bp.get("/login")
def login():
    return render_template("login.html", next=auth.safe_next(request.args.get("next")), error=None)


@bp.post("/login")
def login_submit():
    target = auth.safe_next(request.form.get("next"))
    key = auth.key_store().verify((request.form.get("key") or "").strip())
    if key is None:
        return render_template("login.html", next=target, error="That key is not valid."), 401
    auth.sign_in(key)
    return redirect(target)


@bp.post("/logout")
def logout():
    auth.sign_out()
    return redirect(url_for("pages.login"))
