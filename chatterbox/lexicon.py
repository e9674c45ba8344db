"""A pronunciation lexicon: words said another way, per API key.

An entry says "say ``term`` as ``say``": a respelling any engine reads ("Nguyen" -> "Win", "SQL" -> "sequel"). It
matches whole words only (never inside another word: "cat" is not in "concatenate"), ignores case unless the entry
says otherwise, and a longer term wins over a shorter one where both would match ("New York City" before "New
York"). Terms may hold punctuation ("C++", "Dr.", ".NET"): a term matches where no letter or digit is glued to its
either end, which is what a word boundary means for them.

It is applied in the text front end, before normalization and chunking: ``speech_plan`` applies it to each segment's
text after the markup is parsed, so SSML tags and attributes are never touched and the chunks (and a book chunk's
cache key, which hashes its text) hold the text as spoken.

Phoneme entries (IPA for Piper, which reads ``[[ ... ]]`` blocks of phonemes) are not taken yet: the normalizer and
the chunker would have to carry such blocks through untouched, and Chatterbox has no way to take phonemes at all.
They are refused with ``unsupported_kind``, saying so.

Entries live in Redis, one hash per owner (chatterbox.jobs.lexicon_key): term -> JSON of the rest.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Iterable

import redis

from .jobs import lexicon_key

KINDS = ("respell",)
MAX_TERM = 100
MAX_SAY = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


class LexiconError(ValueError):
    """An entry that cannot be stored or found; ``field`` names the part at fault, ``code`` says what is wrong."""

    def __init__(self, message: str, code: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.code, self.field, self.status = message, code, field, status


@dataclass(frozen=True)
class Entry:
    term: str
    say: str
    case_sensitive: bool = False
    kind: str = "respell"
    updated_at: float = 0.0

    def public(self) -> dict:
        return asdict(self)


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
    """An entry from a request: the term (from the path) and ``{"say", "case_sensitive", "kind"}``; raises
    LexiconError naming the field at fault."""
    if not isinstance(body, dict):
        raise LexiconError("send a JSON object with say (and case_sensitive, kind)", "invalid_body", "body")
    unknown = sorted(set(body) - {"say", "case_sensitive", "kind", "term"})
    if unknown:
        raise LexiconError(f"unknown field {unknown[0]!r}; known fields: say, case_sensitive, kind", "unknown_field",
                           unknown[0])
    term = _text(term, "term", MAX_TERM)
    if body.get("term") is not None and body["term"] != term:
        raise LexiconError("the body's term differs from the path's", "invalid_value", "term")
    kind = body.get("kind", "respell")
    if kind == "phonemes":
        raise LexiconError("phoneme entries are not supported yet: no engine here takes phonemes for a part of a "
                           "text (Piper's [[ ]] blocks would not survive the text front end); respell the word "
                           "instead (kind \"respell\")", "unsupported_kind", "kind")
    if kind not in KINDS:
        raise LexiconError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}", "invalid_value", "kind")
    if "say" not in body:
        raise LexiconError("say is required: how the term is to be said", "missing_field", "say")
    say = _text(body["say"], "say", MAX_SAY)
    case_sensitive = body.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise LexiconError("case_sensitive must be true or false", "invalid_type", "case_sensitive")
    return Entry(term, say, case_sensitive, kind)


# -- applying -------------------------------------------------------------------------------------------------------

class Compiled:
    """Entries made into one pattern, so that a text is read once whatever their number, and a word that one entry
    replaced is never replaced again by another."""

    def __init__(self, entries: Iterable[Entry]):
        entries = list(entries)
        self.exact = {e.term: e.say for e in entries if e.case_sensitive}
        self.folded = {e.term.casefold(): e.say for e in entries if not e.case_sensitive}
        # Longest first (regex alternation takes the first that matches); at one length a case-sensitive entry
        # first, so that "US" (exact) wins over "us" (any case) where the text says "US".
        ordered = sorted(entries, key=lambda e: (-len(e.term), not e.case_sensitive, e.term))
        alternatives = [f"(?{'-' if e.case_sensitive else ''}i:{re.escape(e.term)})" for e in ordered]
        self.pattern = re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)") if alternatives else None

    def _say(self, match: re.Match) -> str:
        found = match.group(0)
        if found in self.exact:
            return self.exact[found]
        return self.folded.get(found.casefold(), found)

    def apply(self, text: str) -> str:
        return self.pattern.sub(self._say, text) if self.pattern is not None else text


def apply(text: str, entries: Iterable[Entry] | Compiled | None) -> str:
    """``text`` with every entry's term said its way: whole words, longest term first, case as each entry says."""
    if entries is None:
        return text
    compiled = entries if isinstance(entries, Compiled) else Compiled(entries)
    return compiled.apply(text)


# -- snapshots (what a job speaks by) --------------------------------------------------------------------------------

def dumps(entries: Iterable[Entry]) -> str:
    """A lexicon as a job's record keeps it: a later attempt speaks by the same entries, whatever changed since."""
    return json.dumps([[e.term, e.say, e.case_sensitive] for e in entries], separators=(",", ":"))


def loads(raw: str | None) -> list[Entry]:
    return [Entry(term, say, bool(cs)) for term, say, cs in json.loads(raw)] if raw else []


# -- storage ----------------------------------------------------------------------------------------------------------

class Lexicon:
    """One owner's entries in Redis (owner "" is no key's: jobs sent through Celery or the command line)."""

    def __init__(self, client: redis.Redis, owner: str, max_entries: int):
        self.r, self.owner, self.max_entries = client, owner, max_entries
        self.key = lexicon_key(owner)

    def entries(self) -> list[Entry]:
        out = []
        for term, raw in self.r.hgetall(self.key).items():
            data = json.loads(raw)
            out.append(Entry(term, data["say"], bool(data.get("case_sensitive")), data.get("kind", "respell"),
                             float(data.get("updated_at") or 0)))
        return sorted(out, key=lambda e: (e.term.casefold(), e.term))

    def get(self, term: str) -> Entry:
        raw = self.r.hget(self.key, term)
        if raw is not None:
            data = json.loads(raw)
            return Entry(term, data["say"], bool(data.get("case_sensitive")), data.get("kind", "respell"),
                         float(data.get("updated_at") or 0))
        raise LexiconError(f"no lexicon entry for {term!r}", "unknown_term", "term", 404)

    def put(self, new: Entry) -> tuple[Entry, bool]:
        """Store an entry (replacing one of the same term); (the entry, whether it is new). Refuses one past the
        limit (CHATTERBOX_LEXICON_MAX_ENTRIES)."""
        stored = Entry(new.term, new.say, new.case_sensitive, new.kind, time.time())
        value = json.dumps({"say": stored.say, "case_sensitive": stored.case_sensitive, "kind": stored.kind,
                            "updated_at": stored.updated_at})
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
        stored = [Entry(e.term, e.say, e.case_sensitive, e.kind, now) for e in entries]
        p = self.r.pipeline(transaction=True)
        p.delete(self.key)
        if stored:
            p.hset(self.key, mapping={e.term: json.dumps({"say": e.say, "case_sensitive": e.case_sensitive,
                                                          "kind": e.kind, "updated_at": now}) for e in stored})
        p.execute()
        return sorted(stored, key=lambda e: (e.term.casefold(), e.term))

    def clear(self) -> int:
        """Forget every entry; how many there were."""
        p = self.r.pipeline(transaction=True)
        p.hlen(self.key)
        p.delete(self.key)
        return int(p.execute()[0])
