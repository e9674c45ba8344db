"""Reading a book upload (plain text, Markdown or EPUB) into chapters of clean, speakable paragraphs."""
from __future__ import annotations

import codecs
import re
from collections import Counter
from dataclasses import dataclass

from charset_normalizer import from_bytes
from markdown_it import MarkdownIt

from .sections import BookError, Section, clean_text

__all__ = ["Chapter", "Book", "FORMATS", "read_book", "book_from_text", "book_from_chapters",
           "is_speakable"]

FORMATS = ("txt", "md", "epub")
_EXTENSIONS = {".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".epub": "epub"}


@dataclass
class Chapter:
    """One chapter: its title and its paragraphs of plain text, in reading order."""
    title: str
    paragraphs: list[str]

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


@dataclass
class Book:
    """A whole book, ready to be planned into chunks."""
    title: str
    author: str
    language: str
    chapters: list[Chapter]
    cover: bytes | None = None
    cover_type: str | None = None
    source_format: str = "txt"

    def summary(self) -> dict:
        """JSON-able overview for review: metadata and every chapter with its size and text (index is 0-based)."""
        chapters = [{"index": i, "title": c.title, "words": len(c.text.split()), "chars": len(c.text), "text": c.text}
                    for i, c in enumerate(self.chapters)]
        return {"title": self.title, "author": self.author, "language": self.language,
                "source_format": self.source_format, "has_cover": self.cover is not None,
                "cover_type": self.cover_type, "words": sum(c["words"] for c in chapters),
                "chars": sum(c["chars"] for c in chapters), "chapters": chapters}


# ---------------------------------------------------------------------------------------------------------------
# Text clean-up shared by every format (clean_text: sections.py).

def is_speakable(text: str) -> bool:
    """True when the text has at least one letter or digit (in any script)."""
    return any(ch.isalnum() for ch in text)


def _words(text: str) -> str:
    return re.sub(r"\W+", "", text.casefold())


def assemble_chapters(sections: list[Section]) -> list[tuple[str | None, list[str]]]:
    """Sections to (title, paragraphs): unspeakable paragraphs and empty sections dropped, empty parts folded."""
    out: list[tuple[str | None, list[str]]] = []
    prefix = ""
    for section in sections:
        paragraphs = [p for p in map(clean_text, section.paragraphs) if is_speakable(p)]
        title = clean_text(section.title) if section.title is not None else None
        # The planner speaks the title itself, so a heading repeated as the first paragraph would be heard twice.
        if title and paragraphs and _words(paragraphs[0]) == _words(title):
            del paragraphs[0]
        elif title and len(paragraphs) > 1 and _words(paragraphs[0] + paragraphs[1]) == _words(title):
            del paragraphs[:2]
        if prefix:
            title, prefix = (f"{prefix}: {title}" if title else prefix), ""
        if not paragraphs:
            prefix = title if section.is_part and title else ""
            continue
        out.append((title, paragraphs))
    return [(f"Chapter {i}" if title == "" else title, paragraphs) for i, (title, paragraphs) in enumerate(out, 1)]


_SMALL_WORDS = frozenset("a an and as at but by for from in into of on or the to with".split())
_ROMAN = re.compile(r"(?=[ivxlcdm])m{0,4}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})", re.I)


def prettify(title: str) -> str:
    """SHOUTED titles in title case ("CHAPTER XII. THE END" -> "Chapter XII. The End"); others unchanged."""
    if not title.isupper():
        return title
    words = title.split()
    for i, word in enumerate(words):
        core = word.strip(".,:;!?()[]\"'")
        if _ROMAN.fullmatch(core):
            continue
        after_colon = i > 0 and words[i - 1].endswith(":")
        if core.lower() in _SMALL_WORDS and i > 0 and not after_colon:
            words[i] = word.lower()
        else:
            words[i] = "-".join(part.capitalize() for part in word.split("-"))
    return " ".join(words)


def title_from_filename(filename: str) -> str:
    """"pride_and-prejudice.epub" -> "Pride and Prejudice"; "" when there is no name."""
    name = re.split(r"[\\/]", filename)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    stem = clean_text(re.sub(r"[_\-]+", " ", stem))
    if stem.islower() or stem.isupper():
        stem = prettify(stem.upper())
    return stem


# ---------------------------------------------------------------------------------------------------------------
# Plain text: decoding, then chapters from headings that stand alone, and paragraphs from blank lines.

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_SIGNATURES = ((b"PK\x03\x04", "a ZIP archive"), (b"PK\x05\x06", "a ZIP archive"), (b"%PDF", "a PDF document"),
               (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
               (b"\xd0\xcf\x11\xe0", "an Office document"), (b"\x1f\x8b", "a gzip archive"), (b"Rar!", "a RAR archive"),
               (b"7z\xbc\xaf", "a 7-Zip archive"), (b"\x7fELF", "a program"), (b"RIFF", "audio or image data"),
               (b"ID3", "MP3 audio"), (b"OggS", "Ogg audio"), (b"fLaC", "FLAC audio"))
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\v\f\r\x1a\x1b")
_ASCII_OR_REPLACEMENT = re.compile(r"[\x00-\x7f\ufffd]+")


def decode_text(data: bytes, label: str) -> str:
    """Bytes of a text file to str: BOMs first, then UTF-8, then the legacy encoding charset-normalizer finds."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    for signature, what in _SIGNATURES:
        if data.startswith(signature):
            raise BookError(f"{label} is {what}, not plain text", "binary_file")
    sample = data[:65536]
    if b"\0" in sample:  # (UTF-16 and UTF-32 text has NULs too, but it comes with a BOM, handled above)
        raise BookError(f"{label} is binary data (it contains NUL bytes), not plain text", "binary_file")
    if len(sample) - len(sample.translate(None, _CONTROL_BYTES)) > 0.05 * len(sample):
        raise BookError(f"{label} is binary data (it is full of control characters), not plain text", "binary_file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # UTF-8 with a few damaged bytes is still UTF-8; a legacy code page rarely forms valid UTF-8 sequences.
        text = data.decode("utf-8", errors="replace")
        # (Counted by deleting the rest: findall made a list of every non-ASCII character, 8+ bytes each.)
        if len(_ASCII_OR_REPLACEMENT.sub("", text)) > 10 * text.count("\ufffd"):
            return text
    matches = list(from_bytes(data))
    if not matches:
        raise BookError(f"{label} is not text in any encoding we recognize", "binary_file")
    best = matches[0]
    # Short Western texts score the same in several code pages; cp1252 is by far the likeliest of those.
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    if any("cp1252" in m.could_be_from_charset for m in tied):
        return data.decode("cp1252", errors="replace")
    return str(best)


_NUMBER = (r"\d{1,4}|" + _ROMAN.pattern + r"|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)"
           r"(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?|eleven|twelve|thirteen|fourteen|fifteen|"
           r"sixteen|seventeen|eighteen|nineteen|one|two|three|four|five|six|seven|eight|nine|ten|first|second|third|"
           r"fourth|fifth|sixth|seventh|eighth|ninth|tenth|last|final")
_REST = r"(?:\s*[:.\-\u2013\u2014]\s*(?P<rest>\S.{0,99}))?"
_HEADING = re.compile(rf"^(?P<head>(?P<kind>chapter|chap\.|part|book|volume|vol\.|section|act|canto|letter)"
                      rf"\s+(?:{_NUMBER}))\.?{_REST}$", re.I)
_NAMED = re.compile(r"^(?P<head>prologue|epilogue|introduction|preface|foreword|afterword|interlude|conclusion|"
                    r"acknowledge?ments|author['\u2019]?s note|a note on the text|dedication|appendix(?: [a-z0-9]+)?)"
                    rf"\.?{_REST}$", re.I)
_PART_KINDS = frozenset(("part", "book", "volume", "vol."))
_SEPARATOR = re.compile(r"^(?:[*#=~_\-\u2022\u00b7\u00a7]\s*){3,}$|^[*#\u00a7\u2042]$")
_BYLINE = re.compile(r"^by\s+(.{2,80})$", re.I)
_GUTENBERG = re.compile(r"^\*{3}\s*(START|END) OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK.*$", re.M | re.I)


def _title_like(line: str) -> bool:
    """A short line that reads like a title: few words, capitalized, no sentence punctuation at the end."""
    return (0 < len(line) <= 80 and len(line.split()) <= 10 and (line[0].isupper() or line[0].isdigit())
            and line[-1] not in ".,;:!?\"'\u201d\u2019)\u2026" and not _SEPARATOR.match(line))


def _heading(block: list[str]) -> tuple[str, bool] | None:
    """(title, is_part) when the block is a heading line, optionally with its subtitle on the next line."""
    if len(block) > 2 or len(block[0]) > 120:
        return None
    match = _HEADING.match(block[0]) or _NAMED.match(block[0])
    if not match or (len(block) == 2 and (match["rest"] or not _title_like(block[1]))):
        return None
    title = prettify(match["head"])
    rest = match["rest"] or (block[1] if len(block) == 2 else "")
    if rest:
        title += ": " + prettify(rest.rstrip("."))
    kind = (match.groupdict().get("kind") or "").lower()
    return title, kind in _PART_KINDS


def _blocks(text: str) -> list[list[str]]:
    """Runs of non-blank lines; separator lines are blocks of their own."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in (raw.strip() for raw in text.split("\n")):
        if not line or _SEPARATOR.match(line):
            if current:
                blocks.append(current)
                current = []
            if line:
                blocks.append([line])
        else:
            current.append(line)
    if current:
        blocks.append(current)
    # Long lines were never hard-wrapped: such a block has one paragraph (or heading) per line.
    out: list[list[str]] = []
    for block in blocks:
        if len(block) > 1 and max(map(len, block)) > 120:
            out.extend([line] for line in block)
        else:
            out.append(block)
    return out


_WORD = re.compile(r"[^\W\d_]+")
# The word a line ends in, cut by a hyphen. The lookbehind lets a search fail at once inside a word instead of
# re-matching the rest of it from every letter.
_BROKEN = re.compile(r"(?<![^\W\d_])([^\W\d_]+)-\Z")
_VOCABULARY_SLICE = 2**20


def _vocabulary(text: str) -> set[str]:
    """Every word of the text, casefolded: what a hyphen at a line break may be re-joined into."""
    # A megabyte at a time, cut at line ends (no word spans one): findall over a whole 50 MB book held a list of
    # its 9 million words at once, about 550 MB, to keep a set of a few thousand.
    words: set[str] = set()
    start = 0
    while start < len(text):
        end = text.find("\n", start + _VOCABULARY_SLICE)
        end = len(text) if end < 0 else end
        words.update(_WORD.findall(text[start:end].casefold()))
        start = end + 1
    return words


def _join_lines(lines: list[str], vocabulary: set[str]) -> str:
    """Hard-wrapped lines to one paragraph; "some-\\nthing" loses its hyphen when "something" occurs elsewhere."""
    # Only the end of the previous line is looked at, and the paragraph is joined once: searching the whole
    # paragraph so far for its last word made this quadratic (5,000 lines took 20 s; 100,000, hours).
    parts = [lines[0]]
    stem = ""  # the letters before the previous line, when that line was glued on without a space
    for previous, line in zip(lines, lines[1:]):
        broken = _BROKEN.search(previous) if previous.endswith("-") and not previous.endswith("--") else None
        following = _WORD.match(line)
        if broken and following and line[0].islower():
            # A previous line of nothing but letters continues the word it was glued to: "some-", "thing-", "s".
            word = (stem if broken.start() == 0 else "") + broken[1]
            joined = (word + following[0]).casefold() in vocabulary
            if joined:
                parts[-1] = parts[-1][:-1]
            parts.append(line)  # (not joined: a compound, "well-\nknown", keeps its hyphen)
            stem = word if joined else ""
        else:
            parts.append(" " + line)
            stem = ""
    return "".join(parts)


def _paragraphs(blocks: list[list[str]], vocabulary: set[str]) -> list[str]:
    return [clean_text(_join_lines(block, vocabulary)) for block in blocks]


def _settle_preamble(sections: list[Section], meta: dict[str, str]) -> None:
    """Text before the first heading: a by-line gives the author; a title page of a few short lines is dropped."""
    if len(sections) < 2:
        return
    pre = sections[0].paragraphs
    if pre and (byline := _BYLINE.match(pre[0])) and len(byline[1].split()) <= 8:
        meta.setdefault("author", byline[1].strip())
        del pre[0]
    if len(pre) <= 4 and all(len(p.split()) <= 12 for p in pre) and sum(len(p.split()) for p in pre) < 30:
        pre.clear()


def _parse_plain(text: str) -> tuple[dict[str, str], list[Section]]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n").lstrip("\ufeff")
    meta: dict[str, str] = {}
    if start := next((m for m in _GUTENBERG.finditer(text) if m[1].upper() == "START"), None):
        # Project Gutenberg's licence header and footer are not the book; its header names title and author.
        for key in ("title", "author"):
            if found := re.search(rf"^{key}:\s*(.+)$", text[:start.start()], re.M | re.I):
                meta[key] = clean_text(found[1])
        text = text[start.end():]
    if end := next((m for m in _GUTENBERG.finditer(text) if m[1].upper() == "END"), None):
        text = text[:end.start()]
    vocabulary = _vocabulary(text)
    blocks = _blocks(text)
    headed = any(_heading(block) for block in blocks)
    separated = not headed and any(_SEPARATOR.match(block[0]) for block in blocks)
    first = next((i for i, b in enumerate(blocks) if _heading(b) or _SEPARATOR.match(b[0])), len(blocks))
    start_at = 0
    if 0 < first and len(blocks) > 1 and len(blocks[0]) <= 3 and _title_like(blocks[0][0]) \
            and all(_title_like(line) or _BYLINE.match(line) for line in blocks[0][1:]):
        # The file opens with a title page: its first line names the book, a "by" line its author.
        meta.setdefault("title", prettify(blocks[0][0]))
        start_at = 2 if first > 1 and len(blocks[1]) == 1 and _BYLINE.match(blocks[1][0]) else 1
        for line in blocks[0][1:] + blocks[1][:1] * (start_at - 1):
            if byline := _BYLINE.match(line):
                meta.setdefault("author", byline[1])
    # Without headings, separators delimit numbered chapters; with neither, the one chapter takes the book's title.
    sections = [Section("" if separated else None, _paragraphs(blocks[start_at:first], vocabulary))]
    i = first
    while i < len(blocks):
        block = blocks[i]
        if heading := _heading(block):
            title, is_part = heading
            following = blocks[i + 1:i + 3]
            # "CHAPTER I" then "LOOMINGS" on its own: the short line is the chapter's name, not its first paragraph.
            if len(block) == 1 and ":" not in title and len(following) == 2 and len(following[0]) == 1 \
                    and _title_like(following[0][0]) and not _heading(following[0]) and not _heading(following[1]):
                title += ": " + prettify(following[0][0])
                i += 1
            sections.append(Section(title, [], is_part))
        elif _SEPARATOR.match(block[0]):
            # A scene break inside a chapter stays inside it; without headings, separators delimit the chapters.
            if separated:
                sections.append(Section(""))
        else:
            sections[-1].paragraphs.extend(_paragraphs([block], vocabulary))
        i += 1
    if not separated:  # (with separators, the text before the first one is chapter 1, however short)
        _settle_preamble(sections, meta)
    return meta, sections


# ---------------------------------------------------------------------------------------------------------------
# Markdown: markdown-it tokens, chapters from headings at the chapter level.

_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FOOTNOTE_REF = re.compile(r"\[\^[^\]\s]+\]")
_FOOTNOTE_DEF = re.compile(r"^\s*\[\^[^\]\s]+\]:")


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    """YAML front matter's title/author/language (simple keys, scalars and lists), and the text after it."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    values: dict[str, list[str]] = {}
    key = None
    unquote = lambda v: v.strip().strip("\"'").strip()  # noqa: E731
    for line in match[1].splitlines():
        if pair := re.match(r"^([A-Za-z_][\w-]*)\s*:\s*(.*)$", line):
            key, value = pair[1].lower(), pair[2].strip()
            items = value[1:-1].split(",") if value.startswith("[") and value.endswith("]") else [value]
            values[key] = [unquote(v) for v in items if unquote(v)]
        elif key and (item := re.match(r"^\s*-\s+(.*)$", line)):
            values[key].append(unquote(item[1]))
    meta = {}
    for name, keys in (("title", ("title",)), ("author", ("author", "authors", "creator")),
                       ("language", ("language", "lang"))):
        if found := next((values[k] for k in keys if values.get(k)), None):
            meta[name] = clean_text(", ".join(found))
    return meta, text[match.end():]


def _inline_text(token) -> str:
    """An inline token's words: markup, images and HTML dropped, link text and code text kept."""
    parts: list[str] = []
    children = token.children or []
    skipping = False
    for i, child in enumerate(children):
        if child.type == "link_open":
            # "[^1]" becomes a link when a "[^1]: note" line parses as a link definition: still a footnote marker.
            nxt = children[i + 1] if i + 1 < len(children) else None
            skipping = bool(nxt and nxt.type == "text" and nxt.content.startswith("^"))
        elif child.type == "link_close":
            skipping = False
        elif skipping:
            continue
        elif child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return clean_text(_FOOTNOTE_REF.sub("", "".join(parts)))


def _parse_markdown(text: str) -> tuple[dict[str, str], list[Section]]:
    meta, text = _front_matter(text.replace("\r\n", "\n").lstrip("\ufeff"))
    tokens = _MARKDOWN.parse(text)
    items: list[tuple[int, str]] = []  # (heading level, text); level 0 is a paragraph
    row: list[str] = []
    for i, token in enumerate(tokens):
        if token.type == "inline":
            parent = tokens[i - 1].type
            if parent == "heading_open":
                items.append((int(tokens[i - 1].tag[1]), _inline_text(token)))
            elif parent in ("th_open", "td_open"):
                row.append(_inline_text(token))
            elif not _FOOTNOTE_DEF.match(token.content):
                items.append((0, _inline_text(token)))
        elif token.type == "tr_close":
            items.append((0, ", ".join(cell for cell in row if cell)))
            row = []
    counts = Counter(level for level, _ in items if level)
    title_level = chapter_level = None
    if counts:
        top = min(counts)
        # A lone top heading names the book when deeper headings divide it, or when it opens the document.
        if counts[top] == 1 and (len(counts) > 1 or items[0][0] == top):
            title_level = top
            del counts[top]
        if counts:
            chapter_level = min((lvl for lvl in counts if counts[lvl] > 1), default=min(counts))
    sections = [Section(None)]
    for level, content in items:
        if level and level == title_level:
            meta.setdefault("title", content)
        elif level and chapter_level and level <= chapter_level:
            sections.append(Section(content, [], level < chapter_level))
        elif content:
            sections[-1].paragraphs.append(content)
    _settle_preamble(sections, meta)
    return meta, sections


# ---------------------------------------------------------------------------------------------------------------
# Entry points.

def _format_of(data: bytes, filename: str, label: str, requested: str | None) -> str:
    if requested is not None:
        if requested not in FORMATS:
            raise BookError(f"unknown book format {requested!r}; choose one of {', '.join(FORMATS)}",
                            "unsupported_format", "source_format")
        return requested
    name = re.split(r"[\\/]", filename)[-1].lower()
    extension = "." + name.rsplit(".", 1)[1] if "." in name[1:] else ""
    if extension:
        if extension not in _EXTENSIONS:
            raise BookError(f"{label}: {extension} files are not supported; upload a book as "
                            f"{', '.join(_EXTENSIONS)}", "unsupported_format")
        return _EXTENSIONS[extension]
    from .epub import is_epub  # see read_book

    return "epub" if is_epub(data) else "txt"


def _make_book(meta: dict[str, str], sections: list[Section], source_format: str, *, title: str = "",
               fallback_title: str = "", label: str = "the book", field: str = "file",
               cover: bytes | None = None, cover_type: str | None = None) -> Book:
    chapters = assemble_chapters(sections)
    if not chapters:
        raise BookError(f"no speakable text found in {label}", "empty_book", field)
    book_title = clean_text(title) or clean_text(meta.get("title", "")) or fallback_title or "Untitled"
    return Book(title=book_title, author=clean_text(meta.get("author", "")),
                language=clean_text(meta.get("language", "")),
                chapters=[Chapter(book_title if t is None else t, paragraphs) for t, paragraphs in chapters],
                cover=cover, cover_type=cover_type if cover else None, source_format=source_format)


def read_book(data: bytes, filename: str = "", *, max_bytes: int | None = None, format: str | None = None) -> Book:
    """An uploaded book's bytes to a Book; raises BookError with a message for the user when it cannot be read."""
    data = bytes(data)
    name = re.split(r"[\\/]", filename)[-1]
    label = name or "the file"
    if max_bytes is not None and len(data) > max_bytes:
        size, limit = (f"{n / 2**20:.1f}".removesuffix(".0") for n in (len(data), max_bytes))
        raise BookError(f"{label} is {size} MB; the limit is {limit} MB", "too_large")
    source_format = _format_of(data, filename, label, format)
    if not data.strip():
        raise BookError(f"{label} is empty", "empty_book")
    if source_format == "epub":
        # Imported here: the web app reads books in child processes (isolated.py) and need not load bs4 and lxml.
        from .epub import read_epub

        meta, sections, cover, cover_type = read_epub(data, label)
        return _make_book(meta, sections, "epub", fallback_title=title_from_filename(name), label=label,
                          cover=cover, cover_type=cover_type)
    text = decode_text(data, label)
    meta, sections = _parse_markdown(text) if source_format == "md" else _parse_plain(text)
    return _make_book(meta, sections, source_format, fallback_title=title_from_filename(name), label=label)


def book_from_text(text: str, format: str = "txt", title: str = "") -> Book:
    """A book from a string (a JSON submission): the same parsing as an uploaded txt or Markdown file."""
    if format not in ("txt", "md"):
        raise BookError(f"unknown text format {format!r}; choose txt or md", "unsupported_format", "source_format")
    if not isinstance(text, str):
        raise BookError("the text must be a string", "invalid_type", "text")
    meta, sections = _parse_markdown(text) if format == "md" else _parse_plain(text)
    return _make_book(meta, sections, format, title=title, label="the text", field="text")


def book_from_chapters(chapters: list[dict], title: str = "", author: str = "", language: str = "") -> Book:
    """A book from user-reviewed chapters [{"title": str, "text": str}, ...]; paragraphs are split at blank lines."""
    if not isinstance(chapters, list) or not chapters:
        raise BookError("chapters must be a non-empty list of {title, text} objects", "invalid_chapters", "chapters")
    out = []
    for i, item in enumerate(chapters):
        if not isinstance(item, dict) or not isinstance(item.get("title", ""), str) \
                or not isinstance(item.get("text"), str):
            raise BookError(f"chapter {i + 1} must be an object with a string title and text", "invalid_chapters",
                            f"chapters[{i}]")
        chapter_title = clean_text(item.get("title", ""))
        text = item["text"].replace("\r\n", "\n").replace("\r", "\n")
        vocabulary = _vocabulary(text)
        paragraphs = [p for p in _paragraphs(_blocks(text), vocabulary) if is_speakable(p)]
        if not paragraphs:
            named = f' "{chapter_title}"' if chapter_title else ""
            raise BookError(f"chapter {i + 1}{named} has no speakable text", "chapter_empty", f"chapters[{i}]")
        out.append(Chapter(chapter_title or f"Chapter {i + 1}", paragraphs))
    return Book(title=clean_text(title) or "Untitled", author=clean_text(author), language=clean_text(language),
                chapters=out)
