"""The audiobooks page in a real browser (Debian's chromium driven by Playwright), against the shared system."""
from __future__ import annotations

from pathlib import Path

import requests

from tests.conftest import signed_in_page

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

BOOK = """Chapter One

The page reads a short book. It has two chapters, and this is the first.

Chapter Two

This is the second chapter, the last one. Then the book is done."""


def test_review_edit_start_and_download_a_book(live, browser):
    page = signed_in_page(browser, live)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.url + "/books")
    page.wait_for_selector("#book-voice option", state="attached")
    page.fill("#book-text", BOOK)
    page.click("#preview")
    page.wait_for_selector("#review:not([hidden])")
    titles = page.locator("#review-chapters .chapter-title")
    assert titles.count() == 2
    assert [titles.nth(i).input_value() for i in range(2)] == ["Chapter One", "Chapter Two"]
    titles.nth(1).fill("The Last Chapter")  # reviewed and edited before it starts
    page.fill("#book-title", "A Page Book")
    page.click("#start")
    card = page.locator(".book", has_text="A Page Book")
    card.locator(".m4b").wait_for(timeout=120_000)
    assert card.locator(".status").text_content() == "succeeded"
    assert card.locator(".overall").evaluate("p => p.value") == 1
    chapters = card.locator(".chapters li")
    assert chapters.count() == 2
    assert "The Last Chapter" in chapters.nth(1).text_content()
    assert all(v == 1 for v in chapters.locator("progress").evaluate_all("bars => bars.map(b => b.value)"))
    links = chapters.locator("a").evaluate_all("links => links.map(a => a.href)") + \
        [card.locator(".m4b").get_attribute("href")]
    for href in links:
        response = requests.get(href if href.startswith("http") else live.url + href, timeout=10)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("audio/")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "books-page.png"), full_page=True)
    assert errors == []


def test_bad_book_error_is_shown(live, browser):
    page = signed_in_page(browser, live)
    page.goto(live.url + "/books")
    page.wait_for_selector("#book-voice option", state="attached")
    page.fill("#book-text", " ... ")
    page.click("#preview")
    page.wait_for_selector("#error:not([hidden])")
    assert "no speakable text" in page.text_content("#error")
    assert page.locator("#review").is_hidden()
