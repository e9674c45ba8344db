"""The text of an EPUB's content documents with positions, for the read-along made from the book's own EPUB
(chatterbox/books/epub_readalong.py): a small tokenizer that keeps where every tag and text starts, the words read
the way epub.py reads them (its skip rules), their match with the book's timed words, and where a sentence's span
can go. Nothing here writes: epub_readalong splices the spans in.
"""
from __future__ import annotations

import bisect
import html
import re
from collections import Counter
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from .epub import BLOCK_TAGS, NOTE_CLASS, NOTE_MARK, PAGE_CLASS, PAGE_ID, SKIP_TAGS, SKIP_TYPES

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
DOCTYPE = re.compile(r"<!DOCTYPE(?:[^\[>]|\[.*?\])*>", re.S | re.I)
NAMED = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
NAMED_BYTES = re.compile(rb"&([A-Za-z][A-Za-z0-9]*);")
ENCODING = re.compile(rb"^<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")


# -- a document as text with positions -------------------------------------------------------------------------

@dataclass(eq=False)
class El:
    name: str  # as written, lowercased (the reader compares qualified names too)
    attrs: dict[str, str]
    parent: "El | None"
    open_start: int
    open_end: int
    close_start: int = -1
    close_end: int = -1
    children: list = field(default_factory=list)  # El and Text, in order
    has_text: bool = False  # any non-whitespace text below it
    skipped: bool = False  # what the reader does not read (set while walking)

    @property
    def local(self) -> str:
        return self.name.rsplit(":", 1)[-1]


@dataclass(eq=False)
class Text:
    start: int
    end: int
    parent: El
    cdata: bool = False


def tree(src: str) -> El:
    """The elements of a well-formed XML document with their offsets in ``src``; the root is a virtual element."""
    root = El("#document", {}, None, 0, 0)
    current = root
    last = 0

    def text(start: int, end: int, cdata: bool = False) -> None:
        if start < end:
            current.children.append(Text(start, end, current, cdata))
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
        el = El(m.group(2).lower(), attrs, current, m.start(), m.end())
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


def _short_text(src: str, el: El, limit: int) -> str | None:
    """epub._short_text on this tree: the element's stripped strings joined, or None past ``limit`` characters."""
    parts: list[str] = []
    length = 0
    stack = list(reversed(el.children))
    while stack:
        node = stack.pop()
        if isinstance(node, El):
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


def _skipped(src: str, el: El) -> bool:
    """epub._skipped for this tree: what an audiobook does not read aloud."""
    name, attrs = el.name, el.attrs
    if name in SKIP_TAGS or "hidden" in attrs:
        return True
    types = " ".join(v for k, v in attrs.items() if k == "role" or k.endswith(":type"))
    if {t.rsplit(":", 1)[-1].removeprefix("doc-") for t in types.lower().split()} & SKIP_TYPES:
        return True
    classes = attrs.get("class", "")
    if NOTE_CLASS.search(classes):
        return True
    if (PAGE_CLASS.search(classes) or PAGE_ID.fullmatch(attrs.get("id", ""))) \
            and _short_text(src, el, 12) is not None:
        return True
    if name == "sup" and (any(isinstance(c, El) and c.name == "a" for c in descendants(el))
                          or NOTE_MARK.fullmatch(_short_text(src, el, 12) or "-")):
        return True
    return name == "a" and "#" in attrs.get("href", "") and bool(NOTE_MARK.fullmatch(_short_text(src, el, 12) or "-"))


def descendants(el: El):
    stack = list(reversed(el.children))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, El):
            stack.extend(reversed(node.children))


@dataclass(eq=False)
class Token:
    word: str  # folded
    doc: int
    block: int
    start: tuple[El, int]  # (parent, offset) before its first character
    end: tuple[El, int]  # after its last
    barrier: bool  # something the reader skips (a note marker, a page number) lies between it and the word before


@dataclass(eq=False)
class Doc:
    index: int
    path: str  # the member in the archive
    src: str
    encoding: str
    root: El
    ids: set[str]
    wraps: list = field(default_factory=list)  # Piece, in document order


def fold(word: str) -> str:
    return _CONTROL.sub("", word.translate(_INVISIBLE)).casefold()


def read_words(doc: Doc, tokens: list[Token], block: int) -> int:
    """Append the document's words in reading order (as epub._document reads them) to tokens; returns the next block
    number. Words are split at whitespace and block boundaries, not at inline elements."""
    src = doc.src
    body = next((el for el in descendants(doc.root) if isinstance(el, El) and el.local == "body"), doc.root)
    chars: list[tuple[str, El | None, int, int]] = []  # (character, parent, raw start, raw end) of the block
    _SPACE = (" ", None, 0, 0)
    _BARRIER = ("", None, -1, -1)  # a skipped element: the words either side of it are not wrapped together

    def flush() -> None:
        nonlocal block
        word: list[tuple[str, El | None, int, int]] = []
        pending = barrier = False
        for item in [*chars, _SPACE]:
            if item is _BARRIER:
                pending = True
            elif not item[0].isspace():
                if not word:
                    barrier, pending = pending, False
                word.append(item)
            elif word:
                folded = fold("".join(c for c, *_ in word))
                if folded:
                    tokens.append(Token(folded, doc.index, block, (word[0][1], word[0][2]),
                                         (word[-1][1], word[-1][3]), barrier))
                word = []
        chars.clear()
        block += 1

    stack: list[tuple[object, bool]] = [(body, False)]
    while stack:
        node, leaving = stack.pop()
        if isinstance(node, Text):
            if not node.cdata:
                chars.extend((c, node.parent, a, b) for c, a, b in _decoded(src, node.start, node.end))
            continue
        if leaving:
            if node.name in BLOCK_TAGS:
                flush()
            continue
        if node is not body and _skipped(src, node):
            node.skipped = True
            chars.append(_BARRIER)
            continue
        if node.name == "br":
            chars.append(_SPACE)
            continue
        if node.name in BLOCK_TAGS:
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


def match(a: list[str], b: list[str]) -> tuple[dict[int, int], int]:
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
class Piece:
    chapter: int  # 0-based
    sentence: str  # the sentence's id
    doc: int
    parent: El
    lo: int  # where its <span> opens ...
    hi: int  # ... and closes, in the document's text
    begin: float  # its clip
    end: float = 0.0
    id: str = ""


def _ignorable(src: str, el: El, lo: int, hi: int) -> bool:
    """Whether el's content between offsets lo and hi is only whitespace, comments and empty, unskipped elements."""
    for child in el.children:
        if isinstance(child, Text):
            a, b = max(child.start, lo), min(child.end, hi)
            if a < b and (child.cdata or src[a:b].strip()):
                return False
        elif child.open_start < hi and child.close_end > lo and (child.has_text or child.skipped):
            return False
    return True


def _phrasing_between(el: El, lo: int, hi: int) -> bool:
    """Whether every element inside el between lo and hi (all the way down) may be inside a <span>."""
    for child in el.children:
        if isinstance(child, El) and child.open_start < hi and child.close_end > lo:
            if child.local not in _PHRASING or child.skipped:
                return False
            if not all(isinstance(d, Text) or (d.local in _PHRASING and not d.skipped) for d in descendants(child)):
                return False
    return True


def _ancestors(el: El) -> list[El]:
    out = []
    while el is not None:
        out.append(el)
        el = el.parent
    return out


def wrap_range(src: str, start: tuple[El, int], end: tuple[El, int]) -> list[tuple[El, int, int]]:
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
    out: list[tuple[El, int, int]] = []
    lo, el = rs, ps
    while el is not common:
        out.append((el, lo, el.close_start))
        lo, el = el.close_end, el.parent
    tail: list[tuple[El, int, int]] = []
    hi, el = re_, pe
    while el is not common:
        tail.append((el, el.open_end, hi))
        hi, el = el.open_start, el.parent
    out.append((common, lo, hi))
    out += reversed(tail)
    return [(p, a, b) for p, a, b in out if a < b and p.local not in _NO_SPAN and not _ignorable(src, p, a, b)
            and _phrasing_between(p, a, b)]
