"""The Flask app: REST API, websocket job events and the dashboard, over the chatterbox library."""
from __future__ import annotations

import re
from typing import Any, Mapping

import redis
from flask import Flask, jsonify

from chatterbox import settings as settings_mod
from chatterbox.engines import choose_engine, create_engine
from chatterbox.jobs import JobStore


class Services:
    """What the request handlers share: settings, the job store, the fan-out of job events to their followers, an
    engine object for validation (never loaded here: the workers synthesize) and the task that runs a job."""

    def __init__(self, settings: settings_mod.Settings):
        from .fanout import Fanout

        self.settings = settings
        # redis-py's pool refuses connection 101 ("Too many connections", a 503): 150 websockets opened at once hit
        # it (measured). A thread uses one connection at a time (gunicorn's threads, a pump thread per streamed
        # speech response, the event listener), and the pool only grows as far as they need at once.
        self.store = JobStore.connect(settings, socket_timeout=5, max_connections=2 * settings.web_threads + 4)
        self.fanout = Fanout(self.store)
        self.engine_name, self.engine_reason = choose_engine(settings)
        self.engine = create_engine(settings, "cpu", self.engine_name)
        if hasattr(self.engine, "_shared"):  # a job may ask only for a model some worker holds
            self.engine._shared.availability = self.models_held

    def models_held(self) -> list[str]:
        """The Chatterbox models the workers hold that have loaded theirs; before any has, those whose files are
        here (or CHATTERBOX_MODELS names): a job sent while the first worker starts is queued, not refused."""
        from chatterbox.engines.models import MODELS, configured_models

        try:
            workers = [w for w in self.store.workers() if w.get("model_loaded")]
        except REDIS_ERRORS:
            workers = []
        if not workers:
            return configured_models(self.settings)
        held = {m for w in workers for m in w.get("models") or []}
        return [name for name in MODELS if name in held]

    def enqueue(self, job_id: str, attempt: int = 1) -> None:
        from tasks import synthesize  # Celery's app reads the same settings through celeryconfig

        synthesize.apply_async(kwargs={"job_id": job_id, "attempt": attempt}, task_id=job_id)


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

    from . import api, auth, books, docs, events, openai_api, pages, voices

    events.init_app(app)  # before authentication: websockets take turns to be authenticated and accepted
    with app.app_context():
        auth.init_app(app)
    _ensure_admin_key(app)

    app.register_blueprint(api.bp)
    app.register_blueprint(books.bp)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(voices.bp)
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


def services() -> Services:
    from flask import current_app

    return current_app.extensions["chatterbox"]


def error_response(status: int, message: str, code: str, param: str | None = None):
    """The one error shape of the API (the same as OpenAI's): {"error": {"message", "type", "param", "code"}}."""
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    response = jsonify(error={"message": message, "type": kind, "param": param, "code": code})
    response.status_code = status
    return response


def redis_down_response(exc: Exception):
    url = settings_mod.redact_url(services().settings.broker_url)
    return error_response(503, f"Redis is not reachable at {url} ({exc}); jobs cannot be queued or read until it is "
                          "back", "redis_unavailable")


# Redis answering, but refusing writes: out of memory (maxmemory), a failed snapshot or AOF write (a full disk:
# MISCONF), a replica. The service is unavailable until the operator acts; nothing in the request is at fault. In a
# script's error the code comes after the script's name ("... @user_script: 15: -OOM command not allowed ...").
REFUSAL = re.compile(r"(?:^|[\s-])((?:MISCONF|OOM|READONLY|NOREPLICAS|MASTERDOWN|LOADING)\b[^.]*)")


def redis_refusal_response(exc: redis.exceptions.ResponseError):
    found = REFUSAL.search(str(exc))
    if found is None:
        raise exc  # a fault of ours, not of Redis' state: a 500 and a traceback in the log
    return error_response(503, f"Redis refuses to store anything right now ({found.group(1).strip()}); retry once "
                          "its operator has made room", "redis_refuses_writes")


REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError)
