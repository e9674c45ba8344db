"""The history and operations pages in a real browser (Debian's chromium driven by Playwright), against the shared
system. Jobs are made through the REST API with a word of their own, so that other tests' jobs in the shared system
do not change what these pages are expected to list."""
from __future__ import annotations

import os
import re

import pytest

from tests.conftest import horizontal_overflow, shot, signed_in_page, wait_until

LONG = " ".join(f"Sentence number {i} of a text long enough to still be running when it is cancelled." for i in range(50))



@pytest.fixture(scope="module")
def made(system):
    """Three finished jobs and a cancelled one, oldest first, all carrying one made-up word."""
    system.ensure_worker()
    word = "hist" + os.urandom(4).hex()
    ids = [system.submit(f"{name} {word}, a short sentence for the history page.")["job_id"]
           for name in ("Alpha", "Bravo", "Charlie")]
    for job_id in ids:
        assert system.wait_job(job_id)["status"] == "succeeded"
    cancelled = system.submit(f"Delta {word}. {LONG}")["job_id"]
    assert system.api.delete(f"/jobs/{cancelled}", timeout=10).status_code in (200, 202)
    assert system.wait_job(cancelled)["status"] == "cancelled"
    return {"word": word, "ids": ids + [cancelled]}


def page_with_errors(browser, live):
    page = signed_in_page(browser, live)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def row_ids(page) -> list[str]:
    return page.locator("#rows tr").evaluate_all("rows => rows.map(r => r.dataset.id)")


def wait_rows(page, expected: list[str]) -> None:
    page.wait_for_function("ids => JSON.stringify([...document.querySelectorAll('#rows tr')].map(r => r.dataset.id))"
                           " === JSON.stringify(ids) && !document.querySelector('#table-box').hidden", arg=expected)


def test_history_lists_searches_filters_and_pages(live, browser, made):
    page, errors = page_with_errors(browser, live)
    newest_first = list(reversed(made["ids"]))
    page.goto(f"{live.url}/history?q={made['word']}")
    wait_rows(page, newest_first)
    assert page.get_by_label("Search the text").input_value() == made["word"]
    cancelled = page.locator(f'#rows tr[data-id="{made["ids"][3]}"]')
    assert cancelled.locator(".status-badge").text_content() == "cancelled"
    assert cancelled.locator(".status-badge").get_attribute("data-status") == "cancelled"
    assert cancelled.locator("button.delete").count() == 1 and cancelled.locator("button.cancel").count() == 0
    alpha = page.locator(f'#rows tr[data-id="{made["ids"][0]}"]')
    assert "Alpha" in alpha.locator("td.text").text_content()
    assert alpha.locator("td.duration").text_content().endswith(" s")
    assert "total" in alpha.locator("td.timings").text_content()
    settings = dict(zip(alpha.locator("td.settings dt").all_text_contents(),
                        alpha.locator("td.settings dd").all_text_contents()))
    assert settings["format"] == "wav" and "length scale" in settings
    voice = live.job(made["ids"][0])["voice"]
    voice_name = {v["id"]: v["name"] for v in live.api.get("/voices", timeout=10).json()["voices"]}[voice]
    assert alpha.locator("td.voice").text_content() == voice_name

    # Search (debounced, as one types) narrows to one job and goes into the page's URL.
    page.get_by_label("Search the text").fill(f"{made['word']} bravo")
    wait_rows(page, [made["ids"][1]])
    assert "bravo" in page.url

    # A status filter, kept across a reload together with the search.
    page.get_by_label("Search the text").fill(made["word"])
    wait_rows(page, newest_first)
    page.get_by_label("Status").select_option("cancelled")
    wait_rows(page, [made["ids"][3]])
    assert "status=cancelled" in page.url
    page.reload()
    wait_rows(page, [made["ids"][3]])
    assert page.get_by_label("Status").input_value() == "cancelled"
    assert page.get_by_label("Search the text").input_value() == made["word"]
    page.get_by_label("Status").select_option("")

    # By kind and by voice, from the server: no voice clone among them; a voice nobody used lists nothing.
    page.get_by_label("Kind").select_option("clone")
    page.wait_for_selector("#empty:not([hidden])")
    assert "No job matches" in page.text_content("#empty")
    page.get_by_label("Kind").select_option("synthesize")
    wait_rows(page, newest_first)
    page.goto(f"{live.url}/history?q={made['word']}&voice=nobody")
    page.wait_for_selector("#empty:not([hidden])")
    assert page.get_by_label("Voice").input_value() == "nobody"
    page.get_by_label("Voice").select_option(voice)
    wait_rows(page, newest_first)
    assert f"voice={voice}" in page.url

    # Pages from the server, two jobs at a time.
    page.goto(f"{live.url}/history?q={made['word']}&limit=2")
    wait_rows(page, newest_first[:2])
    assert page.text_content("#page-of") == "Page 1 of 2"
    assert "of 4" in page.text_content("#summary")
    assert page.is_disabled("#prev")
    page.click("#next")
    wait_rows(page, newest_first[2:])
    assert page.text_content("#page-of") == "Page 2 of 2" and "offset=2" in page.url
    assert page.is_disabled("#next") and not page.is_disabled("#prev")
    page.go_back()
    wait_rows(page, newest_first[:2])
    shot(page, "test_history_lists_searches_filters_and_pages")
    assert errors == []


def test_history_replay_download_rerun(live, browser, made):
    page, errors = page_with_errors(browser, live)
    alpha_id = made["ids"][0]
    page.goto(f"{live.url}/history?q={made['word']}+alpha")
    wait_rows(page, [alpha_id])
    row = page.locator(f'#rows tr[data-id="{alpha_id}"]')
    assert row.locator("audio").count() == 0  # nothing is loaded before it is asked for
    row.locator("button.replay").click()
    duration = page.wait_for_function("a => a && a.duration > 0 && a.duration", arg=row.locator("audio").element_handle())
    assert duration.json_value() > 0.5

    types = {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}
    for fmt, content_type in types.items():
        href = row.locator(f"a.download.{fmt}").get_attribute("href")
        response = live.api.get(href, timeout=30)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith(content_type), fmt
        assert "attachment" in response.headers.get("Content-Disposition", "")
    # Changed settings: the Speak page, told which job to start from.
    assert row.locator("a.edit").get_attribute("href") == f"/?from={alpha_id}"
    assert page.get_by_role("link", name=re.compile(r"^Change the settings of .*Alpha")).count() == 1
    # The same settings: a new job at once, with the same text, voice, format and parameters. Buttons say which job
    # they act on.
    page.get_by_role("button", name=re.compile(r"^Run .*Alpha.* again")).click()
    note = row.locator(".row-note a.new-job")
    note.wait_for()
    new_id = row.locator(".row-note").get_attribute("data-job-id")
    assert note.get_attribute("href") == f"/?job={new_id}"
    page.locator(f'#rows tr[data-id="{new_id}"] .status-badge', has_text="succeeded").wait_for(timeout=60_000)
    assert row_ids(page) == [new_id, alpha_id]  # newest first, the list followed by itself
    old, new = (live.api.get(f"/jobs/{i}?text=1", timeout=10).json() for i in (alpha_id, new_id))
    assert [new[k] for k in ("text", "voice", "format", "params")] == [old[k] for k in ("text", "voice", "format", "params")]
    shot(page, "test_history_replay_download_rerun")
    assert errors == []


def test_history_live_status_cancel_and_delete(live, browser):
    page, errors = page_with_errors(browser, live)
    word = "hist" + os.urandom(4).hex()
    long_id = live.submit(f"Echo {word}. {LONG}")["job_id"]
    short_id = live.submit(f"Foxtrot {word}, to be deleted.")["job_id"]
    page.goto(f"{live.url}/history?q={word}")
    wait_rows(page, [short_id, long_id])
    # Cancelled from the page; both rows follow their jobs without a reload.
    page.locator(f'#rows tr[data-id="{long_id}"] button.cancel').click()
    short = page.locator(f'#rows tr[data-id="{short_id}"]')
    page.locator(f'#rows tr[data-id="{long_id}"] .status-badge', has_text="cancelled").wait_for(timeout=60_000)
    short.locator(".status-badge", has_text="succeeded").wait_for(timeout=60_000)
    short.locator("button.delete").wait_for()

    page.once("dialog", lambda dialog: dialog.accept())
    short.locator("button.delete").click()
    wait_rows(page, [long_id])
    assert live.api.get(f"/jobs/{short_id}", timeout=10).status_code == 404
    listed = live.api.get("/jobs", params={"q": word}, timeout=10).json()
    assert [j["id"] for j in listed["jobs"]] == [long_id] and listed["total"] == 1

    # Not confirmed: kept. Refused by the server: the error shows next to the job it concerns.
    long_row = page.locator(f'#rows tr[data-id="{long_id}"]')
    page.once("dialog", lambda dialog: dialog.dismiss())
    long_row.locator("button.delete").click()
    assert live.api.get(f"/jobs/{long_id}", timeout=10).status_code == 200
    refusal = {"error": {"message": "job is busy elsewhere", "type": "invalid_request_error", "code": "conflict"}}
    page.route(f"**/jobs/{long_id}?purge=1", lambda route: route.fulfill(status=409, json=refusal))
    page.once("dialog", lambda dialog: dialog.accept())
    long_row.locator("button.delete").click()
    long_row.locator(".row-error", has_text="job is busy elsewhere").wait_for()
    assert page.is_hidden("#error")
    page.unroute(f"**/jobs/{long_id}?purge=1")
    # Then the last one goes, and the empty state shows.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'#rows tr[data-id="{long_id}"] button.delete').click()
    page.wait_for_selector("#empty:not([hidden])")
    assert "No job matches" in page.text_content("#empty")
    shot(page, "test_history_live_status_cancel_and_delete")
    assert errors == []


def test_history_by_keyboard_alone(live, browser):
    page, errors = page_with_errors(browser, live)
    word = "hist" + os.urandom(4).hex()
    job_id = live.submit(f"Hotel {word}, played and deleted with the keyboard.")["job_id"]
    live.wait_job(job_id)
    page.goto(f"{live.url}/history?q={word}")
    wait_rows(page, [job_id])

    def tab_to(selector: str, limit: int = 60) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("s => document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"Tab never reached {selector}")

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    tab_to("#rows button.replay")
    page.keyboard.press("Enter")
    page.wait_for_function("document.activeElement.tagName === 'AUDIO'")  # the player takes the focus
    tab_to("#rows button.delete")
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("Enter")
    page.wait_for_selector("#empty:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "summary"  # not lost to the page's top
    assert live.api.get(f"/jobs/{job_id}", timeout=10).status_code == 404
    shot(page, "test_history_by_keyboard_alone")
    assert errors == []


def test_history_server_error_shown_next_to_its_filter(live, browser):
    page, errors = page_with_errors(browser, live)
    page.goto(f"{live.url}/history?status=nonsense")
    page.wait_for_selector("#status-error:not([hidden])")
    assert "status must be one of" in page.text_content("#status-error")
    assert page.get_attribute("#status", "aria-invalid") == "true"
    assert page.is_hidden("#error")
    shot(page, "test_history_server_error_shown_next_to_its_filter")
    page.get_by_label("Status").select_option("")  # put right: the error goes, the list comes
    page.wait_for_selector("#status-error", state="hidden")
    page.wait_for_selector("#table-box:not([hidden]), #empty:not([hidden])")  # a list again (empty when run alone)
    assert errors == []


def test_history_follows_jobs_through_a_dropped_connection(live, browser):
    page, errors = page_with_errors(browser, live)
    word = "hist" + os.urandom(4).hex()
    job_id = live.submit(f"Golf {word}. {LONG}")["job_id"]
    page.goto(f"{live.url}/history?q={word}")
    wait_rows(page, [job_id])
    row = page.locator(f'#rows tr[data-id="{job_id}"]')
    page.context.set_offline(True)
    page.wait_for_selector("#connection:not([hidden])", timeout=15_000)
    assert "cannot be reached" in page.text_content("#connection")
    shot(page, "test_history_follows_jobs_through_a_dropped_connection")
    # While the page cannot see it, the job is cancelled; once back, the page catches up by itself.
    assert live.api.delete(f"/jobs/{job_id}", timeout=10).status_code in (200, 202)
    live.wait_job(job_id)
    page.context.set_offline(False)
    row.locator(".status-badge", has_text="cancelled").wait_for(timeout=30_000)
    page.wait_for_selector("#connection", state="hidden")
    assert row.locator("button.delete").count() == 1
    assert errors == []


def test_ops_page(live, browser, made):
    page, errors = page_with_errors(browser, live)
    page.goto(live.url + "/ops")
    worker = page.locator('#workers tr[data-device="cpu"]').first
    worker.wait_for()
    assert worker.locator(".state").text_content() in ("idle", "busy")
    assert "loaded" in worker.text_content()
    # What it runs at once: Piper jobs of its threads, one per core.
    assert re.fullmatch(r"\d+ of \d+ jobs", worker.locator('td[data-label="Batch"]').text_content().strip())
    assert "Redis up" in page.text_content("#banner") and page.get_attribute("#banner", "data-state") == "ok"
    for queue in ("interactive", "bulk", "cpu"):
        assert re.fullmatch(r"\d+", page.locator(f'#queues tr[data-queue="{queue}"] td.num').text_content())
    assert page.text_content("#redis").startswith("up")
    assert page.text_content("#engine") == "piper"
    assert page.text_content("#engine-reason").strip() not in ("", "…")
    assert page.get_attribute("#flower", "href") == "http://127.0.0.1:5555"
    assert "not answering" in page.text_content("#flower-state")  # no Flower in the tests
    # The chart's total is the server's (asked again until both are from the same minute).
    wait_until(lambda: page.get_attribute("#totals", "data-jobs") == str(live.api.get("/stats", timeout=10)
                                                                            .json()["jobs"]), 15, 0.5, "the totals")
    assert int(page.get_attribute("#totals", "data-jobs")) >= 4
    assert page.locator("#jobs-chart svg rect").count() >= 12
    assert "in all" in page.get_attribute("#jobs-chart svg", "aria-label")
    assert page.locator("#stats-rows tr").count() == 12
    # What is kept: the folders of the data directory with the server's own figures, retention, Redis' memory.
    outputs = page.locator('#storage tr[data-folder="outputs"]')
    outputs.wait_for()
    storage = live.api.get("/storage", timeout=10).json()
    assert outputs.locator("td.num").first.text_content() == str(storage["disk"]["outputs"]["files"])
    assert page.locator("#storage tr").count() == 6
    summary = page.text_content("#storage-summary")
    assert "kept 30 days" in summary and f"({storage['redis']['maxmemory_policy']})" in summary
    shot(page, "test_ops_page")
    assert errors == []


def test_ops_page_says_when_redis_or_workers_are_down(live, browser):
    page, errors = page_with_errors(browser, live)
    down = {"status": "unavailable", "redis": {"ok": False, "error": "Connection refused"},
            "error": {"message": "Redis is unreachable", "type": "service_unavailable"}}
    page.route("**/health", lambda route: route.fulfill(status=503, json=down))
    page.goto(live.url + "/ops")
    page.wait_for_selector('#banner[data-state="down"]')
    assert "Redis is down" in page.text_content("#banner")
    assert page.text_content("#redis").startswith("down")
    shot(page, "test_ops_page_says_when_redis_or_workers_are_down")
    page.unroute("**/health")
    page.route("**/health", lambda route: route.fulfill(status=200, json={
        "status": "no_workers", "redis": {"ok": True, "version": "7"}, "engine": {"name": "piper", "reason": "test"},
        "workers": [], "queues": {"interactive": 3, "bulk": 0}}))
    page.wait_for_function("document.querySelector('#banner').textContent.includes('No worker')", timeout=15_000)
    assert page.get_attribute("#banner", "data-state") == "down"
    assert page.text_content('#queues tr[data-queue="interactive"] td.num') == "3"
    # The connection itself dropped: said so, and all is well again once it is back.
    page.unroute("**/health")
    page.context.set_offline(True)
    page.wait_for_function("document.querySelector('#banner').textContent.includes('not answering')", timeout=15_000)
    assert page.get_attribute("#banner", "data-state") == "down"
    page.context.set_offline(False)
    page.wait_for_selector('#banner[data-state="ok"]', timeout=15_000)
    assert errors == []


@pytest.mark.parametrize("path", ["/history", "/ops"])
def test_phone_in_dark_mode(live, browser, made, path):
    page = signed_in_page(browser, live, color_scheme="dark", viewport={"width": 375, "height": 812})
    context = page.context
    try:
        page.goto(live.url + path + (f"?q={made['word']}" if path == "/history" else ""))
        page.wait_for_selector("#rows tr" if path == "/history" else "#workers tr")
        page.wait_for_timeout(300)  # fonts and the chart settle
        assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
        overflow = horizontal_overflow(page)
        assert overflow <= 0, f"{path} is {overflow}px wider than the phone"
        shot(page, f"test_phone_in_dark_mode{path.replace('/', '_')}")
    finally:
        context.close()
