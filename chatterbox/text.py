"""Text for speech: normalization (numbers, abbreviations, punctuation) and sentence-aligned chunking.

A word given as phonemes (a lexicon entry's IPA, or SSML ``<phoneme>``, for an engine that reads phonemes: Piper) is
carried through both as a phoneme token, ``⟦ˈaɪpiːeɪ⟧`` (see "Phoneme tokens" below): never normalized, never split.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable

__all__ = ["TextError", "normalize", "split_sentences", "chunk_text", "number_to_words", "ordinal_to_words",
           "year_to_words", "PHONEME_TOKEN", "phoneme_token", "without_phoneme_marks"]


class TextError(ValueError):
    """Text that cannot be spoken (empty, or nothing speakable left after normalization)."""


# ---------------------------------------------------------------------------------------------------------------
# Numbers in words (small enough to own: no dependency, and we control the exact wording the engine hears).

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**18, "quintillion"), (10**15, "quadrillion"), (10**12, "trillion"), (10**9, "billion"),
           (10**6, "million"), (1000, "thousand"))
_IRREGULAR_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
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
    if n >= 10**21:
        return _digits(str(n))  # nobody says sextillions: read the digits
    words = []
    for value, name in _SCALES:
        if n >= value:
            words.append(f"{number_to_words(n // value)} {name}")
            n %= value
    if n or not words:
        words.append(_below_thousand(n))
    return " ".join(words)


def ordinal_to_words(n: int) -> str:
    """21 -> "twenty-first", 100 -> "one hundredth"."""
    head, last = re.match(r"(.*?)([a-z]+)$", number_to_words(n)).groups()
    if last in _IRREGULAR_ORDINALS:
        return head + _IRREGULAR_ORDINALS[last]
    return head + (last[:-1] + "ieth" if last.endswith("y") else last + "th")


def year_to_words(n: int) -> str:
    """1984 -> "nineteen eighty-four", 1905 -> "nineteen oh five", 1900 -> "nineteen hundred", 2005 -> cardinal."""
    high, low = divmod(n, 100)
    if 2000 <= n <= 2009 or not 1000 <= n <= 9999:
        return number_to_words(n)
    if low == 0:
        return f"{number_to_words(high)} hundred"
    return f"{number_to_words(high)} {'oh ' if low < 10 else ''}{number_to_words(low)}"


def _digits(text: str) -> str:
    return " ".join(_ONES[int(d)] for d in text if d.isdigit())


def _cardinal(digits: str) -> str:
    """A run of digits as a number in words, or digit by digit when it is longer than any number people say (and
    than int() takes: Python refuses strings of more than 4,300 digits)."""
    return _digits(digits) if len(digits) > 21 else number_to_words(int(digits))


def _plural(words: str) -> str:
    """"nineteen eighty" -> "nineteen eighties" (decades)."""
    return words[:-1] + "ies" if words.endswith("y") else words + ("es" if words.endswith("x") else "s")


def _say_number(sign: str | None, whole: str, frac: str | None = None) -> str:
    """Digits as spoken: "1,234" -> cardinal, "007" -> digit by digit, fraction digits one by one."""
    whole = whole.replace(",", "")
    if len(whole) > 1 and whole.startswith("0"):
        words = _digits(whole)  # codes, not quantities
    else:
        words = _cardinal(whole) if whole else ""
    if frac:
        words = f"{words} point {_digits(frac)}".strip()
    return ("minus " if sign else "") + words


# ---------------------------------------------------------------------------------------------------------------
# Patterns. Order of application matters: money and percentages claim their digits before plain numbers do.

_NUM = r"(\d{1,3}(?:,\d{3})+(?!\d)|\d+)"  # with or without thousands separators
_SIGN = r"((?<![\w\-])-)?"  # a minus sign, not a hyphen inside "COVID-19"
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents")}
_MONEY_RE = re.compile(_SIGN + r"([$£€])\s?" + _NUM + r"(?:\.(\d+))?(?:\s(thousand|million|billion|trillion)\b)?")
_PERCENT_RE = re.compile(_SIGN + _NUM + r"(?:\.(\d+))?\s?%")
_CLOCK_RE = re.compile(r"(?<![\d:.,])(\d{1,2})(?::([0-5]\d))?\s*([AaPp])\.?[Mm](?![A-Za-z])\.?")
_TIME_RE = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")
_DECADE_RE = re.compile(r"(?<![\w'])(?:(1[1-9]\d0|20\d0)|'?(\d{0,20}0))s\b")  # 1980s, '80s, 100s
_ORDINAL_RE = re.compile(r"\b(\d{1,21})(?:st|nd|rd|th)\b", re.IGNORECASE)
_YEAR_RANGE_RE = re.compile(r"\b(1[1-9]\d\d|20\d\d)-(1[1-9]\d\d|20\d\d)\b")
_YEAR_RE = re.compile(r"(?<![\d.,$£€])(?<!(?<!\w)-)\b(1[1-9]\d\d|20[1-9]\d|200\d)\b(?![.,:]\d|%)")
_DOTTED_RE = re.compile(r"\b\d+(?:\.\d+){2,}\b")  # versions, addresses: 1.2.3
_NUMBER_RE = re.compile(_SIGN + _NUM + r"(?:\.(\d+))?")
_BARE_FRACTION_RE = re.compile(_SIGN + r"(?<![\w.])\.(\d+)")  # ".5"

# Abbreviations that end in a period; expanding them keeps that period from looking like a sentence end.
_ABBREVIATIONS = {"mr": "Mister", "mrs": "Missus", "ms": "Miz", "dr": "Doctor", "prof": "Professor",
                  "jr": "Junior", "sr": "Senior", "vs": "versus", "etc": "et cetera", "approx": "approximately",
                  "mt": "Mount", "capt": "Captain", "gen": "General", "lt": "Lieutenant", "sgt": "Sergeant"}
_ABBREV_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r"|e\.g|i\.e)\.", re.IGNORECASE)
_ST_RE = re.compile(r"\bSt\.", re.IGNORECASE)
_NO_RE = re.compile(r"\bNo\.\s*(?=\d)", re.IGNORECASE)
_AT_END = re.compile(r"[\"')\]]*\s*$")
_THEN_CAPITAL = re.compile(r"[\"')\]]*\s+[\"'(\[]?[A-Z]")
_SENTENCE_START = re.compile(r"(?:^|[.!?][\"')\]]*\s)\s*[\"'(\[]?$")


def _starts_sentence(text: str, i: int) -> bool:
    """Whether position i of text begins a sentence (looks back a few characters only: keeps normalize linear)."""
    return bool(_SENTENCE_START.search(text[max(0, i - 12):i]))


def _sentence_case(m: re.Match, words: str) -> str:
    """Capitalize an expansion that starts a sentence ("E.g. this" -> "For example this"); titles stay capitalized."""
    if _starts_sentence(m.string, m.start()):
        return words[0].upper() + words[1:]
    return words


def _abbreviation(m: re.Match) -> str:
    key = m.group(1).lower()
    words = {"e.g": "for example", "i.e": "that is"}.get(key) or _ABBREVIATIONS[key]
    # The period may also have ended the sentence: keep it at the very end, and after "etc." before a capital.
    stop = _AT_END.match(m.string, m.end()) or (key == "etc" and _THEN_CAPITAL.match(m.string, m.end()))
    return _sentence_case(m, words) + ("." if stop else "")


def _saint_or_street(m: re.Match) -> str:
    """"St. Paul" is a saint, "Main St." a street; so is "Main St. Bakery" (a capitalized word before it)."""
    before = m.string[max(0, m.start() - 100):m.start()]
    street = "Street." if _AT_END.match(m.string, m.end()) else "Street"
    if not _THEN_CAPITAL.match(m.string, m.end()):
        return street
    # The word before only counts when it isn't itself the first word of a sentence ("In St. Louis").
    previous = re.search(r"(\S+)\s+$", before)
    if previous and re.fullmatch(r"[A-Z][\w'-]*|\d+\w*", previous.group(1)) and \
            not _starts_sentence(before, previous.start()):
        return street
    return "Saint"


def _money(m: re.Match) -> str:
    sign, symbol, whole, frac, scale = m.groups()
    one, many, sub_one, sub_many = _CURRENCIES[symbol]
    if scale or (frac and len(frac) > 2) or len(whole) > 21:  # "$1.5 million", "$0.125": a plain number
        return f"{_say_number(sign, whole, frac)}{' ' + scale if scale else ''} {many}"
    amount, cents = int(whole.replace(",", "")), int((frac or "0").ljust(2, "0"))
    parts = []
    if amount or not cents:
        parts.append(f"{number_to_words(amount)} {one if amount == 1 else many}")
    if cents:
        parts.append(f"{number_to_words(cents)} {sub_one if cents == 1 else sub_many}")
    return ("minus " if sign else "") + " and ".join(parts)


def _clock(m: re.Match) -> str:
    hour, minute, half = int(m.group(1)), int(m.group(2) or 0), m.group(3).upper()
    stop = "." if m.group(0).endswith(".") and (_AT_END.match(m.string, m.end())
                                                 or _THEN_CAPITAL.match(m.string, m.end())) else ""
    # Spelled letters, not "a.m.": the dots would read as sentence ends, and a lone "a" as the article.
    return f"{_time_words(hour, minute, clock=False)} {half} M{stop}"


def _time_words(hour: int, minute: int, clock: bool = True) -> str:
    if minute == 0:
        return number_to_words(hour) + (" o'clock" if clock else "")
    return f"{number_to_words(hour)} {'oh ' if minute < 10 else ''}{number_to_words(minute)}"


def _decade(m: re.Match) -> str:
    if m.group(1):
        return _plural(year_to_words(int(m.group(1))))
    return _plural(re.sub(r"^one (?=hundred|thousand|million)", "", number_to_words(int(m.group(2)))))


def _numbers(text: str) -> str:
    text = _MONEY_RE.sub(_money, text)
    text = _PERCENT_RE.sub(lambda m: _say_number(*m.groups()) + " percent", text)
    text = _CLOCK_RE.sub(_clock, text)
    text = _TIME_RE.sub(lambda m: _time_words(int(m.group(1)), int(m.group(2))), text)
    text = _DECADE_RE.sub(_decade, text)
    text = _ORDINAL_RE.sub(lambda m: ordinal_to_words(int(m.group(1))), text)
    text = _YEAR_RANGE_RE.sub(lambda m: f"{year_to_words(int(m.group(1)))} to {year_to_words(int(m.group(2)))}",
                              text)
    text = _YEAR_RE.sub(lambda m: year_to_words(int(m.group(1))), text)
    text = _DOTTED_RE.sub(lambda m: " point ".join(_say_number(None, p) for p in m.group(0).split(".")), text)
    text = _BARE_FRACTION_RE.sub(lambda m: _say_number(m.group(1), "", m.group(2)), text)
    # Whatever digits are left, glued to letters or not ("mp3", "3D"), get words with spaces around them.
    return _NUMBER_RE.sub(_spaced_number, text)


def _spaced_number(m: re.Match) -> str:
    s, start, end = m.string, m.start(), m.end()
    return ((" " if start and s[start - 1].isalnum() else "") + _say_number(*m.groups())
            + (" " if end < len(s) and s[end].isalnum() else ""))


# ---------------------------------------------------------------------------------------------------------------
# Phoneme tokens
#
# A word to be said by its phonemes travels through the front end (markup, lexicon, normalize, chunk_text) as a token
# of our own, "⟦" + IPA + "⟧" (U+27E6 and U+27E7), which the engine that reads phonemes resolves at the very end: Piper
# makes it one of its raw "[[ ]]" blocks (chatterbox.engines.piper.piper_text). Why not "[[ ]]" itself all the way:
# "[[...]]" is ordinary text too (wiki links, code, a book's markup), and Piper would take any of it for phonemes; a
# mark of our own tells the front end's checked phonemes from whatever a text holds. markup.parse turns the marks in
# a user's own text into plain brackets, so in a job only the front end writes tokens, and the Piper engine writes a
# text's own "[[" and "]]" apart before it makes the tokens into blocks. The mark is visible on purpose: the chunk
# plan and the chunk events show "Say ⟦ˈaɪpiːeɪ⟧ now." rather than characters nobody can see.
#
# normalize() and chunk_text() hide each token behind a placeholder of two private-use characters (plane 15), which
# no rule matches (not a letter, digit, space or punctuation), and put it back at the end: its phonemes are never
# normalized (NFKC alone would make "ʰ" an "h"), a "." or "," among them never ends a sentence or a clause, and a
# token is never cut, not even one longer than a chunk may be (it is then a chunk of its own). The chunker counts a
# token as the characters it is (its phonemes and two marks), much as a word of that many letters.

PHONEME_OPEN, PHONEME_CLOSE = "\u27e6", "\u27e7"
PHONEME_TOKEN = re.compile("\u27e6([^\u27e6\u27e7]+)\u27e7")
_MARKS_AS_BRACKETS = str.maketrans({PHONEME_OPEN: "[", PHONEME_CLOSE: "]"})
_PLACEHOLDER = re.compile("[\U000f0000-\U000f0fff][\U000f1000-\U000f1fff]")
_PLACEHOLDER_CHAR = re.compile("[\U000f0000-\U000f1fff]")


def phoneme_token(phonemes: str) -> str:
    """The token that carries ``phonemes`` through the text front end: their IPA in NFD (espeak-ng's own form, which
    Piper's voices learned from: "ç" as "c" and a cedilla) with single spaces. Check the symbols first (the engine's
    own phoneme_token does)."""
    ph = " ".join(unicodedata.normalize("NFD", phonemes).split())
    if not ph or PHONEME_OPEN in ph or PHONEME_CLOSE in ph:
        raise ValueError(f"no phonemes to carry in {phonemes!r}")
    return PHONEME_OPEN + ph + PHONEME_CLOSE


def without_phoneme_marks(text: str) -> str:
    """A user's text with any ⟦ ⟧ of its own as plain brackets: only the front end writes phoneme tokens."""
    if PHONEME_OPEN in text or PHONEME_CLOSE in text:
        return text.translate(_MARKS_AS_BRACKETS)
    return text


def _hide_tokens(text: str) -> tuple[str, list[str]]:
    """``text`` with each phoneme token replaced by a placeholder, and the tokens (in placeholder order)."""
    if PHONEME_OPEN not in text:
        return text, []
    text = _PLACEHOLDER_CHAR.sub("", text)  # none of the text's own may pass for a placeholder
    tokens: list[str] = []

    def hide(m: re.Match) -> str:
        i = len(tokens)
        tokens.append(m.group(0))
        return chr(0xF0000 + (i >> 12)) + chr(0xF1000 + (i & 0xFFF))

    return PHONEME_TOKEN.sub(hide, text), tokens


def _show_tokens(text: str, tokens: list[str]) -> str:
    if not tokens:
        return text
    return _PLACEHOLDER.sub(lambda m: tokens[(ord(m.group(0)[0]) - 0xF0000) << 12 | (ord(m.group(0)[1]) - 0xF1000)],
                            text)


# ---------------------------------------------------------------------------------------------------------------
# Normalization

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                         "\u00ab": '"', "\u00bb": '"', "\u2212": "-"})
_FRACTIONS = {"½": "one half", "⅓": "one third", "⅔": "two thirds", "¼": "one quarter", "¾": "three quarters"}
_FRACTION_RE = re.compile(r"(\d?)\s?([½⅓⅔¼¾])")
_UNSPEAKABLE = {"Cc", "Cf", "Cs", "Co"}  # controls, zero-width/format marks (soft hyphen), surrogates, private use


def normalize(text: str) -> str:
    """Make text speakable: one kind of quote and space, pauses for dashes and ellipses, words for numbers and
    abbreviations. Raises TextError for empty or whitespace-only text."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, not {type(text).__name__}")
    if not text.strip():
        raise TextError("text is empty")
    text, tokens = _hide_tokens(text)  # phoneme tokens: untouched, put back at the end
    # Before NFKC, which would make "1½" into "11⁄2".
    text = _FRACTION_RE.sub(lambda m: (m.group(1) + " and " if m.group(1) else " ") + _FRACTIONS[m.group(2)], text)
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)  # NFKC also turns "…" into "..."
    text = re.sub(r"\s+", " ", text)  # before stripping controls: tabs and newlines are controls too
    if not text.isprintable():  # fast path: the category check per character is the slow part of normalize
        text = "".join(c for c in text if unicodedata.category(c) not in _UNSPEAKABLE
                       or (tokens and _PLACEHOLDER_CHAR.match(c)))
    text = re.sub(r"\s*(?:\.\s*){3,}", ", ", text)  # ellipsis: a pause
    text = re.sub(r"(?<=\d)\s*\u2013\s*(?=[$£€]?\d)", " to ", text)  # "1990–2000": a range, not a pause
    text = re.sub(r"\s*[\u2012\u2013\u2014\u2015]\s*|\s+-{1,2}\s+|(?<=\w)--(?=\w)|^-+\s+", ", ", text)  # dashes
    text = text.replace("&", " and ")
    text = _NO_RE.sub(lambda m: _sentence_case(m, "number") + " ", text)
    text = _ST_RE.sub(_saint_or_street, text)
    text = _ABBREV_RE.sub(_abbreviation, text)
    text = re.sub(r"(?<![\w+])\+(?=\d)", "plus ", text)
    text = _numbers(text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r" (?=[,.;:!?])", "", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)  # pauses that ran into each other
    text = re.sub(r"([!?])\s*,", r"\1", text)  # "Really?..." -> "Really?"
    text = re.sub(r"^[\s,;:]+", "", text).strip()
    text = re.sub(r"[,;:]$", ".", text)  # a trailing pause (an ellipsis at the end) ends the sentence
    return _show_tokens(text, tokens)


# ---------------------------------------------------------------------------------------------------------------
# Sentences and chunks

_END_RE = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")
_TOKEN_BEFORE = re.compile(r"[\w.]*$")
_NEXT_CHAR = re.compile(r"\s*(\S)")
_NO_BREAK_AFTER = set(_ABBREVIATIONS) | {"st", "e.g", "i.e"}


def _ends_sentence(text: str, m: re.Match) -> bool:
    """Whether the terminator m really ends a sentence (not "Mr.", "e.g.", "J. R. R.", '"Stop!" he said')."""
    following = _NEXT_CHAR.match(text, m.end())
    if not following:
        return True
    rest = following.group(1)
    if not set(m.group(0)) & {"!", "?"}:
        token = _TOKEN_BEFORE.search(text[max(0, m.start() - 40):m.start()]).group(0)
        if token.lower() in _NO_BREAK_AFTER:
            return False
        if token.lower() == "no" and rest[0].isdigit():
            return False
        if re.fullmatch(r"[A-HJ-Z]|[A-Za-z](?:\.[A-Za-z])+", token):  # initials, "U.S." (not the pronoun I)
            return False
    # '"Stop!" he said.' is one sentence: a quote or bracket closed mid-sentence, lowercase going on.
    return not (m.group(0)[-1] in "\"')]" and rest[0].islower())


def split_sentences(text: str) -> list[str]:
    """Split (normalized) text into sentences, keeping their punctuation and closing quotes or brackets."""
    sentences, start = [], 0
    for m in _END_RE.finditer(text):
        if _ends_sentence(text, m):
            sentences.append(text[start:m.end()].strip())
            start = m.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def _pack(pieces: list[str], max_chars: int, size: Callable[[str], int] = len) -> list[str]:
    """Greedily join pieces with spaces into chunks of at most max_chars (each piece already fits, but for a phoneme
    token longer than a chunk); ``size``: a piece's length as spoken text (its phoneme tokens shown)."""
    chunks: list[str] = []
    sizes: list[int] = []
    for piece in pieces:
        n = size(piece)
        if chunks and sizes[-1] + 1 + n <= max_chars:
            chunks[-1] += " " + piece
            sizes[-1] += 1 + n
        else:
            chunks.append(piece)
            sizes.append(n)
    return chunks


def _split_long(sentence: str, max_chars: int, size: Callable[[str], int] = len) -> list[str]:
    """Pieces of an over-long sentence: clauses that fit, else words, else (a huge word) slices of it; a word that
    holds a (hidden) phoneme token is never sliced."""
    pieces = []
    for clause in re.split(r"(?<=[,;:\u3001\uff0c])\s*", sentence):
        if size(clause) <= max_chars:
            pieces.append(clause)
            continue
        for word in clause.split():
            if size(word) <= max_chars or _PLACEHOLDER.search(word):
                pieces.append(word)
            else:
                pieces.extend(word[i:i + max_chars] for i in range(0, len(word), max_chars))
    return _pack(pieces, max_chars, size)


def chunk_text(text: str, max_chars: int = 300, language: str = "en") -> list[str]:
    """Normalize text and pack whole sentences into chunks of at most max_chars characters (of English: other
    scripts get as many characters as speak about as long, chatterbox.text_languages.chunk_chars_in).

    Over-long sentences are split at clause boundaries, then between words, then inside a word; a phoneme token is
    never split (an over-long one is a chunk of its own) and counts as the characters it is. Raises TextError for
    empty text (or nothing speakable), ValueError for max_chars < 20.
    """
    from .text_languages import chunk_chars_in, join_sentences, normalize_in, split_sentences_in

    if max_chars < 20:
        raise ValueError(f"max_chars must be at least 20, not {max_chars}")
    max_chars = chunk_chars_in(max_chars, language)
    normalized = normalize_in(text, language)
    if not any(c.isalnum() for c in normalized):
        raise TextError("text has nothing to say: no letters or digits")
    hidden, tokens = _hide_tokens(normalized)  # a token's "." or "," ends no sentence or clause, its spaces part nothing
    size: Callable[[str], int] = (lambda piece: len(_show_tokens(piece, tokens))) if tokens else len
    pieces: list[str] = []
    for sentence in split_sentences_in(hidden, language):
        pieces.extend([sentence] if size(sentence) <= max_chars else _split_long(sentence, max_chars, size))
    return [_show_tokens(join_sentences(chunk, language), tokens) for chunk in _pack(pieces, max_chars, size)]
