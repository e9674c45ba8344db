"""Submitting and steering audiobooks (pause, resume, cancel, regenerate a chunk) and reading their state.

Used alike by the REST API, the Celery API and the command line; the work itself is done by BookRunner.
"""
from __future__ import annotations

import time
from typing import Callable

from .. import audio
from ..access import Caller
from ..engines import Engine, InvalidRequest
from ..jobs import JobStore, new_job_id
from ..lexicon import Entry, Lexicon, LexiconError, entry
from ..settings import Settings
from .assemble import CHAPTER_FORMATS
from .plan import Plan, book_dir, bump_revision, load_plan, make_plan, save_plan
from .reader import Book
from .runner import eta_seconds
from .state import BookStore
from .transitions import BookStateError  # what every action here raises when the book's state refuses it (409)

SendTokens = Callable[[str, int], None]
# Messages kept in the bulk queue per book: enough to keep every worker busy, few enough that queueing them is
# instant for any book size. Each message that finds work sends the next one.
WINDOW = 64
_COVER_EXT = {"image/jpeg": "jpg", "image/png": "png"}


def submit_book(store: JobStore, engine: Engine, settings: Settings, book: Book, *, voice: str | None,
                fmt: str | None, params: dict | None, source: str, send_tokens: SendTokens,
                caller: Caller, job_id: str | None = None,
                original: tuple[str, bytes] | None = None, model: str | None = None,
                language: str | None = None, lexicon: object = None) -> tuple[dict, Plan]:
    """Check the request for ``caller`` (its owner), plan the book, store the plan, and queue its work. Raises
    InvalidRequest or BookError before anything is stored. ``model`` and ``language``: as a synthesis job's; a
    book that names its own language (EPUB or front matter) is read in it where a model speaks it, unless the
    request says otherwise. ``lexicon``: the book's own pronunciation entries (as ``PUT /lexicon`` takes them),
    applied on top of the owner's (a book entry wins over the owner's for the same term) and kept in the plan."""
    started = time.perf_counter()
    fmt = (fmt or settings.book_format).lower() if isinstance(fmt, (str, type(None))) else fmt
    if fmt not in CHAPTER_FORMATS:
        raise InvalidRequest(f"unknown chapter format {fmt!r}; choose one of {', '.join(CHAPTER_FORMATS)} "
                             "(the whole book is also an M4B)", "unknown_format", "format")
    engine = engine.for_model(model, language if language is not None else book_language(engine, book, model))
    voice = engine.check_voice(voice, caller)
    params = engine.validate(params)
    own = book_lexicon(lexicon, settings.lexicon_max_entries)
    job_id = job_id or new_job_id()
    entries = Lexicon(store.r, caller.id, settings.lexicon_max_entries).entries()  # the owner's, as of now
    plan = make_plan(book, job_id=job_id, engine=engine, voice=voice, params=params, fmt=fmt, settings=settings,
                     lexicon=merge_lexicons(entries, own))
    # Kept with the book: the plan holds every chunk's text as spoken by these entries, so a resumed book or a
    # regenerated chunk says the same words, whatever the owner's lexicon says later.
    plan.extra["lexicon"] = [_stored(e) for e in own]
    folder = book_dir(settings, job_id)
    if book.cover and book.cover_type in _COVER_EXT:
        audio.write_atomic(folder / f"cover.{_COVER_EXT[book.cover_type]}", book.cover)
    if original is not None:
        name, data = original
        audio.write_atomic(folder / f"source{_suffix(name)}", data)
    save_plan(settings, plan)
    plan_s = time.perf_counter() - started
    chars = sum(len(c.text) for c in plan.chunks)
    store.create(job_id, text=book.title, voice=voice, format=fmt, params=params, engine=engine.name, source=source,
                 model=engine.model or "", language=engine.language, kind="audiobook", title=book.title, author=book.author, chapters_total=len(plan.chapters),
                 plan_s=round(plan_s, 4), audio_s=0.0, assembly_s=0.0, owner=caller.id)
    store.update(job_id, chunks_total=len(plan.chunks), text_chars=chars, sample_rate=plan.sample_rate)
    BookStore(store).start(job_id, [f"c:{c.index}" for c in plan.chunks])
    send_tokens(job_id, min(WINDOW, len(plan.chunks)))
    return store.get(job_id), plan


def book_lexicon(items: object, max_entries: int) -> list[Entry]:
    """A book's own lexicon from a request: a list of entries shaped as ``PUT /lexicon`` takes them (or that
    route's ``{"entries": [...]}``), each checked by chatterbox.lexicon's own rules. Raises InvalidRequest naming
    the entry and its field (``lexicon[2].say``). A later entry of the same term replaces an earlier one."""
    if items is None:
        return []
    if isinstance(items, dict) and set(items) <= {"entries", "max_entries"} and "entries" in items:
        items = items["entries"]  # what GET /lexicon answers (an export) works as it is
    if not isinstance(items, list):
        raise InvalidRequest("lexicon must be a list of entries: [{\"term\", \"say\", "
                             "\"case_sensitive\"}, ...], as PUT /lexicon takes them", "invalid_type", "lexicon")
    if len(items) > max_entries:
        raise InvalidRequest(f"the book's lexicon has {len(items)} entries; the most it may have is "
                             f"{max_entries} (CHATTERBOX_LEXICON_MAX_ENTRIES)", "too_many_entries", "lexicon")
    found: dict[str, Entry] = {}
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("term") is None:
            raise InvalidRequest(f"lexicon entry {i}: term is required: the word (or words) "
                                 "to say another way", "missing_field", f"lexicon[{i}].term")
        try:
            new = entry(item.get("term") if isinstance(item, dict) else None, item)
        except LexiconError as exc:
            field = f"lexicon[{i}]" if exc.field in (None, "body") else f"lexicon[{i}].{exc.field}"
            term = item.get("term") if isinstance(item, dict) else None
            named = f" ({term.strip()!r})" if isinstance(term, str) and term.strip() else ""
            raise InvalidRequest(f"lexicon entry {i}{named}: {exc.message}", exc.code, field) from None
        found.pop(new.term, None)
        found[new.term] = new
    return list(found.values())


def merge_lexicons(owner: list[Entry], book: list[Entry]) -> list[Entry]:
    """The entries a book is read by: the owner's, less those of a term the book's own entries also have (in any
    case: a book entry for "nguyen" replaces the owner's "Nguyen"), then the book's."""
    mine = {e.term.casefold() for e in book}
    return [e for e in owner if e.term.casefold() not in mine] + list(book)


def _stored(e: Entry) -> dict:
    """An entry as a book keeps it (and as PUT /lexicon takes it back: no timestamp, no empty fields)."""
    return {k: v for k, v in e.public().items() if k != "updated_at" and v is not None}


def book_language(engine: Engine, book: Book, model: str | None) -> str | None:
    """The book's own language where it names one that a model at hand speaks (and the request's model, if any,
    is the multilingual one); else None (the default: English)."""
    from ..text_languages import LanguageError, check_language

    try:
        code = check_language(book.language) if book.language else None
    except LanguageError:
        return None
    if code in (None, "en") or model not in (None, "", "multilingual", "chatterbox-multilingual"):
        return None
    available = engine.available() if hasattr(engine, "available") else []
    return code if "multilingual" in available else None


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot >= 0 else ""
    return ext if ext in (".txt", ".text", ".md", ".markdown", ".epub") else ".txt"


def pause_book(store: JobStore, job_id: str) -> str:
    job = _book_job(store, job_id)
    BookStore(store).pause(job_id)
    store.emit(job_id, "progress", status="paused", progress=job.get("progress", 0.0),
               message="paused: the chunks in flight finish, nothing new starts")
    return "paused"


def resume_book(store: JobStore, settings: Settings, job_id: str, send_tokens: SendTokens) -> str:
    """Continue a paused, failed or cancelled book from where it stopped; finished work is kept."""
    job = _book_job(store, job_id)
    books = BookStore(store)
    plan = load_plan(settings, job_id)
    # First: a key at its cap of unfinished jobs may not resume one (that would walk around the cap).
    books.resume(job_id)
    books.hand_back(job_id)  # items whose holders are gone; those still running finish and are kept
    books.reconcile(job_id, [(c.first, c.count) for c in plan.chapters])
    store.emit(job_id, "progress", status="queued", progress=job.get("progress", 0.0), message="resumed")
    send_tokens(job_id, max(1, min(WINDOW, books.pending_count(job_id))))
    return "queued"


def cancel_book(store: JobStore, job_id: str) -> str:
    _book_job(store, job_id)
    BookStore(store).cancel(job_id)  # its work state is kept for the retention period, for a resume
    return "cancelled"


def regenerate_chunk(store: JobStore, settings: Settings, engine: Engine, job_id: str, index: int,
                     send_tokens: SendTokens) -> dict:
    """Make chunk ``index`` again with a new seed, then re-assemble its chapter and the book."""
    job = _book_job(store, job_id)
    plan = load_plan(settings, job_id)
    if not 0 <= index < len(plan.chunks):
        raise InvalidRequest(f"the book has chunks 0 to {len(plan.chunks) - 1}, not {index}", "chunk_not_found",
                             "index", 404)
    books = BookStore(store)
    if f"c:{index}" in books.inflight(job_id) or f"c:{index}" in books.pending(job_id):
        raise BookStateError(f"chunk {index} is not made yet; it can be regenerated once it is", "chunk_pending")
    reopened = books.reopen(job_id)  # first: a finished book queued again counts against the cap like a new one
    chunk = bump_revision(plan, index, plan.engine, any(p.name == "seed" for p in engine.params))
    save_plan(settings, plan)
    books.undo_chunk(job_id, index)
    books.forget_chapter(job_id, chunk.chapter)  # the chunk's completion queues the chapter's assembly again
    books.queue(job_id, f"c:{index}")
    if reopened:
        store.update(job_id, run_done_at_start=books.done_count(job_id))
        store.emit(job_id, "progress", status="queued", progress=job.get("progress", 0.0),
                   message=f"regenerating chunk {index}")
    if reopened or books.moving(job):  # a paused book makes it once resumed
        send_tokens(job_id, 1)
    return {"index": index, "revision": chunk.revision, "key": chunk.key, "text": chunk.text}


def _book_job(store: JobStore, job_id: str) -> dict:
    job = store.get(job_id)
    if job is None or job.get("kind") != "audiobook":
        raise KeyError(job_id)
    return job


def book_state(store: JobStore, settings: Settings, job_id: str, with_text: bool = False) -> dict:
    """A book's plan and progress: per chapter, whole book, audio made, time left, quality report, files."""
    job = _book_job(store, job_id)
    plan = load_plan(settings, job_id)
    books = BookStore(store)
    done = books.done(job_id)
    assembled = books.chapters(job_id)
    inflight = {int(k[2:]) for k in books.inflight(job_id) if k.startswith("c:")}
    chapters = []
    for ch in plan.chapters:
        made = sum(1 for i in ch.chunk_range if i in done)
        info = assembled.get(ch.index)
        status = "assembled" if info else "assembling" if made == ch.count else "running" if made or \
            inflight & set(ch.chunk_range) else "waiting"
        item = {"index": ch.index, "title": ch.title, "chunks_done": made, "chunks_total": ch.count,
                "words": ch.words, "status": status,
                "progress": round(1.0 if info else 0.99 * made / ch.count, 4)}
        if info:
            item.update(duration_s=info["duration_s"], file=info["file"], lufs=info["lufs"])
            if info.get("words_file"):
                item["words_file"] = info["words_file"]
        if with_text:
            item["chunks"] = [{"index": i, "text": plan.chunks[i].text, "source": plan.chunks[i].source,
                               "done": i in done,
                               "duration_s": done.get(i, {}).get("duration_s")} for i in ch.chunk_range]
        chapters.append(item)
    retried = [{"index": i, "attempts": d["attempts"], "ok": d["ok"], "problems": d.get("problems", [])}
               for i, d in sorted(done.items()) if d.get("attempts", 1) > 1 or not d.get("ok", True)]
    total = len(plan.chunks)
    return {"job": job, "plan": plan.summary(), "chapters": chapters, "chunks_done": len(done), "chunks_total": total,
            "chunks_in_flight": len(inflight), "audio_s": round(sum(d.get("duration_s", 0.0) for d in done.values()), 2),
            "eta_s": eta_seconds(job, len(done), total) if job["status"] == "running" else None,
            "quality": {"checked": settings.book_quality_checks, "retried": [r for r in retried if r["ok"]],
                        "failed": [r for r in retried if not r["ok"]]},
            "lexicon": plan.extra.get("lexicon", []),
            "synthesized": sum(1 for d in done.values() if d.get("synthesized")),
            "from_cache": sum(1 for d in done.values() if not d.get("synthesized"))}
