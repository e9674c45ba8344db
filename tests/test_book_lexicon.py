"""A book's own pronunciation lexicon, through REST (and the Python client and the CLI) against the real system
(Redis, a Piper worker, the web app): applied on top of the key's own lexicon (a book entry wins for its term), kept
with the book (a chunk regenerated later says the same words), refused naming the entry and field when bad, and a
book submitted again after one entry changed remakes only the chunk whose text changed."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from chatterbox.books.state import BookStore
from web.client import Client

from .conftest import ROOT, plain_key, wait_until

TITLE = "Breakfast"
PARAGRAPHS = ["We bake Brontar every morning.", "Then we spread Quillip on it.", "Later we walk in the Mireloft."]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def key(system):
    """A plain key of this module's own: its lexicon and books touch no other test's."""
    with plain_key(system, "book-lexicon") as token:
        yield token


def submit(live, token: str, lexicon, paragraphs=PARAGRAPHS, **fields):
    body = {"chapters": [{"title": TITLE, "text": "\n\n".join(paragraphs)}], "lexicon": lexicon, **fields}
    return requests.post(live.url + "/audiobooks", json=body, headers=bearer(token), timeout=30)


def state(live, token: str, job_id: str) -> dict:
    response = requests.get(f"{live.url}/audiobooks/{job_id}", params={"text": 1}, headers=bearer(token), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def spoken(book: dict) -> list[str]:
    return [c["text"] for chapter in book["chapters"] for c in chapter["chunks"]]


def finished(live, token: str, job_id: str) -> dict:
    book = wait_until(lambda: (b := state(live, token, job_id))["status"] in ("succeeded", "failed", "cancelled")
                      and b, 300, interval=0.5, what=f"book {job_id} to finish")
    assert book["status"] == "succeeded", book.get("error")
    return book


def synthesized(live, job_id: str) -> set[int]:
    return {i for i, d in BookStore(live.store).done(job_id).items() if d["synthesized"]}


def cancel(live, token: str, job_id: str) -> None:
    requests.post(f"{live.url}/audiobooks/{job_id}/cancel", headers=bearer(token), timeout=10)


def test_a_books_entries_win_over_the_keys_are_kept_and_a_change_remakes_only_its_chunk(live, key):
    for term, say in (("Brontar", "bread"), ("Quillip", "butter")):
        assert requests.put(f"{live.url}/lexicon/{term}", json={"say": say}, headers=bearer(key),
                            timeout=10).status_code == 201
    own = [{"term": "quillip", "say": "honey"}, {"term": "Mireloft", "say": "garden"}]
    response = submit(live, key, own)
    assert response.status_code == 202, response.text
    first = response.json()["job_id"]
    book = state(live, key, first)
    # The key's entry where the book has none; the book's own ("quillip", any case) over the key's "Quillip".
    assert spoken(book)[1:] == ["We bake bread every morning.", "Then we spread honey on it.",
                                "Later we walk in the garden."]
    assert [(e["term"], e["say"], e["case_sensitive"]) for e in book["lexicon"]] == \
        [("quillip", "honey", False), ("Mireloft", "garden", False)]
    finished(live, key, first)

    # The same book again with one entry changed: only the chunk that says it is made; the rest is the cache's.
    own[1]["say"] = "park"
    response = submit(live, key, own)
    assert response.status_code == 202, response.text
    second = response.json()["job_id"]
    book = finished(live, key, second)
    assert spoken(book)[3] == "Later we walk in the park."
    assert (book["synthesized"], book["from_cache"]) == (1, 3)
    assert synthesized(live, second) == {3}
    assert BookStore(live.store).renders(second) == {3: 1}

    # The first book keeps the entries it was planned with: the key's lexicon changed since, and a chunk made
    # again says what it said.
    requests.put(f"{live.url}/lexicon/Brontar", json={"say": "cake"}, headers=bearer(key), timeout=10)
    again = requests.post(f"{live.url}/audiobooks/{first}/chunks/1/regenerate", headers=bearer(key), timeout=10)
    assert again.status_code == 202, again.text
    assert again.json()["chunk"]["text"] == "We bake bread every morning."
    book = finished(live, key, first)
    assert spoken(book)[1] == "We bake bread every morning."
    assert [e["term"] for e in book["lexicon"]] == ["quillip", "Mireloft"]


@pytest.mark.parametrize("lexicon, field, code", [
    ("Nguyen=Win", "lexicon", "invalid_type"),
    (["Nguyen"], "lexicon[0]", "invalid_body"),
    ([{"say": "Win"}], "lexicon[0].term", "missing_field"),
    ([{"term": "Nguyen", "say": "Win"}, {"term": "Smith"}], "lexicon[1].say", "missing_field"),
    ([{"term": "Nguyen", "say": "Win\nWen"}], "lexicon[0].say", "invalid_value"),
    ([{"term": "Nguyen", "say": "Win", "sound": "wɪn"}], "lexicon[0].sound", "unknown_field"),
    ([{"term": "Nguyen", "say": "Win", "case_sensitive": "yes"}], "lexicon[0].case_sensitive", "invalid_type"),
    ("too many", "lexicon", "too_many_entries"),
])
def test_bad_book_entries_are_refused_naming_the_entry_and_field(live, key, lexicon, field, code):
    if lexicon == "too many":
        lexicon = [{"term": f"w{i}", "say": "x"} for i in range(live.settings.lexicon_max_entries + 1)]
    before = len(requests.get(live.url + "/audiobooks", headers=bearer(key), timeout=10).json()["audiobooks"])
    response = submit(live, key, lexicon)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (field, code), error
    assert error["message"]
    after = requests.get(live.url + "/audiobooks", headers=bearer(key), timeout=10).json()["audiobooks"]
    assert len(after) == before, "nothing queued"


def test_a_book_lexicon_through_multipart_the_client_and_the_cli(live, key, tmp_path):
    text = "Toast\n\nWe eat Zelphor at noon.\n"
    with Client(live.url, api_key=key) as client:
        sent = client.submit_book(file=text.encode(), source_format="txt", title="Lunch",
                                  lexicon=[{"term": "Zelphor", "say": "soup"}])
        try:
            assert "We eat soup at noon." in spoken(state(live, key, sent["job_id"]))
        finally:
            client.cancel_book(sent["job_id"])
    bad = requests.post(live.url + "/audiobooks", files={"file": ("b.txt", text.encode())},
                        data={"lexicon": "{not json"}, headers=bearer(key), timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "lexicon", bad.text

    source = tmp_path / "supper.txt"
    source.write_text("We eat Zelphor at supper.\n", encoding="utf-8")
    words = tmp_path / "words.json"
    words.write_text(json.dumps({"entries": [{"term": "Zelphor", "say": "stew"}]}), encoding="utf-8")
    env = {**live.env, "CHATTERBOX_SERVER": live.url, "CHATTERBOX_API_KEY": key}
    run = subprocess.run([sys.executable, "-m", "chatterbox", "book", str(source), "--lexicon", str(words),
                          "--no-wait"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    try:
        assert "We eat stew at supper." in spoken(state(live, key, job_id))
    finally:
        cancel(live, key, job_id)
    words.write_text("[{", encoding="utf-8")
    refused = subprocess.run([sys.executable, "-m", "chatterbox", "book", str(source), "--lexicon", str(words),
                              "--no-wait"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "not JSON" in refused.stderr
