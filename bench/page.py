"""Time to first audio: the REST API alone against the Speak page in a browser, on one real system.

One system (embedded Redis, one worker, the web app under gunicorn, as tests/conftest.py's System starts them) and
one headless chromium. Alternately, N times each, with the same text:

- API: POST /synthesize, then the job's websocket (websocket-client); first audio is the first chunk event plus
  the fetch of that chunk's WAV, measured from just before the POST; done is the done event.
- page: the Speak button clicked; first audio is the page's own marks (window.speakTimings, performance.now()):
  from the click to the first chunk scheduled on the AudioContext (POST, websocket, chunk fetch, decodeAudioData
  and scheduling all included); done is the done event in the page.

Each job's own first_chunk_s (from the server's job record: from the POST's arrival to the first piece of audio
stored) is printed too, so the time the client adds, beyond what the worker took for that job, can be compared
apart from the worker's run-to-run spread. Target: the page's first audio within 50 ms of the API's.

Usage: .venv/bin/python bench/page.py [-n 5] [--warmup 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import CHROMIUM, CHROMIUM_FLAGS, System, signed_in_page  # noqa: E402

TEXT = ("The kettle clicked off just as the rain began. She counted the steps to the harbour, and there were "
        "exactly forty. Nobody answered the phone in the lighthouse that night.")


def api_run(system: System, session: requests.Session) -> dict:
    started = time.perf_counter()
    job = session.post(system.url + "/synthesize", json={"text": TEXT}, timeout=30).json()
    conn = system.api.ws(job["events_url"], timeout=60)
    first = None
    try:
        while True:
            event = json.loads(conn.recv())
            if event["type"] == "chunk" and first is None:
                wav = session.get(system.url + event["url"], timeout=30)
                assert wav.ok and wav.content[:4] == b"RIFF", wav.status_code
                first = time.perf_counter() - started
            elif event["type"] in ("done", "error"):
                assert event["type"] == "done", event
                break
    finally:
        conn.close()
    done = time.perf_counter() - started
    return {"first": first, "done": done, "server_first": system.job(job["job_id"])["first_chunk_s"]}


def page_run(system: System, page) -> dict:
    # The chunk plan follows the text after a pause: let it settle, so its request does not overlap the job's.
    page.fill("#text", "")
    page.fill("#text", TEXT)
    page.wait_for_function("document.querySelector('#plan-list li') && "
                           "document.querySelector('#plan-state').textContent !== 'updating…'")
    page.click("#submit")
    # Polled every 100 ms, not on every animation frame (Playwright's default), which would keep the page drawing
    # frames, and the CPU busy, all through the run.
    page.wait_for_function("window.speakTimings.done !== undefined && window.speakTimings.firstScheduled !== undefined",
                           timeout=60_000, polling=100)
    marks = page.evaluate("window.speakTimings")
    job_id = page.text_content("#job-id")
    # Silence: the rest of this job's audio would otherwise play on through the next run, keeping the browser busy.
    page.evaluate("current.stream.stop(); audioCtx.suspend()")
    return {"first": (marks["firstScheduled"] - marks["click"]) / 1000, "done": (marks["done"] - marks["click"]) / 1000,
            "server_first": system.job(job_id)["first_chunk_s"],
            "post": (marks["posted"] - marks["click"]) / 1000,
            "decode": (marks["firstScheduled"] - marks["firstChunkEvent"]) / 1000}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5, help="runs of each side (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first (default 1)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    system = System(Path(tempfile.mkdtemp(prefix="bench-page-"))).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            page = signed_in_page(browser, system)
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.wait_for_selector("#voice option", state="attached")
            session = requests.Session()
            session.headers.update(system.api.headers)  # the admin key, as the API wants on every call
            for _ in range(args.warmup):
                api_run(system, session)
                page_run(system, page)
            api, web = [], []
            print(f"{len(TEXT)} characters, {args.n} runs each, alternating (ms)")
            print("run   API first  API done  (server first) | page first  page done  (server first)  "
                  "click->POST answered  chunk event->scheduled")
            for i in range(args.n):
                a = api_run(system, session)
                b = page_run(system, page)
                api.append(a)
                web.append(b)
                print(f"{i + 1:3d}   {ms(a['first'])}   {ms(a['done'])}   ({ms(a['server_first'])})    | "
                      f"{ms(b['first'])}    {ms(b['done'])}   ({ms(b['server_first'])})        "
                      f"{ms(b['post'])}              {ms(b['decode'])}")
            browser.close()
            if errors:
                print("page errors:", *errors, sep="\n  ")
    finally:
        system.stop()

    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    api_first, web_first = median(api, "first"), median(web, "first")
    api_done, web_done = median(api, "done"), median(web, "done")
    api_added = statistics.median(r["first"] - r["server_first"] for r in api)
    web_added = statistics.median(r["first"] - r["server_first"] for r in web)
    print()
    print(f"median first audio: API {api_first * 1000:.1f} ms, page {web_first * 1000:.1f} ms: "
          f"page - API = {(web_first - api_first) * 1000:+.1f} ms, ratio {web_first / api_first:.2f}")
    print(f"median done:        API {api_done * 1000:.1f} ms, page {web_done * 1000:.1f} ms: "
          f"page - API = {(web_done - api_done) * 1000:+.1f} ms, ratio {web_done / api_done:.2f}")
    print(f"median client time beyond the job's own first_chunk_s: API {api_added * 1000:.1f} ms, "
          f"page {web_added * 1000:.1f} ms: page - API = {(web_added - api_added) * 1000:+.1f} ms")
    verdict = "met" if web_first - api_first <= 0.050 else "NOT met"
    print(f"target (page first audio within 50 ms of the API's): {verdict}")


if __name__ == "__main__":
    main()
