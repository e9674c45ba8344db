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

import bisect
import html
import logging
import posixpath
import re
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from urllib.parse import quote, unquote

from lxml import etree

from . import readalong
from .epub import (_BLOCK_TAGS, _NOTE_CLASS, _NOTE_MARK, _PAGE_CLASS, _PAGE_ID, _SKIP_TAGS, _SKIP_TYPES, _Archive,
                   _check_drm, _local, _numeric_entity, _package)
from .plan import Plan
from .sections import BookError

__all__ = ["write_from_source", "MIN_MATCHED"]

log = logging.getLogger(__name__)

MIN_MATCHED = 0.9  # the share of the book's timed words that must be found in the original's text
MIN_CHAPTER_MATCHED = 0.5  # ... and of each chapter's: a chapter the original does not have would be left out

OPF_NS = "http://www.idpf.org/2007/opf"
DC_NS = "http://purl.org/dc/elements/1.1/"
XHTML_TYPE = "application/xhtml+xml"

# Where a <span> may be put around content: inside phrasing elements, and around them.
_PHRASING = frozenset("a abbr acronym b bdi bdo big br cite code data del dfn em font i ins kbd label mark q s samp "
                      "small span strike strong sub sup time tt u var wbr".split())
# Parents a <span> cannot be a child of (text directly inside them is not valid XHTML anyway).
_NO_SPAN = frozenset("html head table thead tbody tfoot tr colgroup ul ol dl select optgroup datalist".split())
# Characters the reader removes before splitting into words (sections.clean_text).
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff\ufffd"), None)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_MARKUP = re.compile(
    r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>|<!DOCTYPE(?:[^\[>]|\[.*?\])*>"
    r"|<(/?)([^\s/>]+)((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>", re.S | re.I)
_ATTR = re.compile(r"([^\s=]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_ENTITY = re.compile(r"&(?:#[xX][0-9a-fA-F]+|#[0-9]+|[A-Za-z][A-Za-z0-9._-]*);")
_DOCTYPE = re.compile(r"<!DOCTYPE(?:[^\[>]|\[.*?\])*>", re.S | re.I)
_NAMED = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_NAMED_BYTES = re.compile(rb"&([A-Za-z][A-Za-z0-9]*);")
_ENCODING = re.compile(rb"^<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")


# -- a document as text with positions -------------------------------------------------------------------------

@dataclass(eq=False)
class _El:
    name: str  # as written, lowercased (the reader compares qualified names too)
    attrs: dict[str, str]
    parent: "_El | None"
    open_start: int
    open_end: int
    close_start: int = -1
    close_end: int = -1
    children: list = field(default_factory=list)  # _El and _Text, in order
    has_text: bool = False  # any non-whitespace text below it
    skipped: bool = False  # what the reader does not read (set while walking)

    @property
    def local(self) -> str:
        return self.name.rsplit(":", 1)[-1]


@dataclass(eq=False)
class _Text:
    start: int
    end: int
    parent: _El
    cdata: bool = False


def _tree(src: str) -> _El:
    """The elements of a well-formed XML document with their offsets in ``src``; the root is a virtual element."""
    root = _El("#document", {}, None, 0, 0)
    current = root
    last = 0

    def text(start: int, end: int, cdata: bool = False) -> None:
        if start < end:
            current.children.append(_Text(start, end, current, cdata))
            if src[start:end].strip():
                current.has_text = True

    for m in _MARKUP.finditer(src):
        text(last, m.start())
        last = m.end()
        if m.group(2) is None:
            if m.group(0).startswith("<![CDATA["):
                text(m.start(), m.end(), cdata=True)
            continue
        if m.group(1):  # an end tag
            current.close_start, current.close_end = m.start(), m.end()
            parent = current.parent
            parent.has_text |= current.has_text
            current = parent
            continue
        attrs = {a.group(1): html.unescape(a.group(2) if a.group(2) is not None else a.group(3))
                 for a in _ATTR.finditer(m.group(3))}
        el = _El(m.group(2).lower(), attrs, current, m.start(), m.end())
        current.children.append(el)
        if m.group(4):
            el.close_start = el.close_end = m.end()
        else:
            current = el
    text(last, len(src))
    root.close_start = root.close_end = len(src)
    return root


def _decoded(src: str, start: int, end: int):
    """(character, raw start, raw end) of the text src[start:end], its character references decoded."""
    pos = start
    for m in _ENTITY.finditer(src, start, end):
        for i in range(pos, m.start()):
            yield src[i], i, i + 1
        yield html.unescape(m.group(0)), m.start(), m.end()
        pos = m.end()
    for i in range(pos, end):
        yield src[i], i, i + 1


def _short_text(src: str, el: _El, limit: int) -> str | None:
    """epub._short_text on this tree: the element's stripped strings joined, or None past ``limit`` characters."""
    parts: list[str] = []
    length = 0
    stack = list(reversed(el.children))
    while stack:
        node = stack.pop()
        if isinstance(node, _El):
            stack.extend(reversed(node.children))
            continue
        raw = src[node.start:node.end]
        value = raw[9:-3] if node.cdata else html.unescape(raw)
        if value := value.strip():
            length += len(value)
            if length > limit:
                return None
            parts.append(value)
    return "".join(parts)


def _skipped(src: str, el: _El) -> bool:
    """epub._skipped for this tree: what an audiobook does not read aloud."""
    name, attrs = el.name, el.attrs
    if name in _SKIP_TAGS or "hidden" in attrs:
        return True
    types = " ".join(v for k, v in attrs.items() if k == "role" or k.endswith(":type"))
    if {t.rsplit(":", 1)[-1].removeprefix("doc-") for t in types.lower().split()} & _SKIP_TYPES:
        return True
    classes = attrs.get("class", "")
    if _NOTE_CLASS.search(classes):
        return True
    if (_PAGE_CLASS.search(classes) or _PAGE_ID.fullmatch(attrs.get("id", ""))) \
            and _short_text(src, el, 12) is not None:
        return True
    if name == "sup" and (any(isinstance(c, _El) and c.name == "a" for c in _descendants(el))
                          or _NOTE_MARK.fullmatch(_short_text(src, el, 12) or "-")):
        return True
    return name == "a" and "#" in attrs.get("href", "") and bool(_NOTE_MARK.fullmatch(_short_text(src, el, 12) or "-"))


def _descendants(el: _El):
    stack = list(reversed(el.children))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _El):
            stack.extend(reversed(node.children))


@dataclass(eq=False)
class _Token:
    word: str  # folded
    doc: int
    block: int
    start: tuple[_El, int]  # (parent, offset) before its first character
    end: tuple[_El, int]  # after its last
    barrier: bool  # something the reader skips (a note marker, a page number) lies between it and the word before


@dataclass(eq=False)
class _Doc:
    index: int
    path: str  # the member in the archive
    src: str
    encoding: str
    root: _El
    ids: set[str]
    wraps: list = field(default_factory=list)  # _Piece, in document order


def _fold(word: str) -> str:
    return _CONTROL.sub("", word.translate(_INVISIBLE)).casefold()


def _words(doc: _Doc, tokens: list[_Token], block: int) -> int:
    """Append the document's words in reading order (as epub._document reads them) to tokens; returns the next block
    number. Words are split at whitespace and block boundaries, not at inline elements."""
    src = doc.src
    body = next((el for el in _descendants(doc.root) if isinstance(el, _El) and el.local == "body"), doc.root)
    chars: list[tuple[str, _El | None, int, int]] = []  # (character, parent, raw start, raw end) of the block
    _SPACE = (" ", None, 0, 0)
    _BARRIER = ("", None, -1, -1)  # a skipped element: the words either side of it are not wrapped together

    def flush() -> None:
        nonlocal block
        word: list[tuple[str, _El | None, int, int]] = []
        pending = barrier = False
        for item in [*chars, _SPACE]:
            if item is _BARRIER:
                pending = True
            elif not item[0].isspace():
                if not word:
                    barrier, pending = pending, False
                word.append(item)
            elif word:
                folded = _fold("".join(c for c, *_ in word))
                if folded:
                    tokens.append(_Token(folded, doc.index, block, (word[0][1], word[0][2]),
                                         (word[-1][1], word[-1][3]), barrier))
                word = []
        chars.clear()
        block += 1

    stack: list[tuple[object, bool]] = [(body, False)]
    while stack:
        node, leaving = stack.pop()
        if isinstance(node, _Text):
            if not node.cdata:
                chars.extend((c, node.parent, a, b) for c, a, b in _decoded(src, node.start, node.end))
            continue
        if leaving:
            if node.name in _BLOCK_TAGS:
                flush()
            continue
        if node is not body and _skipped(src, node):
            node.skipped = True
            chars.append(_BARRIER)
            continue
        if node.name == "br":
            chars.append(_SPACE)
            continue
        if node.name in _BLOCK_TAGS:
            flush()
        elif node.name in ("td", "th"):
            chars.append(_SPACE)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.children))
    flush()
    return block


# -- matching the timed words to the text ----------------------------------------------------------------------

def _lis(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest run of pairs increasing in both (pairs sorted by the first)."""
    tails: list[int] = []
    tail_at: list[int] = []
    back = [-1] * len(pairs)
    for k, (_, j) in enumerate(pairs):
        pos = bisect.bisect_left(tails, j)
        if pos == len(tails):
            tails.append(j)
            tail_at.append(k)
        else:
            tails[pos], tail_at[pos] = j, k
        back[k] = tail_at[pos - 1] if pos else -1
    out = []
    k = tail_at[-1] if tail_at else -1
    while k >= 0:
        out.append(pairs[k])
        k = back[k]
    return out[::-1]


def _match(a: list[str], b: list[str]) -> tuple[dict[int, int], int]:
    """Pairs a index -> b index of two word lists in order (patience anchors, then difflib between them), and how
    many of them are equal words (a one-for-one replacement pairs its words too, for placing spans)."""
    pairs: dict[int, int] = {}
    equal = 0
    work = [(0, len(a), 0, len(b))]
    while work:
        a0, a1, b0, b1 = work.pop()
        if a0 >= a1 or b0 >= b1:
            continue
        if (a1 - a0) * (b1 - b0) > 4_000_000:
            seg_a, seg_b = Counter(a[a0:a1]), Counter(b[b0:b1])
            where = {b[j]: j for j in range(b0, b1) if seg_b[b[j]] == 1}
            anchors = _lis([(i, where[a[i]]) for i in range(a0, a1) if seg_a[a[i]] == 1 and a[i] in where])
            if anchors:
                last_i, last_j = a0 - 1, b0 - 1
                for i, j in anchors:
                    pairs[i] = j
                    equal += 1
                    work.append((last_i + 1, i, last_j + 1, j))
                    last_i, last_j = i, j
                work.append((last_i + 1, a1, last_j + 1, b1))
                continue
        matcher = SequenceMatcher(None, a[a0:a1], b[b0:b1], autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
                for k in range(i2 - i1):
                    pairs[a0 + i1 + k] = b0 + j1 + k
                equal += (i2 - i1) if op == "equal" else 0
    return pairs, equal


# -- wrapping ------------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Piece:
    chapter: int  # 0-based
    sentence: str  # the sentence's id
    doc: int
    parent: _El
    lo: int  # where its <span> opens ...
    hi: int  # ... and closes, in the document's text
    begin: float  # its clip
    end: float = 0.0
    id: str = ""


def _ignorable(src: str, el: _El, lo: int, hi: int) -> bool:
    """Whether el's content between offsets lo and hi is only whitespace, comments and empty, unskipped elements."""
    for child in el.children:
        if isinstance(child, _Text):
            a, b = max(child.start, lo), min(child.end, hi)
            if a < b and (child.cdata or src[a:b].strip()):
                return False
        elif child.open_start < hi and child.close_end > lo and (child.has_text or child.skipped):
            return False
    return True


def _phrasing_between(el: _El, lo: int, hi: int) -> bool:
    """Whether every element inside el between lo and hi (all the way down) may be inside a <span>."""
    for child in el.children:
        if isinstance(child, _El) and child.open_start < hi and child.close_end > lo:
            if child.local not in _PHRASING or child.skipped:
                return False
            if not all(isinstance(d, _Text) or (d.local in _PHRASING and not d.skipped) for d in _descendants(child)):
                return False
    return True


def _ancestors(el: _El) -> list[_El]:
    out = []
    while el is not None:
        out.append(el)
        el = el.parent
    return out


def _wrap_range(src: str, start: tuple[_El, int], end: tuple[_El, int]) -> list[tuple[_El, int, int]]:
    """Spans (parent, open at, close at) that together hold the text from start to end: one where it can be."""
    (ps, rs), (pe, re_) = start, end
    up_e = set(map(id, _ancestors(pe)))
    common = next(el for el in _ancestors(ps) if id(el) in up_e)
    # One span: lift each end up to the common parent over elements that hold nothing else before (after) it.
    lo, el = rs, ps
    ok = True
    while el is not common and ok:
        ok = el.local in _PHRASING and not el.skipped and _ignorable(src, el, el.open_end, lo)
        lo, el = el.open_start, el.parent
    hi, el = re_, pe
    while el is not common and ok:
        ok = el.local in _PHRASING and not el.skipped and _ignorable(src, el, hi, el.close_start)
        hi, el = el.close_end, el.parent
    if ok and common.local not in _NO_SPAN and _phrasing_between(common, lo, hi):
        return [(common, lo, hi)]
    # Several: up from the start to the common parent, across it, and down to the end.
    out: list[tuple[_El, int, int]] = []
    lo, el = rs, ps
    while el is not common:
        out.append((el, lo, el.close_start))
        lo, el = el.close_end, el.parent
    tail: list[tuple[_El, int, int]] = []
    hi, el = re_, pe
    while el is not common:
        tail.append((el, el.open_end, hi))
        hi, el = el.open_start, el.parent
    out.append((common, lo, hi))
    out += reversed(tail)
    return [(p, a, b) for p, a, b in out if a < b and p.local not in _NO_SPAN and not _ignorable(src, p, a, b)
            and _phrasing_between(p, a, b)]


# -- the package ---------------------------------------------------------------------------------------------------

def _decode(data: bytes) -> tuple[str, str]:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    m = _ENCODING.match(data)
    encoding = m.group(1).decode().lower() if m else "utf-8"
    return data.decode(encoding), encoding


def _numeric(src: str) -> str:
    """HTML's named entities as numeric references (EPUB 3's XHTML has no DTD to name them), as epub.py reads them."""
    return _NAMED.sub(lambda m: _numeric_entity(_NAMED_BYTES.match(m.group(0).encode())).decode(), src)


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
    return readalong._clock(ms / 1000)


# -- EPUB 2 to 3 ---------------------------------------------------------------------------------------------------

def _upgrade_metadata(opf: etree._Element, taken: set[str]) -> None:
    """EPUB 2's opf: attributes on the metadata as EPUB 3 refinements (role, file-as), or dropped (scheme, event);
    only the first dc:date kept (EPUB 3 has one)."""
    metadata = next(iter(opf.xpath(_local("/package/metadata"))), None)
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


def _nav_from_ncx(archive: _Archive, ncx_path: str, nav_path: str, title: str, language: str) -> str | None:
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
        for point in parent.xpath(_local("./navPoint")):
            label = " ".join(" ".join(point.xpath(_local("./navLabel/text") + "//text()")).split()) or "Untitled"
            src = "".join(point.xpath(_local("./content") + "/@src"))
            inner = items(point)
            if not src:
                continue
            path, _, fragment = src.partition("#")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(ncx_path), path))
            href = _rel(target, base) + (f"#{fragment}" if fragment else "")
            out.append(f'<li><a href="{html.escape(href)}">{html.escape(label)}</a>{inner}</li>')
        return f"<ol>{''.join(out)}</ol>" if out else ""

    entries = "".join(items(m) for m in root.xpath(_local("//navMap")))
    if not entries:
        return None
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" '
            f'xmlns:epub="http://www.idpf.org/2007/ops" lang="{html.escape(language)}" '
            f'xml:lang="{html.escape(language)}">\n<head>\n<meta charset="UTF-8"/>\n<title>{html.escape(title)}'
            f'</title>\n</head>\n<body>\n<nav epub:type="toc" id="toc"><h1>{html.escape(title)}</h1>\n{entries}\n'
            '</nav>\n</body>\n</html>\n')


def _properties(src: str, root: _El) -> set[str]:
    """The manifest properties EPUB 3 requires of a content document: scripted, svg, mathml."""
    found = set()
    for el in _descendants(root):
        if isinstance(el, _El):
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
    archive = _Archive(source, "the original EPUB")
    with archive.zip:
        _check_drm(archive)
        package = _package(archive)
        opf_data = archive.read(package.path)
        opf = etree.fromstring(opf_data, etree.XMLParser(resolve_entities=False, no_network=True))
        version = opf.get("version", "2.0").strip()
        epub2 = not version.startswith("3")
        if any(item.media_type == "application/smil+xml" for item in package.manifest.values()) \
                or opf.xpath(_local("//manifest/item") + "[@media-overlay]"):
            raise _Refused("the original already has media overlays")
        nav_paths = {item.path for item in package.manifest.values() if "nav" in item.properties.split()}
        # The spine's documents, read as epub.py reads them.
        docs: list[_Doc] = []
        tokens: list[_Token] = []
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
            root = _tree(src)
            ids = {v for el in _descendants(root) if isinstance(el, _El)
                   for k, v in el.attrs.items() if k in ("id", "xml:id")}
            doc = _Doc(len(docs), name, src, encoding, root, ids)
            docs.append(doc)
            block = _words(doc, tokens, block)
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
                    folded.append(_fold(words[k]["word"]))
                    k += 1
        pairs, equal = _match(folded, [t.word for t in tokens])
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


def _pieces(docs: list[_Doc], tokens: list[_Token], timed, pairs: dict[int, int], said_all) -> list[_Piece]:
    """Each placed sentence's spans, in reading order, with their nominal clip starts."""
    pieces: list[_Piece] = []
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
                for parent, lo, hi in _wrap_range(doc.src, tokens[group[0]].start, tokens[group[-1]].end):
                    inside = [d for d in group if lo <= tokens[d].start[1] < hi and d in time_of]
                    if not inside:
                        continue
                    begin = sentence.begin if made == 0 else time_of[inside[0]]
                    made += 1
                    pieces.append(_Piece(c, sentence.id, doc.index, parent, lo, hi, begin,
                                         id=sentence.id if made == 1 else f"{sentence.id}-{made}"))
    return pieces


def _clips(pieces: list[_Piece], chapters: list[readalong.EpubChapter]) -> None:
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


def _package_files(archive: _Archive, package, opf: etree._Element, epub2: bool, docs: list[_Doc],
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
    manifest = next(iter(opf.xpath(_local("/package/manifest"))))
    metadata = next(iter(opf.xpath(_local("/package/metadata"))))
    ns = opf.nsmap.get(None) or OPF_NS
    item_tag = f"{{{ns}}}item"
    items_by_path = {}
    for el in manifest.xpath(_local("./item")):
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
        for el in manifest.xpath(_local("./item")):
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
            props = set(el.get("properties", "").split()) | _properties(src, _tree(src))
            if props:
                el.set("properties", " ".join(sorted(props)))
        _upgrade_metadata(opf, taken)
        opf.set("version", "3.0")
        # The cover image as EPUB 3 marks it.
        cover_id = "".join(opf.xpath(_local("//metadata/meta") + "[@name='cover']/@content"))
        for el in manifest.xpath(_local("./item")):
            if cover_id and el.get("id") == cover_id and (el.get("media-type") or "").startswith("image/"):
                props = set(el.get("properties", "").split()) | {"cover-image"}
                el.set("properties", " ".join(sorted(props)))
        if not any("nav" in (el.get("properties") or "").split() for el in manifest.xpath(_local("./item"))):
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
    modified = [m for m in metadata.xpath(_local("./meta")) if m.get("property") == "dcterms:modified"]
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


def _nav_from_docs(docs: list[_Doc], nav_path: str, language: str) -> str:
    entries = "".join(f'<li><a href="{html.escape(_rel(d.path, posixpath.dirname(nav_path)))}">Part {d.index + 1}'
                      "</a></li>" for d in docs)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" '
            f'xmlns:epub="http://www.idpf.org/2007/ops" lang="{html.escape(language)}">\n<head>\n<title>Contents'
            f'</title>\n</head>\n<body>\n<nav epub:type="toc" id="toc"><h1>Contents</h1><ol>{entries}</ol></nav>\n'
            '</body>\n</html>\n')


def _html_doctype(src: str) -> str:
    """EPUB 3's XHTML has the HTML DOCTYPE (or none); EPUB 2's XHTML 1.1 one is replaced."""
    return _DOCTYPE.sub("<!DOCTYPE html>", src, count=1)


def _spliced(doc: _Doc, css_href: str, epub2: bool) -> bytes:
    """The document with its sentences' spans and the stylesheet link inserted, every other byte as it was."""
    inserts: list[tuple[int, int, str]] = []  # (offset, 0 closes before 1 opens, text)
    for piece in doc.wraps:
        inserts.append((piece.lo, 1, f'<span id="{html.escape(piece.id)}">'))
        inserts.append((piece.hi, 0, "</span>"))
    head = next((el for el in _descendants(doc.root) if isinstance(el, _El) and el.local == "head"), None)
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
