"""What every book reader shares (the plain text and Markdown one in reader.py, the EPUB one in epub.py): the error
a bad book raises, the chapter in the making, and the clean-up of a line of text.

A module of its own so that the readers depend on it rather than on each other.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import RequestError

__all__ = ["BookError", "Section", "clean_text"]


class BookError(RequestError):
    """A book that cannot be read; ``field`` names the input (the uploaded ``file`` unless said otherwise)."""

    def __init__(self, message: str, code: str, field: str | None = "file", status: int | None = None):
        super().__init__(message, code, field, status or (413 if code == "too_large" else None))


@dataclass
class Section:
    """A chapter in the making: title None means "the book's title"."""
    title: str | None
    paragraphs: list[str] = field(default_factory=list)
    is_part: bool = False  # a part/book/volume heading: folded into the next chapter's title when it has no text


# Soft hyphens, zero-width characters and BOMs, and U+FFFD (what undecodable bytes became): nothing to say.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff\ufffd"), None)
_SPACES = re.compile(r"\s+")  # Unicode-aware: NBSP, thin spaces and line separators become one space
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """One line of speakable text: invisible characters removed, whitespace collapsed; quotes are left alone."""
    return _CONTROL.sub("", _SPACES.sub(" ", text.translate(_INVISIBLE))).strip()
