"""Subtitles from a job's word timestamps: SRT and WebVTT, one cue a sentence or at most N words a cue."""
from __future__ import annotations

import re
from typing import Iterable

from .text import _ABBREVIATIONS

__all__ = ["FORMATS", "sentence_ends", "cues", "srt", "vtt", "render"]

FORMATS = {"srt": "application/x-subrip", "vtt": "text/vtt"}

_CLOSERS = "\"'\u201d\u2019)]}\u00bb"
_INITIALS = re.compile(r"^(?:[A-Za-z]\.)+$")  # "U.S.", "e.g.": not the end of a sentence


def sentence_ends(words: list[str]) -> list[bool]:
    """Per word, whether a sentence ends with it: it ends in . ! ? or ... (before closing quotes or brackets) and is
    not an abbreviation the text front end knows ("Dr.") or initials ("U.S."). The last word always ends one."""
    ends = []
    for word in words:
        bare = word.rstrip(_CLOSERS)
        end = bare.endswith(("!", "?", ".", "\u2026"))
        if end and bare.endswith(".") and not bare.endswith(".."):
            stem = bare[:-1].lower().lstrip("\"'(\u201c\u2018[")
            end = stem not in _ABBREVIATIONS and not _INITIALS.match(bare)
        ends.append(end)
    if ends:
        ends[-1] = True
    return ends


def cues(words: list[dict], max_words: int | None = None,
         breaks: Iterable[int] = ()) -> list[tuple[float, float, str]]:
    """(start, end, text) per cue: a sentence each, split into cues of at most ``max_words`` words when given. A cue
    also ends at each word index in ``breaks`` (a heading or a paragraph that ends without punctuation)."""
    out: list[tuple[float, float, str]] = []
    current: list[dict] = []
    ends = sentence_ends([w["word"] for w in words])
    for i in breaks:
        if 0 <= i < len(ends):
            ends[i] = True
    for word, end in zip(words, ends):
        current.append(word)
        if end or (max_words and len(current) >= max_words):
            out.append((current[0]["start"], current[-1]["end"], " ".join(w["word"] for w in current)))
            current = []
    return out


def _timestamp(seconds: float, separator: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def srt(items: Iterable[tuple[float, float, str]]) -> str:
    """SubRip: numbered cues, "00:00:01,234 --> 00:00:02,000", a blank line after each."""
    return "".join(f"{n}\n{_timestamp(a, ',')} --> {_timestamp(b, ',')}\n{text}\n\n"
                   for n, (a, b, text) in enumerate(items, 1))


def vtt(items: Iterable[tuple[float, float, str]]) -> str:
    """WebVTT: the WEBVTT header, then cues "00:00:01.234 --> 00:00:02.000"; & < > in a cue's text are escaped, as
    WebVTT reads them as markup."""
    body = "".join(f"{_timestamp(a, '.')} --> {_timestamp(b, '.')}\n{_escape(text)}\n\n" for a, b, text in items)
    return "WEBVTT\n\n" + body


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(words: list[dict], fmt: str, max_words: int | None = None, breaks: Iterable[int] = ()) -> str:
    """Subtitles in ``fmt`` (a key of FORMATS) for a job's words."""
    items = cues(words, max_words, breaks)
    return srt(items) if fmt == "srt" else vtt(items)
