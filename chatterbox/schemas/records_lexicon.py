"""Answers of the pronunciation lexicon (``/lexicon``)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import Record
from .lexicon_entry import KINDS, MAX_SAY, MAX_TERM
from .records_jobs import absent, one_of

LexiconKind = one_of(KINDS)


class LexiconEntry(Record):
    """How a term is said."""
    term: str = Field(min_length=1, max_length=MAX_TERM, description="matched as a whole word")
    say: str = Field(max_length=MAX_SAY, description="what is said in its place (a phoneme entry: what engines "
                                                     "without phonemes say, empty for the term as written)")
    case_sensitive: bool = Field(description="match the term's case exactly (else any case)")
    kind: LexiconKind
    phonemes: Optional[str] = absent(description="a phoneme entry's IPA, as Piper reads it")
    updated_at: float = Field(description="when it was last set (Unix time)")


class Lexicon(Record):
    """A key's lexicon: every entry, by term."""
    entries: list[LexiconEntry]
    max_entries: int = Field(description="CHATTERBOX_LEXICON_MAX_ENTRIES")


class LexiconEntries(Record):
    """The lexicon after a replace."""
    entries: list[LexiconEntry]


class LexiconCleared(Record):
    """How many entries there were."""
    deleted: int


class LexiconEntryDeleted(Record):
    """An entry, removed."""
    term: str
    deleted: Literal[True]


class LexiconPreview(Record):
    """A text with the lexicon applied (markup left out, before the engine's normalization)."""
    text: str
    changed: bool = Field(description="whether any entry applied")
