"""Reading books (EPUB 2/3, Markdown, plain text) into chapters of clean text, and refusing bad uploads clearly."""
from __future__ import annotations

import json
import zipfile
from io import BytesIO

import pytest

from chatterbox.books.reader import (FORMATS, Book, Chapter, book_from_chapters, book_from_text, is_speakable,
                                     read_book)
from chatterbox.books.sections import BookError
from tests.books import (CHAPTERS, COVER_TEXT, NOTE, epub_files, make_drm_epub, make_epub, make_font_obfuscated_epub,
                         make_markdown_book, zip_epub)

TITLES = [title for title, _ in CHAPTERS]


def error_of(call, *args, **kwargs) -> BookError:
    with pytest.raises(BookError) as info:
        call(*args, **kwargs)
    return info.value


def assert_clean(book: Book) -> None:
    """The text an engine would read: no note markers, page numbers, notes, navigation or cover page."""
    for chapter in book.chapters:
        assert chapter.paragraphs and all(p and p == p.strip() for p in chapter.paragraphs)
        assert not any(ch.isdigit() for ch in chapter.text), chapter.text  # CHAPTERS have no digits of their own
        for unwanted in (NOTE, COVER_TEXT, "Contents", "Start of Content", "<", "[^", "**", "](", "http"):
            assert unwanted not in chapter.text


# ---------------------------------------------------------------------------------------------------------------
# EPUB

@pytest.mark.parametrize("version", [3, 2])
def test_epub_chapters_come_in_order_with_their_titles_and_exact_text(version):
    book = read_book(make_epub(version=version), "small.epub")
    assert [c.title for c in book.chapters] == TITLES
    assert [c.paragraphs for c in book.chapters] == [paragraphs for _, paragraphs in CHAPTERS]
    assert book.chapters[1].text == "\n\n".join(CHAPTERS[1][1])
    assert_clean(book)


@pytest.mark.parametrize("version", [3, 2])
def test_epub_metadata_and_cover(version):
    book = read_book(make_epub(version=version), "small.epub")
    assert (book.title, book.author, book.language, book.source_format) == ("The Small Test Book", "Ada Tester", "en",
                                                                            "epub")
    assert book.cover.startswith(b"\x89PNG\r\n\x1a\n") and book.cover_type == "image/png"


@pytest.mark.parametrize("version", [3, 2])
def test_epub_chapters_split_at_toc_anchors_inside_one_document(version):
    book = read_book(make_epub(version=version, single_file=True), "one-file.epub")
    assert [c.title for c in book.chapters] == TITLES
    assert [c.paragraphs for c in book.chapters] == [paragraphs for _, paragraphs in CHAPTERS]
    assert_clean(book)


def test_epub_without_a_toc_has_a_chapter_per_document_named_by_its_heading():
    book = read_book(make_epub(toc=False), "no-toc.epub")
    assert [c.title for c in book.chapters] == TITLES
    assert_clean(book)


def test_epub_without_cover_or_extras():
    book = read_book(make_epub(cover=False, extras=False), "plain.epub")
    assert book.cover is None and book.cover_type is None
    assert [c.title for c in book.chapters] == TITLES


def test_epub_cover_found_by_name_when_not_declared():
    files = epub_files(version=2)
    files["OEBPS/content.opf"] = files["OEBPS/content.opf"].replace(b'<meta name="cover" content="cover-image"/>', b"")
    book = read_book(zip_epub(files), "small.epub")
    assert book.cover_type == "image/png"


def test_epub_title_defaults_to_the_file_name_and_author_to_empty():
    book = read_book(make_epub(title="", author="", language=""), "uploads/the_quiet-harbour.epub")
    assert (book.title, book.author, book.language) == ("The Quiet Harbour", "", "")


def test_epub_detected_without_a_file_name():
    book = read_book(make_epub(), "")
    assert book.source_format == "epub" and len(book.chapters) == 3


def test_epub_with_only_obfuscated_fonts_is_accepted():
    book = read_book(make_font_obfuscated_epub(), "fonts.epub")
    assert [c.title for c in book.chapters] == TITLES


def test_drm_protected_epub_is_refused():
    error = error_of(read_book, make_drm_epub(), "locked.epub")
    assert error.code == "drm_protected" and error.field == "file"
    assert "DRM" in error.message and "DRM-free" in error.message


def test_epub_with_adobe_rights_file_is_refused():
    files = epub_files()
    files["META-INF/rights.xml"] = b'<?xml version="1.0"?><adept:rights xmlns:adept="http://ns.adobe.com/adept"/>'
    assert error_of(read_book, zip_epub(files), "adept.epub").code == "drm_protected"


def test_corrupt_epub_is_refused():
    data = make_epub()
    for broken in (data[: len(data) // 2], b"this is not a zip at all"):
        error = error_of(read_book, broken, "broken.epub")
        assert error.code == "corrupt_epub" and "broken.epub" in error.message


def test_zip_without_container_is_a_corrupt_epub():
    files = epub_files()
    del files["META-INF/container.xml"]
    error = error_of(read_book, zip_epub(files), "book.epub")
    assert error.code == "corrupt_epub" and "container.xml" in error.message


@pytest.mark.parametrize("change,found", [
    (("META-INF/container.xml", b"<container><rootfiles>"), "not valid XML"),
    (("OEBPS/content.opf", None), "package document"),
    (("OEBPS/content.opf", b'<package xmlns="http://www.idpf.org/2007/opf"><manifest/><spine/></package>'), "spine"),
])
def test_epub_with_a_broken_package_is_a_corrupt_epub(change, found):
    files = epub_files()
    name, data = change
    if data is None:
        del files[name]
    else:
        files[name] = data
    error = error_of(read_book, zip_epub(files), "book.epub")
    assert error.code == "corrupt_epub" and found in error.message


def test_epub_parts_in_a_nested_toc_fold_into_their_first_chapter():
    files = epub_files(extras=False)
    nav = files["OEBPS/nav.xhtml"].decode()
    nav = nav.replace('<li><a href="text/chapter1.xhtml">', '<li><a href="text/part1.xhtml">Part One</a><ol>'
                      '<li><a href="text/chapter1.xhtml">').replace("Hills</a></li>", "Hills</a></li></ol></li>")
    files["OEBPS/nav.xhtml"] = nav.encode()
    files["OEBPS/text/part1.xhtml"] = (b'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Part</title></head>'
                                       b'<body><h1>Part One</h1></body></html>')
    files["OEBPS/content.opf"] = files["OEBPS/content.opf"].replace(
        b'<item id="chapter1"', b'<item id="part1" href="text/part1.xhtml" media-type="application/xhtml+xml"/>'
                                b'<item id="chapter1"').replace(b'<itemref idref="chapter1"/>',
                                                                b'<itemref idref="part1"/><itemref idref="chapter1"/>')
    book = read_book(zip_epub(files), "parts.epub")
    assert [c.title for c in book.chapters] == [f"Part One: {TITLES[0]}"] + TITLES[1:]


def test_epub_html_entities_self_closing_page_breaks_and_tag_soup():
    files = epub_files(extras=False)
    files["OEBPS/text/chapter1.xhtml"] = files["OEBPS/text/chapter1.xhtml"].replace(
        b"<p>The boats came", b'<p>The&nbsp;boats<span epub:type="pagebreak" id="p3" title="3"/> came&hellip;')
    files["OEBPS/text/chapter2.xhtml"] = (b"<html><head><title>x</title><body><h1>A Letter from the Hills<p>Bread"
                                          b" &amp; butter<p>Snow<br>fell <b>softly</body>")
    book = read_book(zip_epub(files), "messy.epub")
    assert book.chapters[0].paragraphs[0].startswith("The boats came\u2026 home before")
    assert book.chapters[1].paragraphs == ["Bread & butter", "Snow fell softly"]


def test_epub_without_text_is_an_empty_book():
    error = error_of(read_book, make_epub([("Silence", []), ("More Silence", [" "])]), "blank.epub")
    assert error.code == "empty_book" and "no speakable text" in error.message and "blank.epub" in error.message


# ---------------------------------------------------------------------------------------------------------------
# Markdown

def test_markdown_book_has_chapters_metadata_and_clean_text():
    book = read_book(make_markdown_book().encode(), "small.md")
    assert (book.title, book.author, book.language, book.source_format) == ("The Small Test Book", "Ada Tester", "en",
                                                                            "md")
    assert [c.title for c in book.chapters] == TITLES
    assert [c.paragraphs for c in book.chapters] == [paragraphs for _, paragraphs in CHAPTERS]
    assert_clean(book)


def test_markdown_structure_is_reduced_to_speakable_paragraphs():
    text = ("# Tides\n\nThe sea *rose* and [fell](http://example.com).[^a]\n\n```\nprint('never read')\n```\n\n"
            "- first item\n- second **item**\n\n> a quoted line\n\n<div>raw html</div>\n\n![a picture](p.png)\n\n"
            "[^a]: Not read aloud.\n\n# Storms\n\nWind and `rain`.\n\n### Aside\n\nA small heading inside.\n")
    book = book_from_text(text, "md", title="Weather")
    assert book.title == "Weather"
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        ("Tides", ["The sea rose and fell.", "first item", "second item", "a quoted line"]),
        ("Storms", ["Wind and rain.", "Aside", "A small heading inside."]),
    ]


def test_markdown_lone_top_heading_names_the_book():
    book = book_from_text("# The Book\n\nSome opening words.\n\nMore words here.\n", "md")
    assert book.title == "The Book" and [c.title for c in book.chapters] == ["The Book"]
    assert book.chapters[0].paragraphs == ["Some opening words.", "More words here."]


# ---------------------------------------------------------------------------------------------------------------
# Plain text

STORY = """THE LIGHTHOUSE KEEPER

by Mara Quill


CHAPTER I

The lamp was lit at dusk, as it had been
for a hundred years. The keeper climbed the
stairs slowly.

* * *

In the morning the sea was calm and some-
thing glittered on the rocks. It was something small.

PART ONE

Chapter 2

The storm came at night and shook the windows.

CHAPTER III.
THE QUIET SHORE

All was quiet after the storm.

Epilogue

Years later, the light still turned.
"""


def test_plain_text_chapters_from_headings_with_title_page_and_scene_breaks():
    book = read_book(STORY.encode(), "keeper.txt")
    assert (book.title, book.author, book.source_format) == ("The Lighthouse Keeper", "Mara Quill", "txt")
    assert [c.title for c in book.chapters] == ["Chapter I", "Part One: Chapter 2", "Chapter III: The Quiet Shore",
                                                "Epilogue"]
    # The scene break stays inside its chapter; hard-wrapped lines and the broken word are joined.
    assert book.chapters[0].paragraphs == [
        "The lamp was lit at dusk, as it had been for a hundred years. The keeper climbed the stairs slowly.",
        "In the morning the sea was calm and something glittered on the rocks. It was something small.",
    ]
    assert book.chapters[3].text == "Years later, the light still turned."


def test_plain_text_keeps_a_real_opening_before_the_first_heading():
    opening = ("This book was written over many winters by the sea. It owes everything to the people of the harbour, "
               "who told their stories at the long table in the inn while the storms went by outside.")
    book = book_from_text(f"{opening}\n\nChapter 1\n\nThe first chapter.\n", title="Harbour Tales")
    assert [(c.title, c.text) for c in book.chapters] == [("Harbour Tales", opening),
                                                          ("Chapter 1", "The first chapter.")]


def test_plain_text_heading_styles():
    text = ("Prologue\n\nBefore it all.\n\nChapter Twelve\n\nTwelve.\n\nChapter 3: The Storm\n\nRain.\n\n"
            "BOOK 2\n\nPART II\n\nCHAPTER XII\n\nLate.\n\nIntroduction\n\nAt the end, oddly.\n")
    book = book_from_text(text)
    assert [c.title for c in book.chapters] == ["Prologue", "Chapter Twelve", "Chapter 3: The Storm",
                                                "Book 2: Part II: Chapter XII", "Introduction"]


def test_plain_text_separators_without_headings_make_numbered_chapters():
    book = book_from_text("It began in spring.\n\n***\n\nSummer came.\n\n-----\n\n#####\n\nThen autumn.\n",
                          title="Seasons")
    assert book.title == "Seasons"
    assert [(c.title, c.text) for c in book.chapters] == [
        ("Chapter 1", "It began in spring."), ("Chapter 2", "Summer came."), ("Chapter 3", "Then autumn.")]


def test_plain_text_without_headings_is_one_chapter_named_after_the_file():
    text = b"The wind rose over the\nmoor and the grass bent low.\n\nNobody came that night.\n"
    book = read_book(text, "a_night-on-the_moor.txt")
    assert book.title == "A Night on the Moor"
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        ("A Night on the Moor", ["The wind rose over the moor and the grass bent low.", "Nobody came that night."])]


def test_plain_text_long_unwrapped_lines_are_paragraphs():
    line = ("This paragraph was never wrapped, so it runs on and on, well past the width of any hard-wrapped text, "
            "for more than a hundred and twenty characters.")
    book = book_from_text(f"{line}\n{line} Again.\n{line} Once more.")
    assert book.chapters[0].paragraphs == [line, f"{line} Again.", f"{line} Once more."]


def test_plain_text_project_gutenberg_boilerplate_is_dropped():
    text = ("The Project Gutenberg eBook of The Harbour\n\nTitle: The Harbour\n\nAuthor: Jo Sailor\n\n"
            "*** START OF THE PROJECT GUTENBERG EBOOK THE HARBOUR ***\n\nCHAPTER I\n\nThe boats came home.\n\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK THE HARBOUR ***\n\nLicence text that nobody should hear.\n")
    book = read_book(text.encode(), "pg123.txt")
    assert (book.title, book.author) == ("The Harbour", "Jo Sailor")
    assert [(c.title, c.text) for c in book.chapters] == [("Chapter I", "The boats came home.")]


def test_cp1252_text_is_decoded():
    first = "\u201cCaf\u00e9,\u201d she said. It\u2019s na\u00efve \u2014 isn\u2019t it?"
    second = "The r\u00f4le of the fa\u00e7ade."
    book = read_book(f"{first}\r\n\r\n{second}\r\n".encode("cp1252"), "cafe.txt")
    assert book.chapters[0].paragraphs == [first, second]


def test_utf8_with_a_few_damaged_bytes_stays_utf8():
    text = "\u201cCaf\u00e9,\u201d she said. \u201cIt\u2019s na\u00efve.\u201d\n\n" * 5
    book = read_book(text.encode() + b"A stray \x93byte.\n", "mixed.txt")
    assert book.chapters[0].paragraphs[0] == "\u201cCaf\u00e9,\u201d she said. \u201cIt\u2019s na\u00efve.\u201d"
    assert book.chapters[0].paragraphs[-1] == "A stray byte."


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig"])
def test_unicode_text_with_a_byte_order_mark_is_decoded(encoding):
    text = "Chapter 1\n\n\u00c9l\u00e8ve \u201cna\u00efve\u201d \u2014 \u65e5\u672c.\n\nChapter 2\n\nZo\u00eb.\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    book = read_book(data, "unicode.txt")
    assert [(c.title, c.text) for c in book.chapters] == [
        ("Chapter 1", "\u00c9l\u00e8ve \u201cna\u00efve\u201d \u2014 \u65e5\u672c."), ("Chapter 2", "Zo\u00eb.")]


def test_whitespace_and_invisible_characters_are_normalized():
    text = "Tea\u00a0for\u2009two, \u201cplease\u201d \u2014 a won\u00adder\u00adful\u200b day.\t\tYes."
    book = book_from_text(text)
    assert book.chapters[0].paragraphs == ["Tea for two, \u201cplease\u201d \u2014 a wonderful day. Yes."]


# ---------------------------------------------------------------------------------------------------------------
# Bad uploads

@pytest.mark.parametrize("data,name,code", [
    (b"", "empty.txt", "empty_book"),
    (b"   \n\n\t  \n", "blank.txt", "empty_book"),
    (b"* * *\n\n---\n\n...\n", "marks.txt", "empty_book"),
    (b"\x00\x01\x02\x03binary\x00stuff" * 20, "data.txt", "binary_file"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "book.txt", "binary_file"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cover.txt", "binary_file"),
    (bytes(range(1, 32)) * 50, "controls.txt", "binary_file"),
    (b"PK\x03\x04 word document", "report.docx", "unsupported_format"),
    (b"%PDF-1.4", "book.pdf", "unsupported_format"),
])
def test_bad_uploads_are_refused_with_a_code(data, name, code):
    error = error_of(read_book, data, name)
    assert (error.code, error.field) == (code, "file")
    assert str(error) == error.message and isinstance(error, ValueError)


def test_unsupported_format_lists_the_supported_ones():
    message = error_of(read_book, b"PK\x03\x04", "novel.docx").message
    assert ".docx" in message and ".txt" in message and ".md" in message and ".epub" in message


def test_too_large_names_the_size_and_the_limit():
    error = error_of(read_book, b"word " * 600_000, "huge.txt", max_bytes=2 * 2**20)
    assert error.code == "too_large"
    assert "2.9 MB" in error.message and "2 MB" in error.message


def test_format_argument_overrides_the_extension_and_is_checked():
    book = read_book(b"# Title\n\n## One\n\nA.\n\n## Two\n\nB.\n", "notes.txt", format="md")
    assert book.source_format == "md" and [c.title for c in book.chapters] == ["One", "Two"]
    error = error_of(read_book, b"text", "notes.txt", format="pdf")
    assert (error.code, error.field) == ("unsupported_format", "source_format")
    assert FORMATS == ("txt", "md", "epub")


def test_book_from_text_checks_its_format_and_text():
    error = error_of(book_from_text, "Hello.", "html")
    assert (error.code, error.field) == ("unsupported_format", "source_format")
    error = error_of(book_from_text, "  \n ... \n")
    assert (error.code, error.field) == ("empty_book", "text")


# ---------------------------------------------------------------------------------------------------------------
# Reviewed chapters, speakability, the summary

def test_book_from_chapters_builds_a_book():
    book = book_from_chapters([{"title": "Arrival", "text": "One line\nwrapped.\n\nSecond paragraph."},
                               {"title": "", "text": "Only text."}], title="Reviewed", author="Ed", language="en")
    assert (book.title, book.author, book.language) == ("Reviewed", "Ed", "en")
    assert book.chapters == [Chapter("Arrival", ["One line wrapped.", "Second paragraph."]),
                             Chapter("Chapter 2", ["Only text."])]


@pytest.mark.parametrize("chapters,code,field", [
    ([], "invalid_chapters", "chapters"),
    ("not a list", "invalid_chapters", "chapters"),
    ([{"title": "A", "text": "Fine."}, "text"], "invalid_chapters", "chapters[1]"),
    ([{"title": 3, "text": "Fine."}], "invalid_chapters", "chapters[0]"),
    ([{"title": "A"}], "invalid_chapters", "chapters[0]"),
])
def test_book_from_chapters_validates_its_input(chapters, code, field):
    error = error_of(book_from_chapters, chapters)
    assert (error.code, error.field) == (code, field)


def test_book_from_chapters_names_the_empty_chapter():
    error = error_of(book_from_chapters, [{"title": "One", "text": "Words."}, {"title": "Two", "text": "Yes."},
                                          {"title": "The Gap", "text": " \n\n -- \n"}])
    assert (error.code, error.field) == ("chapter_empty", "chapters[2]")
    assert "3" in error.message and "The Gap" in error.message


@pytest.mark.parametrize("text,speakable", [
    ("Hello", True), ("42", True), ("\u00e9", True), ("\u65e5\u672c", True), ("\u0416", True),
    ("", False), ("   ", False), ("* * * --- ...", False), ("\u2014 \u201c\u201d !?", False),
])
def test_is_speakable(text, speakable):
    assert is_speakable(text) is speakable


def test_summary_is_json_able():
    book = read_book(make_epub(), "small.epub")
    summary = json.loads(json.dumps(book.summary()))
    assert (summary["title"], summary["author"], summary["language"]) == ("The Small Test Book", "Ada Tester", "en")
    assert summary["source_format"] == "epub" and summary["has_cover"] is True
    assert [(c["index"], c["title"]) for c in summary["chapters"]] == list(enumerate(TITLES))
    first = summary["chapters"][0]
    assert first["text"] == book.chapters[0].text and first["chars"] == len(first["text"])
    assert first["words"] == len(first["text"].split()) and summary["words"] >= 120


def test_epub_helpers_build_a_well_formed_archive():
    with zipfile.ZipFile(BytesIO(make_epub())) as archive:
        first = archive.infolist()[0]
        assert (first.filename, first.compress_type) == ("mimetype", zipfile.ZIP_STORED)
        assert archive.read("mimetype") == b"application/epub+zip"
        assert archive.testzip() is None
    for _, paragraphs in CHAPTERS:
        assert 2 <= len(paragraphs) <= 3 and 40 <= sum(len(p.split()) for p in paragraphs) <= 80
