"""The read-along EPUB made from the book's own EPUB (chatterbox/books/epub_readalong.py): the original's XHTML with
each sentence given an id, its notes, page numbers, images and styles kept, overlays over synthetic chapter audio,
checked by epubcheck. No running system: a plan, words records with made-up times and short real MP3s."""
from __future__ import annotations

import io
import posixpath
import re
import zipfile
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from lxml import etree

from chatterbox import align, audio
from chatterbox.access import SYSTEM
from chatterbox.books import readalong
from chatterbox.books.epub_readalong import write_from_source
from chatterbox.books.plan import make_plan
from chatterbox.books.reader import read_book
from chatterbox.engines import create_engine
from chatterbox.settings import load
from tests.books import CHAPTERS, NOTE, check_epubcheck, epub_files, make_epub, zip_epub

SMIL = "{http://www.w3.org/ns/SMIL}"
XHTML = "{http://www.w3.org/1999/xhtml}"
OPF = "{http://www.idpf.org/2007/opf}"
LEAD_S, WORD_S = 0.5, 0.3


def build(tmp_path: Path, source: bytes, **settings) -> tuple:
    """The plan of ``source`` read as an upload, and per chapter a words record and an MP3 of its length."""
    config = load({"data_dir": tmp_path / "data", "chunk_chars": 80, **settings})
    engine = create_engine(config, "cpu", "piper")
    book = read_book(source, "book.epub")
    plan = make_plan(book, job_id="book1", engine=engine, voice=engine.check_voice(None, SYSTEM),
                     params=engine.validate(None), fmt="mp3", settings=config)
    folder = tmp_path / "chapters"
    folder.mkdir(exist_ok=True)
    chapters = []
    for chapter in plan.chapters:
        per_chunk, k = [], 0
        for i in chapter.chunk_range:
            words = []
            for word in plan.chunks[i].source.split():
                start = LEAD_S + WORD_S * k
                words.append(align.Word(word, start, start + WORD_S * 0.8))
                k += 1
            per_chunk.append(words)
        duration = LEAD_S + WORD_S * k + 0.5
        rate = 22050
        file = folder / f"{chapter.index + 1:03d}.mp3"
        file.write_bytes(audio.encode(np.zeros(int(duration * rate), dtype=np.float32), rate, "mp3"))
        record_path = readalong.write_words(file.with_suffix(".words.json"), chapter.title, file.name, duration,
                                            per_chunk, readalong.block_ends(plan, chapter), True)
        chapters.append(readalong.EpubChapter(chapter, file, readalong.read_words(record_path)))
    return plan, chapters


def contents(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        first = zf.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        return {name: zf.read(name) for name in zf.namelist()}


def package(files: dict[str, bytes]) -> tuple[str, etree._Element]:
    container = etree.fromstring(files["META-INF/container.xml"])
    path = container.xpath("//*[local-name()='rootfile']/@full-path")[0]
    return path, etree.fromstring(files[path])


def resolve(base: str, href: str) -> tuple[str, str]:
    path, _, fragment = href.partition("#")
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), unquote(path))), fragment


def overlays(files: dict[str, bytes]) -> list[tuple[str, str, str, float, float]]:
    """Every par of every overlay: (document, id, audio file, clip begin, clip end), in spine order."""
    opf_path, opf = package(files)
    items = {i.get("id"): i for i in opf.iter(f"{OPF}item")}
    pars = []
    for ref in opf.iter(f"{OPF}itemref"):
        item = items[ref.get("idref")]
        if not item.get("media-overlay"):
            continue
        smil_path = resolve(opf_path, items[item.get("media-overlay")].get("href"))[0]
        smil = etree.fromstring(files[smil_path])
        for par in smil.iter(f"{SMIL}par"):
            doc, fragment = resolve(smil_path, par.find(f"{SMIL}text").get("src"))
            clip = par.find(f"{SMIL}audio")
            pars.append((doc, fragment, resolve(smil_path, clip.get("src"))[0], seconds(clip.get("clipBegin")),
                         seconds(clip.get("clipEnd"))))
    return pars


def seconds(clock: str) -> float:
    h, m, s = clock.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def element_texts(files: dict[str, bytes], doc: str) -> dict[str, etree._Element]:
    root = etree.fromstring(files[doc])
    return {el.get("id"): el for el in root.iter() if isinstance(el.tag, str) and el.get("id")}


def words_of(el: etree._Element) -> list[str]:
    return [w.casefold() for w in "".join(el.itertext()).split()]


@pytest.mark.parametrize("version", [3, 2])
def test_the_original_epub_with_its_sentences_read_along(tmp_path, version):
    files = epub_files(version=version, extras=True)
    if version == 2:  # (the test book's NCX names another identifier: an error epubcheck finds in the original)
        files["OEBPS/toc.ncx"] = files["OEBPS/toc.ncx"].replace(
            b"urn:uuid:test", b"urn:uuid:0b5d2c4e-2f7c-4a55-9d8e-3c1f9a7b6e10")
    source = zip_epub(files)
    plan, chapters = build(tmp_path, source)
    out = tmp_path / "book.epub"
    assert write_from_source(out, source, plan, chapters) is True
    files = contents(out)
    with zipfile.ZipFile(io.BytesIO(source)) as zf:
        original = {name: zf.read(name) for name in zf.namelist()}
    # The original's files are all still there: images, the cover page, the NCX or nav; the chapter audio added.
    assert set(original) <= set(files)
    assert files["OEBPS/images/cover.png"] == original["OEBPS/images/cover.png"]
    assert files["OEBPS/cover.xhtml"] == _doctype_free(original["OEBPS/cover.xhtml"])
    pars = overlays(files)
    assert pars
    # Every par points at an element of the original document holding its words; together, per sentence, the
    # sentence's words, in order, each chapter's sentences in reading order.
    texts: dict[str, list[str]] = {}
    for doc, fragment, _, _, _ in pars:
        el = element_texts(files, doc)[fragment]
        assert el.tag == f"{XHTML}span"
        texts.setdefault(fragment.split("-")[0], []).extend(words_of(el))
    for number, chapter in enumerate(chapters, 1):
        said = readalong.sentences(chapter.words, number)
        for sentence in said:
            assert texts[sentence.id] == [w.casefold() for w in sentence.words], sentence.id
    # Each chapter's clips cover its audio end to end, in order, on its own file.
    for k, chapter in enumerate(chapters):
        mine = [p for p in pars if p[2].endswith(f"/{k + 1:03d}.mp3")]
        assert mine[0][3] == 0 and all(a[4] == b[3] for a, b in zip(mine, mine[1:]))
        assert mine[-1][4] == pytest.approx(chapter.words["duration_s"], abs=0.002)
        assert files[mine[0][2]] == chapter.audio.read_bytes()
    # The notes and page numbers are there, untouched, and in no sentence.
    for n in range(1, len(CHAPTERS) + 1):
        doc = f"OEBPS/text/chapter{n}.xhtml"
        page = n * 12 - 5
        before, after = original[doc].decode(), files[doc].decode()
        marker = (f'<span epub:type="pagebreak" id="page_{page}" title="{page}">{page}</span>' if version == 3
                  else f'<span class="pagenum" id="page_{page}">{page}</span>')
        note = (f'<aside epub:type="footnote" id="fn{n}"><p>{n}. {NOTE}</p></aside>' if version == 3
                else f'<div class="footnote" id="fn{n}"><p>{n}. {NOTE}</p></div>')
        ref = f'href="#fn{n}"'
        for piece in (marker, note, ref):
            assert piece in before and piece in after
        ids = element_texts(files, doc)
        for name in (f"page_{page}", f"fn{n}"):
            assert not [a for a in ids[name].iterancestors() if a.get("id") in texts or
                        (a.get("id") or "").split("-")[0] in texts]
        # Every byte outside the inserted spans and link is as it was.
        stripped = _unspanned(after)
        assert stripped == _doctype_free(before.encode()).decode()
    # The package: overlays on the documents, durations that add up, the active class styled.
    opf_path, opf = package(files)
    assert opf.get("version") == "3.0"
    metas = {(m.get("property"), m.get("refines")): m.text for m in opf.iter(f"{OPF}meta") if m.get("property")}
    refined = [seconds(v) for (p, r), v in metas.items() if p == "media:duration" and r]
    assert seconds(metas[("media:duration", None)]) == pytest.approx(sum(refined), abs=0.002)
    assert metas[("media:active-class", None)] == readalong.ACTIVE_CLASS
    css = [name for name in files if name.endswith("style.css") and readalong.ACTIVE_CLASS.encode() in files[name]]
    assert css and b"stylesheet" in files["OEBPS/text/chapter1.xhtml"]
    with zipfile.ZipFile(out) as zf:
        assert all(zf.getinfo(p[2]).compress_type == zipfile.ZIP_STORED for p in pars)
    messages = check_epubcheck(out, tmp_path)
    assert not [m for m in messages if m["severity"] == "WARNING"], messages


def _unspanned(text: str) -> str:
    text = re.sub(r'<span id="c\d+s\d+(?:-\d+)?">', "", text)
    text = re.sub(r'<link rel="stylesheet" type="text/css" href="[^"]*readalong[^"]*"/>', "", text)
    # the closing tags of our spans: every </span> not matched by an original opening one
    return _drop_extra_closers(text)


def _drop_extra_closers(text: str) -> str:
    out, depth, last = [], 0, 0
    for m in re.finditer(r"<span\b[^>]*?(/?)>|</span>", text):
        if m.group(0) == "</span>":
            if depth == 0:
                out.append(text[last:m.start()])
                last = m.end()
            else:
                depth -= 1
        elif not m.group(1):
            depth += 1
    out.append(text[last:])
    return "".join(out)


def _doctype_free(data: bytes) -> bytes:
    return re.sub(rb"<!DOCTYPE[^>]*>", b"<!DOCTYPE html>", data, count=1)


def test_a_sentence_across_inline_elements_is_one_span(tmp_path):
    files = epub_files(extras=False)
    doc = "OEBPS/text/chapter1.xhtml"
    text = files[doc].decode()
    # "...slow stars." ends inside <em>; "Mira stood ..." begins in <b>; a sentence split by an <em> it began.
    text = text.replace("like slow stars.", "like <em>slow stars.</em>")
    text = text.replace("Mira stood on the stone steps", "<b>Mira</b> stood on <i>the stone</i> steps")
    text = text.replace("Her father was late again", "<em>Her father</em> was late again")
    text = text.replace("<section>", '<section><div id="c1s2"></div>')  # the id its first sentence would get
    files[doc] = text.encode()
    source = zip_epub(files)
    plan, chapters = build(tmp_path, source)
    out = tmp_path / "book.epub"
    assert write_from_source(out, source, plan, chapters) is True
    files = contents(out)
    ids = element_texts(files, doc)
    every = re.findall(r' id="([^"]+)"', files[doc].decode())
    assert len(every) == len(set(every))  # no id twice
    assert ids["c1s2"].tag == f"{XHTML}div" and not len(ids["c1s2"])
    assert words_of(ids["c1s2-2"]) == "the boats came home before the sun was up.".split()
    assert ("OEBPS/text/chapter1.xhtml", "c1s2-2") in {p[:2] for p in overlays(files)}
    said = {s.text: s.id for s in readalong.sentences(chapters[0].words, 1)}
    mira = said["Mira stood on the stone steps and counted the sails."]
    assert words_of(ids[mira]) == "mira stood on the stone steps and counted the sails.".split()
    assert words_of(ids[said["Her father was late again, and the wind was turning cold."]]) == \
        "her father was late again, and the wind was turning cold.".split()
    lanterns = ids[said["Their lanterns swung over the dark water like slow stars."]]
    assert words_of(lanterns)[-2:] == ["slow", "stars."]
    check_epubcheck(out, tmp_path)


def test_a_heavily_edited_book_is_refused_and_nothing_is_written(tmp_path):
    source = make_epub(version=3, extras=True)
    edited = [(title, [" ".join(reversed(p.split())) + " And then something else entirely happened to them all."
                       for p in paragraphs]) for title, paragraphs in CHAPTERS]
    plan, chapters = build(tmp_path, make_epub(edited, version=3, extras=True))
    out = tmp_path / "book.epub"
    assert write_from_source(out, source, plan, chapters) is False
    assert not out.exists() and not list(tmp_path.glob(".book.epub*"))


def test_a_chapter_the_original_lacks_is_refused(tmp_path):
    source = make_epub(version=3, extras=True)
    longer = [*CHAPTERS, ("An Added Chapter", ["Nobody wrote this in the original, it came later from a user."])]
    plan, chapters = build(tmp_path, make_epub(longer, version=3, extras=True))
    assert write_from_source(tmp_path / "book.epub", source, plan, chapters) is False


def test_a_lightly_edited_book_still_reads_along(tmp_path):
    files = epub_files(version=3, extras=True, single_file=True)
    # (the test book's landmarks name chapter1.xhtml, which a single-file book does not have: the original's error)
    files["OEBPS/nav.xhtml"] = files["OEBPS/nav.xhtml"].replace(b"text/chapter1.xhtml", b"text/book.xhtml")
    source = zip_epub(files)
    edited = [(title, [p.replace("grey", "gray").replace("careful", "neat") for p in paragraphs])
              for title, paragraphs in CHAPTERS]
    plan, chapters = build(tmp_path, make_epub(edited, version=3, extras=True, single_file=True))
    out = tmp_path / "book.epub"
    assert write_from_source(out, source, plan, chapters) is True
    files = contents(out)
    pars = overlays(files)
    # One document holds every chapter: one overlay, its pars on the three chapter files in turn.
    assert {p[0] for p in pars} == {"OEBPS/text/book.xhtml"}
    assert [p[2] for p in pars] == sorted(p[2] for p in pars) and len({p[2] for p in pars}) == 3
    ids = element_texts(files, "OEBPS/text/book.xhtml")
    said = {s.text: s.id for s in readalong.sentences(chapters[1].words, 2)}
    edited_sentence = said["It was written in a neat hand on thick gray paper."]
    assert words_of(ids[edited_sentence]) == "it was written in a careful hand on thick grey paper.".split()
    check_epubcheck(out, tmp_path)
