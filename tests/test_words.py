"""Word timestamps: forced alignment on real Piper speech, subtitles, and the routes, event and Celery result of a
live system."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from chatterbox import align, subtitles

from .conftest import ROOT, ws_events


@pytest.fixture(scope="module")
def piper(piper_engine):
    engine, settings = piper_engine
    params = engine.validate({})

    def say(text: str) -> np.ndarray:
        return np.concatenate(list(engine.stream(text, "joe", params)))

    return engine, settings, say


def _check_order(words: list[dict], until: float) -> None:
    for before, after in zip(words, words[1:]):
        assert before["start"] <= before["end"] <= after["start"] <= after["end"], (before, after)
    assert 0 <= words[0]["start"] and words[-1]["end"] <= until + 0.0005  # rounded to ms


def test_words_of_two_chunks_are_where_they_are_spoken(piper):
    engine, settings, say = piper
    text = "Good morning to you. The quick brown fox jumps over the lazy dog."
    # Two chunks, as a job with a 0.7 s pause between them makes them.
    chunks = ["Good morning to you.", "The quick brown fox jumps over the lazy dog."]
    parts = [say(c) for c in chunks]
    rate = engine.sample_rate
    job = align.JobWords(text, chunks, rate, [0.7, 0.2])
    first, second = job.add(0, parts), job.add(1, parts)
    record = job.record(parts)
    assert record["aligned"] is True
    assert [w["word"] for w in record["words"]] == text.split()
    total = (len(parts[0]) + round(0.7 * rate) + len(parts[1])) / rate
    _check_order(record["words"], total)
    first_end = len(parts[0]) / rate
    assert all(w["end"] <= first_end + 0.0005 for w in first)
    assert all(w["start"] >= first_end + 0.7 - 0.0005 for w in second)
    assert second[0]["start"] < first_end + 0.7 + 0.3  # Piper starts speaking almost at once


def test_a_word_boundary_inside_one_chunk_matches_where_the_audio_was_joined(piper):
    engine, _, say = piper
    # "The" of the second sentence starts where its own audio starts: the aligner must find that boundary.
    a, b = say("Good morning to you."), say("The quick brown fox jumps over the lazy dog.")
    rate = engine.sample_rate
    text = "Good morning to you. The quick brown fox jumps over the lazy dog."
    plan = align.plan(text, [text])[0]
    words, aligned = align.align_chunk(np.concatenate([a, b]), rate, text, plan)
    assert aligned
    _check_order([w.as_dict() for w in words], (len(a) + len(b)) / rate)
    joint = len(a) / rate
    by_word = {w.word: w for w in words}
    assert abs(by_word["The"].start - joint) < 0.25, (by_word["The"], joint)
    assert by_word["you."].end <= joint + 0.15
    assert by_word["lazy"].start > joint + 1.0  # far into the second sentence


def test_expanded_words_keep_the_text_as_written(piper):
    engine, settings, say = piper
    text = "It costs $5 on 3rd May."
    chunks = engine.chunks(text, settings)
    assert "five dollars" in chunks[0] and "third" in chunks[0]  # the engine speaks the expansions
    parts = [say(c) for c in chunks]
    record = align.JobWords(text, chunks, engine.sample_rate, [0.2] * len(chunks)).record(parts)
    words = record["words"]
    assert [w["word"] for w in words] == ["It", "costs", "$5", "on", "3rd", "May."]
    assert record["aligned"] is True
    _check_order(words, len(parts[0]) / engine.sample_rate)
    span = {w["word"]: w["end"] - w["start"] for w in words}
    assert span["$5"] > span["on"] + 0.2  # "five dollars" is two words' time, not one


def test_words_the_dictionary_lacks_get_their_own_time(piper):
    engine, settings, say = piper
    text = "The wizard Zorblax waved at Quenthia and smiled."
    chunks = engine.chunks(text, settings)
    parts = [say(c) for c in chunks]
    record = align.JobWords(text, chunks, engine.sample_rate, [0.2]).record(parts)
    words = {w["word"]: w for w in record["words"]}
    assert [w["word"] for w in record["words"]] == text.split()
    for name in ("Zorblax", "Quenthia"):
        assert words[name]["end"] - words[name]["start"] > 0.25, words[name]


def test_without_an_aligner_the_words_are_spread_over_the_speech(piper):
    engine, _, say = piper
    text = "Guten Morgen, wie geht es dir?"
    samples = np.concatenate([np.zeros(engine.sample_rate // 2, np.float32), say("Good morning, how are you?")])
    plan = align.plan(text, [text], "de")[0]
    words, aligned = align.align_chunk(samples, engine.sample_rate, text, plan, language="de")
    assert not aligned
    assert [w.word for w in words] == text.split()
    _check_order([w.as_dict() for w in words], len(samples) / engine.sample_rate)
    assert words[0].start >= 0.45  # the half second of silence before the speech is no word's
    lengths = [w.end - w.start for w in words]
    assert lengths[0] > lengths[3]  # "Guten" takes longer than "es": shared by characters


def test_chunk_offsets_are_where_concat_puts_the_chunks():
    from chatterbox import audio

    rate = 22050
    parts = [np.ones(1000, np.float32), np.ones(333, np.float32), np.ones(50, np.float32)]
    gaps = [0.123, 0.5, 0.2]
    joined = audio.concat(parts, rate, gaps=gaps)
    for i in range(3):
        at = round(align.chunk_offset(parts, i, rate, gaps) * rate)
        assert joined[at] == 1.0 and (at == 0 or joined[at - 1] == 0.0)


WORDS = [{"word": "Hello", "start": 0.0, "end": 0.4}, {"word": "there.", "start": 0.45, "end": 1.0},
         {"word": "Dr.", "start": 1.5, "end": 1.9}, {"word": "Who", "start": 1.9, "end": 2.2},
         {"word": "said", "start": 2.2, "end": 2.5}, {"word": "<hi>", "start": 2.5, "end": 3.0},
         {"word": "&", "start": 3.0, "end": 3.25}, {"word": "bye!", "start": 3.25, "end": 3661.2345}]


def test_srt_a_sentence_a_cue():
    assert subtitles.render(WORDS, "srt") == (
        "1\n00:00:00,000 --> 00:00:01,000\nHello there.\n\n"
        "2\n00:00:01,500 --> 01:01:01,234\nDr. Who said <hi> & bye!\n\n")


def test_vtt_with_at_most_n_words_a_cue():
    assert subtitles.render(WORDS, "vtt", max_words=3) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.000\nHello there.\n\n"
        "00:00:01.500 --> 00:00:02.500\nDr. Who said\n\n"
        "00:00:02.500 --> 01:01:01.234\n&lt;hi&gt; &amp; bye!\n\n")


def test_sentence_ends():
    assert subtitles.sentence_ends(["Mr.", "Smith", "left", "the", "U.S.", "today.", "Really?\u201d", "Yes"]) == [
        False, False, False, False, False, True, True, True]


# -- the live system --------------------------------------------------------------------------------------------

def test_a_job_has_words_subtitles_and_a_words_event(live):
    text = "It costs $5 on 3rd May. The old lighthouse stood at the edge of the cliff."
    job = live.submit(text)
    assert job["words_url"] == f"/jobs/{job['job_id']}/words"
    events = ws_events(live.api, job["events_url"])
    done = live.wait_job(job["job_id"])
    assert done["status"] == "succeeded", done
    assert events[-1]["type"] == "done" and events[-1]["words_url"] == job["words_url"]
    sent = [e for e in events if e["type"] == "words"]
    assert [e["text_index"] for e in sent] == list(range(done["chunks_total"]))
    # each chunk's words go out after its audio and before the job's progress moves past it
    first_words = next(i for i, e in enumerate(events) if e["type"] == "words")
    assert events[first_words - 1]["type"] == "chunk" and events[first_words + 1]["type"] == "progress"

    response = live.api.get(job["words_url"], timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["aligned"] is True
    assert [w["word"] for w in body["words"]] == text.split()
    assert body["words"] == [w for e in sent for w in e["words"]]
    _check_order(body["words"], done["duration_s"])

    vtt = live.api.get(job["subtitles_url"], params={"format": "vtt"}, timeout=10)
    assert vtt.status_code == 200 and vtt.headers["Content-Type"].startswith("text/vtt")
    cues = vtt.text.split("\n\n")
    assert cues[0] == "WEBVTT"
    assert cues[1].split("\n")[1] == "It costs $5 on 3rd May."
    assert cues[2].split("\n")[1] == "The old lighthouse stood at the edge of the cliff."
    srt = live.api.get(job["subtitles_url"], params={"words": "4"}, timeout=10)
    assert srt.status_code == 200 and srt.headers["Content-Type"].startswith("application/x-subrip")
    assert srt.text.startswith("1\n00:00:00,") and "\n\n4\n" in srt.text  # 6 + 10 words: 2 + 3 cues

    for params, param in (({"format": "ass"}, "format"), ({"words": "0"}, "words"), ({"words": "x"}, "words")):
        bad = live.api.get(job["subtitles_url"], params=params, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, bad.text
    assert live.api.get("/jobs/nosuchjob/words", timeout=10).status_code == 404

    purge = live.api.delete(f"/jobs/{job['job_id']}", params={"purge": "1"}, timeout=10)
    assert purge.status_code == 200
    assert not list(live.settings.outputs_dir.glob(f"{job['job_id']}.*"))  # the words went with the audio


def test_words_wait_for_the_job(live):
    job = live.submit("A sentence to wait for. " * 12)
    early = live.api.get(job["words_url"], timeout=10)
    assert early.status_code == 409 and early.json()["error"]["code"] == "words_not_ready"
    live.wait_job(job["job_id"])
    assert live.api.get(job["words_url"], timeout=10).status_code == 200


def test_the_celery_result_has_the_words(live):
    script = ("import json; from tasks import synthesize; "
              "print(json.dumps(synthesize.delay(text='Words for Celery.').get(timeout=120)))")
    out = subprocess.run([sys.executable, "-c", script], env=live.env, cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert [w["word"] for w in result["words"]] == ["Words", "for", "Celery."] and result["aligned"] is True
    assert json.loads(open(result["words_path"]).read())["words"] == result["words"]
