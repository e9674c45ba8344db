"""Answers about audiobooks: a book submitted, parsed for review, its plan and progress, its listing and actions."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from ..books.assemble import CHAPTER_FORMATS
from ..books.reader import FORMATS as BOOK_FORMATS
from .base import Record
from .lexicon_entry import KINDS as LEXICON_KINDS, MAX_SAY, MAX_TERM
from .records_jobs import Job, Links, Status, absent, one_of

# What chatterbox/books/control.py and web/books.py write as literals for a chapter's status.
CHAPTER_STATUSES = ("waiting", "running", "assembling", "assembled")
ChapterStatus = one_of(CHAPTER_STATUSES)
ChapterFormat = one_of(CHAPTER_FORMATS)
BookFormat = one_of(BOOK_FORMATS)
LexiconKind = one_of(LEXICON_KINDS)


class BookLinks(Links):
    """A book's links: a job's, and the book's own files."""
    book_url: str = Field(description="`GET` this for the book's state")
    m4b_url: str = Field(description="the whole book")
    epub_url: str = Field(description="the read-along EPUB 3, once the book has succeeded")
    subtitles_url: str = Field(description="the whole book's subtitles over the M4B (`?chapter=N`: one chapter's)")


class BookSubmitted(BookLinks):
    """A book planned and queued."""
    job_id: str
    status: Status = Field(description="`queued`, or already `running` when a worker was quicker than the answer")
    title: str
    chapters: int = Field(ge=1)
    chunks: int = Field(ge=1)


# -- a book parsed for review ---------------------------------------------------------------------------------------

class ParsedChapter(Record):
    """A chapter as the book would be read."""
    index: int = Field(ge=0)
    title: str
    words: int = Field(ge=0)
    chars: int = Field(ge=0)
    text: str


class ParsedBook(Record):
    """A book as it was read: its metadata and chapters."""
    title: str
    author: str
    language: str
    source_format: BookFormat
    has_cover: bool
    cover_type: Optional[str] = Field(description="the cover's MIME type")
    words: int = Field(ge=0)
    chars: int = Field(ge=0)
    chapters: list[ParsedChapter]


class BookSummary(Record):
    """The chapters a book would be read as; nothing is stored or queued."""
    book: ParsedBook


# -- a book's state -------------------------------------------------------------------------------------------------

class PlannedChapter(Record):
    """A chapter of the plan."""
    index: int = Field(ge=0)
    title: str
    chunks: int = Field(ge=0)
    words: int = Field(ge=0)


class BookPlan(Record):
    """What the book is read as: chapters and chunks, fixed at submission."""
    title: str
    author: str
    language: str
    engine: str
    voice: str
    params: dict[str, Any]
    format: ChapterFormat
    chapters: list[PlannedChapter]
    chunks_total: int = Field(ge=0)
    words: int = Field(ge=0)


class ChunkState(Record):
    """A chunk of a chapter."""
    index: int = Field(ge=0)
    text: str = Field(description="what the engine is asked to say")
    source: Optional[str] = absent(description="the same words as the book wrote them")
    done: bool
    duration_s: Optional[float]


class ChapterState(Record):
    """A chapter's progress, and its file once assembled."""
    index: int = Field(ge=0)
    title: str
    chunks_done: int = Field(ge=0)
    chunks_total: int = Field(ge=0)
    words: int = Field(ge=0)
    status: ChapterStatus
    progress: float = Field(ge=0, le=1)
    duration_s: Optional[float] = absent(description="once assembled")
    file: Optional[str] = absent(description="once assembled: the file's name")
    lufs: Optional[float] = absent(description="once assembled: its loudness")
    url: Optional[str] = absent(description="once assembled: its download")
    words_file: Optional[str] = absent(description="once assembled: the file of its word timestamps")
    subtitles_url: Optional[str] = absent(description="once assembled: its subtitles (`&format=vtt`, `&words=N`)")
    chunks: Optional[list[ChunkState]] = absent(description="with `?text=1`: every chunk of the chapter")


class ChunkRetry(Record):
    """A chunk the quality check made again."""
    index: int = Field(ge=0)
    attempts: int = Field(ge=1)
    ok: bool
    problems: list[str]


class BookQuality(Record):
    """What the quality check found."""
    checked: bool
    retried: list[ChunkRetry] = Field(description="chunks that passed after retries")
    failed: list[ChunkRetry] = Field(description="chunks that never passed (the best attempt is kept)")


class SubmittedLexiconEntry(Record):
    """An entry as `PUT /lexicon` takes it (see Lexicon)."""
    term: str = Field(min_length=1, max_length=MAX_TERM, description="matched as a whole word")
    say: Optional[str] = absent(max_length=MAX_SAY, description="what is said in its place")
    phonemes: Optional[str] = absent(description="a phoneme entry's IPA")
    case_sensitive: Optional[bool] = absent(description="match the term's case exactly (else any case)")
    kind: Optional[LexiconKind] = absent()


class Book(Job, BookLinks):
    """A book's record, plan and per-chapter state."""
    audio_s: float = Field(description="seconds of audio made so far (audiobooks)")  # required here
    plan: BookPlan
    chapters: list[ChapterState]
    chunks_in_flight: int = Field(ge=0)
    eta_s: Optional[float] = Field(description="seconds left at the throughput measured since it last started; "
                                               "null unless running with some chunks made")
    quality: BookQuality
    synthesized: int = Field(ge=0)
    from_cache: int = Field(ge=0)
    lexicon: Optional[list[SubmittedLexiconEntry]] = absent(description="the book's own pronunciation entries, as "
                                                                        "submitted")
    m4b_ready: bool


class BookListItem(Job, BookLinks):
    """A book of the listing: its record and links."""


class BookList(Record):
    """The audiobooks, newest first."""
    audiobooks: list[BookListItem]


class BookAction(Record):
    """A book paused, queued again or cancelled."""
    job_id: str
    status: Literal["paused", "queued", "cancelled"]


class RegeneratedChunk(Record):
    """The chunk being made again."""
    index: int = Field(ge=0)
    revision: int = Field(ge=1)
    key: str = Field(description="the chunk audio's cache key")
    text: str


class Regenerated(BookLinks):
    """A chunk queued to be made again; its chapter and the book are assembled again after it."""
    job_id: str
    status: Literal["queued"]
    chunk: RegeneratedChunk
