"""A pronunciation lexicon: words said another way, per API key.

An entry says "say ``term`` as ``say``": a respelling any engine reads ("Nguyen" -> "Win", "SQL" -> "sequel"). It
matches whole words only (never inside another word: "cat" is not in "concatenate"), ignores case unless the entry
says otherwise, and a longer term wins over a shorter one where both would match ("New York City" before "New
York"). Terms may hold punctuation ("C++", "Dr.", ".NET"): a term matches where no letter or digit is glued to its
either end, which is what a word boundary means for them.

An entry of kind "phonemes" gives the term's IPA instead ("IPA" -> "ˈaɪpiːeɪ"), for an engine that reads phonemes
(Piper): each symbol is checked against the Piper voice's phoneme_id_map when the entry is stored (LexiconError
``unknown_phoneme`` naming the symbols it lacks), and the term becomes a phoneme token of the text front end
(chatterbox.text), which reaches Piper intact as a raw ``[[ ]]`` block. An engine that takes no phonemes (Chatterbox)
says the entry's ``say`` where it has one (a respelling for such engines), else the term as written.

It is applied in the text front end, before normalization and chunking: ``speech_plan`` applies it to each segment's
text after the markup is parsed, so SSML tags and attributes (and the phoneme tokens SSML made) are never touched and
the chunks (and a book chunk's cache key, which hashes its text) hold the text as spoken.

Entries live in Redis, one hash per owner (chatterbox.jobs.lexicon_key): term -> JSON of the rest.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable

import redis

from .errors import RequestError
from .schemas.lexicon_entry import KINDS, MAX_PHONEMES, MAX_SAY, MAX_TERM, LexiconEntryRequest
from .jobs import lexicon_key
from .text import PHONEME_OPEN, PHONEME_TOKEN, without_phoneme_marks

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


class LexiconError(RequestError):
    """An entry that cannot be stored or found; ``field`` names the part at fault, ``code`` says what is wrong."""


@dataclass(frozen=True)
class Entry:
    term: str
    say: str  # a respelling; for a phoneme entry, what engines without phonemes say ("": the term as written)
    case_sensitive: bool = False
    kind: str = "respell"
    updated_at: float = 0.0
    phonemes: str = ""  # IPA (kind "phonemes")

    def public(self) -> dict:
        """As the API shows it: a respelling without ``phonemes`` (its shape as it always was)."""
        out = asdict(self)
        if not self.phonemes:
            del out["phonemes"]
        return out


def _text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise LexiconError(f"{field} must be a string, not {type(value).__name__}", "invalid_type", field)
    value = value.strip()
    if not value:
        raise LexiconError(f"{field} is empty", "missing_field", field)
    if len(value) > limit:
        raise LexiconError(f"{field} is {len(value)} characters long; the limit is {limit}", "too_long", field)
    if _CONTROL.search(value):
        raise LexiconError(f"{field} may not hold line breaks or control characters", "invalid_value", field)
    return value


def entry(term: object, body: object) -> Entry:
    """An entry from a request: the term (from the path) and ``{"say", "case_sensitive", "kind"}``, or
    ``{"phonemes", "say" (optional), "case_sensitive"}`` for kind "phonemes" (which ``phonemes`` implies); raises
    LexiconError naming the field at fault."""
    try:
        LexiconEntryRequest.check(body)  # the shape: fields and their types
    except RequestError as exc:
        raise LexiconError(exc.message, exc.code, exc.field) from None
    assert isinstance(body, dict)
    term = _text(term, "term", MAX_TERM)
    if body.get("term") is not None and body["term"] != term:
        raise LexiconError("the body's term differs from the path's", "invalid_value", "term")
    has_phonemes = body.get("phonemes") not in (None, "")
    kind = body.get("kind", "phonemes" if has_phonemes else "respell")
    if kind not in KINDS:
        raise LexiconError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}", "invalid_value", "kind")
    case_sensitive = body.get("case_sensitive", False)
    if kind == "phonemes":
        if "phonemes" not in body or body["phonemes"] is None:
            raise LexiconError("phonemes is required: the term's IPA as Piper reads it (e.g. \"ˈaɪpiːeɪ\")",
                               "missing_field", "phonemes")
        phonemes = _phonemes(_text(body["phonemes"], "phonemes", MAX_PHONEMES))
        say = body.get("say")
        say = "" if say is None or say == "" else _text(say, "say", MAX_SAY)  # optional: for other engines
        return Entry(term, say, case_sensitive, kind, phonemes=phonemes)
    if has_phonemes:
        raise LexiconError("a respelling has no phonemes: leave kind out (or make it \"phonemes\") for an entry "
                           "of phonemes", "invalid_value", "phonemes")
    if "say" not in body:
        raise LexiconError("say is required: how the term is to be said", "missing_field", "say")
    say = _text(body["say"], "say", MAX_SAY)
    return Entry(term, say, case_sensitive, kind)


def _phonemes(value: str) -> str:
    """IPA checked against the Piper voice (its phoneme_id_map, read once from the installed voice's config)."""
    from .engines.piper import check_phonemes

    try:
        return check_phonemes(value)
    except ValueError as exc:
        raise LexiconError(f"phonemes: {exc}", "unknown_phoneme", "phonemes") from None


# -- applying -------------------------------------------------------------------------------------------------------

class Compiled:
    """Entries made into one pattern, so that a text is read once whatever their number, and a word that one entry
    replaced is never replaced again by another.

    ``phonemes``: the engine's phoneme_token (chatterbox.engines.piper) where it reads phonemes; then a phoneme
    entry's term becomes a phoneme token. Without it (Chatterbox) the entry's ``say`` is said, or the term as
    written where it has none."""

    def __init__(self, entries: Iterable[Entry], phonemes: Callable[[str], str] | None = None):
        entries = list(entries)
        said = {e: _said(e, phonemes) for e in entries}
        self.exact = {e.term: said[e] for e in entries if e.case_sensitive}
        self.folded = {e.term.casefold(): said[e] for e in entries if not e.case_sensitive}
        # Longest first (regex alternation takes the first that matches); at one length a case-sensitive entry
        # first, so that "US" (exact) wins over "us" (any case) where the text says "US".
        ordered = sorted(entries, key=lambda e: (-len(e.term), not e.case_sensitive, e.term))
        alternatives = [f"(?{'-' if e.case_sensitive else ''}i:{re.escape(e.term)})" for e in ordered]
        self.pattern = re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)") if alternatives else None

    def _say(self, match: re.Match) -> str:
        found = match.group(0)
        said = self.exact[found] if found in self.exact else self.folded.get(found.casefold())
        return found if said is None else said

    def apply(self, text: str) -> str:
        if self.pattern is None:
            return text
        if PHONEME_OPEN not in text:
            return self.pattern.sub(self._say, text)
        # Phoneme tokens (SSML <phoneme> made them) are phonemes, not words: only the text around them is read.
        out, at = [], 0
        for token in PHONEME_TOKEN.finditer(text):
            out += [self.pattern.sub(self._say, text[at:token.start()]), token.group(0)]
            at = token.end()
        out.append(self.pattern.sub(self._say, text[at:]))
        return "".join(out)


def _said(e: Entry, phonemes: Callable[[str], str] | None) -> str | None:
    """What an entry's term becomes: a respelling, a phoneme token, or None (the term as written)."""
    if e.kind == "phonemes" and e.phonemes and phonemes is not None:
        try:
            return phonemes(e.phonemes)
        except ValueError as exc:  # checked when stored, but a voice may know fewer symbols than the one checked
            log.warning("lexicon entry %r: %s; saying it as engines without phonemes do", e.term, exc)
    return without_phoneme_marks(e.say) or None


def apply(text: str, entries: Iterable[Entry] | Compiled | None,
          phonemes: Callable[[str], str] | None = None) -> str:
    """``text`` with every entry's term said its way: whole words, longest term first, case as each entry says;
    phoneme entries as Compiled says (``phonemes``: the engine's phoneme_token, where it reads phonemes)."""
    if entries is None:
        return text
    compiled = entries if isinstance(entries, Compiled) else Compiled(entries, phonemes)
    return compiled.apply(text)


# -- snapshots (what a job speaks by) --------------------------------------------------------------------------------

def dumps(entries: Iterable[Entry]) -> str:
    """A lexicon as a job's record keeps it: a later attempt speaks by the same entries, whatever changed since.
    [term, say, case_sensitive], and the phonemes fourth for a phoneme entry."""
    return json.dumps([[e.term, e.say, e.case_sensitive, *([e.phonemes] if e.phonemes else [])] for e in entries],
                      separators=(",", ":"))


def loads(raw: str | None) -> list[Entry]:
    out = []
    for term, say, cs, *rest in json.loads(raw) if raw else []:
        phonemes = rest[0] if rest else ""
        out.append(Entry(term, say, bool(cs), "phonemes" if phonemes else "respell", phonemes=phonemes))
    return out


def _stored(e: Entry) -> str:
    """An entry's value in the owner's hash (the term is its field)."""
    data = {"say": e.say, "case_sensitive": e.case_sensitive, "kind": e.kind, "updated_at": e.updated_at}
    if e.phonemes:
        data["phonemes"] = e.phonemes
    return json.dumps(data)


def _read(term: str, raw: str) -> Entry:
    data = json.loads(raw)
    return Entry(term, data.get("say") or "", bool(data.get("case_sensitive")), data.get("kind", "respell"),
                 float(data.get("updated_at") or 0), data.get("phonemes") or "")


# -- storage ----------------------------------------------------------------------------------------------------------

class Lexicon:
    """One owner's entries in Redis (owner "" is no key's: jobs sent through Celery or the command line)."""

    def __init__(self, client: redis.Redis, owner: str, max_entries: int):
        self.r, self.owner, self.max_entries = client, owner, max_entries
        self.key = lexicon_key(owner)

    def entries(self) -> list[Entry]:
        out = [_read(term, raw) for term, raw in self.r.hgetall(self.key).items()]
        return sorted(out, key=lambda e: (e.term.casefold(), e.term))

    def get(self, term: str) -> Entry:
        raw = self.r.hget(self.key, term)
        if raw is not None:
            return _read(term, raw)
        raise LexiconError(f"no lexicon entry for {term!r}", "unknown_term", "term", 404)

    def put(self, new: Entry) -> tuple[Entry, bool]:
        """Store an entry (replacing one of the same term); (the entry, whether it is new). Refuses one past the
        limit (CHATTERBOX_LEXICON_MAX_ENTRIES)."""
        stored = replace(new, updated_at=time.time())
        value = _stored(stored)
        # WATCH: two requests at once must not both take the last place.
        with self.r.pipeline() as p:
            while True:
                try:
                    p.watch(self.key)
                    exists = p.hexists(self.key, stored.term)
                    if not exists and p.hlen(self.key) >= self.max_entries:
                        raise LexiconError(f"this lexicon already has {self.max_entries} entries, the most it may "
                                           "have (CHATTERBOX_LEXICON_MAX_ENTRIES); remove some first",
                                           "too_many_entries", "term", 409)
                    p.multi()
                    p.hset(self.key, stored.term, value)
                    p.execute()
                    return stored, not exists
                except redis.WatchError:
                    continue

    def remove(self, term: str) -> None:
        if not self.r.hdel(self.key, term):
            raise LexiconError(f"no lexicon entry for {term!r}", "unknown_term", "term", 404)

    def replace(self, entries: list[Entry]) -> list[Entry]:
        """The whole lexicon at once (an import), in one transaction; refuses more than the limit."""
        if len(entries) > self.max_entries:
            raise LexiconError(f"{len(entries)} entries are more than a lexicon may have ({self.max_entries}, "
                               "CHATTERBOX_LEXICON_MAX_ENTRIES)", "too_many_entries", "entries", 409)
        now = time.time()
        stored = [replace(e, updated_at=now) for e in entries]
        p = self.r.pipeline(transaction=True)
        p.delete(self.key)
        if stored:
            p.hset(self.key, mapping={e.term: _stored(e) for e in stored})
        p.execute()
        return sorted(stored, key=lambda e: (e.term.casefold(), e.term))

    def clear(self) -> int:
        """Forget every entry; how many there were."""
        p = self.r.pipeline(transaction=True)
        p.hlen(self.key)
        p.delete(self.key)
        return int(p.execute()[0])
