"""Audiobooks end to end: real Redis, two real workers (Piper), the web app; books from EPUB, Markdown and text.

These tests run their own system (two workers, small chunks so that a short book has many of them), because
they kill workers and restart everything.
"""
from __future__ import annotations

import json
import re
import signal
import time

import numpy as np
import pytest

from chatterbox import audio
from chatterbox.books import assemble
from chatterbox.books.plan import chunk_paths, load_plan
from chatterbox.books.state import BookStore
from tests.books import CHAPTERS, make_drm_epub, make_epub, make_markdown_book
from tests.conftest import System, wait_until, ws_events

TARGET_LUFS = -18.0
WORDS = "amber birch cedar dune ember fjord grove heath isle juniper kestrel lagoon meadow nettle orchard".split()


def fresh_chapters(tag: str, paragraphs: int = 1) -> list[tuple[str, list[str]]]:
    """The test book's chapters with every sentence made this book's own, so that no chunk of it is already in the
    chunk cache from another test (the cache is shared by every book with the same text). ``paragraphs`` repeats
    each chapter's text for a longer book."""
    out = []
    for c, (title, paras) in enumerate(CHAPTERS):
        body = []
        for r in range(paragraphs):
            for p, para in enumerate(paras):
                word = WORDS[(c * 7 + p * 3 + r) % len(WORDS)]
                sentences = re.findall(r"[^.!?]+[.!?]", para)
                body.append(" ".join(f"{x.strip()[:-1]}, {tag} {word}{x.strip()[-1]}" for x in sentences))
        out.append((title, body))
    return out


@pytest.fixture(scope="module")
def books_system(tmp_path_factory):
    root = tmp_path_factory.mktemp("books")
    sys_ = System(root, worker=False)
    # Small chunks: a three-chapter test book becomes a few dozen short tasks, so there is a "middle" to kill in.
    sys_.env.update(CHATTERBOX_CHUNK_CHARS="90", CHATTERBOX_BOOK_MAX_MB="1", CHATTERBOX_BOOK_PAUSE_CHAPTER_S="1.0")
    sys_.settings = sys_.settings.replace(chunk_chars=90, book_max_mb=1, book_pause_chapter_s=1.0)
    sys_.start()
    sys_.start_worker(name="w1")
    sys_.start_worker(name="w2")
    yield sys_
    sys_.stop()


def ensure_workers(system: System, count: int = 2) -> None:
    alive = [w for w in system.workers if w.alive()]
    for i in range(count - len(alive)):
        system.start_worker(name=f"w{len(system.workers) + 1}")


def submit_epub(system: System, data: bytes, **form) -> dict:
    response = system.api.post("/audiobooks", files={"file": ("book.epub", data)}, data=form, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()


def book(system: System, job_id: str, text: bool = False) -> dict:
    response = system.api.get(f"/audiobooks/{job_id}", params={"text": int(text)}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_book(system: System, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout=240) -> dict:
    return wait_until(lambda: (b := book(system, job_id))["status"] in statuses and b, timeout,
                      interval=0.3, what=f"book {job_id} to reach {statuses}")


def renders(system: System, job_id: str) -> dict[int, int]:
    return BookStore(system.store).renders(job_id)


def check_complete(system: System, job_id: str, fresh: str = "") -> dict:
    """The finished book has every chunk exactly once, made once, assembled in order, and a sound M4B."""
    state = book(system, job_id)
    assert state["status"] == "succeeded", state
    plan = load_plan(system.settings, job_id)
    total = len(plan.chunks)
    assert state["chunks_done"] == total
    made = renders(system, job_id)
    done = BookStore(system.store).done(job_id)
    assert sorted(done) == list(range(total)), "every chunk done"
    # Each chunk was synthesized once for this book, or taken whole from the cache (made for an earlier book).
    assert sorted(made) == sorted(i for i, d in done.items() if d["synthesized"])
    assert all(n == 1 for n in made.values()), f"no chunk synthesized twice: {made}"
    if fresh:  # the chunks with this book's own words were synthesized for it (clauses may be shared)
        own = [c.index for c in plan.chunks if fresh in c.text]
        assert own and set(own) <= set(made), "every chunk of new text synthesized here"
    folder = system.data / "books" / job_id
    # Each chapter file is its chunks in plan order: its length is exactly what joining the cached chunks gives.
    pauses = assemble.Pauses(sentence_s=plan.assembly["sentence_s"], paragraph_s=plan.assembly["paragraph_s"],
                             chapter_s=plan.assembly["chapter_s"])
    for chapter, info in zip(plan.chapters, state["chapters"]):
        assert info["status"] == "assembled"
        chunks = [audio.read_wav(chunk_paths(system.settings, plan.chunks[i].key)[0])[0] for i in chapter.chunk_range]
        joined = assemble.join_chunks(chunks, [plan.chunks[i].brk for i in chapter.chunk_range], plan.sample_rate,
                                      pauses)
        expected = len(joined) / plan.sample_rate + pauses.lead_in_s + pauses.chapter_s
        assert info["duration_s"] == pytest.approx(expected, abs=0.05)  # the tail ends on a whole AAC frame
    # The M4B: one marker per chapter, in order, starting where each chapter's part starts.
    m4b = folder / "book.m4b"
    marks = assemble.read_chapters(m4b)
    assert [m.title for m in marks] == [c.title for c in plan.chapters]
    starts = np.cumsum([0.0] + [c["duration_s"] for c in state["chapters"]][:-1])
    assert [m.start_s for m in marks] == pytest.approx(list(starts), abs=0.1)
    assert marks[-1].end_s == pytest.approx(assemble.probe_duration(m4b), abs=0.2)
    samples, rate = audio.decode(m4b)
    assert assemble.measure_lufs(samples, rate) == pytest.approx(TARGET_LUFS, abs=1.0)
    return state


def test_epub_book_is_read_into_chapter_files_and_an_m4b(books_system):
    system = books_system
    ensure_workers(system)
    sent = submit_epub(system, make_epub(fresh_chapters("epub"), version=3), voice="joe", format="mp3")
    assert sent["chapters"] == 3 and sent["chunks"] >= 10
    events = ws_events(system.api, sent['events_url'], timeout=240)
    assert events[-1]["type"] == "done", events[-1]
    progress = [e for e in events if e["type"] == "progress" and "chunks_done" in e]
    assert progress and progress[-1]["chunks_done"] == sent["chunks"]
    assert all("chapter" in e and "audio_s" in e for e in progress)
    assert any(e.get("eta_s") is not None for e in progress)
    assert [e["index"] for e in events if e["type"] == "chapter"] and \
        sorted(e["index"] for e in events if e["type"] == "chapter") == [0, 1, 2]
    state = check_complete(system, sent["job_id"], fresh="epub")
    assert state["title"] == "The Small Test Book" and state["author"] == "Ada Tester"
    assert [c["title"] for c in state["chapters"]] == [title for title, _ in CHAPTERS]
    assert state["synthesized"] >= state["chunks_total"] - 3 and state["quality"]["checked"]
    # Checked without a recognizer (CHATTERBOX_BOOK_ASR=auto): Piper speaks every phoneme of its text.
    plan = load_plan(system.settings, sent["job_id"])
    reports = [json.loads(chunk_paths(system.settings, c.key)[1].read_text()) for c in plan.chunks]
    assert all(r["quality"] is not None and r["quality"]["transcript"] is None for r in reports)
    # Chapter downloads, tagged in order; the M4B carries title, author and cover.
    from mutagen import File as MutagenFile

    for chapter in state["chapters"]:
        response = system.api.get(chapter["url"], timeout=10)
        assert response.status_code == 200 and response.headers["Content-Type"] == "audio/mpeg"
        path = system.data / "books" / sent["job_id"] / "chapters" / chapter["file"]
        tags = MutagenFile(path, easy=True)
        assert tags["title"] == [chapter["title"]]
        assert tags["tracknumber"][0].split("/")[0] == str(chapter["index"] + 1)
    response = system.api.get(sent["m4b_url"], timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "audio/mp4"
    m4b = MutagenFile(system.data / "books" / sent["job_id"] / "book.m4b")
    assert m4b.tags["\xa9nam"] == ["The Small Test Book"] and m4b.tags["\xa9ART"] == ["Ada Tester"]
    assert m4b.tags["covr"][0][:8] == b"\x89PNG\r\n\x1a\n"
    # The generic job routes know the book too.
    assert system.api.get(f"/jobs/{sent['job_id']}", timeout=10).json()["kind"] == "audiobook"


def test_markdown_book_reviewed_and_edited_before_it_starts(books_system):
    system = books_system
    ensure_workers(system)
    markdown = make_markdown_book(fresh_chapters("markdown"))
    books_before = sorted((system.data / "books").glob("*"))
    preview = system.api.post("/audiobooks/parse", json={"text": markdown, "source_format": "md"}, timeout=30)
    assert preview.status_code == 200, preview.text
    chapters = preview.json()["book"]["chapters"]
    assert [c["title"] for c in chapters] == [title for title, _ in CHAPTERS]
    assert [c["title"] for c in chapters] == [title for title, _ in CHAPTERS]
    assert sorted((system.data / "books").glob("*")) == books_before  # parsing stores nothing
    edited = [{"title": f"Part {i + 1}: {c['title']}", "text": c["text"]} for i, c in enumerate(chapters)]
    response = system.api.post("/audiobooks", json={"chapters": edited, "title": "Edited Book",
                                                   "author": "Ed Itor", "format": "ogg"}, timeout=30)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    wait_book(system, job_id)
    state = check_complete(system, job_id, fresh="markdown")
    assert [c["title"] for c in state["chapters"]] == [c["title"] for c in edited]
    assert all(c["file"].endswith(".ogg") for c in state["chapters"])


def test_a_worker_killed_mid_book_loses_only_its_chunk(books_system):
    system = books_system
    ensure_workers(system)
    sent = submit_epub(system, make_epub(fresh_chapters("killed", 2), title="Killed Midway", version=2))
    job_id = sent["job_id"]
    books = BookStore(system.store)
    # Wait until the book is well under way and some worker holds a chunk, then SIGKILL that worker.
    wait_until(lambda: book(system, job_id)["chunks_done"] >= 4, 120, what="a few chunks")
    owner = wait_until(lambda: next((o for i, o in books.inflight(job_id).items() if i.startswith("c:")), None), 60,
                       interval=0.01, what="a chunk in flight")
    victim = next(w for w in system.workers if w.alive() and f"{w.pid}" in owner["instance"].split(":")[1])
    victim.kill(signal.SIGKILL)
    state = wait_book(system, job_id)
    assert state["status"] == "succeeded", state
    check_complete(system, job_id, fresh="killed")


def test_restarting_the_whole_system_mid_book_redoes_no_finished_chunk(books_system):
    system = books_system
    ensure_workers(system)
    text = "\n\n".join(f"Chapter {n}\n\n" + " ".join(
        f"This is sentence {w} of chapter {n}, spoken for the restart test." for w in range(1, 7))
        for n in ("One", "Two", "Three"))
    response = system.api.post("/audiobooks", json={"text": text, "title": "Restarted"}, timeout=30)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    wait_until(lambda: book(system, job_id)["chunks_done"] >= 5, 120, what="a few chunks")
    # Everything stops at once: workers and web killed, Redis stopped (it keeps its append-only file).
    for proc in [system.web, *system.workers]:
        proc.kill(signal.SIGKILL)
    before = set(renders(system, job_id))
    system.redis.stop()
    system.redis.start()
    wait_until(lambda: _redis_up(system), 30, what="redis")
    system.web = type(system.web)(["web"], system.env, system.root / "web-restarted.log").start()
    wait_until(lambda: system._answers("/engine"), 60, what="the web app again")
    ensure_workers(system)
    state = wait_book(system, job_id)
    assert state["status"] == "succeeded", state
    check_complete(system, job_id, fresh="restart")  # every chunk made once: those from before the restart were not made again
    assert before and before <= set(renders(system, job_id))


def _redis_up(system: System) -> bool:
    try:
        return system.store.r.ping()
    except Exception:
        return False


def test_pause_resume_and_cancel_keep_finished_work(books_system):
    system = books_system
    ensure_workers(system)
    sent = submit_epub(system, make_epub(fresh_chapters("paused", 2), title="Paused Book", version=3))
    job_id = sent["job_id"]
    wait_until(lambda: book(system, job_id)["chunks_done"] >= 2, 120, what="a few chunks")
    assert system.api.post(f"/audiobooks/{job_id}/pause", timeout=10).json()["status"] == "paused"
    # Chunks in flight finish; then nothing moves.
    wait_until(lambda: not BookStore(system.store).inflight(job_id), 60, what="in-flight chunks to finish")
    done = book(system, job_id)["chunks_done"]
    time.sleep(1.5)
    paused = book(system, job_id)
    assert paused["status"] == "paused" and paused["chunks_done"] == done < paused["chunks_total"]
    again = system.api.post(f"/audiobooks/{job_id}/pause", timeout=10)
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_running"
    # Cancel, then resume: finished chunks are kept and the book completes.
    assert system.api.post(f"/audiobooks/{job_id}/cancel", timeout=10).json()["status"] == "cancelled"
    assert book(system, job_id)["status"] == "cancelled"
    assert system.api.post(f"/audiobooks/{job_id}/resume", timeout=10).json()["status"] == "queued"
    state = wait_book(system, job_id)
    assert state["status"] == "succeeded", state
    check_complete(system, job_id, fresh="paused")


def test_interactive_requests_go_before_book_chunks(books_system):
    system = books_system
    ensure_workers(system)
    sent = submit_epub(system, make_epub(fresh_chapters("busy", 3), title="Busy Book", version=3))
    wait_until(lambda: book(system, sent["job_id"])["chunks_done"] >= 1, 120, what="the book to start")
    job = system.submit("A short interactive request.")
    finished = system.wait_job(job["job_id"], timeout=60)
    assert finished["status"] == "succeeded"
    # It did not wait behind the book: the book still had work when the request was done.
    state = book(system, sent["job_id"])
    assert state["status"] == "running" and state["chunks_done"] < state["chunks_total"], state
    system.api.post(f"/audiobooks/{sent['job_id']}/cancel", timeout=10)


def test_regenerating_a_chunk_reassembles_its_chapter_and_the_book(books_system):
    system = books_system
    ensure_workers(system)
    text = "Chapter One\n\nA first short chapter.\n\nChapter Two\n\nA second short chapter, to be spoken again."
    job_id = system.api.post("/audiobooks", json={"text": text}, timeout=30).json()["job_id"]
    wait_book(system, job_id)
    plan = load_plan(system.settings, job_id)
    index = plan.chapters[1].first + 1
    old_key = plan.chunks[index].key
    response = system.api.post(f"/audiobooks/{job_id}/chunks/{index}/regenerate", timeout=10)
    assert response.status_code == 202, response.text
    assert response.json()["chunk"]["revision"] == 1 and response.json()["chunk"]["key"] != old_key
    state = wait_book(system, job_id)
    assert state["status"] == "succeeded"
    assert renders(system, job_id)[index] == 2
    assert load_plan(system.settings, job_id).chunks[index].revision == 1
    assert system.api.get(f"/audiobooks/{job_id}/chunks/{index}/audio", timeout=10).status_code == 200
    missing = system.api.post(f"/audiobooks/{job_id}/chunks/999/regenerate", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "chunk_not_found"


def test_a_chunk_that_keeps_failing_stops_its_book_with_a_clear_error(books_system):
    system = books_system
    ensure_workers(system)
    chunks_dir = system.data / "chunks"
    aside = system.data / "chunks-aside"
    chunks_dir.rename(aside)
    chunks_dir.write_text("not a directory: no chunk can be stored")  # every write of a chunk fails
    try:
        response = system.api.post("/audiobooks", json={"text": "A book that cannot be stored."}, timeout=30)
        job_id = response.json()["job_id"]
        state = wait_book(system, job_id, timeout=120)
    finally:
        chunks_dir.unlink()
        aside.rename(chunks_dir)
    assert state["status"] == "failed"
    assert re.search(r"^chunk \d+ \(chapter 1: '.+'\) failed 3 times .*NotADirectoryError", state["error"]), \
        state["error"]


def test_books_through_the_celery_api(books_system):
    system = books_system
    ensure_workers(system)
    from celery import Celery

    import celeryconfig

    app = Celery("client")
    app.config_from_object(celeryconfig)
    app.conf.broker_url = app.conf.result_backend = system.redis.url
    markdown = make_markdown_book(fresh_chapters("markdown"))  # as the Markdown test sent it, titles aside
    # A book lexicon goes through too (its term is not in this text, so no chunk changes).
    result = app.send_task("tasks.audiobook", kwargs={"text": markdown, "source_format": "md",
                                                      "lexicon": [{"term": "Zorblax", "say": "Zor blacks"}]})
    record = result.get(timeout=60)
    assert record["kind"] == "audiobook" and record["status"] in ("queued", "running")
    state = wait_book(system, record["id"])
    assert state["status"] == "succeeded"
    assert len(state["chapters"]) == 3
    assert [(e["term"], e["say"]) for e in state["lexicon"]] == [("Zorblax", "Zor blacks")]
    # The same chapters were read for an earlier book (only their titles differed): their audio is reused.
    state = check_complete(system, record["id"])
    assert state["from_cache"] >= state["chunks_total"] - 3 and state["synthesized"] <= 3


@pytest.mark.parametrize("upload, code, status", [
    (("book.epub", b"PK\x03\x04 this is not really a zip"), "corrupt_epub", 400),
    (("book.epub", "drm"), "drm_protected", 400),
    (("book.txt", b""), "empty_book", 400),
    (("book.txt", b"   \n\n  \n"), "empty_book", 400),
    (("book.txt", b"\x00\x01\x02\x03binary\x00\xff" * 100), "binary_file", 400),
    (("book.txt", b"word " * 300_000), "request_too_large", 413),
    (("book.pdf", b"%PDF-1.4 ..."), "unsupported_format", 400),
])
def test_bad_books_are_refused_before_any_synthesis(books_system, upload, code, status):
    system = books_system
    name, data = upload
    if data == "drm":
        data = make_drm_epub()
    before = len(system.api.get("/audiobooks", timeout=10).json()["audiobooks"])
    response = system.api.post("/audiobooks", files={"file": (name, data)}, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert len(system.api.get("/audiobooks", timeout=10).json()["audiobooks"]) == before


@pytest.mark.parametrize("body, field, code", [
    ({"chapters": [{"title": "One", "text": "Words to say."}, {"title": "Two", "text": " ... "}]},
     "chapters[1]", "chapter_empty"),
    ({"chapters": []}, "chapters", "invalid_chapters"),
    ({"text": "Some text.", "format": "wav"}, "format", "unknown_format"),
    ({"text": "Some text.", "params": {"length_scale": 9}}, "params.length_scale", "out_of_range"),
    ({"text": "Some text.", "source_format": "pdf"}, "source_format", "unsupported_format"),
    ({"txt": "typo"}, "txt", "unknown_field"),
    ({}, "text", "missing_field"),
])
def test_bad_book_requests_name_the_field(books_system, body, field, code):
    response = books_system.api.post("/audiobooks", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == field, error


def test_a_book_in_an_unknown_voice_is_refused_like_a_missing_voice(books_system):
    for voice in ("nobody", 123):
        response = books_system.api.post("/audiobooks", json={"text": "Some text.", "voice": voice}, timeout=30)
        error = response.json()["error"]
        assert (response.status_code, error["param"]) == ((404, "voice") if voice == "nobody" else (400, "voice"))
        assert error["code"] == ("unknown_voice" if voice == "nobody" else "invalid_type"), error


def test_unknown_books_and_files_not_ready_are_clear_errors(books_system):
    system = books_system
    missing = system.api.get("/audiobooks/" + "0" * 32, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "book_not_found"
    job = system.submit("Not a book.")
    assert system.api.get(f"/audiobooks/{job['job_id']}", timeout=10).status_code == 404
