"""Signing in to the dashboard and out again, in a real browser (Debian's chromium driven by Playwright), against the
shared system: the redirect to /login and back, wrong keys, the session cookie, CSRF, and signing out for good."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.conftest import free_port, shot

PAGES = ["/", "/history", "/books", "/voice-library", "/pronunciation", "/ops"]



@pytest.fixture()
def context(browser):
    context = browser.new_context()  # fresh: no cookies
    yield context
    context.close()


def sign_in(page, live, path="/history"):
    page.goto(live.url + path)
    page.get_by_label("API key").fill(live.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live.url + path)


def session_cookie(context) -> dict:
    return next(c for c in context.cookies() if c["name"] == "cbx_session")


@pytest.fixture()
def other_site():
    """Pages served from another port of this host: another origin, but the same site, so the browser sends the
    dashboard's SameSite=Lax cookie along with what they post (which is what the CSRF token is there for)."""
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, "not found").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield pages, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_page_sends_a_stranger_to_sign_in(live):
    for path in PAGES:
        response = requests.get(live.url + path, headers={"Authorization": None}, allow_redirects=False, timeout=10)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next=" + path.replace("/", "%2F")) or \
            response.headers["Location"].startswith("/login?next=" + path), (path, response.headers["Location"])
    # The API answers 401 instead; the sign-in page itself is open.
    assert requests.get(live.url + "/jobs", headers={"Authorization": None}, timeout=10).status_code == 401
    assert requests.get(live.url + "/login", headers={"Authorization": None}, timeout=10).status_code == 200


def test_sign_in_lands_on_the_page_asked_for(live, context):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.url + "/history?status=failed")
    assert page.url.startswith(live.url + "/login?next=")
    assert page.evaluate("document.activeElement.id") == "key"  # ready to type

    # A wrong key: said beside the field, which is marked invalid; nothing is signed in.
    page.get_by_label("API key").fill("cbx_not-a-real-key")
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    assert page.text_content("#login-error") == "That key is not valid."
    assert page.get_attribute("#key", "aria-invalid") == "true"
    assert "login-error" in page.get_attribute("#key", "aria-describedby")
    shot(page, "signin-wrong-key")
    assert page.evaluate("fetch('/jobs').then(r => r.status)") == 401

    # The right key: back to the page that was asked for, with its query.
    page.get_by_label("API key").fill(live.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live.url + "/history?status=failed")
    page.wait_for_selector("#summary:not(:empty)")
    assert page.get_by_label("Status").input_value() == "failed"
    assert page.text_content("#sign-out") == "Sign out"
    assert errors == []


def test_the_session_cookie(live, context):
    page = context.new_page()
    sign_in(page, live)
    cookie = session_cookie(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert not cookie["secure"]  # plain HTTP here; CHATTERBOX_COOKIE_SECURE=1 behind HTTPS
    assert cookie["expires"] > 0  # kept across browser restarts (7 days), until signing out
    assert "cbx_session" not in page.evaluate("document.cookie")  # out of reach of scripts
    # Nothing of the API key is in the cookie, nor in the page.
    assert live.api_key not in cookie["value"] and live.api_key not in page.content()
    shot(page, "signin-signed-in")


def test_changes_need_the_csrf_token(live, context):
    page = context.new_page()
    sign_in(page, live)
    forged = page.evaluate("""fetch('/synthesize', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                    body: JSON.stringify({text: 'forged'})})
                              .then(async r => [r.status, (await r.json()).error.code])""")
    assert forged == [403, "csrf_failed"]
    wrong = page.evaluate("""fetch('/synthesize', {method: 'POST', headers: {'Content-Type': 'application/json',
                                                    'X-CSRF-Token': 'guessed'}, body: JSON.stringify({text: 'x'})})
                             .then(r => r.status)""")
    assert wrong == 403
    # The page's own token (in its meta tag) is what makes the same request go through.
    sent = page.evaluate("""fetch('/synthesize', {method: 'POST', headers: {'Content-Type': 'application/json',
                              'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
                              body: JSON.stringify({text: 'Signed in for real.'})}).then(r => r.status)""")
    assert sent == 202
    shot(page, "signin-csrf")


def test_other_sites_cannot_post_for_the_session(live, context, other_site):
    pages, origin = other_site
    page = context.new_page()
    sign_in(page, live)
    pages["/out"] = f"""<form method="post" action="{live.url}/logout"></form>
                        <script>document.forms[0].submit()</script>"""
    pages["/speak"] = f"""<form method="post" action="{live.url}/synthesize">
                          <input name="text" value="forged from elsewhere"></form>
                          <script>document.forms[0].submit()</script>"""
    for path in ("/out", "/speak"):
        with page.expect_response(lambda r: r.url.startswith(live.url) and r.request.method == "POST") as answer:
            page.goto(origin + path)
        assert answer.value.status == 403, path
        assert answer.value.json()["error"]["code"] == "csrf_failed"
    # Still signed in, and nothing was queued.
    page.goto(live.url + "/history?q=forged")
    page.wait_for_url(live.url + "/history?q=forged")
    page.wait_for_selector("#empty:not([hidden])")
    shot(page, "signin-other-sites")


def test_sign_out_ends_the_session(live, context, browser):
    page = context.new_page()
    sign_in(page, live)
    copied = session_cookie(context)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(live.url + "/login")
    page.goto(live.url + "/history")
    assert page.url.startswith(live.url + "/login?next=")
    assert page.evaluate("fetch('/jobs').then(r => r.status)") == 401
    shot(page, "signin-signed-out")
    # Ended on the server: a copy of the cookie taken before signing out no longer signs anyone in.
    replay = browser.new_context()
    try:
        replay.add_cookies([copied])
        other = replay.new_page()
        other.goto(live.url + "/history")
        assert other.url.startswith(live.url + "/login?next=")
    finally:
        replay.close()
