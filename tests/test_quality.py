"""Chunk quality checks on real Piper speech, damaged in the ways a TTS engine damages it (no mocks)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from chatterbox.quality import (QualityReport, Thresholds, expected_duration, make_transcriber, speech_activity,
                                check_chunk, word_error_rate)

# Texts pocketsphinx hears well on Piper's voice (WER 0.00 to 0.22 over repeated syntheses), and one unrelated text
# of about the same length, so that only the words differ.
GOOD = [
    "Please remember to turn off the lights when you leave the room. After dinner, we sat by the fire and talked "
    "until midnight.",
    "It was the best of times, it was the worst of times. The museum contains over 4,000 paintings from the "
    "seventeenth century.",
]
UNRELATED = "The committee will meet on Tuesday to discuss the new budget proposal, and the company reported profits."


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[int, dict[str, np.ndarray]]:
    from chatterbox.engines.piper import PiperEngine
    from chatterbox.settings import load

    engine = PiperEngine(load({"data_dir": str(tmp_path_factory.mktemp("quality"))}))
    engine.load()
    params = engine.validate({})
    return engine.sample_rate, {t: np.concatenate(list(engine.stream(t, "joe", params))) for t in GOOD}


@pytest.fixture(scope="module")
def asr():
    return make_transcriber("pocketsphinx")


@pytest.fixture(scope="module")
def good(speech, asr) -> dict[str, QualityReport]:
    rate, audio = speech
    return {t: check_chunk(audio[t], rate, t, transcriber=asr) for t in GOOD}


def _first(speech) -> tuple[int, np.ndarray, str]:
    rate, audio = speech
    return rate, audio[GOOD[0]], GOOD[0]


def test_good_speech_passes_with_pocketsphinx(good):
    for text, report in good.items():
        assert report.ok, (text, report.problems)
        assert report.codes == [] and report.problems == []
        assert report.asr == "pocketsphinx"
        assert report.wer is not None and report.wer < Thresholds().max_wer
        assert "midnight" in report.transcript or "century" in report.transcript
        assert 0.6 < report.duration_s / report.expected_s < 1.6
        assert report.trailing_noise_s == 0.0 and report.longest_silence_s < 1.0
        assert report.clipped_fraction < 0.001
        assert 0.0 <= report.score < 0.6
        json.dumps(report.as_dict())
        assert report.as_dict()["asr"] == "pocketsphinx"


def test_unrelated_text_is_a_mismatch(speech, asr):
    rate, samples, _ = _first(speech)
    report = check_chunk(samples, rate, UNRELATED, transcriber=asr)
    assert not report.ok
    assert "mismatch" in report.codes
    assert report.wer > 0.75
    assert any("word error rate" in p for p in report.problems)


def test_truncated_audio_is_too_short(speech):
    rate, samples, text = _first(speech)
    report = check_chunk(samples[: int(len(samples) * 0.4)], rate, text)
    assert not report.ok and "too_short" in report.codes
    assert report.asr == "off" and report.wer is None
    assert any("expected to take" in p for p in report.problems)


def test_repeated_audio_is_too_long(speech):
    rate, samples, text = _first(speech)
    report = check_chunk(np.concatenate([samples] * 3), rate, text)
    assert not report.ok and report.codes == ["too_long"]


def test_amplified_audio_is_clipped(speech):
    rate, samples, text = _first(speech)
    report = check_chunk(np.clip(samples * 8.0, -1.0, 1.0), rate, text)
    assert not report.ok and "clipped" in report.codes
    assert report.clipped_fraction > 0.001


def test_long_pause_inside_the_speech(speech):
    rate, samples, text = _first(speech)
    middle = len(samples) // 2
    paused = np.concatenate([samples[:middle], np.zeros(3 * rate, np.float32), samples[middle:]])
    report = check_chunk(paused, rate, text)
    # The pause is reported once, not also as speech that goes on too long.
    assert report.codes == ["long_silence"]
    assert 2.9 <= report.longest_silence_s < 3.6  # whole 20 ms frames
    # Leading and trailing silence is not a pause inside the speech.
    padded = np.concatenate([np.zeros(3 * rate, np.float32), samples, np.zeros(3 * rate, np.float32)])
    assert check_chunk(padded, rate, text).ok


def test_noise_after_the_last_word(speech):
    rate, samples, text = _first(speech)
    noise = np.random.default_rng(0).normal(0.0, 10 ** (-30 / 20), rate).astype(np.float32)  # 1 s at -30 dBFS
    report = check_chunk(np.concatenate([samples, noise]), rate, text)
    assert not report.ok and report.codes == ["trailing_noise"]
    assert 0.9 <= report.trailing_noise_s < 1.4
    assert any("after the last word" in p for p in report.problems)


@pytest.mark.parametrize("samples", [np.zeros(22050 * 3, np.float32), np.zeros(0, np.float32)])
def test_silence_fails(samples, asr):
    report = check_chunk(samples, 22050, GOOD[0], transcriber=asr)
    assert not report.ok and report.codes == ["silent"]
    json.dumps(report.as_dict())


def test_scores_rank_attempts(speech, good):
    rate, samples, text = _first(speech)
    passing = good[text].score
    cut_less = check_chunk(samples[: int(len(samples) * 0.45)], rate, text)
    cut_more = check_chunk(samples[: int(len(samples) * 0.2)], rate, text)
    noisy = check_chunk(np.concatenate([samples, np.full(rate, 0.02, np.float32) *
                                        np.sign(np.random.default_rng(1).normal(size=rate))]), rate, text)
    silent = check_chunk(np.zeros(rate, np.float32), rate, text)
    for failing in (cut_less, cut_more, noisy, silent):
        assert not failing.ok and failing.score > passing
    assert cut_less.score < cut_more.score < silent.score


def test_speed_changes_the_expected_time():
    slow, fast = expected_duration("one two three four five six seven eight"), expected_duration("one two")
    assert slow > fast > 0
    assert expected_duration("   ") == 0.0
    assert expected_duration("12 cats") == expected_duration("twelve cats")
    rate = 16000
    tone = (0.3 * np.sin(np.arange(rate * 2) * 2 * np.pi * 220 / rate)).astype(np.float32)
    normal = check_chunk(tone, rate, "a few words here")
    faster = check_chunk(tone, rate, "a few words here", speed=1.5)
    assert faster.expected_s < normal.expected_s


def test_speech_activity(speech):
    rate, samples, _ = _first(speech)
    active = speech_activity(samples, rate)
    assert active.dtype == bool and len(active) == len(samples) // int(0.02 * rate)
    assert 0.6 < active.mean() < 1.0
    assert not speech_activity(np.zeros(rate, np.float32), rate).any()
    assert speech_activity(np.zeros(0, np.float32), rate).size == 0


def test_word_error_rate():
    assert word_error_rate("the cat sat down", "the cat sat down") == 0.0
    assert word_error_rate("the cat sat down", "the dog sat down") == 0.25
    assert word_error_rate("I have 12 apples", "i have twelve apples") == 0.0
    assert word_error_rate("Hello, World! It's well-known.", "hello world it's well known") == 0.0
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("one two", "") == 1.0
    assert word_error_rate("", "noise") == 1.0  # edits / max(1, 0 words)


def test_make_transcriber(tmp_path):
    assert make_transcriber("off") is None
    with pytest.raises(ValueError, match="faster-whisper is unavailable: .*(not installed|does not exist)"):
        make_transcriber("faster-whisper", str(tmp_path / "no-such-model"))
    auto = make_transcriber("auto", str(tmp_path))
    assert auto is not None and auto.name == "pocketsphinx"
    # Piper speaks every phoneme of its text: auto hears it only when told to.
    assert make_transcriber("auto", follows_text=True) is None
    assert make_transcriber("pocketsphinx", follows_text=True).name == "pocketsphinx"
    with pytest.raises(ValueError, match="unknown transcriber"):
        make_transcriber("whisper.cpp")
