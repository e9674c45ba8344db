"""EPUB 2 and 3: metadata, cover and chapters (from the table of contents, in spine order) as clean text.

Read with zipfile and lxml rather than ebooklib: a damaged or DRM-protected book must become a clear error before
synthesis, and ebooklib either raises bare KeyErrors on such books or reads them without noticing.
"""
from __future__ import annotations

import io
import posixpath
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from html.entities import name2codepoint
from urllib.parse import unquote, urldefrag

from bs4 import BeautifulSoup, NavigableString, Tag, XMLParsedAsHTMLWarning
from bs4.element import CData
from lxml import etree

from .sections import BookError, Section, clean_text

__all__ = ["read_epub", "is_epub", "Archive", "read_package", "check_drm", "local_xpath", "numeric_entity"]

_MAX_MEMBER = 64 * 2**20  # one unpacked document or image; a bigger one is a zip bomb, not a chapter
# Everything read from one archive, together. English text deflates about 4x here and as XHTML about 4.5x
# (measured on licence texts, which repeat more than a novel does), so even a 50 MB upload (CHATTERBOX_BOOK_MAX_MB)
# of nothing but text unpacks to under 230 MB; more is a zip bomb spread over many members. It also bounds the
# work: BeautifulSoup reads about 3 MB of XHTML a second here (a 16 MB document: 4.9 s, 344 MB of memory).
_MAX_UNPACKED = 256 * 2**20
# Counts no real book comes near: a long novel has 50-150 documents and as many TOC entries, a whole Bible with a
# document per chapter about 1,200, an illustrated fixed-layout book a document and an image per page.
_MAX_MEMBERS = 50_000
_MAX_SPINE = 10_000  # distinct documents in the reading order
_MAX_TOC = 50_000  # table-of-contents entries (nested sections included)
_FONT_OBFUSCATION = frozenset(("http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"))
_FONT_FILE = re.compile(r"\.(?:ttf|otf|woff2?|eot|pfb|pfm)$", re.I)
_DRM_FILES = ("META-INF/rights.xml", "META-INF/sinf.xml", "META-INF/license.lcpl")
_DRM_MESSAGE = ("this EPUB is DRM-protected; remove the protection with the tool you are licensed to use, "
                "or upload a DRM-free copy")

# What an audiobook does not read aloud: navigation, page numbers, note markers and the notes themselves.
BLOCK_TAGS = frozenset("p div h1 h2 h3 h4 h5 h6 li blockquote section article header footer main aside figure "
                        "figcaption table tr caption ul ol dl dt dd pre hr body address center".split())
SKIP_TAGS = frozenset("head title nav script style svg math img audio video object iframe noscript template rt rp "
                       "button input select textarea map".split())
SKIP_TYPES = frozenset("pagebreak noteref footnote footnotes endnote endnotes rearnote rearnotes toc landmarks "
                        "page-list loi lot backlink".split())
PAGE_CLASS = re.compile(r"pagenum|page[-_]?number", re.I)
NOTE_CLASS = re.compile(r"(?:^|\s)(?:footnotes?|endnotes?|noteref|fnref|footnote-?(?:ref|marker))(?:\s|$)", re.I)
PAGE_ID = re.compile(r"(?:page|pg)[_-]?\d+", re.I)
NOTE_MARK = re.compile(r"[\[(]?(?:\d{1,3}|[ivx]{1,5}|[*\u2020\u2021\u00a7\u00b6#]{1,3})[\])]?")
_SKIP_TITLES = frozenset(("cover", "title page", "titlepage", "contents", "table of contents", "toc"))
_FRONT_MATTER_WORDS = 30  # fewer words before the first chapter is a cover or title page, not worth reading


def local_xpath(xpath: str) -> str:
    """"metadata/title" -> a namespace-blind XPath, since EPUBs disagree on prefixes."""
    return "/".join(f"*[local-name()='{step}']" if step not in ("", ".") else step for step in xpath.split("/"))


@dataclass
class _Item:
    path: str
    media_type: str
    properties: str = ""


@dataclass
class _Entry:
    title: str
    path: str
    fragment: str
    depth: int
    has_children: bool


@dataclass
class _Package:
    path: str
    meta: dict[str, str]
    manifest: dict[str, _Item]
    spine: list[str]
    ncx_id: str = ""
    cover_id: str = ""


@dataclass
class _Document:
    segments: list[tuple[str | None, list[str]]] = field(default_factory=lambda: [(None, [])])
    heading: str = ""
    title: str = ""
    link_share: float = 0.0


class Archive:
    """The ZIP with case-tolerant lookup and size limits; every failure is a corrupt_epub BookError."""

    def __init__(self, data: bytes, label: str):
        self.label = label
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, OSError, ValueError):
            raise BookError(f"{label} is not a valid EPUB: it is not a ZIP archive (it may be damaged or incomplete)",
                            "corrupt_epub") from None
        if len(self.zip.infolist()) > _MAX_MEMBERS:
            raise BookError(f"{label} holds {len(self.zip.infolist()):,} files; an EPUB may hold at most "
                            f"{_MAX_MEMBERS:,}", "too_large")
        self.names = {info.filename for info in self.zip.infolist()}
        self.folded = {name.lower(): name for name in self.names}
        self.unpacked = 0  # bytes read so far, against _MAX_UNPACKED

    def size(self, path: str) -> int:
        """The unpacked size the archive declares for a member (zipfile stops reading there); 0 if missing."""
        name = self.find(path)
        return self.zip.getinfo(name).file_size if name is not None else 0

    def check_budget(self, more: int, what: str) -> None:
        """BookError too_large when reading ``more`` bytes would unpack the archive past _MAX_UNPACKED."""
        if self.unpacked + more > _MAX_UNPACKED:
            raise BookError(f"{self.label} unpacks to more than {_MAX_UNPACKED // 2**20} MB ({what}); "
                            "a book is far smaller, so this looks like a zip bomb", "too_large")

    def find(self, path: str) -> str | None:
        return path if path in self.names else self.folded.get(path.lower())

    def read(self, path: str) -> bytes | None:
        name = self.find(path)
        if name is None:
            return None
        size = self.zip.getinfo(name).file_size
        if size > _MAX_MEMBER:
            raise BookError(f"{self.label}: {name} unpacks to more than {_MAX_MEMBER // 2**20} MB", "too_large")
        self.check_budget(size, f"reading {name} took it past the limit")
        self.unpacked += size
        try:
            return self.zip.read(name)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, ValueError, EOFError) as exc:
            raise BookError(f"{self.label} is not a valid EPUB: {name} cannot be unpacked ({exc})",
                            "corrupt_epub") from None

    def xml(self, path: str, what: str) -> etree._Element:
        data = self.read(path)
        if data is None:
            raise BookError(f"{self.label} is not a valid EPUB: {what} {path} is missing", "corrupt_epub")
        try:
            return etree.fromstring(data, _xml_parser())
        except etree.XMLSyntaxError as exc:
            raise BookError(f"{self.label} is not a valid EPUB: {what} {path} is not valid XML ({exc})",
                            "corrupt_epub") from None


def _xml_parser(recover: bool = False) -> etree.XMLParser:
    # A parser per call (lxml parsers are not shared across threads); no network, no external entities.
    return etree.XMLParser(resolve_entities=False, no_network=True, recover=recover, remove_comments=True)


def _resolve(base: str, href: str) -> tuple[str, str]:
    """(path inside the ZIP, fragment) of an href relative to the document at base."""
    href, fragment = urldefrag(href.strip())
    href = unquote(href)
    if not href:  # "#note-3": the same document
        return base, unquote(fragment)
    path = href.lstrip("/") if href.startswith("/") else posixpath.join(posixpath.dirname(base), href)
    return posixpath.normpath(path).removeprefix("./"), unquote(fragment)


def check_drm(archive: Archive) -> None:
    """DRM (Adobe, Apple, Readium LCP, or encrypted content documents) makes the text unreadable: refuse it."""
    if any(archive.find(name) for name in _DRM_FILES):
        raise BookError(_DRM_MESSAGE, "drm_protected")
    if not archive.find("META-INF/encryption.xml"):
        return
    root = archive.xml("META-INF/encryption.xml", "the encryption list")
    for data in root.xpath(local_xpath("//EncryptedData")):
        algorithm = "".join(data.xpath(local_xpath("./EncryptionMethod") + "/@Algorithm"))
        for uri in data.xpath(local_xpath("./CipherData/CipherReference") + "/@URI"):
            # Obfuscated (or even encrypted) fonts leave the text readable; anything else encrypted does not.
            if algorithm not in _FONT_OBFUSCATION and not _FONT_FILE.search(unquote(uri)):
                raise BookError(_DRM_MESSAGE, "drm_protected")


def read_package(archive: Archive) -> _Package:
    container = archive.xml("META-INF/container.xml", "the container file")
    paths = container.xpath(local_xpath("//rootfile") + "[@media-type='application/oebps-package+xml']/@full-path") \
        or container.xpath(local_xpath("//rootfile") + "/@full-path")
    if not paths:
        raise BookError(f"{archive.label} is not a valid EPUB: META-INF/container.xml names no package document",
                        "corrupt_epub")
    path = unquote(paths[0]).lstrip("/")
    opf = archive.xml(path, "the package document")

    def text(node) -> str:
        return clean_text("".join(node.itertext()))

    meta: dict[str, str] = {}
    if titles := [t for t in map(text, opf.xpath(local_xpath("//metadata/title"))) if t]:
        meta["title"] = titles[0]
    # EPUB 3 gives a creator's role in a <meta refines="#id">, EPUB 2 in an opf:role attribute.
    roles = {"#" + m.get("refines", "").lstrip("#"): text(m)
             for m in opf.xpath(local_xpath("//metadata/meta") + "[@property='role']")}
    authors = []
    for creator in opf.xpath(local_xpath("//metadata/creator")):
        role = next((v for k, v in creator.attrib.items() if k.endswith("role")), "") \
            or roles.get(f"#{creator.get('id', '')}", "")
        if text(creator) and role.lower() in ("", "aut"):
            authors.append(text(creator))
    if authors:
        meta["author"] = ", ".join(authors)
    if languages := [t for t in map(text, opf.xpath(local_xpath("//metadata/language"))) if t]:
        meta["language"] = languages[0]
    manifest = {}
    for item in opf.xpath(local_xpath("//manifest/item")):
        if item.get("id") and item.get("href"):
            manifest[item.get("id")] = _Item(_resolve(path, item.get("href"))[0], item.get("media-type", ""),
                                             item.get("properties", ""))
    spine_node = next(iter(opf.xpath(local_xpath("//spine"))), None)
    # A document the spine names twice is read once: reading it each time, 3,000 mentions of one 180 KB document
    # took 19 s, and of a 64 MB one would unpack gigabytes.
    spine = list(dict.fromkeys(
        manifest[ref.get("idref")].path for ref in opf.xpath(local_xpath("//spine/itemref"))
        if ref.get("idref") in manifest and ref.get("linear", "yes") != "no"
        and not manifest[ref.get("idref")].media_type.startswith("image/")))
    if len(spine) > _MAX_SPINE:
        raise BookError(f"{archive.label}: its reading order (spine) has {len(spine):,} documents; a book may have "
                        f"at most {_MAX_SPINE:,}", "too_large")
    if not spine:
        raise BookError(f"{archive.label} is not a valid EPUB: the package document has no reading order (spine)",
                        "corrupt_epub")
    if not any(archive.find(p) for p in spine):
        raise BookError(f"{archive.label} is not a valid EPUB: none of the documents in its spine is in the archive",
                        "corrupt_epub")
    cover = "".join(opf.xpath(local_xpath("//metadata/meta") + "[@name='cover']/@content"))
    return _Package(path, meta, manifest, spine, spine_node.get("toc", "") if spine_node is not None else "", cover)


def _soup(data: bytes) -> BeautifulSoup:
    """XHTML parsed as XML (so <span/> stays empty), with HTML's named entities; real tag soup as HTML."""
    for candidate in (data, re.sub(rb"&([A-Za-z][A-Za-z0-9]*);", numeric_entity, data)):
        try:
            etree.fromstring(candidate, _xml_parser())
        except etree.XMLSyntaxError:
            continue
        return BeautifulSoup(candidate, "xml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        return BeautifulSoup(data, "lxml")


def numeric_entity(match: re.Match) -> bytes:
    name = match[1].decode()
    if name in ("amp", "lt", "gt", "quot", "apos") or name not in name2codepoint:
        return match[0]
    return f"&#{name2codepoint[name]};".encode()


def _attr(tag: Tag, name: str) -> str:
    value = tag.get(name) or ""
    return " ".join(value) if isinstance(value, list) else value


def _semantic_types(tag: Tag) -> str:
    """A tag's epub:type (any prefix) and ARIA role values. beautifulsoup4 4.15's XML parser names a namespaced
    attribute by its local name alone ("type", its namespace apart), where earlier versions kept "epub:type"."""
    values = []
    for key in tag.attrs:
        namespace = getattr(key, "namespace", None)
        if key == "role" or key.endswith(":type") or (namespace and getattr(key, "name", key) == "type"):
            values.append(_attr(tag, key))
    return " ".join(values)


def _skipped(tag: Tag, name: str) -> bool:
    if name in SKIP_TAGS or tag.has_attr("hidden"):
        return True
    types = _semantic_types(tag)
    if {t.rsplit(":", 1)[-1].removeprefix("doc-") for t in types.lower().split()} & SKIP_TYPES:
        return True
    classes = _attr(tag, "class")
    if NOTE_CLASS.search(classes):
        return True
    if (PAGE_CLASS.search(classes) or PAGE_ID.fullmatch(_attr(tag, "id"))) \
            and _short_text(tag, 12) is not None:  # a page number is short; a page of text wrapped in an id is not
        return True
    if name == "sup" and (tag.find("a") or NOTE_MARK.fullmatch(_short_text(tag, 12) or "-")):
        return True
    return name == "a" and "#" in _attr(tag, "href") and bool(NOTE_MARK.fullmatch(_short_text(tag, 12) or "-"))


def _short_text(tag: Tag, limit: int) -> str | None:
    """tag.get_text(strip=True) when it is at most ``limit`` characters, else None, reading no further than that
    (page-number ids on nested wrappers around a whole chapter would each read all the text below them)."""
    parts: list[str] = []
    length = 0
    for text in tag.stripped_strings:
        length += len(text)
        if length > limit:
            return None
        parts.append(text)
    return "".join(parts)


def _document(data: bytes, split_ids: set[str]) -> _Document:
    """A content document's paragraphs, split into segments where an element has one of split_ids as its id."""
    soup = _soup(data)
    doc = _Document()
    heading = soup.find(["h1", "h2", "h3"])
    doc.heading = clean_text(heading.get_text(" ")) if heading else ""
    title = soup.find("title")
    doc.title = clean_text(title.get_text(" ")) if title else ""
    buffer: list[str] = []
    chars = link_chars = links = 0

    def flush() -> None:
        if text := clean_text("".join(buffer)):
            doc.segments[-1][1].append(text)
        buffer.clear()

    # An explicit stack rather than recursion: deeply nested markup must not hit Python's recursion limit.
    stack: list[tuple[object, bool, bool]] = [(soup.find("body") or soup, False, False)]
    in_link = 0
    while stack:
        node, leaving, is_link = stack.pop()
        if leaving:
            if node.name.lower() in BLOCK_TAGS:
                flush()
            in_link -= is_link
            continue
        if isinstance(node, NavigableString):
            if type(node) in (NavigableString, CData):
                buffer.append(str(node))
                chars += len(node.strip())
                link_chars += len(node.strip()) if in_link else 0
            continue
        if not isinstance(node, Tag):
            continue
        name = node.name.lower()
        if (anchor := node.get("id") or (node.get("name") if name == "a" else None)) in split_ids:
            flush()
            doc.segments.append((anchor, []))
        if _skipped(node, name):
            continue
        if name == "br":
            buffer.append(" ")
            continue
        if name in BLOCK_TAGS:
            flush()
        elif name in ("td", "th"):
            buffer.append(" ")
        is_link = name == "a" and bool(node.get("href"))
        links += is_link
        in_link += is_link
        stack.append((node, True, is_link))
        stack.extend((child, False, False) for child in reversed(node.contents))
    flush()
    # A page that is mostly links (an HTML table of contents) has nothing to read aloud.
    doc.link_share = link_chars / chars if chars and links >= 3 else 0.0
    return doc


def _toc(archive: Archive, package: _Package) -> list[_Entry]:
    """Table-of-contents entries: the EPUB 3 nav document, else the EPUB 2 NCX."""
    entries: list[_Entry] = []
    nav = next((item for item in package.manifest.values() if "nav" in item.properties.split()), None)
    if nav and (data := archive.read(nav.path)):
        soup = _soup(data)
        navs = soup.find_all("nav")
        toc = next((n for n in navs if "toc" in _semantic_types(n).lower()),
                   navs[0] if navs else None)
        if toc and (ol := toc.find("ol")):
            _nav_entries(ol, nav.path, entries, archive.label)
    if not entries:
        ncx = package.manifest.get(package.ncx_id) or next(
            (item for item in package.manifest.values() if item.media_type == "application/x-dtbncx+xml"), None)
        if ncx and (data := archive.read(ncx.path)):
            try:
                root = etree.fromstring(data, _xml_parser(recover=True))
            except etree.XMLSyntaxError:
                root = None
            if root is not None:
                for nav_map in root.xpath(local_xpath("//navMap")):
                    _ncx_entries(nav_map, ncx.path, entries, archive.label)
    return entries


def _add_entry(out: list[_Entry], entry: _Entry, label: str) -> None:
    if len(out) >= _MAX_TOC:
        raise BookError(f"{label}: its table of contents has more than {_MAX_TOC:,} entries, the most a book may "
                        "have", "too_large")
    out.append(entry)


def _inside(node: Tag, ancestor: Tag, stop: Tag) -> bool:
    """Whether ancestor encloses node, looking up no further than stop."""
    for parent in node.parents:
        if parent is ancestor:
            return True
        if parent is stop:
            return False
    return False


# Both TOC walks keep their own stack of lists being read: a list nested thousands deep (which the parsers
# accept) overflowed Python's recursion limit.
def _nav_entries(ol: Tag, base: str, out: list[_Entry], label: str) -> None:
    stack = [iter(ol.find_all("li", recursive=False))]
    while stack:
        li = next(stack[-1], None)
        if li is None:
            stack.pop()
            continue
        link = li.find("a", recursive=False) or li.find("a")
        sub = li.find("ol", recursive=False)
        if link and link.get("href") and not (sub and _inside(link, sub, li)):
            path, fragment = _resolve(base, _attr(link, "href"))
            _add_entry(out, _Entry(clean_text(link.get_text(" ")), path, fragment, len(stack), sub is not None),
                       label)
        if sub:
            stack.append(iter(sub.find_all("li", recursive=False)))


def _ncx_entries(nav_map, base: str, out: list[_Entry], label: str) -> None:
    stack = [iter(nav_map.xpath(local_xpath("./navPoint")))]
    while stack:
        point = next(stack[-1], None)
        if point is None:
            stack.pop()
            continue
        text = clean_text(" ".join(point.xpath(local_xpath("./navLabel/text") + "//text()")))
        children = point.xpath(local_xpath("./navPoint"))
        if src := "".join(point.xpath(local_xpath("./content") + "/@src")):
            path, fragment = _resolve(base, src)
            _add_entry(out, _Entry(text, path, fragment, len(stack), bool(children)), label)
        stack.append(iter(children))


def _cover(archive: Archive, package: _Package) -> tuple[bytes | None, str | None]:
    """The cover image (EPUB 3 cover-image, EPUB 2 <meta name="cover">, or an image named cover) if JPEG or PNG."""
    items = package.manifest
    candidates = [item for item in items.values() if "cover-image" in item.properties.split()]
    candidates += [item for key, item in items.items() if package.cover_id and package.cover_id in (key, item.path)]
    candidates += [item for key, item in items.items() if item.media_type.startswith("image/")
                   and ("cover" in key.lower() or "cover" in item.path.lower())]
    # (At most a few, each once: a manifest of thousands of images named "cover" would each be unpacked.)
    for path in list(dict.fromkeys(item.path for item in candidates))[:4]:
        data = archive.read(path)
        if data and data.startswith(b"\x89PNG\r\n\x1a\n"):
            return data, "image/png"
        if data and data.startswith(b"\xff\xd8\xff"):
            return data, "image/jpeg"
    return None, None


def _words(paragraphs: list[str]) -> int:
    return sum(len(p.split()) for p in paragraphs)


def _by_toc(archive: Archive, package: _Package, entries: list[_Entry], skip: set[str]) -> list[Section] | None:
    """Chapters from TOC entries mapped onto the spine; documents not in the TOC continue the chapter before.

    None when no entry points into the spine: the TOC is unusable.
    """
    order = {path: i for i, path in enumerate(package.spine)}
    # Two levels (parts and chapters) divide the book; deeper entries are sections read inside their chapter.
    max_depth = 3 if sum(e.depth == 1 for e in entries) == 1 else 2
    wanted = sorted((e for e in entries if e.path in order and e.depth <= max_depth), key=lambda e: order[e.path])
    if not wanted:
        return None
    # The entries of each document, grouped once (fragment -> first entry, in TOC order): picking them out of all
    # entries for every document multiplied the spine's length by the TOC's.
    by_path: dict[str, dict[str, _Entry]] = {}
    for entry in wanted:
        by_path.setdefault(entry.path, {}).setdefault(entry.fragment, entry)
    sections: list[Section] = []
    loose: set[int] = set()  # sections no real TOC entry started (front matter): kept only with real text
    in_chapter = False
    for path in package.spine:
        if path in skip or (data := archive.read(path)) is None:
            continue
        targets = by_path.get(path, {})
        doc = _document(data, {f for f in targets if f})
        if doc.link_share > 0.6:
            continue
        found = {anchor for anchor, _ in doc.segments[1:]}
        # An entry at the document itself, or at an anchor that is not there, starts its chapter at the top.
        start = targets.get("") or next((e for f, e in targets.items() if f and f not in found), None)
        for anchor, paragraphs in doc.segments:
            entry = start if anchor is None else targets.get(anchor)
            if entry is not None:
                # "Cover", "Contents" and the like are entries, but what follows them is front matter.
                in_chapter = entry.title.casefold() not in _SKIP_TITLES
                is_part = entry.has_children or bool(re.match(r"(?:part|book|volume)\b", entry.title, re.I))
                if in_chapter:
                    sections.append(Section(entry.title, list(paragraphs), is_part))
                    continue
            if in_chapter:
                sections[-1].paragraphs.extend(paragraphs)
            elif paragraphs:
                loose.add(len(sections))
                sections.append(Section(doc.heading or _own_title(doc, package) or "Front Matter", list(paragraphs)))
    return [s for i, s in enumerate(sections) if i not in loose or _words(s.paragraphs) >= _FRONT_MATTER_WORDS]


def _by_document(archive: Archive, package: _Package, skip: set[str]) -> list[Section]:
    """No usable table of contents: a chapter per spine document, named by its heading."""
    sections = []
    for path in package.spine:
        if path in skip or (data := archive.read(path)) is None:
            continue
        doc = _document(data, set())
        title = doc.heading or _own_title(doc, package)
        if doc.link_share <= 0.6 and title.casefold() not in _SKIP_TITLES:
            sections.append(Section(title, [p for _, segment in doc.segments for p in segment]))
    # Short documents (cover, title page) before the first one with real text are not chapters.
    first_real = next((i for i, s in enumerate(sections) if _words(s.paragraphs) >= _FRONT_MATTER_WORDS), 0)
    return sections[first_real:]


def _own_title(doc: _Document, package: _Package) -> str:
    # Many converters put the book's title in every document's <title>: that names no chapter.
    return doc.title if doc.title.casefold() != package.meta.get("title", "").casefold() else ""


def is_epub(data: bytes) -> bool:
    """Whether bytes with no telling file name are an EPUB: a ZIP with the EPUB mimetype or a container file."""
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            # (The mimetype file is read only when it is the few bytes it should be, not a zip bomb.)
            return "META-INF/container.xml" in names or (
                "mimetype" in names and archive.getinfo("mimetype").file_size <= 64
                and archive.read("mimetype").strip() == b"application/epub+zip")
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, NotImplementedError):
        return False


def read_epub(data: bytes, label: str) -> tuple[dict[str, str], list[Section], bytes | None, str | None]:
    """(metadata, sections, cover bytes, cover type) of an EPUB; BookError when it is damaged or DRM-protected."""
    archive = Archive(data, label)
    with archive.zip:
        check_drm(archive)
        package = read_package(archive)
        skip = {item.path for item in package.manifest.values() if "nav" in item.properties.split()}
        # Refused before any document is parsed when the reading order alone is over the budget.
        documents = sum(archive.size(path) for path in package.spine if path not in skip)
        archive.check_budget(documents, f"the {len(package.spine):,} documents of its reading order come to "
                                        f"{documents / 2**20:,.0f} MB")
        entries = _toc(archive, package)
        sections = _by_toc(archive, package, entries, skip)
        if sections is None:
            sections = _by_document(archive, package, skip)
        cover, cover_type = _cover(archive, package)
    return package.meta, sections, cover, cover_type
