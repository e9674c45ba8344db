"""Text for speech: normalization (numbers, abbreviations, punctuation) and sentence-aligned chunking."""
from __future__ import annotations

import re
import unicodedata

__all__ = ["TextError", "normalize", "split_sentences", "chunk_text", "number_to_words"]


class TextError(ValueError):
    """Text that cannot be spoken (empty, or nothing speakable left after normalization)."""


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**15, "quadrillion"), (10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}


def _below_thousand(n: int) -> str:
    words = []
    if n >= 100:
        words.append(f"{_ONES[n // 100]} hundred")
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10] + (f"-{_ONES[n % 10]}" if n % 10 else ""))
    elif n or not words:
        words.append(_ONES[n])
    return " ".join(words)


def number_to_words(n: int) -> str:
    """Cardinal number in words: 1234 -> "one thousand two hundred thirty-four"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n >= 10**18:
        return " ".join(_ONES[int(d)] for d in str(n))  # too big to say as a number: read the digits
    words = []
    for value, name in _SCALES:
        if n >= value:
            words.append(f"{number_to_words(n // value)} {name}")
            n %= value
    if n or not words:
        words.append(_below_thousand(n))
    return " ".join(words)


def ordinal_to_words(n: int) -> str:
    words = number_to_words(n)
    head, sep, last = words.rpartition(" ")
    hyphen_head, hsep, last_part = last.rpartition("-")
    if last_part in _ORDINAL_WORDS:
        last_part = _ORDINAL_WORDS[last_part]
    elif last_part.endswith("y"):
        last_part = last_part[:-1] + "ieth"
    else:
        last_part += "th"
    return head + sep + hyphen_head + hsep + last_part


def year_to_words(n: int) -> str:
    """1984 -> nineteen eighty-four, 2005 -> two thousand five, 1900 -> nineteen hundred."""
    high, low = divmod(n, 100)
    if 2000 <= n <= 2009:
        return number_to_words(n)
    if low == 0:
        return f"{number_to_words(high)} hundred"
    if low < 10:
        return f"{number_to_words(high)} oh {number_to_words(low)}"
    return f"{number_to_words(high)} {number_to_words(low)}"


def _digits(text: str) -> str:
    return " ".join(_ONES[int(d)] for d in text)


# Abbreviations that end in a period; the period must not end a sentence.
_ABBREVIATIONS = {"mr": "Mister", "mrs": "Missus", "ms": "Miz", "dr": "Doctor", "prof": "Professor",
                  "jr": "Junior", "sr": "Senior", "vs": "versus", "etc": "et cetera", "approx": "approximately",
                  "mt": "Mount", "capt": "Captain", "gen": "General", "lt": "Lieutenant", "sgt": "Sergeant"}
_ABBREV_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.(?=\s|$)", re.IGNORECASE)
_SAINT_RE = re.compile(r"\bSt\.(?=\s+[A-Z])")
_STREET_RE = re.compile(r"\bSt\.")
_EG_RE = re.compile(r"\be\.g\.(?=\s|,|$)", re.IGNORECASE)
_IE_RE = re.compile(r"\bi\.e\.(?=\s|,|$)", re.IGNORECASE)
_NO_RE = re.compile(r"\bNo\.\s*(?=\d)")

_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents")}
_MONEY_RE = re.compile(r"([$£€])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?\b")
_PERCENT_RE = re.compile(r"(-?\d+(?:\.\d+)?)\s?%")
_TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_YEAR_RE = re.compile(r"(?<![\d.,$£€-])\b(1[1-9]\d\d|20\d\d)\b(?![.,]\d|%)")
_DECIMAL_RE = re.compile(r"(?<![\d.])(-?)(\d+)\.(\d+)\b")
_INTEGER_RE = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+|\d+)\b")


def _money(match: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[match.group(1)]
    whole = int(match.group(2).replace(",", ""))
    cents = int((match.group(3) or "0").ljust(2, "0"))
    parts = []
    if whole or not cents:
        parts.append(f"{number_to_words(whole)} {one if whole == 1 else many}")
    if cents:
        parts.append(f"{number_to_words(cents)} {sub_one if cents == 1 else sub_many}")
    return " and ".join(parts)


def _percent(match: re.Match) -> str:
    return f"{_say_number(match.group(1))} percent"


def _say_number(text: str) -> str:
    sign = "minus " if text.startswith("-") else ""
    whole, _, frac = text.lstrip("-").partition(".")
    words = number_to_words(int(whole.replace(",", "")))
    return sign + words + (f" point {_digits(frac)}" if frac else "")


def _time(match: re.Match) -> str:
    hour, minute = int(match.group(1)), int(match.group(2))
    if minute == 0:
        return f"{number_to_words(hour)} o'clock"
    if minute < 10:
        return f"{number_to_words(hour)} oh {number_to_words(minute)}"
    return f"{number_to_words(hour)} {number_to_words(minute)}"


def _numbers(text: str) -> str:
    text = _MONEY_RE.sub(_money, text)
    text = _PERCENT_RE.sub(_percent, text)
    text = _TIME_RE.sub(_time, text)
    text = _ORDINAL_RE.sub(lambda m: ordinal_to_words(int(m.group(1))), text)
    text = _YEAR_RE.sub(lambda m: year_to_words(int(m.group(1))), text)
    text = _DECIMAL_RE.sub(lambda m: _say_number(m.group(1) + m.group(2) + "." + m.group(3)), text)
    return _INTEGER_RE.sub(lambda m: _say_number(m.group(1) + m.group(2)), text)


_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                         "\u00ab": '"', "\u00bb": '"'})


def normalize(text: str) -> str:
    """Make text speakable: one kind of quote, pauses for dashes and ellipses, abbreviations and numbers in words."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*(?:\.\s*){3,}|\s*\u2026", ", ", text)  # ellipsis -> a pause
    text = re.sub(r"\s*[\u2014\u2013\u2012\u2015]\s*|\s+-{1,2}\s+|(?<=\w)--(?=\w)", ", ", text)  # dashes -> a pause
    text = text.replace("&", " and ")
    text = _EG_RE.sub("for example", text)
    text = _IE_RE.sub("that is", text)
    text = _NO_RE.sub("number ", text)
    text = _SAINT_RE.sub("Saint", text)
    text = _STREET_RE.sub("Street", text)
    text = _ABBREV_RE.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], text)
    text = _numbers(text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r",(?:\s*,)+", ",", text)  # pauses that ran into each other
    text = re.sub(r"^[\s,]+", "", text).strip()
    return re.sub(r",$", ".", text)  # a trailing pause (an ellipsis at the end) ends the sentence




def split_sentences(text: str) -> list[str]:
    """Split normalized text into sentences, keeping their punctuation and closing quotes."""
    sentences = []
    start = 0
    for match in re.finditer(r"[.!?]+[\"')\]]*(?=\s+|$)", text):
        end = match.end()
        sentences.append(text[start:end].strip())
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _split_long(sentence: str, max_chars: int) -> list[str]:
    """A sentence over the limit: split at clause boundaries, then words, then (a huge word) characters."""
    pieces = []
    for clause in re.split(r"(?<=[,;:])\s+", sentence):
        if len(clause) <= max_chars:
            pieces.append(clause)
            continue
        for word in clause.split(" "):
            while len(word) > max_chars:
                pieces.append(word[:max_chars])
                word = word[max_chars:]
            if word:
                pieces.append(word)
    return _pack(pieces, max_chars)


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 1 + len(piece) > max_chars:
            chunks.append(current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


def chunk_text(text: str, max_chars: int = 300) -> list[str]:
    """Normalize text and pack whole sentences into chunks of at most max_chars characters."""
    if max_chars < 20:
        raise ValueError(f"max_chars must be at least 20, not {max_chars}")
    if not isinstance(text, str) or not text.strip():
        raise TextError("text is empty")
    normalized = normalize(text)
    if not re.search(r"\w", normalized):
        raise TextError("text has nothing to say: no letters or digits")
    pieces: list[str] = []
    for sentence in split_sentences(normalized):
        pieces.extend([sentence] if len(sentence) <= max_chars else _split_long(sentence, max_chars))
    return _pack(pieces, max_chars)
