"""Who is asking, before any handler runs: an API key (``Authorization: Bearer``) or a signed-in browser session.

Also here, because they apply to every route alike: request body limits, per-key rate limits and a limit on failed
authentications per client address (kept in Redis, so they hold across web processes), the websocket Origin
allow-list, and CSRF protection for requests that ride on the session cookie (and for signing in). The cap on
unfinished jobs is the job store's, where jobs are admitted. Websockets are checked here too: flask-sock accepts the
connection only after ``before_request`` has let the request through, so a rejected socket never receives an event.
"""
from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask, g, redirect, request, session, url_for

from chatterbox import keys as keys_mod, settings as settings_mod
from chatterbox.access import Caller
from chatterbox.keys import ApiKey, KeyStore
from chatterbox.limits import RateLimiter

from .common import error_response, services

# Open to anyone: the health check (which then says nothing about jobs or users), sign-in, the API description.
PUBLIC = {"api.health", "pages.login", "pages.login_submit", "pages.logout", "static", "docs.openapi",
          "docs.docs_page"}
PAGES = {"pages.index", "pages.voices_page", "pages.books_page", "pages.history_page", "pages.ops_page",
         "pages.lexicon_page"}  # HTML: a person is sent to sign in instead
UPLOADS = {"api.submit", "voices.clone", "voices.import_voice"}
WEBSOCKETS = {"events.job_events"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"
SESSION_LIFETIME = timedelta(days=7)


def init_app(app: Flask) -> None:
    settings = services().settings
    # Signs session cookies: made once, kept in the data directory, shared by every web process.
    app.secret_key = settings_mod.secret_file(settings.data_dir / "secret-key", lambda: secrets.token_bytes(32))
    app.config.update(SESSION_COOKIE_NAME="cbx_session", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=settings.cookie_secure, PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME)
    app.extensions["chatterbox.keys"] = KeyStore(services().store.r, env_admin=settings.admin_key)
    app.extensions["chatterbox.limiter"] = RateLimiter(services().store.r)
    app.before_request(authenticate)
    app.register_error_handler(AuthBlocked, too_many_failures)
    app.context_processor(lambda: {"current_key": getattr(g, "api_key", None), "csrf_token": session.get("csrf", "")})


def key_store() -> KeyStore:
    from flask import current_app

    return current_app.extensions["chatterbox.keys"]


def _session_record(sid: str) -> str:
    return f"{keys_mod.PREFIX}:websession:{sid}"


def sign_in(key: ApiKey) -> None:
    """A new session: its record in Redis (so that signing out ends it for good, even for a copy of the cookie) and
    the cookie, signed, naming it."""
    session.clear()
    session.permanent = True
    sid = secrets.token_urlsafe(24)
    services().store.r.set(_session_record(sid), key.id, ex=int(SESSION_LIFETIME.total_seconds()))
    session["sid"] = sid
    session["key_id"] = key.id
    session["csrf"] = secrets.token_urlsafe(24)


def sign_out() -> None:
    sid = session.get("sid")
    if sid:
        services().store.r.delete(_session_record(str(sid)))
    session.clear()


def _session_key() -> ApiKey | None:
    """The key of this browser's session, while the session's record lives (signing out deletes it) and the key is
    active."""
    key_id, sid = session.get("key_id"), session.get("sid")
    if not key_id or not sid or services().store.r.get(_session_record(str(sid))) != key_id:
        return None
    key = key_store().get(key_id)
    return key if key is not None and key.active else None


def csrf_ok() -> bool:
    """Whether this request carries the session's CSRF token: the X-CSRF-Token header (scripts) or a csrf_token form
    field (plain forms, such as signing out). A session without a token matches nothing."""
    expected = str(session.get("csrf", ""))
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        token = request.form.get("csrf_token")
    return bool(expected) and hmac.compare_digest(str(token or ""), expected)


def current_key() -> ApiKey:
    return g.api_key


def caller() -> Caller:
    """Who this request is, for the lookups that apply the ownership rules (chatterbox.access)."""
    return g.api_key.caller


def owner_filter() -> str | None:
    """The owner to list records for: None (everything) for an admin key, else the key's own id."""
    key = g.api_key
    return None if key.admin else key.id


def _body_limit(endpoint: str) -> int:
    settings = services().settings
    if endpoint.startswith("books."):
        return settings.book_max_mb * 1024 * 1024
    if endpoint in UPLOADS and (request.mimetype == "multipart/form-data" or endpoint == "voices.import_voice"):
        return settings.max_upload_mb * 1024 * 1024
    return settings.max_body_kb * 1024


def _size(limit: int) -> str:
    return f"{limit / 2**20:.0f} MB" if limit >= 2**20 else f"{limit / 1024:.0f} KB"


def _unauthorized():
    response = error_response(401, "a valid API key is required: send it as 'Authorization: Bearer <key>'",
                              "invalid_api_key")
    response.headers["WWW-Authenticate"] = 'Bearer realm="chatterbox-jobs"'
    return response


def _origin_allowed() -> bool:
    origin = request.headers.get("Origin")
    if not origin:
        return True  # programs (no browser) send none; they still need a key
    own = f"{request.scheme}://{request.host}"
    allowed = {own, *(o.strip().rstrip("/") for o in services().settings.allowed_origins.split(",") if o.strip())}
    return origin.rstrip("/") in allowed


class AuthBlocked(Exception):
    """Too many failed authentications from one client address: refused before any key is checked."""

    def __init__(self, retry_after: int):
        super().__init__(retry_after)
        self.retry_after = retry_after


def verify_token(token: str) -> ApiKey | None:
    """The active key a token is (a bearer token, or the key typed into the sign-in form), or None. Failures are
    counted per client address, and past CHATTERBOX_AUTH_FAILURES_PER_MINUTE the address is refused (AuthBlocked)
    until the minute is over, before any hashing: guessing costs an attacker a minute per few dozen tries."""
    limit = services().settings.auth_failures_per_minute
    name = f"authfail:{request.remote_addr or '-'}"
    retry = request_limiter().exceeded(name, limit, 60)
    if retry is not None:
        raise AuthBlocked(retry)
    key = key_store().verify(token)
    if key is None:
        request_limiter().hit(name, limit, 60)
    return key


def too_many_failures(exc: AuthBlocked):
    return _too_many("too many failed attempts to authenticate from this address "
                     "(CHATTERBOX_AUTH_FAILURES_PER_MINUTE); try again later", "auth_rate_limited", exc.retry_after)


def request_key() -> ApiKey | None:
    """The key of this request if it has a valid one (for public routes, which do not require one)."""
    if getattr(g, "api_key", None) is not None:
        return g.api_key
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return verify_token(token.strip()) if scheme.lower() == "bearer" else None
    return _session_key()


def authenticate():
    endpoint = request.endpoint or ""
    limit = _body_limit(endpoint)
    request.max_content_length = limit  # also stops bodies sent without a length, as they are read
    if request.content_length is not None and request.content_length > limit:
        return error_response(413, f"the request body is over the limit of {_size(limit)}", "request_too_large")
    if not endpoint or endpoint in PUBLIC:
        return None  # unknown routes get their 404 from Flask
    # Missing, malformed, unknown, wrong or revoked: one answer, which does not say which.
    via = "bearer" if request.headers.get("Authorization") is not None else "session" if session.get("key_id") \
        else None
    key = request_key() if via else None
    if key is None:
        if via == "session":
            session.clear()  # the key behind this session was revoked
        if endpoint in PAGES and request.method == "GET":
            return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
        return _unauthorized()
    if endpoint in WEBSOCKETS and not _origin_allowed():
        return error_response(403, f"websocket connections from {request.headers.get('Origin')} are not allowed "
                              "(CHATTERBOX_ALLOWED_ORIGINS)", "origin_not_allowed")
    if via == "session" and request.method not in SAFE_METHODS and not csrf_ok():
        return error_response(403, "the request is missing its CSRF token; reload the page", "csrf_failed")
    g.api_key = key
    g.auth_via = via
    settings = services().settings
    retry = request_limiter().hit(f"rate:{key.id}", settings.rate_limit_per_minute, 60)
    if retry is not None:
        return _too_many(f"more than {settings.rate_limit_per_minute} requests a minute with this key "
                         "(CHATTERBOX_RATE_LIMIT_PER_MINUTE)", "rate_limited", retry)
    return None


def request_limiter() -> RateLimiter:
    from flask import current_app

    return current_app.extensions["chatterbox.limiter"]


def _too_many(message: str, code: str, retry_after: int):
    response = error_response(429, message, code)
    response.headers["Retry-After"] = str(max(1, int(retry_after)))
    return response


def safe_next(target: str | None) -> str:
    """Only a path on this site (never another host) to go to after signing in."""
    if not target:
        return url_for("pages.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.index")
    return target


def ensure_admin_key(store: KeyStore, admin_key: str | None) -> str | None:
    """At start: register CHATTERBOX_ADMIN_KEY, or make the first admin key when there is none. Returns a newly
    made key (to be shown once), else None."""
    if admin_key:
        store.register_env_admin(admin_key)
        return None
    if store.has_admin():
        return None
    try:
        _, token = store.create("admin", admin=True)
    except keys_mod.ApiKeyError:  # another web process made it (or "admin" exists, revoked): nothing to show
        return None
    return token
