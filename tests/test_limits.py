"""Limits that cannot be walked around: the cap on unfinished jobs holds for books resumed or regenerated and for
submissions at the same instant; tokens that are not ours cost no hashing; failed authentications are limited per
client address; signing in needs the form's own token."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from chatterbox import keys as keys_mod
from chatterbox.keys import KeyStore
from tests.conftest import System, wait_until

CAP = 2


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """A system whose keys may each have CAP unfinished jobs, and whose addresses may fail to authenticate 5 times a
    minute."""
    sys_ = System(tmp_path_factory.mktemp("capped"))
    sys_.env.update(CHATTERBOX_MAX_QUEUED_JOBS=str(CAP), CHATTERBOX_AUTH_FAILURES_PER_MINUTE="5")
    sys_.start()
    yield sys_
    sys_.stop()


def new_key(system: System, name: str) -> str:
    return KeyStore(system.store.r).create(f"{name}-{time.monotonic_ns()}")[1]


def book_status(system: System, token: str, job_id: str) -> str:
    return requests.get(f"{system.url}/audiobooks/{job_id}", headers=bearer(token), timeout=10).json()["status"]


def test_resume_and_regenerate_count_against_the_cap(capped):
    token = new_key(capped, "books")
    sent = requests.post(capped.url + "/audiobooks", headers=bearer(token), timeout=30,
                         json={"text": "A very short book."}).json()
    book = sent["job_id"]
    wait_until(lambda: book_status(capped, token, book) == "succeeded", 120, 0.2, "the book")
    capped.worker.kill()  # from here on, what is queued stays queued
    queued = [requests.post(capped.url + "/synthesize", headers=bearer(token), timeout=10,
                            json={"text": f"Waiting {i}."}).json()["job_id"] for i in range(CAP)]
    # At the cap: a finished book made to run again would be one more unfinished job.
    regenerate = requests.post(f"{capped.url}/audiobooks/{book}/chunks/0/regenerate", headers=bearer(token),
                               timeout=10)
    assert regenerate.status_code == 429, regenerate.text
    assert regenerate.json()["error"]["code"] == "too_many_jobs" and int(regenerate.headers["Retry-After"]) >= 1
    assert book_status(capped, token, book) == "succeeded"  # refused before anything changed
    requests.delete(f"{capped.url}/jobs/{queued[0]}", headers=bearer(token), timeout=10)
    assert requests.post(f"{capped.url}/audiobooks/{book}/chunks/0/regenerate", headers=bearer(token),
                         timeout=10).status_code == 202
    # Cancel the book, fill its place, and resuming it is refused: submit 50, cancel, resume 50 no longer works.
    assert requests.post(f"{capped.url}/audiobooks/{book}/cancel", headers=bearer(token), timeout=10).ok
    assert requests.post(capped.url + "/synthesize", headers=bearer(token), timeout=10,
                         json={"text": "Taking its place."}).status_code == 202
    resume = requests.post(f"{capped.url}/audiobooks/{book}/resume", headers=bearer(token), timeout=10)
    assert resume.status_code == 429 and resume.json()["error"]["code"] == "too_many_jobs", resume.text
    assert book_status(capped, token, book) == "cancelled"
    assert requests.post(capped.url + "/audiobooks", headers=bearer(token), timeout=30,
                         json={"text": "Another book."}).status_code == 429
    capped.start_worker()


def test_submissions_at_the_same_instant_cannot_pass_the_cap_together(capped):
    token = new_key(capped, "burst")
    capped.worker.kill()
    barrier = threading.Barrier(12)
    codes: list[int] = []

    def submit() -> None:
        barrier.wait()
        codes.append(requests.post(capped.url + "/synthesize", headers=bearer(token), timeout=30,
                                   json={"text": "At once."}).status_code)

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202] * CAP + [429] * (12 - CAP), codes
    capped.start_worker()


def test_tokens_that_are_not_ours_cost_no_hashing(capped, monkeypatch):
    """A bearer token of neither form (ours, or the configured admin key) is refused without running scrypt
    (16 MiB and a few ms each: unauthenticated requests could keep every core busy)."""
    hashed = []
    real = keys_mod._hash
    monkeypatch.setattr(keys_mod, "_hash", lambda secret, salt: hashed.append(1) or real(secret, salt))
    store = KeyStore(capped.store.r, env_admin=capped.api_key)
    for junk in ("not-even-close", "x" * 400, "cbx-test-admin-" + "0" * 24, capped.api_key[:-1]):
        assert store.verify(junk) is None
    assert hashed == []
    assert store.verify(capped.api_key).admin and hashed == []  # the configured key is compared as it is
    key, token = store.create(f"hashing-{time.monotonic_ns()}")
    hashed.clear()
    assert store.verify(token).id == key.id and len(hashed) == 1  # ours: one hash, then remembered
    assert store.verify(token).id == key.id and len(hashed) == 1
    assert store.verify(token[:-2] + "zz") is None and len(hashed) == 2


def test_failed_authentications_are_limited_per_address(capped):
    url = capped.url + "/jobs"
    answers = [requests.get(url, headers=bearer(f"wrong-{i}"), timeout=10).status_code for i in range(5)]
    assert answers == [401] * 5
    blocked = requests.get(url, headers=bearer("wrong-again"), timeout=10)
    assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "auth_rate_limited"
    assert 1 <= int(blocked.headers["Retry-After"]) <= 61
    # While blocked, this address gets no answer about any key, a right one included; the form too.
    assert capped.api.get(url, timeout=10).status_code == 429
    assert requests.get(capped.url + "/health", timeout=10, headers={"Authorization": None}).status_code == 200
    # Another address is not blocked: the limit is per client (seen here through a proxy, tests/test_proxy.py).
    r = capped.store.r
    for name in r.scan_iter("cbx:limit:authfail:*"):
        r.delete(name)
    assert capped.api.get(url, timeout=10).status_code == 200


def test_signing_in_needs_the_forms_own_token(capped):
    """Login CSRF: a page elsewhere must not sign a browser in to an account of the attacker's choosing."""
    forged = requests.post(capped.url + "/login", data={"key": capped.api_key, "next": "/"},
                           headers={"Authorization": None}, allow_redirects=False, timeout=10)
    assert forged.status_code == 403 and "Location" not in forged.headers
    browser = requests.Session()
    form = browser.get(capped.url + "/login", headers={"Authorization": None}, timeout=10)
    token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    stolen = requests.post(capped.url + "/login", data={"key": capped.api_key, "csrf_token": token},
                           headers={"Authorization": None}, allow_redirects=False, timeout=10)
    assert stolen.status_code == 403  # the token alone is not enough: it must come with its own cookie
    signed = browser.post(capped.url + "/login", data={"key": capped.api_key, "csrf_token": token, "next": "/"},
                          headers={"Authorization": None}, allow_redirects=False, timeout=10)
    assert signed.status_code == 302 and signed.headers["Location"] == "/"
    assert browser.get(capped.url + "/jobs", headers={"Authorization": None}, timeout=10).status_code == 200
