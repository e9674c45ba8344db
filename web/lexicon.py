"""The pronunciation lexicon over REST: each key's own entries (``/lexicon``), and a preview of a text as spoken."""
from __future__ import annotations

from flask import Blueprint, abort, request

from chatterbox import markup
from chatterbox.lexicon import Entry, Lexicon, LexiconError, apply, entry

from .auth import current_key
from .common import error_response, services

bp = Blueprint("lexicon", __name__)


def owner() -> str:
    """Whose lexicon a request reads or changes: the key's own; an admin key may name another's with ?owner= (a key
    id, or "-" for the jobs that belong to no key: those sent through Celery or the command line)."""
    key = current_key()
    wanted = request.args.get("owner")
    if wanted is None or wanted == key.id:
        return key.id
    if not key.admin:
        abort(error_response(403, "only admin keys may read or change another key's lexicon", "forbidden", "owner"))
    return "" if wanted == "-" else wanted


def lexicon_of(owner_id: str) -> Lexicon:
    svc = services()
    return Lexicon(svc.store.r, owner_id, svc.settings.lexicon_max_entries)


def caller_entries() -> list[Entry]:
    """The entries the caller's jobs are spoken by (what /synthesize/plan and the preview apply)."""
    return lexicon_of(current_key().id).entries()


@bp.get("/lexicon")
def list_entries():
    lex = lexicon_of(owner())
    return {"entries": [e.public() for e in lex.entries()], "max_entries": lex.max_entries}


@bp.put("/lexicon")
def replace_entries():
    """The whole lexicon at once (an import): every entry is checked before any is stored."""
    body = request.get_json(silent=True)
    items = body.get("entries") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return error_response(400, "send JSON {\"entries\": [{\"term\", \"say\", \"case_sensitive\"}, ...]}",
                              "invalid_body", "entries")
    entries: dict[str, Entry] = {}
    for i, item in enumerate(items):
        try:
            new = entry(item.get("term") if isinstance(item, dict) else None, item)
        except LexiconError as exc:
            exc.field = f"entries[{i}].{exc.field}" if exc.field != "body" else f"entries[{i}]"
            raise
        entries[new.term] = new
    stored = lexicon_of(owner()).replace(list(entries.values()))
    return {"entries": [e.public() for e in stored]}


@bp.delete("/lexicon")
def clear_entries():
    removed = lexicon_of(owner()).clear()
    return {"deleted": removed}


@bp.get("/lexicon/<path:term>")
def get_entry(term: str):
    return lexicon_of(owner()).get(term).public()


@bp.put("/lexicon/<path:term>")
def put_entry(term: str):
    stored, created = lexicon_of(owner()).put(entry(term, request.get_json(silent=True)))
    return stored.public(), 201 if created else 200


@bp.delete("/lexicon/<path:term>")
def delete_entry(term: str):
    lexicon_of(owner()).remove(term)
    return {"term": term, "deleted": True}


@bp.post("/lexicon/preview")
def preview():
    """A text as the caller's jobs would speak it: the lexicon applied to its words (markup read and left out),
    before the engine's normalization. The dashboard's "hear it" then submits it, or the term itself, as a job."""
    body = request.get_json(silent=True)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return error_response(400, "send JSON with the text to preview", "missing_field", "text")
    if len(text) > services().settings.max_text_chars:
        return error_response(400, f"text is {len(text)} characters long; the limit is "
                              f"{services().settings.max_text_chars}", "text_too_long", "text")
    entries = lexicon_of(owner()).entries()
    try:
        segments = markup.parse(text)
    except markup.MarkupError as exc:
        return error_response(400, str(exc), "invalid_markup", "text")
    spoken = " ".join(apply(s.text, entries) for s in segments if s.text.strip())
    return {"text": spoken, "changed": spoken != " ".join(s.text for s in segments if s.text.strip())}
