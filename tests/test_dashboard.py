"""The Speak page in a real browser (Debian's chromium driven by Playwright), against a real server and worker.

Each test saves a full-page screenshot under test-artifacts/ (light, dark, and a phone's width)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import shot, signed_in_page

SHORT = "The dashboard speaks. It plays the first chunk while the rest is made."
# Long enough to be still running when the page is reloaded: many chunks of 300 characters at most. The first
# sentence is short, so its audio (the first piece) has been heard to its end a moment after the job starts.
LONG = "Hello. " + " ".join(f"This is sentence number {i} of a long text, spoken so that the page can be reloaded in the middle "
                f"of the job and still carry on to the end." for i in range(1, 21))

MAGIC = {"wav": b"RIFF", "mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"), "ogg": b"OggS", "flac": b"fLaC"}



def speak_page(browser, system, *, dark: bool = False, width: int = 1100):
    """The signed-in Speak page with the engine loaded; page errors are collected in page.errors."""
    page = signed_in_page(browser, system)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.emulate_media(color_scheme="dark" if dark else "light")
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_selector("#voice option", state="attached")  # the engine's voices and parameters are loaded
    return page


def wait_status(page, status: str = "succeeded", timeout: float = 120_000):
    page.wait_for_function("s => document.querySelector('#status').textContent === s", arg=status, timeout=timeout)


def stream_seconds(page) -> tuple[float, float]:
    return page.eval_on_selector("#player-stream", "b => [Number(b.dataset.receivedSeconds),"
                                                   " Number(b.dataset.scheduledSeconds)]")


def audio_duration(page) -> float:
    return page.evaluate("""async () => {
        const a = document.querySelector('#player');
        if (a.readyState < 1) await new Promise((ok, fail) => {
            a.addEventListener('loadedmetadata', ok, {once: true});
            a.addEventListener('error', () => fail(new Error('the audio did not load')), {once: true});
        });
        return a.duration;
    }""")


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_speak_streams_plays_and_downloads(live, browser):
    page = speak_page(browser, live)
    # the engine's parameters, each a labelled slider with a number field and its default
    assert page.locator("#params input[name=length_scale]").input_value() == "1"
    assert page.locator("#param-length_scale-range").get_attribute("type") == "range"
    assert page.locator("label[for=param-length_scale]").text_content() == "Length scale"
    assert "default 1" in page.text_content("#param-length_scale-hint")
    page.fill("#text", SHORT)
    assert page.text_content("#chars").startswith(f"{len(SHORT)} / ")
    page.wait_for_selector("#plan-list li")  # the chunk plan follows the text
    assert page.text_content("#plan-count").endswith(("chunk", "chunks"))
    page.select_option("#format", "mp3")
    page.click("#submit")
    wait_status(page)
    job_id = page.text_content("#job-id")
    assert f"job={job_id}" in page.url  # a reload comes back to this job
    assert page.eval_on_selector("#progress", "p => p.value") == 1
    total = live.job(job_id)["chunks_total"]
    assert page.text_content("#progress-label") == f"{total} of {total} chunk" + ("s" if total != 1 else "")
    # the live player got the audio: chunks fetched, decoded and scheduled on the AudioContext
    page.wait_for_function("Number(document.querySelector('#player-stream').dataset.scheduledSeconds) > 0")
    received, scheduled = stream_seconds(page)
    assert received > 1 and scheduled == pytest.approx(received, abs=0.01)
    timings = page.evaluate("window.speakTimings")
    assert timings["click"] <= timings["posted"] <= timings["firstChunkEvent"] <= timings["firstScheduled"]
    assert page.text_content("#fig-first").endswith("on the server")
    for figure in ("rtf", "audio", "queued", "worker", "total"):
        assert page.text_content(f"#fig-{figure}") != "—", figure
    # the whole file, in the player for replay
    assert page.eval_on_selector("#player", "a => a.src").endswith("/audio")
    assert audio_duration(page) > 1
    # and to download, in every format
    assert page.locator("#chunks li").count() == total
    links = page.eval_on_selector_all("#downloads a", "as => as.map(a => [a.dataset.format, a.href])")
    assert sorted(f for f, _ in links) == ["flac", "mp3", "ogg", "wav"]
    for fmt, href in links:
        response = page.request.get(href)
        assert response.ok, (fmt, response.status)
        assert response.body().startswith(MAGIC[fmt]), fmt
        assert "attachment" in response.headers.get("content-disposition", "")
    with page.expect_download() as download:
        page.click("#downloads a[data-format=wav]")
    assert Path(download.value.path()).read_bytes()[:4] == b"RIFF"
    shot(page, "speak-done-light")
    assert page.errors == []


def test_reload_mid_job_continues_to_the_end(live, browser):
    page = speak_page(browser, live)
    page.fill("#text", LONG)
    page.click("#submit")
    page.wait_for_selector("#job:not([hidden])")
    job_id = page.text_content("#job-id")
    # reload once the first piece of audio has been heard to its end, while the job still runs
    page.wait_for_function("current.stream && current.stream.heard() >= 1", timeout=60_000)
    assert live.job(job_id)["status"] == "running", "the text is too short to test a reload mid-job"
    page.reload()
    page.wait_for_selector("#job:not([hidden])")
    assert page.text_content("#job-id") == job_id
    assert page.input_value("#text") == LONG  # the form is the job's again
    # a dropped websocket comes back and carries on after the last event it saw
    page.wait_for_function("current && current.socket && current.socket.readyState === 1 && current.last")
    page.evaluate("current.socket.close()")
    page.wait_for_function("document.querySelector('#job-message').textContent.startsWith('Connection lost')")
    wait_status(page)
    total = live.job(job_id)["chunks_total"]
    assert total >= 10
    assert page.text_content("#progress-label") == f"{total} of {total} chunk" + ("s" if total != 1 else "")
    assert page.locator("#chunks li").count() == total  # every chunk once: none missed, none repeated
    # the live player went on from the first chunk not heard to its end before the reload, and only from there
    received, scheduled = stream_seconds(page)
    assert received > 0 and scheduled > 0
    skip, first, count, seen = page.evaluate("[current.stream.skip, Math.min(...current.stream.seen),"
                                             " current.stream.count, current.stream.seen.size]")
    assert skip >= 1 and first == skip and count == seen
    # the live stream pauses (its audio clock stands still) and resumes
    page.click("#stream-toggle")
    page.wait_for_function("audioCtx.state === 'suspended'")
    assert page.text_content("#stream-toggle") == "Resume"
    assert page.text_content("#stream-state").startswith("Paused at")
    clock = page.evaluate("audioCtx.currentTime")
    page.wait_for_timeout(200)
    assert page.evaluate("audioCtx.currentTime") == clock
    page.click("#stream-toggle")
    page.wait_for_function("audioCtx.state === 'running' && audioCtx.currentTime > %r" % clock)
    assert page.text_content("#stream-toggle") == "Pause"
    assert audio_duration(page) > 60
    shot(page, "speak-reloaded")
    assert page.errors == []


def test_errors_are_shown_beside_their_field(live, browser):
    page = speak_page(browser, live)
    # the server finds the text empty: the message is under the text box, not in the page's general error
    page.fill("#text", "   ")
    page.click("#submit")
    page.wait_for_selector("#text-error:not([hidden])")
    assert page.text_content("#text-error") == "text is empty"
    assert page.get_attribute("#text", "aria-invalid") == "true"
    assert page.is_hidden("#error")
    # a parameter out of its range is stopped by the page, beside the parameter, and nothing is sent
    page.fill("#text", "Too slow.")
    assert page.is_hidden("#text-error")  # typing again clears it
    page.fill("#params input[name=length_scale]", "7")
    assert page.text_content("#param-length_scale-error") == "Length scale must be between 0.5 and 2"
    page.click("#submit")
    assert page.is_hidden("#job")
    assert page.evaluate("document.activeElement.name") == "length_scale"
    # the same, found by the server (the page's own limit taken away): its message goes beside the parameter too
    page.eval_on_selector("#params input[name=length_scale]", "i => i.removeAttribute('max')")
    page.fill("#params input[name=length_scale]", "7")
    assert page.is_hidden("#param-length_scale-error")
    page.click("#submit")
    page.wait_for_selector("#param-length_scale-error:not([hidden])")
    assert re.match(r"params\.length_scale must be between 0\.5 and 2(\.0)?, not 7", page.text_content("#param-length_scale-error"))
    assert page.is_hidden("#job") and page.is_hidden("#error")
    shot(page, "speak-param-error")
    # the reset button brings the default back and clears the error
    page.click("[data-param=length_scale] .reset")
    assert page.input_value("#params input[name=length_scale]") == "1"
    assert page.is_hidden("#param-length_scale-error")
    # over the length limit: counted in red and refused beside the text
    limit = page.evaluate("engine.max_text_chars")
    page.fill("#text", "a" * (limit + 1))
    assert page.is_visible("#text-error") and "the limit is" in page.text_content("#text-error")
    assert "over" in page.get_attribute("#chars", "class")
    shot(page, "speak-errors")
    # a job id that is not there: said in the general error, and the address forgets it
    page.goto(f"{live.url}/?job=nosuchjob")
    page.wait_for_selector("#error:not([hidden])")
    assert "nosuchjob" in page.text_content("#error") and "job=" not in page.url
    assert page.errors == []


def test_presets_save_apply_and_delete(live, browser):
    page = speak_page(browser, live)
    page.evaluate("localStorage.clear()")
    page.fill("#params input[name=length_scale]", "1.5")
    page.fill("#param-noise_scale-range", "0.3")  # the slider moves the number with it
    assert page.input_value("#params input[name=noise_scale]") == "0.3"
    page.select_option("#format", "ogg")
    page.fill("#preset-name", "Slow and calm")
    page.click("#preset-save")
    assert page.text_content("#preset-status") == "Saved preset “Slow and calm”."
    page.click("#params-reset")
    page.select_option("#format", "wav")
    assert page.input_value("#params input[name=length_scale]") == "1"
    # kept in the browser: still there after a reload
    page.reload()
    page.wait_for_selector("#voice option", state="attached")
    page.select_option("#preset", "Slow and calm")
    assert page.input_value("#params input[name=length_scale]") == "1.5"
    assert page.input_value("#params input[name=noise_scale]") == "0.3"
    assert page.input_value("#format") == "ogg"
    assert page.text_content("#preset-status").startswith("Applied “Slow and calm”")
    # and it is what gets sent
    page.fill("#text", "Slowly.")
    page.click("#submit")
    wait_status(page)
    job = live.job(page.text_content("#job-id"))
    assert job["format"] == "ogg" and job["params"]["length_scale"] == 1.5 and job["params"]["noise_scale"] == 0.3
    shot(page, "speak-preset")
    page.click("#preset-delete")
    assert page.locator("#preset option").count() == 1
    assert page.evaluate("localStorage.getItem('chatterbox.speak.presets')") == "{}"
    assert page.errors == []


def test_phone_dark_keyboard(live, browser):
    page = speak_page(browser, live, dark=True, width=375)
    assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg != "rgb(255, 255, 255)" and bg != "rgb(245, 246, 248)"  # the dark colours, not the light ones
    assert no_horizontal_scroll(page)
    shot(page, "speak-phone-dark")
    # Ctrl+Enter in the text box speaks
    page.fill("#text", SHORT)
    page.focus("#text")
    page.keyboard.press("Control+Enter")
    wait_status(page)
    page.wait_for_function("Number(document.querySelector('#player-stream').dataset.scheduledSeconds) > 0")
    assert no_horizontal_scroll(page)
    shot(page, "speak-phone-dark-done")
    page.emulate_media(color_scheme="light")
    assert no_horizontal_scroll(page)
    shot(page, "speak-phone-light-done")
    # the focus ring shows on keyboard focus
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    assert page.errors == []


def test_cancel(live, browser):
    page = speak_page(browser, live)
    page.fill("#text", LONG)
    page.click("#submit")
    page.wait_for_function("!document.querySelector('#cancel').disabled")
    page.wait_for_selector("#status[data-status=running]", timeout=60_000)
    page.click("#cancel")
    wait_status(page, "cancelled")
    assert page.is_disabled("#cancel")
    assert page.is_hidden("#error")
    job_id = page.text_content("#job-id")
    assert live.api.get(f"/jobs/{job_id}", timeout=10).json()["status"] == "cancelled"
    assert page.errors == []


def test_change_and_run_prefills_from_an_earlier_job(live, browser):
    """History's "Change and run" opens /?from=<id>: the job's text and settings are in the form, nothing started."""
    live.ensure_worker()
    voice = live.api.get("/engine", timeout=10).json()["voices"][0]["id"]
    job = live.submit("Copied into the form, not spoken again.", format="flac", voice=voice,
                      params={"length_scale": 1.3})
    page = signed_in_page(browser, live)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(f"{live.url}/?from={job['job_id']}")
    page.wait_for_function("document.querySelector('#text').value.startsWith('Copied into the form')")
    assert page.input_value("#format") == "flac"
    assert page.input_value("#voice") == voice
    assert float(page.input_value("#params input[name=length_scale]")) == pytest.approx(1.3)
    assert page.locator("#job").is_hidden()  # prefilled only: the user changes what they like, then speaks
    shot(page, "speak-prefilled")
    page.goto(f"{live.url}/?from=nosuchjob0000")
    page.wait_for_selector("#error:not([hidden])")
    assert "nosuchjob0000" in page.text_content("#error")
    assert page.errors == []
