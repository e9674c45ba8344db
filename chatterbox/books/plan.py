"""An audiobook's plan: its chapters split into sentence-aligned chunks, each with the key its audio is cached under.

The plan is written once when a book is submitted (and again only when a chunk is regenerated on request) to
``<books_dir>/<job_id>/plan.json``. Workers read it to know what each chunk says, the web app to show it, and a
person to audit what was asked of the engine. Chunk audio lives in ``<chunks_dir>`` under a key derived from
everything that determines it (text, voice, engine, model weights, parameters and seed), so a retried, resumed or
resubmitted chunk that already exists is never synthesized again.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..align import plan as word_plan
from ..audio import write_atomic
from ..engines import Engine
from ..lexicon import Compiled, Entry
from ..quality import expected_duration
from ..settings import Settings
from ..text import TextError, chunk_text
from .reader import Book
from .sections import BookError

PLAN_VERSION = 1
SEED_LIMIT = 2**31  # the engines' seed range is [0, 2**31 - 1]


@dataclass
class Chunk:
    index: int        # position in the whole book, 0-based
    chapter: int      # index of its chapter, 0-based
    text: str         # normalized text, what the engine is asked to say
    brk: str          # what follows it: "sentence" | "paragraph" | "chapter" (the last chunk of its chapter)
    params: dict      # the engine parameters for this chunk, seed included where the engine takes one
    key: str          # content key of its audio in the chunk cache
    revision: int = 0  # bumped when a person asks for this chunk again
    source: str = ""  # the words it says as the book wrote them (subtitles, read-along); "" in older plans


@dataclass
class ChapterPlan:
    index: int
    title: str
    first: int        # index of its first chunk
    count: int        # number of its chunks
    words: int
    heading: int = 0  # how many of its first chunks say its title (0: the title is not spoken in this part)

    @property
    def chunk_range(self) -> range:
        return range(self.first, self.first + self.count)


@dataclass
class Plan:
    job_id: str
    title: str
    author: str
    language: str
    engine: str
    model: str
    voice: str
    params: dict
    format: str
    sample_rate: int
    assembly: dict    # pauses and loudness target, fixed at submission
    chapters: list[ChapterPlan]
    chunks: list[Chunk]
    cover_type: str | None = None
    version: int = PLAN_VERSION
    engine_model: str = ""  # the Chatterbox model that speaks it ("" for an engine of one model; older plans)
    speech_language: str = "en"  # the language it is spoken in (the book's own, where the model speaks it)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        data = dict(data)
        data["chapters"] = [ChapterPlan(**c) for c in data["chapters"]]
        data["chunks"] = [Chunk(**c) for c in data["chunks"]]
        return cls(**data)

    def summary(self, with_text: bool = False) -> dict:
        """What the API shows: chapters with their chunk counts (and the chunks' text on request)."""
        chapters = []
        for ch in self.chapters:
            item = {"index": ch.index, "title": ch.title, "chunks": ch.count, "words": ch.words}
            if with_text:
                item["chunk_texts"] = [self.chunks[i].text for i in ch.chunk_range]
            chapters.append(item)
        return {"title": self.title, "author": self.author, "language": self.language, "engine": self.engine,
                "voice": self.voice, "params": self.params, "format": self.format, "chapters": chapters,
                "chunks_total": len(self.chunks), "words": sum(ch.words for ch in self.chapters)}


def chunk_key(text: str, voice: str, engine: str, model: str, params: dict, sample_rate: int,
              revision: int = 0) -> str:
    """The cache key of a chunk's audio: a hash of everything that determines it."""
    identity = {"text": text, "voice": voice, "engine": engine, "model": model, "params": params,
                "sample_rate": sample_rate}
    if revision:
        identity["revision"] = revision
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def chunk_seed(text: str, revision: int = 0) -> int:
    """A seed that depends only on the text (and revision), so that the same sentence in the same book, or in the
    same book submitted again, gets the same audio and the same cache key."""
    digest = hashlib.sha256(f"{revision}:{text}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % SEED_LIMIT


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of a quality retry: a different, still deterministic one per attempt."""
    return (seed + attempt * 1_000_003) % SEED_LIMIT


def _takes_seed(engine: Engine) -> bool:
    return any(p.name == "seed" for p in engine.params)


def chunk_params(engine: Engine, params: dict, text: str, revision: int = 0) -> dict:
    if not _takes_seed(engine):
        return dict(params)
    if params.get("seed") is not None and not revision:
        return dict(params)
    base = params.get("seed")
    seed = chunk_seed(text, revision) if base is None else retry_seed(int(base), revision)
    return {**params, "seed": seed}


def _paragraph_chunks(paragraph: str, max_chars: int, language: str = "en") -> list[str]:
    try:
        return chunk_text(paragraph, max_chars, language)
    except TextError:
        return []  # a paragraph of punctuation alone: nothing to say


def make_plan(book: Book, *, job_id: str, engine: Engine, voice: str, params: dict, fmt: str,
              settings: Settings, lexicon: list[Entry] | None = None) -> Plan:
    """Split every chapter into chunks of at most ``settings.chunk_chars`` characters, whole sentences where they
    fit, never across a paragraph; a chapter longer than ``settings.book_part_max_minutes`` into parts at paragraph
    boundaries. The owner's ``lexicon`` respells words before the text is chunked, so each chunk's text, and its
    cache key, is the text as spoken: a book submitted again after an entry changed makes again only the chunks
    whose text the change touched. Raises BookError when a chapter has nothing to say."""
    # Phoneme entries reach an engine that reads phonemes (Piper) as phonemes; others say their respelling.
    respell = Compiled(lexicon or [], getattr(engine, "phoneme_token", None)).apply
    model = engine.model_version(voice)
    rate = engine.sample_rate
    max_chars, language = engine.max_chars(settings), engine.language
    pause_s = {"sentence": settings.book_pause_sentence_s, "paragraph": settings.book_pause_paragraph_s}
    chunks: list[Chunk] = []
    chapters: list[ChapterPlan] = []

    def add(text: str, chapter: int, brk: str, source: str) -> None:
        p = chunk_params(engine, params, text)
        chunks.append(Chunk(index=len(chunks), chapter=chapter, text=text, brk=brk, params=p,
                            key=chunk_key(text, voice, engine.name, model, p, rate), source=source))

    def pieces_of(written: str, spoken: str, last_break: str) -> list[tuple[str, str, str]]:
        """(text, break, source) of each chunk of one paragraph: its words as written shared out to the chunks
        that say them (chatterbox.align.plan), so that subtitles show "$5" where the engine said "five dollars"."""
        texts = _paragraph_chunks(spoken, max_chars, language)
        sources = [" ".join(word for word, _ in chunk) for chunk in word_plan(written, texts, language)] \
            if texts else []
        return [(text, last_break if i == len(texts) - 1 else "sentence", source)
                for i, (text, source) in enumerate(zip(texts, sources))]

    def spoken_s(pieces: list[tuple[str, str, str]]) -> float:
        return sum(expected_duration(text, engine.words_per_minute, normalized=True) + pause_s[brk]
                   for text, brk, _ in pieces)

    for number, chapter in enumerate(book.chapters):
        heading: list[tuple[str, str, str]] = []  # (text, break, source) of each chunk
        if settings.book_speak_titles and chapter.title.strip():
            written = " ".join(chapter.title.split())
            heading = [(text, "paragraph", source) for text, _, source in
                       pieces_of(written, respell(_as_sentence(written)), "")]
        paragraphs: list[list[tuple[str, str, str]]] = []
        for paragraph in chapter.paragraphs:
            pieces = pieces_of(paragraph, respell(paragraph), "paragraph")
            if pieces:
                paragraphs.append(pieces)
        words = [sum(len(text.split()) for text, _, _ in p) for p in paragraphs]
        if not sum(words):
            raise BookError(f"chapter {number + 1} ({chapter.title!r}) has no speakable text", "chapter_empty",
                            f"chapters[{number}]")
        # The title is spoken with the first paragraph, so only the first part says it.
        seconds = [spoken_s(heading) * (i == 0) + spoken_s(p) for i, p in enumerate(paragraphs)]
        starts = _part_starts(seconds, settings.book_part_max_minutes * 60.0)
        name = chapter.title or f"Chapter {number + 1}"
        for part, (begin, end) in enumerate(zip(starts, [*starts[1:], len(paragraphs)])):
            first = len(chunks)
            for text, brk, source in [*(heading if part == 0 else []), *(c for p in paragraphs[begin:end] for c in p)]:
                add(text, len(chapters), brk, source)
            chunks[-1].brk = "chapter"
            named = name if len(starts) == 1 else f"{name} (part {part + 1} of {len(starts)})"
            chapters.append(ChapterPlan(index=len(chapters), title=named, first=first, count=len(chunks) - first,
                                        words=sum(words[begin:end]), heading=len(heading) if part == 0 else 0))
    if not chapters:
        raise BookError("the book has no chapters with speakable text", "empty_book")
    assembly = {"sentence_s": settings.book_pause_sentence_s, "paragraph_s": settings.book_pause_paragraph_s,
                "chapter_s": settings.book_pause_chapter_s, "target_lufs": settings.book_loudness_lufs}
    return Plan(job_id=job_id, title=book.title, author=book.author, language=book.language, engine=engine.name,
                model=model, voice=voice, params=params, format=fmt, sample_rate=rate, assembly=assembly,
                chapters=chapters, chunks=chunks, cover_type=book.cover_type, engine_model=engine.model or "",
                speech_language=language)


def _part_starts(seconds: list[float], limit_s: float) -> list[int]:
    """Where the parts of a chapter begin (indices into ``seconds``, each paragraph's estimated speech): as few parts
    of at most limit_s as the paragraphs allow, as even as they can be. A paragraph longer than that is a part of its
    own; limit_s 0: one part."""
    def greedy(cap: float) -> list[int]:
        starts, run = [0], 0.0
        for i, s in enumerate(seconds):
            if i > starts[-1] and run + s > cap:
                starts.append(i)
                run = 0.0
            run += s
        return starts

    if limit_s <= 0 or sum(seconds) <= limit_s:
        return [0]
    fewest = len(greedy(limit_s))
    # The smallest cap that still needs no more parts makes the longest part as short as it can be: not 59 minutes
    # and a 2-minute remainder, but two of 30.5. Bisected (the count only grows as the cap shrinks) to a billionth.
    low, high = 0.0, limit_s
    for _ in range(30):
        mid = (low + high) / 2
        if len(greedy(mid)) <= fewest:
            high = mid
        else:
            low = mid
    return greedy(high)


def _as_sentence(title: str) -> str:
    """A heading read as a sentence of its own, so the engine pauses after it."""
    title = " ".join(title.split())
    return title if title[-1:] in ".!?" else title + "."


def bump_revision(plan: Plan, index: int, engine_name: str, takes_seed: bool) -> Chunk:
    """Give chunk ``index`` a new revision (and seed): its next synthesis is new audio under a new key."""
    chunk = plan.chunks[index]
    chunk.revision += 1
    if takes_seed:
        base = plan.params.get("seed")
        seed = chunk_seed(chunk.text, chunk.revision) if base is None else retry_seed(int(base), chunk.revision)
        chunk.params = {**chunk.params, "seed": seed}
    chunk.key = chunk_key(chunk.text, plan.voice, engine_name, plan.model, chunk.params, plan.sample_rate,
                          chunk.revision)
    return chunk


# -- files ---------------------------------------------------------------------------------------------------------

def book_dir(settings: Settings, job_id: str) -> Path:
    return settings.books_dir / job_id


def save_plan(settings: Settings, plan: Plan) -> Path:
    return write_atomic(book_dir(settings, plan.job_id) / "plan.json",
                        json.dumps(plan.to_json(), ensure_ascii=False).encode())


_plans: dict[str, tuple[tuple[int, int], Plan]] = {}


def load_plan(settings: Settings, job_id: str) -> Plan:
    """The plan of a book, cached per process until its file changes."""
    path = book_dir(settings, job_id) / "plan.json"
    # Opened, not only stat'ed: on NFS, open() is what asks the server (close-to-open consistency), so a plan that
    # another machine has just replaced (a chunk regenerated) is seen at once, where a stat may answer from the
    # attribute cache for seconds. Every save is a new file renamed over the old: its inode tells them apart even
    # within one tick of the clock.
    with path.open("rb") as f:
        stat = os.fstat(f.fileno())
        stamp = (stat.st_ino, stat.st_mtime_ns)
        cached = _plans.get(job_id)
        if cached and cached[0] == stamp:
            return cached[1]
        plan = Plan.from_json(json.loads(f.read()))
    if len(_plans) > 16:
        _plans.clear()
    _plans[job_id] = (stamp, plan)
    return plan


def chunk_paths(settings: Settings, key: str) -> tuple[Path, Path]:
    """(audio, report) of a cached chunk; the report is written last, so its presence means the chunk is whole."""
    base = settings.chunks_dir / key[:2] / key
    return base.with_suffix(".wav"), base.with_suffix(".json")


def cached_chunk(settings: Settings, key: str) -> dict | None:
    """The report of a cached chunk, or None when it is not (wholly) there."""
    wav, report = chunk_paths(settings, key)
    if not (report.is_file() and wav.is_file()):
        return None
    try:
        return json.loads(report.read_text())
    except ValueError:
        return None
