"""The lexicon page (/pronunciation) in a real browser (Debian's chromium driven by Playwright), against the shared
system and a plain key of its own: entries added, listed, edited and deleted, the API's messages beside the fields,
"hear it" for an entry and for any text (a real job, the audio in the page's player), import and export as JSON."""
from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import horizontal_overflow, plain_key, shot


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def own_key(live):
    """A plain key of this test's own (its lexicon changes no other test's jobs), revoked after."""
    with plain_key(live, "lexicon-page") as token:
        yield token


def lexicon_page(browser, live, token: str, **context):
    """The page, reached as a stranger: sent to sign in, then back to it."""
    page = browser.new_context(**context).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.url + "/pronunciation")
    page.wait_for_url(lambda url: "/login?next=" in url)
    page.fill("#key", token)
    page.click("#sign-in")
    page.wait_for_url(live.url + "/pronunciation")
    page.wait_for_function("document.querySelector('#count').textContent.includes('entr')")
    return page, errors


def heard(page, before: str = "") -> float:
    """Waits for the player to hold new audio (a source other than ``before``) with a length; its duration."""
    handle = page.wait_for_function(
        "before => { const a = document.querySelector('#player');"
        " return a.currentSrc && a.currentSrc !== before && a.readyState >= 1 && a.duration > 0 && a.duration; }",
        arg=before, timeout=120_000)
    return handle.json_value()


def entry_row(page, term: str):
    return page.locator(f'#entries tbody tr[data-term="{term}"]')


def test_add_list_edit_hear_and_delete(live, browser, own_key):
    page, errors = lexicon_page(browser, live, own_key)
    try:
        assert page.get_attribute('nav a[href="/pronunciation"]', "aria-current") == "page"
        assert page.is_visible("#empty")

        # Added: listed with its kind, what it says and its case flag; stored for this key.
        page.get_by_label("Term", exact=True).fill("Zorvath")
        page.get_by_label("Say it as").fill("Win")
        page.get_by_role("button", name="Add", exact=True).click()
        row = entry_row(page, "Zorvath")
        row.wait_for()
        assert [row.locator(f"td.{c}").inner_text() for c in ("term", "kind", "said", "case")] == \
            ["Zorvath", "respell", "Win", "no"]
        assert page.text_content("#count").startswith("1 entry")
        assert requests.get(live.url + "/lexicon/Zorvath", headers=bearer(own_key), timeout=10).json()["say"] == "Win"

        # Edited: the form holds the entry; saved, the row says the new words, case-sensitive now.
        page.get_by_role("button", name="Edit Zorvath").click()
        assert page.text_content("#entry-title") == "Edit “Zorvath”"
        assert page.input_value("#say") == "Win"
        page.get_by_label("Say it as").fill("Wen")
        page.get_by_label("Case-sensitive").check()
        page.get_by_role("button", name="Save", exact=True).click()
        page.wait_for_function("document.querySelector('#entries tbody tr[data-term=\"Zorvath\"] td.said')"
                               ".textContent === 'Wen'")
        assert row.locator("td.case").inner_text() == "yes"
        assert page.text_content("#entry-title") == "Add an entry"
        stored = requests.get(live.url + "/lexicon/Zorvath", headers=bearer(own_key), timeout=10).json()
        assert (stored["say"], stored["case_sensitive"]) == ("Wen", True)

        # Refused by the API: its message beside the field it names, nothing stored.
        page.get_by_label("Term", exact=True).fill("Toolong")
        page.get_by_label("Say it as").fill("x" * 201)
        page.get_by_role("button", name="Add", exact=True).click()
        page.wait_for_selector("#say-error:not([hidden])")
        assert "201 characters long; the limit is 200" in page.text_content("#say-error")
        assert page.get_attribute("#say", "aria-invalid") == "true"
        assert requests.get(live.url + "/lexicon/Toolong", headers=bearer(own_key), timeout=10).status_code == 404
        page.get_by_label("Term", exact=True).fill("")
        page.get_by_role("button", name="Add", exact=True).click()
        assert "Give the term" in page.text_content("#term-error")
        page.get_by_label("Say it as").fill("")

        # Hear it, for the entry: a real job says the term as the lexicon has it; the player holds its audio.
        page.get_by_role("button", name="Hear Zorvath").click()
        page.wait_for_function("document.querySelector('#spoken').textContent.startsWith('Spoken as “Wen”')")
        first = heard(page)
        assert first > 0.1
        shot(page, "lexicon-page-heard")
        # ...and for any text, in a voice chosen here.
        assert page.locator("#voice option").count() >= 2  # the default, and the engine's voices
        page.select_option("#voice", index=1)
        page.get_by_label("Text", exact=True).fill("Ask Zorvath, not zorvath.")
        before = page.evaluate("document.querySelector('#player').currentSrc")
        page.get_by_role("button", name="Hear it", exact=True).click()
        page.wait_for_function("document.querySelector('#spoken').textContent"
                               ".startsWith('Spoken as “Ask Wen, not zorvath.”')")
        assert heard(page, before) > first  # a longer text, a longer sound
        assert page.is_hidden("#error")

        # Deleted after a confirmation; dismissed, it stays.
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.get_by_role("button", name="Delete Zorvath").click()
        assert requests.get(live.url + "/lexicon/Zorvath", headers=bearer(own_key), timeout=10).status_code == 200
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete Zorvath").click()
        page.wait_for_selector("#empty:not([hidden])")
        assert requests.get(live.url + "/lexicon/Zorvath", headers=bearer(own_key), timeout=10).status_code == 404
        assert errors == []
    finally:
        page.context.close()


def test_a_phoneme_entry_is_shown_by_its_kind_and_heard(live, browser, own_key):
    page, errors = lexicon_page(browser, live, own_key)
    try:
        page.select_option("#kind", "phonemes")
        assert page.is_visible("#fallback") and page.text_content("#say-label") == "Phonemes"
        page.get_by_label("Term", exact=True).fill("IPA")
        page.get_by_label("Phonemes").fill("ˈaɪ[pi]")
        page.get_by_role("button", name="Add", exact=True).click()
        page.wait_for_selector("#say-error:not([hidden]), #kind-error:not([hidden])")
        if page.is_visible("#kind-error"):
            pytest.skip(f"this server takes no phoneme entries: {page.text_content('#kind-error')}")
        assert "not phonemes" in page.text_content("#say-error")  # the symbols the voice lacks, named
        page.get_by_label("Phonemes").fill("ˈaɪpiːeɪ")
        page.get_by_label("Otherwise say").fill("eye pee ay")
        page.get_by_role("button", name="Add", exact=True).click()
        row = entry_row(page, "IPA")
        row.wait_for()
        assert row.locator("td.kind").inner_text() == "phonemes"
        assert row.locator("td.said .says").inner_text() == "ˈaɪpiːeɪ"
        assert "otherwise “eye pee ay”" in row.locator("td.said").inner_text()
        stored = requests.get(live.url + "/lexicon/IPA", headers=bearer(own_key), timeout=10).json()
        assert (stored["kind"], stored["phonemes"], stored["say"]) == ("phonemes", "ˈaɪpiːeɪ", "eye pee ay")
        # Edited as it is: the form shows its kind, phonemes and respelling, and keeps them.
        page.get_by_role("button", name="Edit IPA").click()
        assert (page.input_value("#kind"), page.input_value("#say"), page.input_value("#fallback")) == \
            ("phonemes", "ˈaɪpiːeɪ", "eye pee ay")
        page.get_by_role("button", name="Save", exact=True).click()
        page.wait_for_function("document.querySelector('#entry-title').textContent === 'Add an entry'")
        assert requests.get(live.url + "/lexicon/IPA", headers=bearer(own_key), timeout=10).json()["say"] == \
            "eye pee ay"
        page.get_by_role("button", name="Hear IPA").click()
        assert heard(page) > 0.1
        assert errors == []
    finally:
        page.context.close()


def test_import_export_and_a_phone_in_dark_mode(live, browser, own_key, tmp_path):
    requests.put(live.url + "/lexicon/SQL", json={"say": "sequel", "case_sensitive": True}, headers=bearer(own_key),
                 timeout=10)
    page, errors = lexicon_page(browser, live, own_key, color_scheme="dark", viewport={"width": 375, "height": 800})
    try:
        entry_row(page, "SQL").wait_for()
        # Added to what is there (the file's entries win for their terms)...
        words = tmp_path / "words.json"
        words.write_text(json.dumps([{"term": "Nguyen", "say": "Win"}, {"term": "C++", "say": "C plus plus"}]))
        page.get_by_label("File to import").set_input_files(str(words))
        page.get_by_role("button", name="Import", exact=True).click()
        entry_row(page, "C++").wait_for()
        assert sorted(e["term"] for e in requests.get(live.url + "/lexicon", headers=bearer(own_key),
                                                      timeout=10).json()["entries"]) == ["C++", "Nguyen", "SQL"]
        # ...a bad file is refused whole, naming the entry and what is wrong with it...
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"entries": [{"term": "ok", "say": "fine"}, {"term": "Dr."}]}))
        page.get_by_label("File to import").set_input_files(str(bad))
        page.get_by_role("button", name="Import", exact=True).click()
        page.wait_for_selector("#import-error:not([hidden])")
        assert page.text_content("#import-error").startswith("Entry 2 of the file (“Dr.”): say is required")
        assert entry_row(page, "ok").count() == 0
        # ...and exported as the same JSON, which a replacing import takes back as it is.
        with page.expect_download() as download:
            page.get_by_role("button", name="Export", exact=True).click()
        exported = json.loads(open(download.value.path()).read())
        assert [(e["term"], e["say"], e["case_sensitive"], e["kind"]) for e in exported["entries"]] == [
            ("C++", "C plus plus", False, "respell"), ("Nguyen", "Win", False, "respell"),
            ("SQL", "sequel", True, "respell")]
        assert all("updated_at" not in e for e in exported["entries"])
        only = tmp_path / "only.json"
        only.write_text(json.dumps({"entries": exported["entries"][2:]}))
        page.get_by_label("File to import").set_input_files(str(only))
        page.get_by_label("Replace the whole lexicon").check()
        page.get_by_role("button", name="Import", exact=True).click()
        page.wait_for_function("document.querySelectorAll('#entries tbody tr').length === 1")
        overflow = horizontal_overflow(page)
        assert overflow <= 0, f"/pronunciation is {overflow}px wider than the phone"
        shot(page, "lexicon-page-phone-dark")
        assert errors == []
    finally:
        page.context.close()
