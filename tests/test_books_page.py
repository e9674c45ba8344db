"""The audiobooks page in a real browser (Debian's chromium driven by Playwright), against the shared system."""
from __future__ import annotations

from tests.conftest import horizontal_overflow, shot, signed_in_page


BOOK = """Chapter One

The page reads a short book. It has two chapters, and this is the first.

Chapter Two

This is the second chapter, the last one. Then the book is done."""

LONG_BOOK = "\n\n".join(f"Chapter {n}\n\n" + " ".join(f"Sentence {i} of chapter {n}, read slowly enough to pause."
                                                      for i in range(40)) for n in ("One", "Two", "Three", "Four"))



def books_page(browser, live):
    page = signed_in_page(browser, live)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.url + "/books")
    page.wait_for_selector("#book-voice option", state="attached")
    return page, errors


def test_review_edit_start_and_download_a_book(live, browser):
    page, errors = books_page(browser, live)
    page.get_by_label("…or paste the text").fill(BOOK)
    page.get_by_role("button", name="Review chapters").click()
    page.wait_for_selector("#review:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "review-title"  # focus moves to what appeared
    titles = page.locator("#review-chapters .chapter-title")
    assert titles.count() == 2
    assert [titles.nth(i).input_value() for i in range(2)] == ["Chapter One", "Chapter Two"]
    page.get_by_label("Title of chapter 2").fill("The Last Chapter")  # reviewed and edited before it starts
    page.get_by_label("Title", exact=True).fill("A Page Book")
    page.get_by_role("button", name="Start audiobook").click()
    card = page.locator(".book", has_text="A Page Book")
    card.locator(".m4b").wait_for(timeout=120_000)
    assert card.locator(".status").text_content() == "succeeded"
    assert card.locator(".status").get_attribute("data-status") == "succeeded"
    assert card.locator(".overall").evaluate("p => p.value") == 1
    chapters = card.locator(".chapters li")
    assert chapters.count() == 2
    assert "The Last Chapter" in chapters.nth(1).text_content()
    assert all(v == 1 for v in chapters.locator("progress").evaluate_all("bars => bars.map(b => b.value)"))
    assert card.get_by_role("link", name="Download chapter 2. The Last Chapter").count() == 1
    links = chapters.locator("a").evaluate_all("links => links.map(a => a.href)") + \
        [card.locator(".m4b").get_attribute("href")]
    for href in links:
        response = live.api.get(href, timeout=10)  # the page's links: absolute (a.href) or the server's paths
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("audio/")
    # The read-along EPUB and the book's subtitles beside the M4B.
    for selector, kind in ((".epub", "application/epub+zip"), (".srt", "application/x-subrip")):
        href = card.locator(selector).get_attribute("href")
        response = live.api.get(href, timeout=10)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith(kind), href
    assert page.is_hidden("#review")
    shot(page, "books-page")
    assert errors == []


def test_errors_are_shown_next_to_what_caused_them(live, browser):
    page, errors = books_page(browser, live)
    page.get_by_role("button", name="Review chapters").click()  # nothing given: said at the text field
    page.wait_for_selector("#book-text-error:not([hidden])")
    page.fill("#book-text", " ... ")
    page.click("#preview")
    page.wait_for_function("document.querySelector('#book-text-error').textContent.includes('no speakable text')")
    assert page.get_attribute("#book-text", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "book-text"
    assert page.locator("#review").is_hidden() and page.is_hidden("#error")

    # A chapter emptied during review: the server names it, and the page shows it at that chapter.
    page.fill("#book-text", BOOK)
    page.click("#preview")
    page.wait_for_selector("#review:not([hidden])")
    assert page.is_hidden("#book-text-error") and page.get_attribute("#book-text", "aria-invalid") is None
    second = page.locator("#review-chapters li").nth(1)
    second.locator("summary").click()
    page.get_by_label("Text of chapter 2").fill("...")
    page.click("#start")
    second.locator(".field-error", has_text="no speakable text").wait_for()
    assert second.locator(".chapter-text").get_attribute("aria-invalid") == "true"
    assert page.is_hidden("#error")
    shot(page, "books-page-errors")
    # Removing it fixes the book; the labels count what is left.
    page.get_by_role("button", name="Remove chapter 2, Chapter Two").click()
    assert page.locator("#review-chapters li").count() == 1
    page.get_by_role("button", name="Discard").click()
    assert page.is_hidden("#review")
    assert errors == []


def test_pause_resume_cancel_and_a_dropped_connection(live, browser):
    page, errors = books_page(browser, live)
    page.fill("#book-text", LONG_BOOK)
    page.click("#preview")
    page.wait_for_selector("#review:not([hidden])")
    page.fill("#book-title", "A Long Page Book")
    page.click("#start")
    card = page.locator(".book", has_text="A Long Page Book")
    card.locator('.status[data-status="running"]').wait_for(timeout=60_000)
    book_id = card.get_attribute("data-id")
    card.get_by_role("button", name="Pause A Long Page Book").click()
    card.locator('.status[data-status="paused"]').wait_for(timeout=60_000)
    assert "left" not in card.locator(".book-figures").text_content()
    card.get_by_role("button", name="Resume A Long Page Book").click()
    card.locator('.status[data-status="running"]').wait_for(timeout=30_000)
    page.wait_for_function("document.querySelector('.book-figures').textContent.includes('left')", timeout=60_000)

    # Offline for a while: said so; back online, the websocket resumes and the bars move on.
    done_before = live.api.get(f"/audiobooks/{book_id}", timeout=10).json()["chunks_done"]
    page.context.set_offline(True)
    page.wait_for_selector("#connection:not([hidden])", timeout=30_000)
    page.wait_for_timeout(1500)
    page.context.set_offline(False)
    page.wait_for_selector("#connection", state="hidden", timeout=30_000)
    page.wait_for_function(
        "([id, n]) => parseInt(document.querySelector(`.book[data-id='${id}'] .book-figures`).textContent) > n",
        arg=[book_id, done_before], timeout=60_000)

    card.get_by_role("button", name="Cancel A Long Page Book").click()
    card.locator('.status[data-status="cancelled"]').wait_for(timeout=60_000)
    assert card.get_by_role("button", name="Resume A Long Page Book").count() == 1
    shot(page, "books-page-cancelled")
    assert errors == []


def test_phone_in_dark_mode(live, browser):
    page = signed_in_page(browser, live, color_scheme="dark", viewport={"width": 375, "height": 800})
    context = page.context
    try:
        page.goto(live.url + "/books")
        page.wait_for_selector(".book, #no-books:not([hidden])")
        page.fill("#book-text", BOOK)
        page.click("#preview")
        page.wait_for_selector("#review:not([hidden])")
        overflow = horizontal_overflow(page)
        assert overflow <= 0, f"/books is {overflow}px wider than the phone"
        shot(page, "books-page-phone-dark")
    finally:
        context.close()


def test_a_books_own_pronunciations_from_a_lexicon_file(live, browser, tmp_path):
    page, errors = books_page(browser, live)
    page.get_by_label("…or paste the text").fill("Chapter One\n\nThe captain of the Quillip sailed at dawn.")
    page.get_by_role("button", name="Review chapters").click()
    page.wait_for_selector("#review:not([hidden])")
    page.get_by_label("Title", exact=True).fill("The Quillip Book")  # its card, among the shared system's books
    bad = tmp_path / "bad.json"
    bad.write_text("Quillip = Quill ip")
    page.set_input_files("#book-lexicon", str(bad))
    page.get_by_role("button", name="Start audiobook").click()
    page.wait_for_function("document.querySelector('#book-lexicon-error').textContent.includes('is not JSON')")
    # An entry the API refuses is shown at the field, naming the entry.
    wrong = tmp_path / "wrong.json"
    wrong.write_text('[{"term": "Quillip"}]')
    page.set_input_files("#book-lexicon", str(wrong))
    page.get_by_role("button", name="Start audiobook").click()
    page.wait_for_function("document.querySelector('#book-lexicon-error').textContent.includes('say')")
    good = tmp_path / "lexicon.json"
    good.write_text('{"entries": [{"term": "Quillip", "say": "Quill ip", "case_sensitive": false}]}')
    page.set_input_files("#book-lexicon", str(good))
    page.get_by_role("button", name="Start audiobook").click()
    card = page.locator(".book", has_text="The Quillip Book")
    card.wait_for(timeout=30_000)
    job_id = card.get_attribute("data-id")
    book = live.api.get(f"/audiobooks/{job_id}", params={"text": 1}, timeout=10).json()
    assert [(e["term"], e["say"]) for e in book["lexicon"]] == [("Quillip", "Quill ip")]
    assert "Quill ip" in " ".join(c["text"] for c in book["chapters"][0]["chunks"])
    assert errors == []
