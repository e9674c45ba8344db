"""The dashboard pages."""
from __future__ import annotations

from flask import Blueprint, render_template, request

from .events import check_request

bp = Blueprint("pages", __name__)


@bp.before_app_request
def refuse_bad_websockets():
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
