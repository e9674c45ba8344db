"""A book's words in time: word timestamps per chapter file, subtitles, and the read-along EPUB 3 (Media Overlays).

Each chunk's spoken words are timed against its audio once, when it is made (chatterbox.align.time_chunk, kept in
the chunk's cached report: it depends only on the spoken text, as the cache key does). When a chapter is assembled,
the words the book wrote (Chunk.source: "$5", not "five dollars") are placed on those times and moved to where the
chunk landed in the chapter file (assemble.ChunkPlace: the lead-in, each chunk's trimmed silence and the pauses), and
kept in ``chapters/NNN.words.json``. Subtitles are rendered from it on request; the whole book's words, over the
M4B's timeline, add each chapter's start from chapters.json.

The read-along EPUB is written from the book's own text as the plan holds it (a heading, then its paragraphs), each
sentence a ``<span id>``, with one SMIL overlay per chapter whose clips cover the chapter audio end to end (a
sentence's clip runs to the next sentence's start, so the pauses are heard and no reading system seeks over them).
"""
from __future__ import annotations

import json
import os
import time
import uuid
import zipfile
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Iterable

import numpy as np

from .. import align
from ..audio import write_atomic
from ..subtitles import sentence_ends
from .assemble import ChunkPlace, _fsync_dir, _temp_beside
from .plan import ChapterPlan, Chunk, Plan

__all__ = ["chapter_words", "block_ends", "write_words", "read_words", "book_words", "Sentence", "sentences",
           "EpubChapter", "write_epub", "ACTIVE_CLASS"]

ACTIVE_CLASS = "-epub-media-overlay-active"  # the class a reading system gives the sentence being read
# EPUB 3's core media types: a reading system must play these (Ogg Opus is not one; its book's chapters go in as the
# AAC parts instead).
AUDIO_TYPES = {".mp3": "audio/mpeg", ".m4a": "audio/mp4"}


def chunk_words(chunk: Chunk, timing: align.Timing, place: ChunkPlace, language: str) -> list[align.Word]:
    """A chunk's words as the book wrote them, in seconds of its chapter file."""
    planned = align.plan(chunk.source or chunk.text, [chunk.text], language)[0]
    return [align.Word(w.word, place.at(w.start), place.at(w.end)) for w in align.place_words(planned, timing)]


def chapter_words(plan: Plan, chapter: ChapterPlan, places: list[ChunkPlace],
                  timings: list[align.Timing]) -> list[list[align.Word]]:
    """Per chunk of ``chapter``, its words in seconds of the chapter file."""
    return [chunk_words(plan.chunks[i], timing, place, plan.speech_language or "en")
            for i, place, timing in zip(chapter.chunk_range, places, timings)]


def block_ends(plan: Plan, chapter: ChapterPlan) -> list[bool]:
    """Per chunk of ``chapter``, whether it ends a block of text: the spoken heading, or a paragraph."""
    return [n == chapter.heading - 1 or (n >= chapter.heading and plan.chunks[i].brk in ("paragraph", "chapter"))
            for n, i in enumerate(chapter.chunk_range)]


def write_words(path: Path, title: str, audio: str, duration_s: float, per_chunk: list[list[align.Word]],
                ends: list[bool], aligned: bool) -> Path:
    """``{"title", "audio", "duration_s", "words", "chunks", "breaks", "aligned"}``: chunks holds each chunk's word
    count, breaks the index of each block's last word (where a cue or a paragraph ends, whatever its punctuation)."""
    counts = [len(words) for words in per_chunk]
    last = np.cumsum(counts) - 1 if counts else []
    record = {"title": title, "audio": audio, "duration_s": round(duration_s, 3),
              "words": [w.as_dict() for words in per_chunk for w in words], "chunks": counts,
              "breaks": [int(i) for i, end, n in zip(last, ends, counts) if end and n], "aligned": aligned}
    return write_atomic(path, json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode())


def read_words(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def book_words(chapters: list[dict], starts: list[float]) -> tuple[list[dict], list[int]]:
    """Every chapter's words (read_words records) moved to the M4B's timeline (each chapter's start_s), and their
    breaks."""
    words: list[dict] = []
    breaks: list[int] = []
    for record, start in zip(chapters, starts):
        breaks += [len(words) + i for i in record["breaks"]]
        words += [{**w, "start": round(w["start"] + start, 3), "end": round(w["end"] + start, 3)}
                  for w in record["words"]]
    return words, breaks


# -- the read-along EPUB -----------------------------------------------------------------------------------------

@dataclass
class EpubChapter:
    plan: ChapterPlan
    audio: Path  # its audio file, of a core media type
    words: dict  # its read_words record


@dataclass
class Sentence:
    """A sentence (or a heading, or a paragraph that ends without punctuation) of a chapter, with its clip."""

    id: str  # "c<chapter number>s<k>", unique in the book
    words: list[str]  # as the book wrote them
    block: int  # which block of the chapter it is in: the spoken heading (if any) first, then each paragraph
    begin: float  # its clip in the chapter audio: from its first word (the first sentence: from 0) ...
    end: float  # ... to the next sentence's first word (the last: to the end of the file)

    @property
    def text(self) -> str:
        return " ".join(self.words)


def sentences(words: dict, number: int) -> list[Sentence]:
    """The sentences of chapter ``number`` (1-based) from its read_words record. Their clips cover the chapter audio
    end to end: the lead-in goes with the first, each pause with the sentence before it, so that a reading system
    playing clip after clip plays the whole file and seeks over nothing."""
    items, breaks = words["words"], set(words["breaks"])
    out: list[Sentence] = []
    begun: list[dict] = []
    block = 0
    for i, (word, end) in enumerate(zip(items, sentence_ends([w["word"] for w in items]))):
        begun.append(word)
        if end or i in breaks:
            out.append(Sentence(f"c{number}s{len(out) + 1}", [w["word"] for w in begun], block,
                                float(begun[0]["start"]), 0.0))
            begun = []
        block += i in breaks
    duration = float(words["duration_s"])
    for k, sentence in enumerate(out):
        sentence.begin = 0.0 if k == 0 else sentence.begin
        sentence.end = max(sentence.begin, out[k + 1].begin if k + 1 < len(out) else duration)
    return out


def clock(seconds: float) -> str:
    """A SMIL clock value, h:mm:ss.fff (what media:duration needs too)."""
    ms = max(0, int(round(seconds * 1000)))
    return f"{ms // 3_600_000}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _xhtml(title: str, language: str, body: str, *, nav: bool = False) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" '
            f'xmlns:epub="http://www.idpf.org/2007/ops" lang="{escape(language)}" xml:lang="{escape(language)}">\n'
            '<head>\n<meta charset="UTF-8"/>\n'
            f'<title>{escape(title)}</title>\n'
            + ('' if nav else '<link rel="stylesheet" type="text/css" href="style.css"/>\n')
            + f'</head>\n<body>\n{body}\n</body>\n</html>\n')


def _spans(items: list[Sentence]) -> str:
    return " ".join(f'<span id="{s.id}">{escape(s.text)}</span>' for s in items)


def _chapter_xhtml(plan: Plan, chapter: EpubChapter, number: int) -> tuple[str, list[Sentence]]:
    said = sentences(chapter.words, number)
    blocks: list[list[Sentence]] = []
    for sentence in said:
        if not blocks or blocks[-1][0].block != sentence.block:
            blocks.append([])
        blocks[-1].append(sentence)
    heading, paragraphs = (blocks[0], blocks[1:]) if chapter.plan.heading and blocks else ([], blocks)
    title = _spans(heading) if heading else escape(chapter.plan.title)
    body = [f'<section epub:type="chapter" id="chapter{number}">', f"<h1>{title}</h1>"]
    body += [f"<p>{_spans(p)}</p>" for p in paragraphs if p]
    body.append("</section>")
    return _xhtml(chapter.plan.title, plan.language or "en", "\n".join(body)), said


def _smil(number: int, audio: str, said: list[Sentence]) -> str:
    pars = [f'<par id="c{number}p{k + 1}"><text src="chapter{number:03d}.xhtml#{s.id}"/>'
            f'<audio src="{audio}" clipBegin="{clock(s.begin)}" clipEnd="{clock(s.end)}"/></par>'
            for k, s in enumerate(said)]
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<smil xmlns="http://www.w3.org/ns/SMIL" '
            'xmlns:epub="http://www.idpf.org/2007/ops" version="3.0">\n<body>\n'
            f'<seq id="c{number}seq" epub:textref="chapter{number:03d}.xhtml" epub:type="chapter">\n'
            + "\n".join(pars) + "\n</seq>\n</body>\n</smil>\n")


_CSS = f"""body {{ font-family: serif; line-height: 1.5; margin: 1em; }}
h1 {{ font-size: 1.4em; }}
.{ACTIVE_CLASS} {{ background-color: #ffe58a; color: inherit; }}
"""

_CONTAINER = """<?xml version="1.0" encoding="UTF-8"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/package.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>
"""


def _package(plan: Plan, chapters: list[EpubChapter], durations: list[float], cover: Path | None) -> str:
    language = escape(plan.language or "en")
    book_id = uuid.uuid5(uuid.NAMESPACE_URL, f"chatterbox-jobs:audiobook:{plan.job_id}")
    meta = [f'<dc:identifier id="uid">urn:uuid:{book_id}</dc:identifier>',
            f"<dc:title>{escape(plan.title or 'Audiobook')}</dc:title>",
            f"<dc:language>{language}</dc:language>",
            f'<meta property="dcterms:modified">{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}</meta>',
            f'<meta property="media:duration">{clock(sum(durations))}</meta>',
            f'<meta property="media:active-class">{ACTIVE_CLASS}</meta>']
    if plan.author:
        meta.insert(2, f"<dc:creator>{escape(plan.author)}</dc:creator>")
    items = ['<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>',
             '<item id="css" href="style.css" media-type="text/css"/>']
    spine = []
    for n, (chapter, duration) in enumerate(zip(chapters, durations), 1):
        meta.append(f'<meta property="media:duration" refines="#smil{n}">{clock(duration)}</meta>')
        items += [f'<item id="chapter{n}" href="chapter{n:03d}.xhtml" media-type="application/xhtml+xml" '
                  f'media-overlay="smil{n}"/>',
                  f'<item id="smil{n}" href="chapter{n:03d}.smil" media-type="application/smil+xml"/>',
                  f'<item id="audio{n}" href="audio/{n:03d}{chapter.audio.suffix}" '
                  f'media-type="{AUDIO_TYPES[chapter.audio.suffix]}"/>']
        spine.append(f'<itemref idref="chapter{n}"/>')
    if cover is not None:
        kind = "image/png" if cover.suffix == ".png" else "image/jpeg"
        items.append(f'<item id="cover" href="cover{cover.suffix}" media-type="{kind}" properties="cover-image"/>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
            f'unique-identifier="uid" xml:lang="{language}">\n'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">\n' + "\n".join(meta) + "\n</metadata>\n"
            "<manifest>\n" + "\n".join(items) + "\n</manifest>\n<spine>\n" + "\n".join(spine) + "\n</spine>\n"
            "</package>\n")


def _nav(plan: Plan, chapters: list[EpubChapter]) -> str:
    entries = "\n".join(f'<li><a href="chapter{n:03d}.xhtml">{escape(c.plan.title)}</a></li>'
                        for n, c in enumerate(chapters, 1))
    body = f'<nav epub:type="toc" id="toc"><h1>Contents</h1>\n<ol>\n{entries}\n</ol></nav>'
    return _xhtml(plan.title or "Contents", plan.language or "en", body, nav=True)


def write_epub(out: Path, plan: Plan, chapters: list[EpubChapter], cover: Path | None = None) -> Path:
    """Write the read-along EPUB 3 atomically to ``out``: every chapter's text, audio and overlay."""
    durations = [float(c.words["duration_s"]) for c in chapters]
    members: list[tuple[str, str | bytes | Path, bool]] = [
        ("META-INF/container.xml", _CONTAINER, False),
        ("OEBPS/package.opf", _package(plan, chapters, durations, cover), False),
        ("OEBPS/nav.xhtml", _nav(plan, chapters), False), ("OEBPS/style.css", _CSS, False)]
    for n, chapter in enumerate(chapters, 1):
        xhtml, said = _chapter_xhtml(plan, chapter, n)
        audio = f"audio/{n:03d}{chapter.audio.suffix}"
        members += [(f"OEBPS/chapter{n:03d}.xhtml", xhtml, False), (f"OEBPS/chapter{n:03d}.smil", _smil(n, audio, said),
                     False), (f"OEBPS/{audio}", chapter.audio, True)]
    if cover is not None:
        members.append((f"OEBPS/cover{cover.suffix}", cover, True))
    return write_zip(out, members)


def write_zip(out: Path, members: Iterable[tuple[str, str | bytes | Path, bool]]) -> Path:
    """An EPUB's container written atomically to ``out``: the mimetype, then each (name, text, bytes or a file to
    copy, whether to store it uncompressed: compressed audio and images gain nothing from deflate)."""
    tmp = _temp_beside(out)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            # The mimetype first, stored, without extra fields: how a reading system knows the file (OCF 3.3, 4.3).
            zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip", compress_type=zipfile.ZIP_STORED)
            for name, data, stored in members:
                compress = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                if isinstance(data, Path):
                    zf.write(data, name, compress_type=compress)  # copied a block at a time
                else:
                    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, data, compress_type=compress)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(out.parent)
    return out
