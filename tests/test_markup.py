"""Pauses and SSML (chatterbox.markup): parsed as written, refused naming what is wrong, and heard in the audio
(real Piper in this process, and a job through the running system)."""
from __future__ import annotations

import numpy as np
import pytest

from chatterbox import audio, markup
from chatterbox.markup import MarkupError, Segment
from chatterbox.settings import load
from chatterbox.synthesis import speech_plan, synthesize_text


def test_plain_text_pauses():
    assert markup.parse("One. [pause:1.5s] Two [PAUSE: 300ms] three.") == [
        Segment("One.", 1.5), Segment("Two", 0.3), Segment("three.")]
    assert markup.parse("Just words.") == [Segment("Just words.")]
    assert markup.parse("[pause:1s] Leading, then [pause:2] [pause:0.5s] two at once.") == [
        Segment("Leading, then", 2.5), Segment("two at once.")]  # a pause before any words: dropped


def test_ssml_elements():
    text = ("<speak>Hi<break time=\"700ms\"/> there. <p>A <sub alias=\"World Wide Web\">WWW</sub> page.</p>"
            "<prosody rate=\"slow\">Slowly <prosody rate=\"200%\">quick</prosody></prosody> Call "
            "<say-as interpret-as=\"telephone\">+1 555-1234</say-as>, the <say-as interpret-as=\"ordinal\">3</say-as>"
            " time, <say-as interpret-as=\"characters\">NASA</say-as>, <say-as interpret-as=\"cardinal\">1,024</say-as>"
            " <s>A sentence</s><break strength=\"strong\"/>"
            "<phoneme alphabet=\"ipa\" ph=\"təˈmɑːtoʊ\">tomato</phoneme>.</speak>")
    assert markup.parse(text) == [
        Segment("Hi", 0.7), Segment("there."), Segment("A World Wide Web page.", markup.PARAGRAPH_PAUSE_S),
        Segment("Slowly", 0, 0.75), Segment("quick", 0, 1.5),
        Segment("Call plus 1, 5 5 5, 1 2 3 4, the third time, N A S A, one thousand and twenty-four"),
        Segment("A sentence", 0.75), Segment("tomato.")]
    assert markup.spoken_text("<speak>A <break time=\"1s\"/> b</speak>") == "A b"


@pytest.mark.parametrize("text, problem", [
    ("<speak><emphasis>x</emphasis></speak>", "unknown SSML element <emphasis>"),
    ("<speak>unclosed", "not well-formed XML"),
    ('<!DOCTYPE speak [<!ENTITY e "boom">]><speak>&e;</speak>', "no DTDs or entities"),
    ('<?xml version="1.0"?><!DOCTYPE speak SYSTEM "http://example.com/x.dtd"><speak>x</speak>', "no DTDs"),
    ('<?xml version="1.0"?><voice>x</voice>', "<speak> at its root"),
    ("a [pause:soon] b", "[pause:soon] must be a duration"),
    ("a [pause:11s] b", "at most 10 s"),
    ("<speak><break time=\"1s\">x</break></speak>", "<break> is empty"),
    ("<speak><break strength=\"huge\"/></speak>", "<break strength> must be one of"),
    ("<speak><sub>x</sub></speak>", "<sub> needs alias"),
    ("<speak><prosody rate=\"zoom\">x</prosody></speak>", "<prosody rate> must be"),
    ("<speak><prosody rate=\"1000%\">x</prosody></speak>", "outside 25% to 400%"),
    ("<speak><say-as interpret-as=\"vehicle\">x</say-as></speak>", "<say-as interpret-as> must be one of"),
    ("<speak><say-as interpret-as=\"cardinal\">many</say-as></speak>", "holds a whole number"),
    ("<speak><phoneme>x</phoneme></speak>", "<phoneme> needs ph"),
    ('<speak><phoneme ph="">I</phoneme></speak>', "<phoneme> needs ph"),
    ('<speak><phoneme alphabet="x-sampa" ph="aI">I</phoneme></speak>', "not 'x-sampa'"),  # IPA only, any engine
])
def test_bad_markup_is_refused_naming_the_problem(text, problem):
    with pytest.raises(MarkupError) as info:
        markup.parse(text)
    assert problem in str(info.value)


@pytest.fixture(scope="module")
def piper(tmp_path_factory):
    from chatterbox.engines.piper import PiperEngine

    settings = load({"data_dir": str(tmp_path_factory.mktemp("markup"))}, environ={})
    engine = PiperEngine(settings)
    engine.load()
    return engine, settings


def seconds(piper, text: str) -> float:
    engine, settings = piper
    samples = synthesize_text(engine, text, "joe", engine.validate({}), settings)
    return len(samples) / engine.sample_rate


def test_pauses_and_rates_are_heard(piper):
    engine, settings = piper
    plain = seconds(piper, "The first part. The second part.")
    paused = seconds(piper, "The first part. [pause:2s] The second part.")
    # The pause replaces the gap between the two chunks that the pause makes.
    assert abs((paused - plain) - (2.0 - settings.chunk_gap_s)) < 0.35, (plain, paused)
    ssml = seconds(piper, "<speak>The first part.<break time=\"2s\"/> The second part.</speak>")
    assert abs(ssml - paused) < 0.35  # (Piper draws its phoneme lengths: a tenth of a second either way)
    slow = seconds(piper, "<speak><prosody rate=\"50%\">The first part. The second part.</prosody></speak>")
    assert slow > 1.6 * plain  # Piper's own speed: length_scale, twice as long
    plan = speech_plan(engine, "<speak><prosody rate=\"x-fast\">Quick.</prosody> Plain.</speak>", engine.validate({}),
                       settings)
    assert [s.params.get("length_scale") for s in plan] == [pytest.approx(1 / 1.5), 1.0]
    samples = synthesize_text(engine, "Gap [pause:1s] here.", "joe", engine.validate({}), settings)
    rate = engine.sample_rate
    quiet = np.abs(samples) < 1e-4
    longest = max(len(run) for run in np.split(quiet, np.where(np.diff(quiet.astype(int)) != 0)[0] + 1) if run.all())
    assert longest >= 0.95 * rate  # a second of silence where the pause is


def test_ssml_through_the_api(live):
    bad = live.api.post("/synthesize", json={"text": "<speak><audio src=\"x\"/></speak>"}, timeout=30)
    assert bad.status_code == 400
    body = bad.json()
    assert body["error"]["param"] == "text" and body["error"]["code"] == "invalid_markup"
    assert "<audio>" in body["error"]["message"]
    job = live.submit("<speak>Hello.<break time=\"1500ms\"/>Goodbye.</speak>")
    done = live.wait_job(job["job_id"])
    assert done["status"] == "succeeded" and done["chunks_total"] == 2
    data = live.api.get(f"/jobs/{job['job_id']}/audio", timeout=10).content
    samples, rate = audio.decode(data)
    plain = live.wait_job(live.submit("Hello. Goodbye.")["job_id"])
    assert len(samples) / rate - plain["duration_s"] > 1.0
