"""Audiobooks over REST: preview chapters, submit, follow, pause/resume/cancel, regenerate a chunk, download."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from flask import Blueprint, abort, request, send_file, url_for

from chatterbox.books import control, readalong
from chatterbox.books.plan import book_dir, cached_chunk, chunk_paths, load_plan
from chatterbox.books.state import BookStore
from chatterbox.books.reader import Book
from chatterbox.books.isolated import parse_isolated
from chatterbox.engines import InvalidRequest
from chatterbox.schemas.requests import BookForm, BookRequest

from .api import JOB_ID, subtitle_args, subtitle_response, truthy
from .auth import caller, owner_filter
from .common import decode_json_fields, error_response, form_files, links, services

bp = Blueprint("books", __name__)

MIME = {"mp3": "audio/mpeg", "ogg": "audio/ogg", "m4a": "audio/mp4", "m4b": "audio/mp4"}


def send_tokens(job_id: str, count: int) -> None:
    from tasks import send_book_tokens  # Celery's app reads the same settings through celeryconfig

    send_book_tokens(job_id, count)


def _book_from_request() -> tuple[Book, dict, tuple[str, bytes] | None]:
    """The book and the synthesis options of a request: multipart with a ``file`` (and form fields), or JSON with
    ``text`` or reviewed ``chapters``. Raises BookError or InvalidRequest."""
    settings = services().settings
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise InvalidRequest("send the book as a multipart file field named 'file' (.txt, .md or .epub), "
                                 "or as JSON with 'text' or 'chapters'", "missing_file", "file")
        files = form_files()
        options = decode_json_fields(BookForm.check_form(request.form, files).model_dump(
            exclude_unset=True, exclude={"file"}), {"params": "a JSON object", "lexicon": "a JSON list of entries"})
        data = files["file"]
        book = parse_isolated("file", data, upload.filename or "", max_bytes=settings.book_max_mb * 1024 * 1024,
                              format=options.get("source_format"), timeout_s=settings.book_parse_timeout_s)
        original = (upload.filename or "book.txt", data)
    elif request.is_json:
        options = request.get_json(silent=True)
        BookRequest.check(options)  # the shape; what the book says is the reader's to judge
        if options.get("chapters") is not None:
            book = parse_isolated("chapters", options["chapters"], title=_str(options, "title"),
                                  author=_str(options, "author"), language=_str(options, "language"),
                                  timeout_s=settings.book_parse_timeout_s)
        elif options.get("text") is not None:
            book = parse_isolated("text", options["text"], format=_str(options, "source_format") or "txt",
                                  title=_str(options, "title"), timeout_s=settings.book_parse_timeout_s)
        else:
            raise InvalidRequest("give the book as 'text' (plain or Markdown) or reviewed 'chapters'", "missing_field",
                                 "text")
        original = None
    else:
        abort(error_response(415, "send the book as multipart form data with a 'file', or as JSON "
                             "(Content-Type: application/json)", "unsupported_media_type"))
    for name in ("title", "author", "language"):
        if _str(options, name):
            setattr(book, name, _str(options, name))
    return book, options, original


def _str(options: dict, name: str) -> str:
    """A text option, trimmed ("" when left out): a form's fields are text, and BookRequest checked a JSON body's."""
    return (options.get(name) or "").strip()


@bp.post("/audiobooks/parse")
def parse():
    """The chapters a book would be read as, for review and editing before it is submitted; nothing is queued."""
    book, _, _ = _book_from_request()
    return {"book": book.summary()}


@bp.post("/audiobooks")
def submit():
    svc = services()
    book, options, original = _book_from_request()
    job, plan = control.submit_book(svc.store, svc.engine, svc.settings, book, voice=options.get("voice"),
                                    fmt=options.get("format"), params=options.get("params"), source="rest",
                                    send_tokens=send_tokens, original=original, caller=caller(),
                                    model=options.get("model"), language=_str(options, "language") or None,
                                    lexicon=options.get("lexicon"))
    body = {"job_id": job["id"], "status": job["status"], "title": plan.title, "chapters": len(plan.chapters),
            "chunks": len(plan.chunks), **book_links(job["id"])}
    return body, 202, {"Location": body["book_url"]}


def book_links(job_id: str) -> dict:
    return {**links(job_id), "book_url": url_for("books.status", job_id=job_id),
            "m4b_url": url_for("books.m4b", job_id=job_id), "epub_url": url_for("books.epub", job_id=job_id),
            "subtitles_url": url_for("books.book_subtitles", job_id=job_id),
            "events_url": urlsplit(url_for("events.job_events", job_id=job_id)).path}


def _book_or_404(job_id: str) -> dict:
    job = services().store.get(job_id) if JOB_ID.match(job_id) else None
    if job is None or job.get("kind") != "audiobook" or not caller().may_see(job.get("owner")):
        abort(error_response(404, f"no audiobook with id {job_id!r}", "book_not_found", "job_id"))
    return job


@bp.get("/audiobooks")
def list_books():
    from chatterbox.jobs import public_view

    books = services().store.recent(500, owner=owner_filter(), kind="audiobook")
    return {"audiobooks": [{**public_view(j), **book_links(j["id"])} for j in books]}


@bp.get("/audiobooks/<job_id>")
def status(job_id: str):
    from chatterbox.jobs import public_view

    _book_or_404(job_id)
    svc = services()
    state = control.book_state(svc.store, svc.settings, job_id, with_text=truthy(request.args.get("text")))
    job = state.pop("job")
    for chapter in state["chapters"]:
        if chapter.get("file"):
            chapter["url"] = url_for("books.chapter_file", job_id=job_id, index=chapter["index"])
        if chapter.get("words_file"):
            chapter["subtitles_url"] = url_for("books.book_subtitles", job_id=job_id, chapter=chapter["index"])
    return {**public_view(job), **state, **book_links(job_id),
            "m4b_ready": job["status"] == "succeeded" and (book_dir(svc.settings, job_id) / "book.m4b").is_file()}


def _act(job_id: str, action):
    _book_or_404(job_id)
    status = action()
    return {"job_id": job_id, "status": status}


@bp.post("/audiobooks/<job_id>/pause")
def pause(job_id: str):
    return _act(job_id, lambda: control.pause_book(services().store, job_id))


@bp.post("/audiobooks/<job_id>/resume")
def resume(job_id: str):
    svc = services()
    return _act(job_id, lambda: control.resume_book(svc.store, svc.settings, job_id, send_tokens))


@bp.post("/audiobooks/<job_id>/cancel")
@bp.delete("/audiobooks/<job_id>")
def cancel(job_id: str):
    return _act(job_id, lambda: control.cancel_book(services().store, job_id))


@bp.post("/audiobooks/<job_id>/chunks/<int:index>/regenerate")
def regenerate(job_id: str, index: int):
    svc = services()
    _book_or_404(job_id)
    chunk = control.regenerate_chunk(svc.store, svc.settings, svc.engine, job_id, index, send_tokens)
    return {"job_id": job_id, "status": "queued", "chunk": chunk, **book_links(job_id)}, 202


@bp.get("/audiobooks/<job_id>/chunks/<int:index>/audio")
def chunk_audio(job_id: str, index: int):
    _book_or_404(job_id)
    settings = services().settings
    plan = load_plan(settings, job_id)
    if not 0 <= index < len(plan.chunks):
        return error_response(404, f"the book has chunks 0 to {len(plan.chunks) - 1}", "chunk_not_found", "index")
    key = plan.chunks[index].key
    if cached_chunk(settings, key) is None:
        return error_response(409, f"chunk {index} is not made yet", "chunk_not_ready")
    return send_file(chunk_paths(settings, key)[0].resolve(), mimetype="audio/wav", conditional=True)


@bp.get("/audiobooks/<job_id>/chapters/<int:index>")
def chapter_file(job_id: str, index: int):
    _book_or_404(job_id)
    svc = services()
    plan = load_plan(svc.settings, job_id)
    if not 0 <= index < len(plan.chapters):
        return error_response(404, f"the book has chapters 0 to {len(plan.chapters) - 1}", "chapter_not_found",
                              "index")
    info = BookStore(svc.store).chapters(job_id).get(index)
    path = book_dir(svc.settings, job_id) / "chapters" / info["file"] if info else None
    if path is None or not path.is_file():
        return error_response(409, f"chapter {index} is not assembled yet", "chapter_not_ready")
    suffix = path.suffix.lstrip(".")
    return send_file(path.resolve(), mimetype=MIME.get(suffix, "application/octet-stream"), conditional=True,
                     as_attachment=truthy(request.args.get("download")),
                     download_name=f"{index + 1:03d} {_safe(plan.chapters[index].title)}.{suffix}")


@bp.get("/audiobooks/<job_id>/m4b")
def m4b(job_id: str):
    job = _book_or_404(job_id)
    path = book_dir(services().settings, job_id) / "book.m4b"
    if job["status"] != "succeeded" or not path.is_file():
        return error_response(409, f"book {job_id} is {job['status']}; its M4B exists once it has succeeded",
                              "audio_not_ready")
    return send_file(path.resolve(), mimetype="audio/mp4", conditional=True,
                     as_attachment=truthy(request.args.get("download")),
                     download_name=f"{_safe(job.get('title') or job_id)}.m4b")


@bp.get("/audiobooks/<job_id>/cover")
def cover(job_id: str):
    _book_or_404(job_id)
    found = sorted(book_dir(services().settings, job_id).glob("cover.*"))
    if not found:
        return error_response(404, "this book has no cover", "no_cover")
    return send_file(found[0].resolve(), mimetype="image/png" if found[0].suffix == ".png" else "image/jpeg")


@bp.get("/audiobooks/<job_id>/epub")
def epub(job_id: str):
    """The read-along EPUB 3: the book's text with its audio, each sentence lit as it is read (Media Overlays)."""
    job = _book_or_404(job_id)
    path = book_dir(services().settings, job_id) / "book.epub"
    if job["status"] != "succeeded" or not path.is_file():
        return error_response(409, f"book {job_id} is {job['status']}; its read-along EPUB exists once it has "
                              "succeeded (books made before read-along EPUBs have none)", "epub_not_ready")
    return send_file(path.resolve(), mimetype="application/epub+zip", conditional=True,
                     as_attachment=truthy(request.args.get("download")),
                     download_name=f"{_safe(job.get('title') or job_id)}.epub")


def _book_words(job_id: str) -> tuple[list[dict], list[int], str]:
    """(words, breaks, name) of ?chapter=N in its chapter file's time, or of the whole book in the M4B's; or the error
    that says why there are none (aborted)."""
    job = _book_or_404(job_id)
    svc = services()
    plan = load_plan(svc.settings, job_id)
    folder = book_dir(svc.settings, job_id)
    done = BookStore(svc.store).chapters(job_id)
    raw = request.args.get("chapter")
    if raw is not None:
        if not raw.isdigit() or not 0 <= int(raw) < len(plan.chapters):
            abort(error_response(400 if not raw.isdigit() else 404,
                                 f"chapter must be one of 0 to {len(plan.chapters) - 1}, not {raw!r}",
                                 "chapter_not_found", "chapter"))
        index = int(raw)
        info = done.get(index) or {}
        if not info.get("words_file") or not (folder / "chapters" / info["words_file"]).is_file():
            abort(error_response(409, f"chapter {index} has no word timestamps yet: they are made when it is "
                                 "assembled", "words_not_ready"))
        record = readalong.read_words(folder / "chapters" / info["words_file"])
        return record["words"], record["breaks"], f"{index + 1:03d}"
    if job["status"] != "succeeded" or not (folder / "chapters.json").is_file():
        abort(error_response(409, f"book {job_id} is {job['status']}; the whole book's words exist once it has "
                             "succeeded (ask for one chapter with ?chapter=N)", "words_not_ready"))
    records = []
    for c in plan.chapters:
        name = (done.get(c.index) or {}).get("words_file")
        if not name or not (folder / "chapters" / name).is_file():
            abort(error_response(410, f"chapter {c.index} of book {job_id} has no word timestamps (made before "
                                 "books had them)", "words_gone"))
        records.append(readalong.read_words(folder / "chapters" / name))
    starts = [float(m["start_s"]) for m in json.loads((folder / "chapters.json").read_text())]
    return *readalong.book_words(records, starts), _safe(job.get("title") or job_id)


@bp.get("/audiobooks/<job_id>/words")
def book_words(job_id: str):
    """Word timestamps: ?chapter=N in seconds of that chapter's file, else the whole book in seconds of the M4B."""
    words, _, _ = _book_words(job_id)
    return {"words": words}


@bp.get("/audiobooks/<job_id>/subtitles")
def book_subtitles(job_id: str):
    """Subtitles (?format=srt|vtt, ?words=N) of ?chapter=N, or of the whole M4B."""
    fmt, max_words = subtitle_args()
    words, breaks, name = _book_words(job_id)
    return subtitle_response(words, fmt, max_words, name, breaks)


def _safe(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in " -_.,'" else "_" for c in name).strip(" .")
    return cleaned[:80] or "audiobook"
