"""API keys, per-key isolation, limits, websocket checks and browser sign-in, against real servers."""
from __future__ import annotations

import time

import pytest
import requests
import websocket

from chatterbox.keys import KeyStore
from tests.conftest import System, free_port, signed_in_page, wait_until

NO_KEY = {"Authorization": None}  # requests drops a header set to None: this call sends no key


def keys_of(system: System) -> KeyStore:
    return KeyStore(system.store.r)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def two_keys(live):
    store = keys_of(live)
    suffix = str(time.monotonic_ns())
    (_, a), (_, b) = store.create(f"alice-{suffix}"), store.create(f"bob-{suffix}")
    return a, b


@pytest.mark.parametrize("headers", [
    NO_KEY,
    {"Authorization": "Bearer"},
    {"Authorization": "Token cbx_0123456789_abcdefghijklmnopqrstuvwx"},
    {"Authorization": "Bearer cbx_0123456789_abcdefghijklmnopqrstuvwx"},
    {"Authorization": "Bearer not-even-close"},
])
@pytest.mark.parametrize("method, path", [("GET", "/jobs"), ("POST", "/synthesize"), ("GET", "/voices"),
                                          ("GET", "/audiobooks"), ("GET", "/engine"), ("GET", "/jobs/abc/audio")])
def test_every_route_wants_a_valid_key_and_never_says_which_part_was_wrong(live, headers, method, path):
    response = requests.request(method, live.url + path, headers=headers, json={"text": "Hi."}, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == {
        "message": "a valid API key is required: send it as 'Authorization: Bearer <key>'",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_health_is_open_but_says_only_whether_the_system_is_up(live, two_keys):
    job = live.submit("Something private is being said here, at some length, so that it runs a while. " * 3)
    wait_until(lambda: live.job(job["job_id"])["status"] == "running", 60, what="the job to run")
    anonymous = requests.get(live.url + "/health", headers=NO_KEY, timeout=10)
    # No hostnames, pids, paths, versions or jobs for anyone without a key.
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    someone = requests.get(live.url + "/health", headers=bearer(two_keys[0]), timeout=10).json()
    assert someone["workers"] and all("current_job" not in w for w in someone["workers"])
    # An admin sees every job a worker runs (at its next beat: the job may have started since the last one).
    wait_until(lambda: any(job["job_id"] in (w.get("current_jobs") or [])
                           for w in live.api.get("/health", timeout=10).json()["workers"]), 10, 0.2,
               "the worker's beat to name the job")
    live.wait_job(job["job_id"])


def test_a_revoked_key_stops_working_at_once(live):
    store = keys_of(live)
    key, token = store.create(f"temporary-{time.monotonic_ns()}")
    assert requests.get(live.url + "/jobs", headers=bearer(token), timeout=10).status_code == 200
    store.revoke(key.id)
    assert requests.get(live.url + "/jobs", headers=bearer(token), timeout=10).status_code == 401


def test_keys_are_stored_only_as_salted_hashes(live):
    store = keys_of(live)
    key, token = store.create(f"hashed-{time.monotonic_ns()}")
    r = live.store.r
    everything = " ".join(f"{k}={r.hgetall(k) if r.type(k) == 'hash' else r.smembers(k)}"
                          for k in r.scan_iter("cbx:apikey*"))
    secret = token.split("_", 2)[2]  # cbx_<id>_<secret>; the secret may itself hold "_" (URL-safe base64)
    assert token not in everything and secret not in everything
    record = live.store.r.hgetall(f"cbx:apikey:{key.id}")
    assert set(record) >= {"salt", "hash"} and len(record["salt"]) == 32
    _, twin = store.create(f"hashed-twin-{time.monotonic_ns()}")
    assert store.verify(token).id == key.id and store.verify(twin).id != key.id


def test_each_key_sees_and_cancels_only_its_own_jobs(live, two_keys):
    alice, bob = two_keys
    sent = requests.post(live.url + "/synthesize", json={"text": "Alice's words, for Alice only."},
                         headers=bearer(alice), timeout=10).json()
    job_id = sent["job_id"]
    for method, path in [("GET", f"/jobs/{job_id}"), ("DELETE", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/audio"),
                         ("GET", f"/jobs/{job_id}/chunks/0")]:
        response = requests.request(method, live.url + path, headers=bearer(bob), timeout=10)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "job_not_found"
    assert job_id not in requests.get(live.url + "/jobs", headers=bearer(bob), timeout=10).text
    assert job_id in requests.get(live.url + "/jobs", headers=bearer(alice), timeout=10).text
    assert job_id in live.api.get("/jobs?limit=500", timeout=10).text  # the admin key sees everything
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"{live.ws_url}/ws/jobs/{job_id}", header=[f"Authorization: Bearer {bob}"],
                                    timeout=10)
    assert refused.value.status_code == 404
    done = live.wait_job(job_id)
    assert done["owner"] and requests.get(f"{live.url}/jobs/{job_id}/audio", headers=bearer(alice),
                                          timeout=10).status_code == 200


def test_books_are_private_too(live, two_keys):
    alice, bob = two_keys
    sent = requests.post(live.url + "/audiobooks", json={"text": "Chapter One\n\nA private book."},
                         headers=bearer(alice), timeout=30)
    assert sent.status_code == 202, sent.text
    book_id = sent.json()["job_id"]
    for method, path in [("GET", f"/audiobooks/{book_id}"), ("POST", f"/audiobooks/{book_id}/pause"),
                         ("GET", f"/audiobooks/{book_id}/m4b")]:
        assert requests.request(method, live.url + path, headers=bearer(bob), timeout=10).status_code == 404
    assert book_id not in requests.get(live.url + "/audiobooks", headers=bearer(bob), timeout=10).text
    wait_until(lambda: requests.get(f"{live.url}/audiobooks/{book_id}", headers=bearer(alice),
                                    timeout=10).json()["status"] == "succeeded", 120, what="the book")


def test_websockets_are_refused_before_any_event(live):
    job = live.submit("Who may listen?")
    url = f"{live.ws_url}{job['events_url']}"
    for header in ([], ["Authorization: Bearer wrong"]):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, header=header, timeout=10)
        assert refused.value.status_code == 401
    with pytest.raises(websocket.WebSocketBadStatusException) as foreign:
        websocket.create_connection(url, header=[f"Authorization: Bearer {live.api_key}"],
                                    origin="https://evil.example", timeout=10)
    assert foreign.value.status_code == 403
    own = websocket.create_connection(url, header=[f"Authorization: Bearer {live.api_key}"], origin=live.url,
                                      timeout=30)
    assert '"type"' in own.recv()
    own.close()
    live.wait_job(job["job_id"])


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """A system with tight limits and no worker, so that jobs stay queued."""
    sys_ = System(tmp_path_factory.mktemp("strict"), worker=False)
    sys_.env.update(CHATTERBOX_RATE_LIMIT_PER_MINUTE="30", CHATTERBOX_MAX_QUEUED_JOBS="2",
                    CHATTERBOX_MAX_BODY_KB="8", CHATTERBOX_MAX_UPLOAD_MB="1")
    sys_.start()
    yield sys_
    sys_.stop()


def test_queued_jobs_are_capped_per_key(strict):
    store = keys_of(strict)
    _, mine = store.create("capped")
    _, other = store.create("other")
    for _ in range(2):
        assert requests.post(strict.url + "/synthesize", json={"text": "Queued."}, headers=bearer(mine),
                             timeout=10).status_code == 202
    third = requests.post(strict.url + "/synthesize", json={"text": "One too many."}, headers=bearer(mine), timeout=10)
    assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_jobs"
    assert int(third.headers["Retry-After"]) >= 1
    # The cap is per key: another key still may.
    assert requests.post(strict.url + "/synthesize", json={"text": "Mine."}, headers=bearer(other),
                         timeout=10).status_code == 202
    # Cancelling one makes room.
    job_id = requests.get(strict.url + "/jobs", headers=bearer(mine), timeout=10).json()["jobs"][0]["id"]
    requests.delete(f"{strict.url}/jobs/{job_id}", headers=bearer(mine), timeout=10)
    assert requests.post(strict.url + "/synthesize", json={"text": "Room again."}, headers=bearer(mine),
                         timeout=10).status_code == 202


def test_requests_are_rate_limited_per_key_across_web_processes(strict):
    _, token = keys_of(strict).create("chatty")
    # A second web app process on the same Redis: the limit is shared.
    # A port of its own: the one after the first app's was once another test process's (address in use).
    port = free_port()
    second = type(strict.web)(["web", "--port", str(port)], strict.env, strict.root / "web2.log").start()
    try:
        wait_until(lambda: _up(f"http://127.0.0.1:{port}/health"), 60, what="the second web app")
        urls = [strict.url, f"http://127.0.0.1:{port}"]
        answers = [requests.get(urls[i % 2] + "/jobs", headers=bearer(token), timeout=10) for i in range(40)]
    finally:
        second.kill()
    codes = [a.status_code for a in answers]
    assert codes.count(200) <= 30 and codes[-1] == 429, codes
    limited = next(a for a in answers if a.status_code == 429)
    assert limited.json()["error"]["code"] == "rate_limited" and 1 <= int(limited.headers["Retry-After"]) <= 61


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_bodies_over_the_limits_get_413(strict):
    big_json = strict.api.post("/synthesize", json={"text": "x" * 20_000}, timeout=10)
    assert big_json.status_code == 413 and big_json.json()["error"]["code"] == "request_too_large"
    big_upload = strict.api.post("/voices/import", files={"file": ("v.voice", b"\0" * (2 * 1024 * 1024))},
                                 timeout=30)
    assert big_upload.status_code == 413
    assert "1 MB" in big_upload.json()["error"]["message"]


def test_sign_in_and_out_in_the_browser(live, browser):
    page = browser.new_page()
    page.goto(live.url + "/books")
    assert "/login" in page.url  # pages send a person to sign in
    page.fill("#key", "not a key")
    page.click("#sign-in")
    assert page.text_content("#login-error") == "That key is not valid."
    page.close()
    page = signed_in_page(browser, live)
    cookie = next(c for c in page.context.cookies() if c["name"] == "cbx_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    # The session works for the page's own API calls, and a state-changing call without the CSRF token is refused.
    status = page.evaluate("fetch('/jobs').then(r => r.status)")
    assert status == 200
    forged = page.evaluate("""fetch('/synthesize', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                   body: JSON.stringify({text: 'forged'})}).then(r => r.status)""")
    assert forged == 403
    page.click("#sign-out")
    page.wait_for_url("**/login")
    assert page.evaluate("fetch('/jobs').then(r => r.status)") == 401
