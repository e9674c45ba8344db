"""Encoding and decoding real audio through the imageio-ffmpeg binary."""
from __future__ import annotations

import numpy as np
import pytest

from chatterbox import audio


def sine(rate: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


MAGIC = {"wav": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WAVE",
         "mp3": lambda b: b[:3] == b"ID3" or (b[0] == 0xFF and b[1] & 0xE0 == 0xE0),
         "ogg": lambda b: b[:4] == b"OggS" and b"OpusHead" in b[:100],
         "flac": lambda b: b[:4] == b"fLaC"}


@pytest.mark.parametrize("rate", [22050, 24000])
@pytest.mark.parametrize("fmt", list(audio.FORMATS))
def test_round_trip(fmt, rate):
    samples = sine(rate)
    data = audio.encode(samples, rate, fmt)
    assert MAGIC[fmt](data)
    decoded, decoded_rate = audio.decode(data)
    assert decoded_rate == (48000 if fmt == "ogg" else rate)  # Opus always decodes at 48 kHz
    assert abs(len(decoded) / decoded_rate - 1.0) < 0.05
    if fmt in ("wav", "flac"):
        assert len(decoded) == len(samples)
        assert np.max(np.abs(decoded - samples)) < 1e-4
    else:  # lossy: same loudness and pitch
        assert abs(np.sqrt(np.mean(decoded ** 2)) - np.sqrt(np.mean(samples ** 2))) < 0.05
        spectrum = np.abs(np.fft.rfft(decoded[: decoded_rate // 2]))
        assert abs(np.argmax(spectrum) * 2 - 440) < 10


def test_opus_rates():
    assert audio._opus_rate(22050) == 24000 and audio._opus_rate(24000) == 24000
    assert audio._opus_rate(44100) == 48000 and audio._opus_rate(16000) == 16000


def test_errors_are_named():
    with pytest.raises(audio.AudioError, match="unknown audio format 'aiff'"):
        audio.encode(sine(22050), 22050, "aiff")
    with pytest.raises(audio.AudioError, match="no samples"):
        audio.encode(np.zeros(0, np.float32), 22050, "mp3")
    with pytest.raises(audio.AudioError, match="not audio"):
        audio.decode(b"this is not audio at all" * 100)
    with pytest.raises(audio.AudioError, match="empty"):
        audio.decode(b"")


def test_concat_and_checks():
    joined = audio.concat([np.ones(10, np.float32), np.ones(5, np.float32)], 100, 0.1)
    assert len(joined) == 25 and joined[10:20].sum() == 0
    assert audio.is_silent(np.zeros(100, np.float32)) and not audio.is_silent(sine(8000))
    assert audio.clipped_fraction(np.array([1.0, 0.5, -1.0, 0.0], np.float32)) == 0.5
    assert audio.peak_dbfs(np.array([0.5], np.float32)) == pytest.approx(-6.02, abs=0.01)


def test_write_atomic(tmp_path):
    target = tmp_path / "sub" / "out.wav"
    audio.write_atomic(target, b"first")
    audio.write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["out.wav"]
