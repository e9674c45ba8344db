"""The app factory: the Flask app with its REST API, websocket job events and dashboard."""
from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from chatterbox import settings as settings_mod

from .common import Services


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """App factory. ``config`` overrides settings by field name; the rest come from CHATTERBOX_* variables."""
    app = Flask(__name__)
    settings = settings_mod.load(config)
    app.config.update(JSON_SORT_KEYS=False, MAX_CONTENT_LENGTH=settings.max_upload_mb * 1024 * 1024, SOCK_SERVER_OPTIONS={"ping_interval": 25})
    app.extensions["chatterbox"] = Services(settings)
    if settings.proxy_hops > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)

    from . import api, auth, books, captioned, docs, events, lexicon, openai_api, pages, voices

    events.init_app(app)  # before authentication: websockets take turns to be authenticated and accepted
    with app.app_context():
        auth.init_app(app)
    _ensure_admin_key(app)

    app.register_blueprint(api.bp)
    app.register_blueprint(books.bp)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(captioned.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(voices.bp)
    app.register_blueprint(lexicon.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(events.bp)
    api.register_error_handlers(app)
    return app


def _ensure_admin_key(app: Flask) -> None:
    """Register or make the admin key; while Redis is down, keep trying in the background, so the app still starts
    (and answers 503 until Redis is back) instead of failing to boot."""
    import redis
    import threading
    import time

    from . import auth

    def attempt() -> bool:
        try:
            with app.app_context():
                _announce_admin_key(auth.ensure_admin_key(auth.key_store(), app.extensions["chatterbox"].settings.admin_key))
            return True
        except redis.exceptions.ConnectionError:
            return False

    def retry() -> None:
        while not attempt():
            time.sleep(2)

    if not attempt():
        app.logger.warning("Redis is not answering; the admin key is registered once it does")
        threading.Thread(target=retry, name="admin-key", daemon=True).start()


def _announce_admin_key(token: str | None) -> None:
    """The first start makes an admin key: shown here once, never stored in the clear."""
    if token is None:
        return
    import sys

    bar = "=" * 78
    print(f"\n{bar}\n  Your admin API key (shown once; create more with `chatterbox keys create NAME`):\n\n"
          f"      {token}\n\n  Sign in to the dashboard with it, or send it as 'Authorization: Bearer <key>'.\n"
          f"{bar}\n", file=sys.stderr, flush=True)
