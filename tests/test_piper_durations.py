"""Word timestamps from Piper's own phoneme durations (chatterbox/engines/piper.py: PiperStream, word_timing): one
span per spoken word, in order, inside the audio, near where the forced aligner puts them; the user's words still
all timed where the text has numbers, abbreviations and phonemes; and a job's words timed by the engine."""
from __future__ import annotations

import statistics

import numpy as np
import pytest

from chatterbox import align
from chatterbox.engines.piper import EMBEDDED_VOICE, word_timing

HOP = 256  # samples per frame of Piper's durations (the voice's hop_length)


@pytest.fixture(scope="module")
def piper(piper_engine):
    engine, settings = piper_engine
    params = engine.validate({})

    def say(chunk: str) -> tuple[np.ndarray, align.Timing | None, object]:
        stream = engine.stream(chunk, EMBEDDED_VOICE, params)
        samples = np.concatenate(list(stream))
        return samples, align.stream_timing(stream), stream

    return engine, settings, say


def _in_order(timing: align.Timing, count: int, duration: float) -> None:
    assert sorted(timing.spans) == list(range(count))
    spans = [timing.spans[i] for i in range(count)]
    for (start, end), (after, _) in zip(spans, spans[1:]):
        assert start < end <= after, spans
    assert 0 <= spans[0][0] and spans[-1][1] <= duration
    assert timing.speech == (spans[0][0], spans[-1][1])


def test_piper_times_each_spoken_word_in_order_within_its_audio(piper):
    engine, settings, say = piper
    # Two sentences (Piper makes each apart), and words espeak-ng runs together: "of the", "from the".
    chunk = "The old lighthouse stood at the edge of the cliff. It was two miles from the village."
    samples, timing, _ = say(chunk)
    assert timing is not None and timing.source == "engine" and timing.aligned
    spoken = align.spoken_words(chunk)
    _in_order(timing, len(spoken), len(samples) / engine.sample_rate)
    for t in [t for span in timing.spans.values() for t in span]:  # on Piper's own frames, not a recognizer's
        assert abs(t * engine.sample_rate / HOP - round(t * engine.sample_rate / HOP)) < 1e-6
    # the pause between the sentences is no word's
    cliff, it = timing.spans[spoken.index("cliff")], timing.spans[spoken.index("it")]
    assert it[0] - cliff[1] > 0.08  # (the "." and the end and start of a sentence: about 0.14 s)
    kept = align.Timing.from_dict(timing.as_dict())  # as a book keeps it with the chunk (to the ms)
    assert kept.source == "engine" and kept.as_dict() == timing.as_dict()


def test_piper_timing_agrees_with_pocketsphinx(piper):
    engine, _, say = piper
    chunk = "Every night since eighteen eighty-seven its beam swept across the dark water, warning ships away."
    samples, timing, _ = say(chunk)
    asr = align.time_chunk(samples, engine.sample_rate, chunk)
    assert timing is not None and asr.aligned and asr.source == "asr"
    both = sorted(set(timing.spans) & set(asr.spans))
    assert len(both) == len(align.spoken_words(chunk))
    starts = [abs(asr.spans[i][0] - timing.spans[i][0]) for i in both]
    ends = [abs(asr.spans[i][1] - timing.spans[i][1]) for i in both]
    # bench/align.py (2026-12-04): median 52 ms at the start (pocketsphinx gives the space before a word to it,
    # Piper to neither), 15 ms at the end; 90th percentiles 84 and 46 ms.
    assert statistics.median(starts) < 0.1 and statistics.median(ends) < 0.06, (starts, ends)
    for i in both:  # each word is the same stretch of audio to both
        (a, b), (c, d) = timing.spans[i], asr.spans[i]
        assert min(b, d) > max(a, c), (i, timing.spans[i], asr.spans[i])


def test_numbers_abbreviations_and_phonemes_give_every_user_word_a_time(piper):
    engine, settings, say = piper
    text = "Dr. Smith paid $4,500 for the IPA kit in the U.S. on May 3rd."
    token = engine.phoneme_token("ˈaɪpiːeɪ")
    chunks = engine.chunks(text.replace("IPA", token), settings)
    assert len(chunks) == 1 and "four thousand five hundred dollars" in chunks[0] and token in chunks[0]
    samples, timing, _ = say(chunks[0])
    # espeak-ng's words are not the text's ("U.S." is one, jˌuːˈɛs; "of the" would be one): matched by sound
    assert timing is not None and timing.source == "engine"
    _in_order(timing, len(align.spoken_words(chunks[0])), len(samples) / engine.sample_rate)
    job = align.JobWords(text, chunks, engine.sample_rate, [0.2])
    words = job.add(0, [samples], timing)
    assert [w["word"] for w in words] == text.split() and job.record([samples])["aligned"] is True
    by_word = {w["word"]: w for w in words}
    assert by_word["$4,500"]["end"] - by_word["$4,500"]["start"] > 1.0  # five words' time
    assert by_word["IPA"]["end"] - by_word["IPA"]["start"] > 0.2


def test_words_that_do_not_match_the_phonemes_fall_back_to_the_recognizer(piper, monkeypatch):
    engine, _, say = piper
    chunk = "Good morning to you."
    samples, timing, stream = say(chunk)
    assert timing is not None
    # The words' own phonemes unlike what was said (another reading of the text): no timing from the engine ...
    assert word_timing(chunk, stream.phonemes, engine.sample_rate, lambda word: "zzzz") is None
    # ... nor for a word with none at all
    assert word_timing(chunk, stream.phonemes, engine.sample_rate,
                       lambda word: "" if word == "to" else engine._word_phonemes[EMBEDDED_VOICE](word)) is None
    # Without one, the recognizer times the chunk; with one, it is not run.
    plan = align.plan(chunk, [chunk])[0]
    words, aligned = align.align_chunk(samples, engine.sample_rate, chunk, plan, timing=None)
    assert aligned and [w.word for w in words] == chunk.split()

    def no_recognizer(*args, **kwargs):
        raise AssertionError("the recognizer ran")

    monkeypatch.setattr(align._Aligner, "align", no_recognizer)
    words, aligned = align.align_chunk(samples, engine.sample_rate, chunk, plan, timing=timing)
    assert aligned and [(w.start, w.end) for w in words] == [timing.spans[i] for i in range(4)]


def test_a_jobs_words_are_timed_by_the_engine(live):
    text = "It costs $5 on 3rd May."
    job = live.submit(text)
    done = live.wait_job(job["job_id"])
    assert done["status"] == "succeeded", done
    body = live.api.get(job["words_url"], timeout=10).json()
    assert body["aligned"] is True and [w["word"] for w in body["words"]] == text.split()
    rate = done.get("sample_rate") or 22050
    # One chunk, so its times are the chunk's own: every one on Piper's frames (256 samples; written to the ms),
    # where pocketsphinx's are on its 10 ms frames.
    for w in body["words"]:
        for t in (w["start"], w["end"]):
            frames = t * rate / HOP
            assert abs(frames - round(frames)) < 0.05, (w, frames)
    assert body["words"][0]["start"] > 0  # Piper's silence before the first word, which pocketsphinx counts as it


def test_the_voice_with_durations_is_made_where_chatterbox_piper_dir_says(tmp_path):
    from chatterbox.engines.piper import PiperEngine
    from chatterbox.settings import load

    settings = load({"data_dir": str(tmp_path / "data")}, environ={"CHATTERBOX_PIPER_DIR": str(tmp_path / "piper")})
    engine = PiperEngine(settings)
    engine.load()
    assert [p.suffixes[-2:] for p in (tmp_path / "piper").iterdir()] == [[".align", ".onnx"]]
    assert not (tmp_path / "data" / "models" / "piper").exists()
    stream = engine.stream("Hello there.", EMBEDDED_VOICE, engine.validate({}))
    assert np.concatenate(list(stream)).size and align.stream_timing(stream).source == "engine"



def test_the_voices_threads_do_not_spin_between_operators(piper_engine):
    """A worker runs several Piper jobs at once: onnxruntime's spinning threads would take the cores they need
    (chatterbox.engines.piper measures it)."""
    engine, settings = piper_engine
    session = engine._model(EMBEDDED_VOICE).session
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
