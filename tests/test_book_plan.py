"""Planning a book: chapters into sentence-aligned chunks, each with the cache key of its audio."""
from __future__ import annotations

import pytest

from chatterbox.access import SYSTEM
from chatterbox.books.plan import bump_revision, chunk_key, load_plan, make_plan, save_plan
from chatterbox.books.reader import BookError, book_from_chapters
from chatterbox.engines import create_engine
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
