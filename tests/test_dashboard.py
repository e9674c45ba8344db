"""The dashboard in a real browser (Debian's chromium driven by Playwright)."""
from __future__ import annotations

from tests.conftest import signed_in_page


def test_type_synthesize_watch_progress_and_play(live, browser):
    page = signed_in_page(browser, live)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.wait_for_selector("#voice option", state="attached")  # the engine's voices and parameters are loaded
    assert page.locator("#params input[name=length_scale]").input_value() == "1"
    page.fill("#text", "The dashboard speaks. It shows a progress bar while it works. Then it plays the result.")
    page.select_option("#format", "mp3")
    page.click("#submit")
    page.wait_for_function("document.querySelector('#status').textContent === 'succeeded'", timeout=120_000)
    assert page.eval_on_selector("#progress", "p => p.value") == 1
    src = page.eval_on_selector("#player", "a => a.src")
    assert src.endswith("/audio")
    # the browser can load and decode the audio it was given
    duration = page.evaluate("""async () => {
        const a = document.querySelector('#player');
        if (a.readyState < 1) await new Promise(r => a.addEventListener('loadedmetadata', r, {once: true}));
        return a.duration;
    }""")
    assert duration > 2
    assert page.locator("#chunks li").count() >= 1
    assert errors == []


def test_bad_input_is_shown(live, browser):
    page = signed_in_page(browser, live)
    page.wait_for_selector("#voice option", state="attached")
    page.fill("#text", "   ")
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error") == "text is empty"
    # out-of-range parameters are stopped by the form itself before anything is sent
    page.fill("#params input[name=length_scale]", "7")
    page.fill("#text", "Too slow.")
    page.click("#submit")
    assert page.evaluate("document.querySelector('#params input[name=length_scale]').validity.rangeOverflow")
    assert page.text_content("#error") == "text is empty"
