"""The API description: GET /openapi.json (built by web.openapi from the code) and /docs, the page that shows it."""
from __future__ import annotations

import json

from flask import Blueprint, current_app, render_template

from .common import services
from .openapi import build_document

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi():
    # Built per request: cheap, and it follows the engine's voices and the settings of this process.
    # json.dumps, not jsonify: the app's JSON provider sorts keys, and the document reads best in its own order.
    document = build_document(services())
    response = current_app.response_class(json.dumps(document, indent=1), mimetype="application/json")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/docs")
def docs_page():
    return render_template("docs.html")
