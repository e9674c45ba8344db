"""The voices page in a real browser (Debian's chromium driven by Playwright): a voice cloned from an upload (checked in
the page, then by the server), followed to the end, previewed, renamed and deleted; a recording made in the browser;
and the page on a system whose engine cannot clone."""
from __future__ import annotations

from chatterbox import audio
from tests.conftest import CHROMIUM, CHROMIUM_FLAGS, horizontal_overflow, shot, signed_in_page
from tests.test_voices import RATE, speechlike





def voices_page(browser, system):
    page = signed_in_page(browser, system)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(system.url + "/voice-library")
    page.wait_for_selector("#voices tbody tr")  # the built-in voice is listed
    return page, errors


def test_clone_from_an_upload_then_preview_rename_and_delete(cloning, browser, tmp_path):
    clip = tmp_path / "narrator.wav"
    clip.write_bytes(audio.wav_bytes(speechlike(7), RATE))
    short = tmp_path / "short.wav"
    short.write_bytes(audio.wav_bytes(speechlike(2), RATE))
    page, errors = voices_page(browser, cloning)
    assert "(built in)" in page.text_content("#voices tbody")
    assert page.is_hidden("#engine-note")

    # Too short: the page's own checks say so at once, and the server's refusal shows beside the file field.
    page.get_by_label("Upload a recording").set_input_files(str(short))
    page.wait_for_selector('#checks li[data-ok="false"]')
    assert "at least 5 s of speech" in page.text_content("#checks")
    page.get_by_label("Name", exact=True).fill("Paged")
    page.get_by_role("button", name="Clone").click()
    page.wait_for_selector("#file-error:not([hidden])")
    assert "at least 5 s of speech" in page.text_content("#file-error")
    assert page.get_attribute("#file", "aria-invalid") == "true" and page.is_hidden("#error")

    # A good recording: every check passes; the clone job is followed to the end, then its preview plays.
    page.get_by_label("Upload a recording").set_input_files(str(clip))
    page.wait_for_selector('#checks[data-ok="true"]')
    assert page.locator('#checks li[data-ok="true"]').count() == 4
    page.get_by_role("button", name="Clone").click()
    page.wait_for_selector("#clone-job:not([hidden])")
    assert page.is_hidden("#file-error")
    page.wait_for_selector('#clone-status[data-status="succeeded"]', timeout=180_000)
    assert page.locator("#clone-progress").evaluate("p => p.value") == 1
    preview = page.wait_for_function("() => { const a = document.querySelector('#clone-preview');"
                                     " return a.src && a.readyState >= 1 && a.duration; }", timeout=30_000)
    assert preview.json_value() > 0
    row = page.locator("#voices tbody tr", has_text="Paged")
    row.wait_for()
    voice_id = row.get_attribute("data-id")
    assert page.get_attribute("#clone-use", "href") == f"/?voice={voice_id}"
    assert row.locator("audio").get_attribute("src") == f"/voices/{voice_id}/sample"
    shot(page, "voices-page-cloned")

    # The same name again: refused, beside the name.
    page.get_by_label("Upload a recording").set_input_files(str(clip))
    page.get_by_label("Name", exact=True).fill("Paged")
    page.get_by_role("button", name="Clone").click()
    page.wait_for_selector("#name-error:not([hidden])")
    assert "already exists" in page.text_content("#name-error")

    # Renamed in place: a bad name is refused beside the field, a good one is saved with Enter.
    page.get_by_role("button", name="Rename Paged").click()
    field = page.get_by_label("New name for Paged")
    field.fill("../nope")
    field.press("Enter")
    row.locator(".field-error", has_text="a voice name is").wait_for()
    assert field.get_attribute("aria-invalid") == "true"
    field.fill("Paged two")
    field.press("Enter")
    page.locator("#voices tbody tr .voice-name", has_text="Paged two").wait_for()
    assert cloning.api.get(f"/voices/{voice_id}", timeout=10).json()["name"] == "Paged two"

    # Deleted after a confirmation; dismissed, it stays.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete Paged two").click()
    assert cloning.api.get(f"/voices/{voice_id}", timeout=10).status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete Paged two").click()
    page.wait_for_function("!document.querySelector('#voices tbody').textContent.includes('Paged')")
    assert cloning.api.get(f"/voices/{voice_id}", timeout=10).status_code == 404
    assert errors == []


def test_recording_in_the_browser_then_cloning_it(cloning, browser):
    # A browser of its own, with Chromium's fake microphone (a beep a second) granted without asking.
    flags = [*CHROMIUM_FLAGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    recorder = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=flags)
    try:
        page, errors = voices_page(recorder, cloning)
        page.get_by_role("button", name="● Record").click()
        page.wait_for_selector('#record[aria-pressed="true"]')
        assert page.is_visible("#level")
        page.wait_for_function("document.querySelector('#recording').textContent.includes(' 6 s')", timeout=20_000)
        page.get_by_role("button", name="■ Stop").click()
        page.wait_for_selector("#checks li[data-ok]")
        assert page.get_attribute("#record", "aria-pressed") == "false" and page.is_visible("#recorded")
        assert "s long" in page.text_content("#checks")
        page.get_by_label("Name", exact=True).fill("Recorded")
        page.get_by_role("button", name="Clone").click()
        page.wait_for_selector('#clone-status[data-status="succeeded"], #file-error:not([hidden])', timeout=180_000)
        # The fake microphone's beeps pass the server's checks or not; either way the answer is the server's, shown
        # in its place.
        if page.is_visible("#file-error"):
            assert page.text_content("#file-error").strip()
        else:
            page.locator("#voices tbody tr", has_text="Recorded").wait_for()
        shot(page, "voices-page-recorded")
        assert errors == []
    finally:
        recorder.close()


def test_a_system_that_cannot_clone_says_so(live, browser):
    page = signed_in_page(browser, live, color_scheme="dark", viewport={"width": 375, "height": 800})
    context = page.context
    try:
        page.goto(live.url + "/voice-library")
        page.wait_for_selector("#engine-note:not([hidden])")
        assert "needs the Chatterbox engine" in page.text_content("#engine-note")
        assert page.is_disabled("#clone") and page.is_disabled("#record")
        page.wait_for_selector("#voices tbody tr")
        overflow = horizontal_overflow(page)
        assert overflow <= 0, f"/voice-library is {overflow}px wider than the phone"
        shot(page, "voices-page-phone-dark")
    finally:
        context.close()
