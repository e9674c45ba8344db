"""The read-along EPUB 3 (Media Overlays) built from the book's own EPUB: its XHTML, its styles and images, each
sentence given an id, and the chapter audio.

Where a book came as an EPUB, the read-along is the original with overlays added rather than text regenerated from
the plan. The book's timed words (every chapter's read_words record, its sentences as readalong.sentences makes
them) are matched against the words of the spine documents, read the way epub.py reads them (its skip rules: notes,
page numbers, navigation), and each sentence's matched text is wrapped in a ``<span id>``. When too little matches
(chapters edited before submitting, a different edition), nothing is written and the caller falls back to
readalong.write_epub.

The documents are changed by splicing, not by re-serializing a parsed tree: the spans, one stylesheet link, and
(EPUB 2 only) the DOCTYPE are inserted into the original text, so every other byte of markup stays as it was (named
HTML entities, which EPUB 3 does not allow, become numeric references). lxml only checks that a document is
well-formed before it is touched; a small tokenizer finds where each text and tag starts.

Sentences and elements:

- A sentence is wrapped as one span at the lowest common parent of its first and last word where it starts and
  ends in the same block and everything between is phrasing content: ``A <em>quiet</em> day.`` and
  ``<em>A quiet</em> day.`` (lifted over the <em>, which holds nothing else) are each one span.
- A sentence that cannot be one element (it starts inside an <em> that began with the previous sentence, crosses
  a table cell, or has a note marker or page number in it, which must stay outside any sentence) is wrapped in
  several spans, the first with the sentence's id (``c3s12``) and the others ``c3s12-2``, ``c3s12-3`` ..., each
  with a ``<par>`` of its own whose clip starts at its first word's time: the highlight moves over the pieces as
  they are read, and together the pieces' clips are the sentence's clip.
- A sentence of the timed words with no match in the text (a title the TOC names differently, a sentence the
  user added) gets no span; its audio stays in the overlay as part of the sentence before it, so that each
  chapter's clips still cover its audio file end to end.

EPUB 2 sources are converted to EPUB 3: version 3.0, dcterms:modified, EPUB 2's opf: attributes on the metadata
turned into EPUB 3 refinements (role, file-as) or dropped (scheme, event; a second dc:date), a navigation document
made from the NCX (which stays, for older reading systems), each XHTML document's DOCTYPE made the HTML one and the
manifest properties EPUB 3 requires (scripted, svg, mathml) added. Legacy markup HTML5 no longer allows (<a name>,
<center>) is left as it was: epubcheck reports it where an original has it. A source that already has media
overlays, or whose spine documents are not well-formed XML, is left alone (False).

The new files go in a folder beside the package document that the original does not use (``readalong/``, else
``readalong2/`` ...): a stylesheet for the active class, one SMIL per content document with sentences (its pars may
play more than one chapter's audio, and a chapter spread over documents has its pars in each), and the chapter
audio, stored uncompressed.
"""
from __future__ import annotations

import html
import logging
import posixpath
import re
import time
import zipfile
from pathlib import Path
from urllib.parse import quote, unquote

from lxml import etree

from . import epub_text as et
from . import readalong
from .epub import Archive, check_drm, local_xpath, numeric_entity, read_package
from .plan import Plan
from .sections import BookError

__all__ = ["write_from_source", "MIN_MATCHED"]

log = logging.getLogger(__name__)

MIN_MATCHED = 0.9  # the share of the book's timed words that must be found in the original's text
MIN_CHAPTER_MATCHED = 0.5  # ... and of each chapter's: a chapter the original does not have would be left out

OPF_NS = "http://www.idpf.org/2007/opf"
DC_NS = "http://purl.org/dc/elements/1.1/"
XHTML_TYPE = "application/xhtml+xml"

# -- the package ---------------------------------------------------------------------------------------------------

def _decode(data: bytes) -> tuple[str, str]:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    m = et.ENCODING.match(data)
    encoding = m.group(1).decode().lower() if m else "utf-8"
    return data.decode(encoding), encoding


def _numeric(src: str) -> str:
    """HTML's named entities as numeric references (EPUB 3's XHTML has no DTD to name them), as epub.py reads them."""
    return et.NAMED.sub(lambda m: numeric_entity(et.NAMED_BYTES.match(m.group(0).encode())).decode(), src)


def _well_formed(src: str) -> bool:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=False)
    try:
        etree.fromstring(src.encode("utf-8") if not src.startswith("<?xml") else
                         re.sub(r"^<\?xml[^>]*\?>", "", src).encode("utf-8"), parser)
    except etree.XMLSyntaxError:
        return False
    return True


def _rel(target: str, base_dir: str) -> str:
    return quote(posixpath.relpath(target, base_dir or "."), safe="/")


def _unique(wanted: str, taken: set[str]) -> str:
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted}-{n}"
    taken.add(name)
    return name


_CSS = f""".{readalong.ACTIVE_CLASS} {{ background-color: #ffe58a; color: inherit; }}
"""


def _smil(pars: list[str]) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<smil xmlns="http://www.w3.org/ns/SMIL" '
            'xmlns:epub="http://www.idpf.org/2007/ops" version="3.0">\n<body>\n' + "\n".join(pars)
            + "\n</body>\n</smil>\n")


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


def _clock_ms(ms: int) -> str:
    return readalong.clock(ms / 1000)


# -- EPUB 2 to 3 ---------------------------------------------------------------------------------------------------

def _upgrade_metadata(opf: etree._Element, taken: set[str]) -> None:
    """EPUB 2's opf: attributes on the metadata as EPUB 3 refinements (role, file-as), or dropped (scheme, event);
    only the first dc:date kept (EPUB 3 has one)."""
    metadata = next(iter(opf.xpath(local_xpath("/package/metadata"))), None)
    if metadata is None:
        return
    refinements: list[tuple[str, str, str, str | None]] = []  # (id, property, value, scheme)
    dates = 0
    for el in list(metadata):
        if not isinstance(el.tag, str):
            continue
        if el.tag == f"{{{DC_NS}}}date":
            dates += 1
            if dates > 1:
                metadata.remove(el)
                continue
        wanted = []
        for key in list(el.attrib):
            if key.startswith(f"{{{OPF_NS}}}"):
                value, local = el.attrib.pop(key), key.split("}")[1]
                if local == "role" and value:
                    wanted.append(("role", value, "marc:relators"))
                elif local == "file-as" and value:
                    wanted.append(("file-as", value, None))
        if wanted and not el.get("id"):
            el.set("id", _unique("meta-" + etree.QName(el).localname, taken))
        refinements += [(el.get("id"), prop, value, scheme) for prop, value, scheme in wanted]
    etree.cleanup_namespaces(opf)  # (xmlns:opf, now unused, so that new elements take no opf: prefix)
    for el_id, prop, value, scheme in refinements:
        meta = _meta(metadata, prop, value, refines=f"#{el_id}")
        if scheme:
            meta.set("scheme", scheme)


def _meta(metadata: etree._Element, prop: str, value: str, refines: str = "") -> etree._Element:
    meta = etree.SubElement(metadata, f"{{{OPF_NS}}}meta", property=prop)
    if refines:
        meta.set("refines", refines)
    meta.text = value
    meta.tail = "\n"
    return meta


def _nav_from_ncx(archive: Archive, ncx_path: str, nav_path: str, title: str, language: str) -> str | None:
    """An EPUB 3 navigation document with the NCX's table of contents."""
    data = archive.read(ncx_path) if ncx_path else None
    if not data:
        return None
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True, recover=True))
    except etree.XMLSyntaxError:
        return None
    if root is None:
        return None
    base = posixpath.dirname(nav_path)

    def items(parent) -> str:
        out = []
        for point in parent.xpath(local_xpath("./navPoint")):
            label = " ".join(" ".join(point.xpath(local_xpath("./navLabel/text") + "//text()")).split()) or "Untitled"
            src = "".join(point.xpath(local_xpath("./content") + "/@src"))
            inner = items(point)
            if not src:
                continue
            path, _, fragment = src.partition("#")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(ncx_path), path))
            href = _rel(target, base) + (f"#{fragment}" if fragment else "")
            out.append(f'<li><a href="{html.escape(href)}">{html.escape(label)}</a>{inner}</li>')
        return f"<ol>{''.join(out)}</ol>" if out else ""

    entries = "".join(items(m) for m in root.xpath(local_xpath("//navMap")))
    if not entries:
        return None
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" '
            f'xmlns:epub="http://www.idpf.org/2007/ops" lang="{html.escape(language)}" '
            f'xml:lang="{html.escape(language)}">\n<head>\n<meta charset="UTF-8"/>\n<title>{html.escape(title)}'
            f'</title>\n</head>\n<body>\n<nav epub:type="toc" id="toc"><h1>{html.escape(title)}</h1>\n{entries}\n'
            '</nav>\n</body>\n</html>\n')


def _properties(src: str, root: et.El) -> set[str]:
    """The manifest properties EPUB 3 requires of a content document: scripted, svg, mathml."""
    found = set()
    for el in et.descendants(root):
        if isinstance(el, et.El):
            if el.local in ("script", "form"):
                found.add("scripted")
            elif el.local == "svg":
                found.add("svg")
            elif el.local == "math":
                found.add("mathml")
    return found


# -- writing -------------------------------------------------------------------------------------------------------

def write_from_source(out: Path, source: bytes, plan: Plan, chapters: list[readalong.EpubChapter]) -> bool:
    """Write the read-along EPUB 3 made from the original EPUB ``source`` atomically to ``out`` and return True; or
    write nothing and return False when it cannot be made faithfully (too few of the book's words found in the
    original's text, a damaged or protected original, an original that already has overlays, an audio file of a
    type EPUB does not play). ``chapters`` as readalong.write_epub takes them."""
    try:
        files = _build(source, plan, chapters)
    except Exception as exc:  # noqa: BLE001 - the plain read-along is made instead; why is logged
        log.warning("the read-along EPUB cannot be made from the original EPUB (%s: %s); using the book's text",
                    type(exc).__name__, exc, exc_info=not isinstance(exc, (BookError, _Refused)))
        return False
    if files is None:
        return False
    readalong.write_zip(out, files)
    return True


class _Refused(Exception):
    """Why the original cannot be used (logged, not raised to the caller)."""


def _build(source: bytes, plan: Plan, chapters: list[readalong.EpubChapter]):
    """The archive's files as (name, bytes or Path, stored) after the mimetype, or None (not faithful enough)."""
    for chapter in chapters:
        if chapter.audio.suffix not in readalong.AUDIO_TYPES or not chapter.audio.is_file():
            raise _Refused(f"chapter audio {chapter.audio.name} is not an EPUB audio type")
    archive = Archive(source, "the original EPUB")
    with archive.zip:
        check_drm(archive)
        package = read_package(archive)
        opf_data = archive.read(package.path)
        opf = etree.fromstring(opf_data, etree.XMLParser(resolve_entities=False, no_network=True))
        version = opf.get("version", "2.0").strip()
        epub2 = not version.startswith("3")
        if any(item.media_type == "application/smil+xml" for item in package.manifest.values()) \
                or opf.xpath(local_xpath("//manifest/item") + "[@media-overlay]"):
            raise _Refused("the original already has media overlays")
        nav_paths = {item.path for item in package.manifest.values() if "nav" in item.properties.split()}
        # The spine's documents, read as epub.py reads them.
        docs: list[et.Doc] = []
        tokens: list[et.Token] = []
        block = 0
        for path in package.spine:
            name = archive.find(path)
            if path in nav_paths or name is None:
                continue
            item = next((i for i in package.manifest.values() if i.path == path), None)
            if item is None or item.media_type != XHTML_TYPE:
                continue
            src, encoding = _decode(archive.read(name))
            src = _numeric(src)
            if not _well_formed(src):
                raise _Refused(f"{name} is not well-formed XML")
            root = et.tree(src)
            ids = {v for el in et.descendants(root) if isinstance(el, et.El)
                   for k, v in el.attrs.items() if k in ("id", "xml:id")}
            doc = et.Doc(len(docs), name, src, encoding, root, ids)
            docs.append(doc)
            block = et.read_words(doc, tokens, block)
        # The book's timed words, each with its chapter and sentence.
        timed: list[tuple[int, int, float]] = []  # (chapter, sentence number in the chapter, start)
        folded: list[str] = []
        said_all: list[list[readalong.Sentence]] = []
        for c, chapter in enumerate(chapters):
            said = readalong.sentences(chapter.words, c + 1)
            said_all.append(said)
            words = chapter.words["words"]
            k = 0
            for s, sentence in enumerate(said):
                for _ in sentence.words:
                    timed.append((c, s, float(words[k]["start"])))
                    folded.append(et.fold(words[k]["word"]))
                    k += 1
        pairs, equal = et.match(folded, [t.word for t in tokens])
        if not timed or equal < MIN_MATCHED * len(timed):
            log.info("the original EPUB holds %d of the book's %d words: the read-along is made from the plan",
                     equal, len(timed))
            return None
        per_chapter, sizes = [0] * len(chapters), [0] * len(chapters)
        for i in pairs:
            per_chapter[timed[i][0]] += 1
        for c, _, _ in timed:
            sizes[c] += 1
        if any(n < MIN_CHAPTER_MATCHED * max(1, size) for n, size in zip(per_chapter, sizes)):
            log.info("a chapter of the book is not in the original EPUB: the read-along is made from the plan")
            return None
        pieces = _pieces(docs, tokens, timed, pairs, said_all)
        _clips(pieces, chapters)
        # Ids: the sentence's for its first piece, then -2, -3 ...; none that the document has already.
        for piece in pieces:
            doc = docs[piece.doc]
            piece.id = _unique(piece.id or piece.sentence, doc.ids)
            doc.wraps.append(piece)
        return _package_files(archive, package, opf, epub2, docs, chapters, plan)


def _pieces(docs: list[et.Doc], tokens: list[et.Token], timed, pairs: dict[int, int], said_all) -> list[et.Piece]:
    """Each placed sentence's spans, in reading order, with their nominal clip starts."""
    pieces: list[et.Piece] = []
    start = 0
    for c, said in enumerate(said_all):
        for s, sentence in enumerate(said):
            span = range(start, start + len(sentence.words))
            start += len(sentence.words)
            placed = [(pairs[i], i) for i in span if i in pairs]
            if not placed:
                continue
            first_d, last_d = placed[0][0], placed[-1][0]
            time_of = {d: timed[i][2] for d, i in placed}
            # Groups: split where the block, the document or a skipped element comes between words.
            groups: list[list[int]] = [[first_d]]
            for d in range(first_d + 1, last_d + 1):
                t, prev = tokens[d], tokens[d - 1]
                if t.doc != prev.doc or t.block != prev.block or t.barrier:
                    groups.append([])
                groups[-1].append(d)
            made = 0
            for group in groups:
                doc = docs[tokens[group[0]].doc]
                for parent, lo, hi in et.wrap_range(doc.src, tokens[group[0]].start, tokens[group[-1]].end):
                    inside = [d for d in group if lo <= tokens[d].start[1] < hi and d in time_of]
                    if not inside:
                        continue
                    begin = sentence.begin if made == 0 else time_of[inside[0]]
                    made += 1
                    pieces.append(et.Piece(c, sentence.id, doc.index, parent, lo, hi, begin,
                                         id=sentence.id if made == 1 else f"{sentence.id}-{made}"))
    return pieces


def _clips(pieces: list[et.Piece], chapters: list[readalong.EpubChapter]) -> None:
    """Each chapter's pieces' clips cover its audio end to end: from its begin to the next piece's (the first from
    0, the last to the end of the file); a piece left with no time of its own is dropped."""
    for c, chapter in enumerate(chapters):
        mine = [p for p in pieces if p.chapter == c]
        duration = float(chapter.words["duration_s"])
        last = 0.0
        for k, piece in enumerate(mine):
            piece.begin = 0.0 if k == 0 else min(max(piece.begin, last), duration)
            last = piece.begin
        for k, piece in enumerate(mine):
            piece.end = mine[k + 1].begin if k + 1 < len(mine) else duration
    keep = [p for p in pieces if _ms(p.end) > _ms(p.begin)]
    pieces[:] = keep
    for c, chapter in enumerate(chapters):
        mine = [p for p in pieces if p.chapter == c]
        for k, piece in enumerate(mine):
            piece.begin = 0.0 if k == 0 else piece.begin
            piece.end = mine[k + 1].begin if k + 1 < len(mine) else float(chapter.words["duration_s"])


def _package_files(archive: Archive, package, opf: etree._Element, epub2: bool, docs: list[et.Doc],
                   chapters: list[readalong.EpubChapter], plan: Plan):
    opf_dir = posixpath.dirname(package.path)
    folded_names = {n.lower() for n in archive.names}
    folder, n = "readalong", 1
    while any(name.startswith(posixpath.join(opf_dir, folder).lower() + "/") for name in folded_names):
        n += 1
        folder = f"readalong{n}"
    base = posixpath.join(opf_dir, folder)
    css_path = f"{base}/style.css"
    audio_paths = [f"{base}/audio/{k + 1:03d}{c.audio.suffix}" for k, c in enumerate(chapters)]
    taken = {el.get("id") for el in opf.iter() if isinstance(el.tag, str) and el.get("id")}
    manifest = next(iter(opf.xpath(local_xpath("/package/manifest"))))
    metadata = next(iter(opf.xpath(local_xpath("/package/metadata"))))
    ns = opf.nsmap.get(None) or OPF_NS
    item_tag = f"{{{ns}}}item"
    items_by_path = {}
    for el in manifest.xpath(local_xpath("./item")):
        if el.get("href"):
            target = posixpath.normpath(posixpath.join(opf_dir, html.unescape(el.get("href")).split("#")[0]))
            items_by_path[unquote(target).lower()] = el

    def add_item(href_path: str, media_type: str, wanted_id: str, properties: str = "") -> str:
        el = etree.SubElement(manifest, item_tag, id=_unique(wanted_id, taken), href=_rel(href_path, opf_dir))
        el.set("media-type", media_type)
        if properties:
            el.set("properties", properties)
        el.tail = "\n"
        return el.get("id")

    out: list[tuple[str, bytes | Path, bool]] = []
    replaced: dict[str, bytes] = {}
    durations: list[tuple[str, int]] = []
    add_item(css_path, "text/css", "readalong-css")
    for k, (path, chapter) in enumerate(zip(audio_paths, chapters)):
        add_item(path, readalong.AUDIO_TYPES[chapter.audio.suffix], f"readalong-audio{k + 1}")
    for doc in docs:
        if not doc.wraps:
            continue
        smil_path = f"{base}/{doc.index + 1:03d}.smil"
        smil_dir = posixpath.dirname(smil_path)
        doc_href = _rel(doc.path, smil_dir)
        pars = []
        total = 0
        for k, piece in enumerate(sorted(doc.wraps, key=lambda p: p.lo)):
            begin, end = _ms(piece.begin), _ms(piece.end)
            total += end - begin
            pars.append(f'<par id="{html.escape(piece.id)}-par"><text src="{doc_href}#{quote(piece.id)}"/>'
                        f'<audio src="{_rel(audio_paths[piece.chapter], smil_dir)}" '
                        f'clipBegin="{_clock_ms(begin)}" clipEnd="{_clock_ms(end)}"/></par>')
        smil_id = add_item(smil_path, "application/smil+xml", f"readalong-smil{doc.index + 1}")
        out.append((smil_path, _smil(pars).encode(), False))
        durations.append((smil_id, total))
        item = items_by_path.get(doc.path.lower())
        if item is None:
            raise _Refused(f"{doc.path} is not in the manifest")
        item.set("media-overlay", smil_id)
        replaced[doc.path] = _spliced(doc, _rel(css_path, posixpath.dirname(doc.path)), epub2)
    if not durations:
        raise _Refused("no sentence was placed")
    if epub2:
        # Every XHTML document gets the HTML DOCTYPE (and numeric references), and the properties EPUB 3 asks for.
        for el in manifest.xpath(local_xpath("./item")):
            if el.get("media-type") != XHTML_TYPE or not el.get("href"):
                continue
            target = posixpath.normpath(posixpath.join(opf_dir, html.unescape(el.get("href")).split("#")[0]))
            name = archive.find(unquote(target))
            if name is None:
                continue
            if name in replaced:
                src, _ = _decode(replaced[name])
            else:
                raw = archive.read(name)
                src, encoding = _decode(raw)
                src = _numeric(src)
                src = _html_doctype(src)
                replaced[name] = src.encode(encoding if encoding != "utf-8-sig" else "utf-8-sig")
            props = set(el.get("properties", "").split()) | _properties(src, et.tree(src))
            if props:
                el.set("properties", " ".join(sorted(props)))
        _upgrade_metadata(opf, taken)
        opf.set("version", "3.0")
        # The cover image as EPUB 3 marks it.
        cover_id = "".join(opf.xpath(local_xpath("//metadata/meta") + "[@name='cover']/@content"))
        for el in manifest.xpath(local_xpath("./item")):
            if cover_id and el.get("id") == cover_id and (el.get("media-type") or "").startswith("image/"):
                props = set(el.get("properties", "").split()) | {"cover-image"}
                el.set("properties", " ".join(sorted(props)))
        if not any("nav" in (el.get("properties") or "").split() for el in manifest.xpath(local_xpath("./item"))):
            nav_path = f"{base}/nav.xhtml"
            ncx = package.manifest.get(package.ncx_id) or next(
                (i for i in package.manifest.values() if i.media_type == "application/x-dtbncx+xml"), None)
            nav = _nav_from_ncx(archive, ncx.path if ncx else "", nav_path, "Contents", plan.language or "en")
            if nav is None:
                nav = _nav_from_docs(docs, nav_path, plan.language or "en")
            out.append((nav_path, nav.encode(), False))
            add_item(nav_path, XHTML_TYPE, "readalong-nav", "nav")
    # Metadata: when it was made, how long each overlay and the whole book play, the class of the sentence read.
    etree.cleanup_namespaces(opf)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    modified = [m for m in metadata.xpath(local_xpath("./meta")) if m.get("property") == "dcterms:modified"]
    for m in modified[1:]:
        metadata.remove(m)
    if modified:
        modified[0].text = stamp
    else:
        _meta(metadata, "dcterms:modified", stamp)
    _meta(metadata, "media:duration", _clock_ms(sum(t for _, t in durations)))
    for smil_id, total in durations:
        _meta(metadata, "media:duration", _clock_ms(total), refines=f"#{smil_id}")
    _meta(metadata, "media:active-class", readalong.ACTIVE_CLASS)
    opf_bytes = etree.tostring(opf.getroottree(), xml_declaration=True, encoding="utf-8")
    # The original's files in their order (the package document and changed documents replaced), then ours.
    files: list[tuple[str, bytes | Path, bool]] = []
    seen = set()
    for info in archive.zip.infolist():
        name = info.filename
        if name in seen or name == "mimetype" or name.endswith("/"):
            continue
        seen.add(name)
        if name == archive.find(package.path):
            files.append((name, opf_bytes, False))
        elif name in replaced:
            files.append((name, replaced[name], False))
        else:
            files.append((name, archive.read(name), info.compress_type == zipfile.ZIP_STORED))
    files.append((css_path, _CSS.encode(), False))
    files += out
    files += [(path, chapter.audio, True) for path, chapter in zip(audio_paths, chapters)]
    return files


def _nav_from_docs(docs: list[et.Doc], nav_path: str, language: str) -> str:
    entries = "".join(f'<li><a href="{html.escape(_rel(d.path, posixpath.dirname(nav_path)))}">Part {d.index + 1}'
                      "</a></li>" for d in docs)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" '
            f'xmlns:epub="http://www.idpf.org/2007/ops" lang="{html.escape(language)}">\n<head>\n<title>Contents'
            f'</title>\n</head>\n<body>\n<nav epub:type="toc" id="toc"><h1>Contents</h1><ol>{entries}</ol></nav>\n'
            '</body>\n</html>\n')


def _html_doctype(src: str) -> str:
    """EPUB 3's XHTML has the HTML DOCTYPE (or none); EPUB 2's XHTML 1.1 one is replaced."""
    return et.DOCTYPE.sub("<!DOCTYPE html>", src, count=1)


def _spliced(doc: et.Doc, css_href: str, epub2: bool) -> bytes:
    """The document with its sentences' spans and the stylesheet link inserted, every other byte as it was."""
    inserts: list[tuple[int, int, str]] = []  # (offset, 0 closes before 1 opens, text)
    for piece in doc.wraps:
        inserts.append((piece.lo, 1, f'<span id="{html.escape(piece.id)}">'))
        inserts.append((piece.hi, 0, "</span>"))
    head = next((el for el in et.descendants(doc.root) if isinstance(el, et.El) and el.local == "head"), None)
    if head is not None and head.close_start > head.open_end:
        inserts.append((head.close_start, 0,
                        f'<link rel="stylesheet" type="text/css" href="{html.escape(css_href)}"/>'))
    src = doc.src
    parts, last = [], 0
    for offset, _, text in sorted(inserts, key=lambda x: (x[0], x[1])):
        parts += [src[last:offset], text]
        last = offset
    parts.append(src[last:])
    result = "".join(parts)
    if epub2:
        result = _html_doctype(result)
    return result.encode(doc.encoding)
