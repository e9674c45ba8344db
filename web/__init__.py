"""The Flask app: REST API, websocket job events and the dashboard, over the chatterbox library.

``create_app`` (web.app) is imported when first asked for (``web:create_app()``, ``from web import create_app``):
the command line's client, web.client, is in this package too, and importing Flask and the whole app with it cost
every ``chatterbox jobs ...`` command 0.45 s of its 0.8.
"""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
