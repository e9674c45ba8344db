"""Pauses and a small SSML: what a text asks beyond its words, as the segments a job speaks.

Plain text may hold ``[pause:0.5s]`` (or ``[pause:300ms]``); a text that starts with ``<speak`` is SSML, of which
these elements are understood: ``<speak>``, ``<p>``, ``<s>``, ``<break time= strength=>``, ``<sub alias=>``,
``<say-as interpret-as="characters|cardinal|ordinal|date|telephone">``, ``<prosody rate=>`` and ``<phoneme
alphabet="ipa" ph=>``. Any other element is an error naming it. The parser is a real XML parser with entities, DTDs
and the network off (a text is someone's input).

``<phoneme>``: its alphabet is IPA (the attribute may be left out; any other is an error naming it). Parsed for an
engine that reads phonemes (``parse(text, phonemes=engine.phoneme_token)``: Piper), the element becomes a phoneme
token of its ``ph`` (chatterbox.text), a symbol the voice lacks being an error naming it; for any other engine, and
wherever only the words count (``spoken_text``, the lexicon's preview), its text is said.

A segment is text spoken at one rate, and the silence after it; the job chunks each segment's text as it chunks
plain text, so sentences and limits work as before.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .text import without_phoneme_marks

MAX_PAUSE_S = 10.0
PARAGRAPH_PAUSE_S = 0.75  # after </p>: a little over the gap between chunks, as a reader breathes between paragraphs
STRENGTHS = {"none": 0.0, "x-weak": 0.1, "weak": 0.25, "medium": 0.5, "strong": 0.75, "x-strong": 1.25}
RATES = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "fast": 1.25, "x-fast": 1.5, "default": 1.0}
SAY_AS = ("characters", "spell-out", "cardinal", "number", "ordinal", "date", "telephone")
_PAUSE = re.compile(r"\[pause:\s*([^\]]*)\]", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$", re.IGNORECASE)


class MarkupError(ValueError):
    """The text's markup is wrong: the message names the tag or the value at fault."""


@dataclass(frozen=True)
class Segment:
    text: str
    pause_s: float = 0.0  # silence after it (0: the usual gap between chunks)
    rate: float = 1.0  # relative speaking rate (prosody): 2 is twice as fast


def is_ssml(text: str) -> bool:
    """SSML starts with <speak> (after an XML declaration or a DOCTYPE, which are then refused or read)."""
    return text.lstrip().startswith(("<speak", "<?xml", "<!DOCTYPE"))


def parse(text: str, phonemes: Callable[[str], str] | None = None) -> list[Segment]:
    """The segments of a text: SSML if it starts with <speak>, else plain text with [pause:...] tags. ``phonemes``:
    the engine's phoneme_token where it reads phonemes (then <phoneme> is said by its ph), else None (its text)."""
    segments = _ssml(text, phonemes) if is_ssml(text) else _plain(text)
    return _merged(segments)


def spoken_text(text: str) -> str:
    """What is said, without the markup (what the text limits count); a text without markup as it is."""
    if not is_ssml(text) and not _PAUSE.search(text):
        return text
    return " ".join(s.text for s in parse(text) if s.text.strip())


def duration(value: str, what: str) -> float:
    """Seconds from "0.5s", "500ms" or "2" (seconds), at most MAX_PAUSE_S."""
    match = _DURATION.match(value or "")
    if not match:
        raise MarkupError(f"{what} must be a duration such as 0.5s or 300ms, not {value!r}")
    seconds = float(match.group(1)) / (1000 if (match.group(2) or "").lower() == "ms" else 1)
    if seconds > MAX_PAUSE_S:
        raise MarkupError(f"{what} is {seconds:g} s; a pause is at most {MAX_PAUSE_S:g} s")
    return seconds


def _plain(text: str) -> list[Segment]:
    segments, start = [], 0
    for match in _PAUSE.finditer(text):
        segments.append(Segment(without_phoneme_marks(text[start:match.start()]),
                                duration(match.group(1), f"[pause:{match.group(1)}]")))
        start = match.end()
    segments.append(Segment(without_phoneme_marks(text[start:])))
    return segments


def _merged(segments: list[Segment]) -> list[Segment]:
    """Segments with words, each with the pauses that followed it added up; a pause before any words is dropped
    (audio starts with speech, as it does without markup)."""
    out: list[Segment] = []
    for segment in segments:
        if segment.text.strip():
            out.append(Segment(" ".join(segment.text.split()), segment.pause_s, segment.rate))
        elif out:
            last = out[-1]
            out[-1] = Segment(last.text, min(MAX_PAUSE_S, last.pause_s + segment.pause_s), last.rate)
    return out


# -- SSML ------------------------------------------------------------------------------------------------------------

def _ssml(text: str, phonemes: Callable[[str], str] | None = None) -> list[Segment]:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=False, remove_comments=True, remove_pis=True)
    try:
        root = etree.fromstring(text.strip().encode("utf-8"), parser)
    except etree.XMLSyntaxError as exc:
        raise MarkupError(f"the SSML is not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise MarkupError("SSML may not have a DOCTYPE (no DTDs or entities)")
    if _name(root) != "speak":
        raise MarkupError(f"SSML must have <speak> at its root, not <{_name(root)}>")
    walker = _Walker(phonemes)
    walker.element(root, 1.0)
    walker.end(0.0)
    return walker.segments


def _name(element) -> str:
    tag = element.tag
    if not isinstance(tag, str):
        return "?"
    return tag.rsplit("}", 1)[-1]  # the SSML namespace is allowed, not required


class _Walker:
    def __init__(self, phonemes: Callable[[str], str] | None = None):
        self.segments: list[Segment] = []
        self.words: list[str] = []
        self.rate = 1.0
        self.phonemes = phonemes

    def say(self, text: str | None, rate: float, token: bool = False) -> None:
        """Words of the text (any phoneme marks of its own made plain brackets), or a phoneme token of ours."""
        if not text or not text.strip():
            if text and self.words:
                self.words.append(" ")
            return
        if rate != self.rate and "".join(self.words).strip():
            self.end(0.0)
        self.rate = rate
        self.words.append(text if token else without_phoneme_marks(text))

    def end(self, pause: float) -> None:
        self.segments.append(Segment("".join(self.words), pause, self.rate))
        self.words = []

    def element(self, el, rate: float) -> None:
        name = _name(el)
        handler = getattr(self, f"_{name.replace('-', '_')}", None)
        if handler is None:
            raise MarkupError(f"unknown SSML element <{name}>; known: speak, p, s, break, sub, say-as, prosody, "
                              "phoneme")
        handler(el, rate)
        self.say(el.tail, rate)

    def children(self, el, rate: float) -> None:
        self.say(el.text, rate)
        for child in el:
            self.element(child, rate)

    def _speak(self, el, rate: float) -> None:
        self.children(el, rate)

    def _p(self, el, rate: float) -> None:
        self.end(0.0)
        self.children(el, rate)
        self.end(PARAGRAPH_PAUSE_S)

    def _s(self, el, rate: float) -> None:
        self.end(0.0)
        self.children(el, rate)
        self.end(0.0)

    def _break(self, el, rate: float) -> None:
        if len(el) or (el.text or "").strip():
            raise MarkupError("<break> is empty: <break time=\"500ms\"/>")
        if el.get("time") is not None:
            pause = duration(el.get("time"), "<break time>")
        else:
            strength = el.get("strength", "medium")
            if strength not in STRENGTHS:
                raise MarkupError(f"<break strength> must be one of {', '.join(STRENGTHS)}, not {strength!r}")
            pause = STRENGTHS[strength]
        self.end(pause)

    def _sub(self, el, rate: float) -> None:
        alias = el.get("alias")
        if alias is None:
            raise MarkupError("<sub> needs alias=\"what to say\"")
        self.say(alias, rate)

    def _phoneme(self, el, rate: float) -> None:
        ph = el.get("ph")
        if ph is None or not ph.strip():
            raise MarkupError("<phoneme> needs ph=\"...\"")
        alphabet = el.get("alphabet", "ipa")
        if alphabet.strip().lower() != "ipa":
            raise MarkupError(f"<phoneme alphabet> must be ipa (the International Phonetic Alphabet), not "
                              f"{alphabet!r}")
        if self.phonemes is None:  # an engine without phonemes: the words
            self.say("".join(el.itertext()), rate)
            return
        try:
            token = self.phonemes(ph)
        except ValueError as exc:
            raise MarkupError(f"<phoneme ph={ph!r}>: {exc}") from None
        self.say(token, rate, token=True)

    def _prosody(self, el, rate: float) -> None:
        value = el.get("rate")
        factor = 1.0 if value is None else _rate(value)
        self.children(el, rate * factor)

    def _say_as(self, el, rate: float) -> None:
        kind = el.get("interpret-as")
        if kind not in SAY_AS:
            raise MarkupError(f"<say-as interpret-as> must be one of {', '.join(SAY_AS)}, not {kind!r}")
        self.say(say_as("".join(el.itertext()), kind), rate)


def _rate(value: str) -> float:
    value = value.strip()
    if value in RATES:
        return RATES[value]
    match = re.fullmatch(r"([+-]?\d+(?:\.\d+)?)(%?)", value)
    if not match:
        raise MarkupError(f"<prosody rate> must be x-slow, slow, medium, fast, x-fast, a percentage or a number, "
                          f"not {value!r}")
    number = float(match.group(1))
    factor = (1 + number / 100 if match.group(1)[0] in "+-" else number / 100) if match.group(2) else number
    if not 0.25 <= factor <= 4:
        raise MarkupError(f"<prosody rate> of {value!r} is outside 25% to 400%")
    return factor


def say_as(text: str, kind: str) -> str:
    """The words for ``text`` said as ``kind``: letters one by one, a number, an ordinal, a date as written, digits of
    a telephone number in their groups."""
    text = text.strip()
    if kind in ("characters", "spell-out"):
        return " ".join(c for c in text if not c.isspace())
    if kind in ("cardinal", "number", "ordinal"):
        digits = text.replace(",", "").replace(" ", "")
        if not re.fullmatch(r"-?\d+", digits):
            raise MarkupError(f"<say-as interpret-as=\"{kind}\"> holds a whole number, not {text!r}")
        from num2words import num2words

        return num2words(int(digits), to="ordinal" if kind == "ordinal" else "cardinal")
    if kind == "telephone":
        groups = [g for g in re.split(r"[^\d+]+", text) if g]
        return ", ".join(" ".join("plus" if c == "+" else c for c in group) for group in groups)
    return text  # a date: the text front end reads dates as they are written
