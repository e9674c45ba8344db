"""Planning a book: chapters into sentence-aligned chunks, each with the cache key of its audio."""
from __future__ import annotations

import random

import pytest

from chatterbox.access import SYSTEM
from chatterbox.books.plan import bump_revision, chunk_key, load_plan, make_plan, save_plan
from chatterbox.books.reader import book_from_chapters
from chatterbox.books.sections import BookError
from chatterbox.engines import create_engine
from chatterbox.engines.piper import PiperEngine
from chatterbox.quality import expected_duration
from chatterbox.settings import load

LONG = ("The first sentence is short. The second one goes on for a while, with clauses and commas, so that the "
        "chunker has something to pack. A third follows it. And a fourth closes the paragraph.")


@pytest.fixture()
def settings(tmp_path):
    return load({"data_dir": tmp_path, "chunk_chars": 80})


def plan_for(settings, chapters, engine_name="piper", voice=None, params=None, job_id="book1"):
    engine = create_engine(settings, "cpu", engine_name)
    book = book_from_chapters(chapters, title="A Book", author="An Author")
    return make_plan(book, job_id=job_id, engine=engine, voice=engine.check_voice(voice, SYSTEM),
                     params=engine.validate(params), fmt="mp3", settings=settings), engine


def test_chapters_become_chunks_that_never_cross_a_paragraph(settings):
    plan, _ = plan_for(settings, [{"title": "One", "text": LONG + "\n\nA second paragraph."},
                                  {"title": "Two", "text": "Only this."}])
    assert [c.title for c in plan.chapters] == ["One", "Two"]
    first = [plan.chunks[i] for i in plan.chapters[0].chunk_range]
    assert first[0].text == "One." and first[0].brk == "paragraph"  # the title is read first, as a sentence
    assert all(len(c.text) <= 80 for c in plan.chunks)
    assert first[-1].text == "A second paragraph." and first[-1].brk == "chapter"
    assert first[-2].brk == "paragraph" and all(c.brk == "sentence" for c in first[1:-2])
    assert " ".join(c.text for c in first[1:-1]).replace("  ", " ") == LONG
    assert [c.index for c in plan.chunks] == list(range(len(plan.chunks)))
    assert plan.chapters[1].first == len(first) and plan.chapters[1].count == 2
    assert plan.chapters[0].words == len((LONG + " A second paragraph.").split())


def test_keys_depend_on_everything_that_changes_the_audio(settings):
    chapters = [{"title": "One", "text": LONG}]
    a, _ = plan_for(settings, chapters)
    b, _ = plan_for(settings, chapters, job_id="another-book")
    assert [c.key for c in a.chunks] == [c.key for c in b.chunks]  # the same text again: the same audio
    slower, _ = plan_for(settings, chapters, params={"length_scale": 1.2})
    assert not {c.key for c in a.chunks} & {c.key for c in slower.chunks}
    base = dict(text="Hi.", voice="joe", engine="piper", model="m", params={"x": 1}, sample_rate=22050)
    assert len({chunk_key(**base), chunk_key(**{**base, "voice": "amy"}), chunk_key(**{**base, "engine": "other"}),
                chunk_key(**{**base, "model": "m2"}), chunk_key(**{**base, "params": {"x": 2}}),
                chunk_key(**base, revision=1)}) == 6


def test_seeded_engines_get_a_seed_per_chunk_from_its_text(settings):
    plan, _ = plan_for(settings, [{"title": "", "text": "Same words.\n\nOther words.\n\nSame words."}],
                       engine_name="chatterbox")
    chunks = plan.chunks[1:]  # after the title ("Chapter one.", as untitled chapters are named)
    assert [c.text for c in chunks] == ["Same words.", "Other words.", "Same words."]
    seeds = [c.params["seed"] for c in chunks]
    assert seeds[0] == seeds[2] != seeds[1]
    assert chunks[0].key == chunks[2].key != chunks[1].key
    fixed, _ = plan_for(settings, [{"title": "", "text": "Same words. Other words."}], engine_name="chatterbox",
                        params={"seed": 42})
    assert {c.params["seed"] for c in fixed.chunks} == {42}
    chunk = bump_revision(fixed, 0, "chatterbox", True)
    assert chunk.revision == 1 and chunk.params["seed"] != 42 and chunk.key != fixed.chunks[1].key


def test_the_plan_is_stored_and_read_back(settings):
    plan, _ = plan_for(settings, [{"title": "One", "text": LONG}])
    save_plan(settings, plan)
    again = load_plan(settings, "book1")
    assert again.to_json() == plan.to_json()
    assert again.summary()["chunks_total"] == len(plan.chunks)


def test_a_chapter_with_nothing_to_say_is_refused(settings):
    with pytest.raises(BookError) as caught:
        plan_for(settings, [{"title": "One", "text": "Words."}, {"title": "Two", "text": "— … —"}])
    assert caught.value.code == "chapter_empty" and caught.value.field == "chapters[1]"


# -- long chapters in parts ----------------------------------------------------------------------------------------

VOCABULARY = "amber birch cedar delta ember fjord grove heath inlet juniper kelp larch moss north".split()


def paragraphs(count: int, words: int = 60, seed: int = 0) -> list[str]:
    """Distinct paragraphs of `words` words each, in sentences of twelve (one chunk of at most 80 characters each)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        w = [rng.choice(VOCABULARY) for _ in range(words)]
        out.append(" ".join(" ".join(w[i:i + 12]).capitalize() + "." for i in range(0, words, 12)))
    return out


def estimated_s(plan, chapter, settings) -> float:
    """What the plan estimates a chapter speaks for: its words at the engine's pace, and the pauses between chunks."""
    pause = {"sentence": settings.book_pause_sentence_s, "paragraph": settings.book_pause_paragraph_s,
             "chapter": settings.book_pause_paragraph_s}
    return sum(expected_duration(plan.chunks[i].text, PiperEngine.words_per_minute) + pause[plan.chunks[i].brk]
               for i in chapter.chunk_range)


def test_a_long_chapter_is_split_at_paragraphs_into_bounded_parts(settings):
    settings = settings.replace(book_part_max_minutes=3.0)
    book = [{"title": "One", "text": "\n\n".join(paragraphs(40))}, {"title": "Two", "text": "Only this."}]
    plan, _ = plan_for(settings, book)
    whole, _ = plan_for(settings.replace(book_part_max_minutes=0), book)
    parts = plan.chapters[:-1]
    n = len(parts)
    assert n == 5  # 40 paragraphs of about 19 s: 12.96 minutes
    assert [c.title for c in plan.chapters] == [f"One (part {k} of {n})" for k in range(1, n + 1)] + ["Two"]
    assert [c.index for c in plan.chapters] == list(range(n + 1))
    assert [c.title for c in whole.chapters] == ["One", "Two"]

    # The same chunks, keys and all (their audio is cached under them), in the same order; the parts end where the
    # whole chapter has a paragraph break, so the last chunk of each part ends a paragraph, never a sentence.
    assert [(c.text, c.key, c.params) for c in plan.chunks] == [(c.text, c.key, c.params) for c in whole.chunks]
    for part in parts:
        assert whole.chunks[part.chunk_range[-1]].brk == "paragraph" or part is parts[-1]
        assert plan.chunks[part.chunk_range[-1]].brk == "chapter"
        assert all(plan.chunks[i].chapter == part.index for i in part.chunk_range)
        assert all(plan.chunks[i].brk == whole.chunks[i].brk for i in part.chunk_range[:-1])
    assert [p.first for p in parts] == [0] + [p.first + p.count for p in parts[:-1]]
    assert plan.chapters[-1].first == parts[-1].first + parts[-1].count
    # Only the first part says the chapter's title.
    assert plan.chunks[0].text == "One." and [c.text for c in plan.chunks].count("One.") == 1
    assert sum(p.words for p in parts) == whole.chapters[0].words

    # Each part within the bound; as few parts as that allows (no two neighbours would fit in one), and even.
    seconds = [estimated_s(plan, p, settings) for p in parts]
    assert max(seconds) <= 180.0
    assert all(a + b > 180.0 for a, b in zip(seconds, seconds[1:]))
    assert max(seconds) - min(seconds) <= 2 * 20.0  # within about two paragraphs of each other

    again, _ = plan_for(settings, book)
    assert again.to_json() == plan.to_json()  # deterministic


def test_a_chapter_under_the_bound_or_with_splitting_off_stays_whole(settings):
    book = [{"title": "One", "text": "\n\n".join(paragraphs(40))}]  # 12.96 minutes
    plan, _ = plan_for(settings, book)  # the default bound: 60 minutes
    assert settings.book_part_max_minutes == 60.0
    assert [c.title for c in plan.chapters] == ["One"] and plan.chapters[0].count == len(plan.chunks)
    plan, _ = plan_for(settings.replace(book_part_max_minutes=0), [{"title": "", "text": "\n\n".join(paragraphs(300))}])
    assert [c.title for c in plan.chapters] == ["Chapter 1"]  # 97 minutes in one: 0 never splits
    assert [c.brk for c in plan.chunks].count("chapter") == 1
    plan, _ = plan_for(settings.replace(book_part_max_minutes=13.0), book)
    assert [c.title for c in plan.chapters] == ["One"]


def test_a_paragraph_longer_than_the_bound_stays_whole(settings):
    settings = settings.replace(book_part_max_minutes=0.25, book_speak_titles=False)  # 15 s
    short = paragraphs(6, words=12, seed=1)  # about 4 s each, one chunk
    long = paragraphs(1, words=96, seed=2)[0]  # about 28 s, in 8 chunks
    plan, _ = plan_for(settings, [{"title": "One", "text": "\n\n".join(short[:4] + [long] + short[4:])}])
    assert " ".join(c.text for c in plan.chunks[4:12]) == long and len(plan.chunks) == 14
    starts = [c.first for c in plan.chapters]
    assert set(starts) <= {0, 1, 2, 3, 4, 12, 13}  # where paragraphs begin
    assert 4 in starts and 12 in starts  # the long paragraph is a part of its own, whole
    for chapter in plan.chapters:
        if chapter.first != 4:
            assert estimated_s(plan, chapter, settings) <= 15.0
    assert len(plan.chapters) == 4
    first, _ = plan_for(settings, [{"title": "One", "text": "\n\n".join([long] + short[:2])}])
    assert [(c.first, c.count) for c in first.chapters] == [(0, 8), (8, 2)]


def test_the_part_bound_is_checked():
    assert load({}, environ={"CHATTERBOX_BOOK_PART_MAX_MINUTES": "90"}).book_part_max_minutes == 90.0
    assert load({"book_part_max_minutes": 0}).book_part_max_minutes == 0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="CHATTERBOX_BOOK_PART_MAX_MINUTES"):
            load({"book_part_max_minutes": bad})
