"""Encoding and decoding real audio through the imageio-ffmpeg binary."""
from __future__ import annotations

import subprocess
import sys

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


def test_formats():
    assert audio.FORMATS == {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}


@pytest.mark.parametrize("rate", [22050, 24000])
@pytest.mark.parametrize("fmt", list(audio.FORMATS))
def test_round_trip(fmt, rate):
    samples = sine(rate)
    data = audio.encode(samples, rate, fmt)
    assert MAGIC[fmt](data), data[:16]
    decoded, decoded_rate = audio.decode(data)
    # Encoded at 24 kHz (the Opus rate for 22050/24000 input), but ffmpeg always decodes Opus at 48 kHz.
    assert decoded_rate == (48000 if fmt == "ogg" else rate)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
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
    assert audio._opus_rate(11025) == 12000 and audio._opus_rate(96000) == 48000


@pytest.mark.parametrize("rate", [11025, 44100])
def test_opus_takes_any_rate(rate):
    data = audio.encode(sine(rate, 0.3), rate, "OGG")  # the format name is case-insensitive
    decoded, decoded_rate = audio.decode(data)
    assert MAGIC["ogg"](data) and decoded_rate == 48000
    assert abs(len(decoded) / decoded_rate - 0.3) < 0.05


def test_decode_path(tmp_path):
    path = audio.write_atomic(tmp_path / "clip.flac", audio.encode(sine(16000, 0.5), 16000, "flac"))
    samples, rate = audio.decode(path)
    assert rate == 16000 and len(samples) == 8000
    assert audio.decode(str(path))[1] == 16000
    with pytest.raises(audio.AudioError, match="cannot read"):
        audio.decode(tmp_path / "missing.wav")


def test_errors_are_named():
    with pytest.raises(audio.AudioError, match="unknown audio format 'aiff'.*wav, mp3, ogg, flac"):
        audio.encode(sine(22050), 22050, "aiff")
    with pytest.raises(audio.AudioError, match="no samples"):
        audio.encode(np.zeros(0, np.float32), 22050, "mp3")
    with pytest.raises(audio.AudioError, match="sample rate"):
        audio.encode(sine(100), 0, "wav")
    with pytest.raises(audio.AudioError, match="not audio"):
        audio.decode(b"this is not audio at all" * 100)
    with pytest.raises(audio.AudioError, match="empty"):
        audio.decode(b"")
    assert issubclass(audio.AudioError, ValueError)


def test_no_ffmpeg_warnings():
    # pydub warns at import when there is no ffmpeg on PATH; encoding and decoding must stay quiet.
    code = ("import numpy as np; from chatterbox import audio; "
            "audio.decode(audio.encode(np.full(800, 0.1, np.float32), 8000, 'mp3'))")
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                            env={"PATH": "/nonexistent"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr


def test_samples_helpers():
    assert audio.to_int16(np.array([2.0, -2.0, 0.5, np.nan], np.float32)).tolist() == [32767, -32767, 16384, 0]
    assert audio.silence(0.5, 100).tolist() == [0.0] * 50 and audio.silence(0.5, 100).dtype == np.float32
    joined = audio.concat([np.ones(10, np.float32), np.ones(5, np.float32)], 100, 0.1)
    assert len(joined) == 25 and joined[10:20].sum() == 0 and joined.dtype == np.float32
    assert audio.concat([], 100, 0.1).size == 0
    assert audio.duration_seconds(np.zeros(24000), 24000) == 1.0
    assert audio.is_silent(np.zeros(100, np.float32)) and not audio.is_silent(sine(8000))
    assert audio.is_silent(np.full(100, 0.001, np.float32)) and audio.peak_dbfs(np.zeros(0)) == float("-inf")
    assert audio.clipped_fraction(np.array([1.0, 0.5, -1.0, 0.0], np.float32)) == 0.5
    assert audio.peak_dbfs(np.array([0.5], np.float32)) == pytest.approx(-6.02, abs=0.01)


def test_wav_bytes_is_plain_pcm():
    import io
    import wave

    with wave.open(io.BytesIO(audio.wav_bytes(sine(22050, 0.1), 22050))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 22050, 2205)


def test_write_atomic(tmp_path):
    target = tmp_path / "sub" / "out.wav"
    assert audio.write_atomic(target, b"first") == target
    audio.write_atomic(str(target), b"second")
    assert target.read_bytes() == b"second"
    with pytest.raises(TypeError):
        audio.write_atomic(target, "not bytes")  # a failed write keeps the old file and no temp file
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["out.wav"]


# -- decoding what anyone may upload: bounded in time, memory and what ffmpeg may open -----------------------------

def ffmpeg(*args: str) -> None:
    subprocess.run([audio.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def test_a_long_upload_costs_what_its_first_minute_does(tmp_path):
    """Half an hour of silent FLAC (7 MB would be 10 hours) is decoded only up to the cap, not whole into memory."""
    from chatterbox.voices import VoiceError, prepare_reference

    long_flac = tmp_path / "long.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "1800", "-c:a", "flac", str(long_flac))
    samples, rate = audio.decode(long_flac.read_bytes(), max_seconds=61)
    assert rate == 16000 and len(samples) == 61 * 16000  # 3.9 MB of samples rather than 115 MB
    with pytest.raises(VoiceError) as info:
        prepare_reference(long_flac.read_bytes())
    assert info.value.code == "too_long"


def test_a_header_claiming_a_huge_rate_is_decoded_at_a_sane_one(tmp_path):
    import wave

    with wave.open(str(tmp_path / "huge.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(2_000_000)
        w.writeframes((sine(2_000_000, 0.5) * 32767).astype("<i2").tobytes())
    samples, rate = audio.decode(tmp_path / "huge.wav", max_seconds=61)
    assert rate == 48000 and abs(len(samples) - 24000) <= 1


def test_playlists_and_scripts_open_nothing_else(tmp_path):
    """An HLS playlist or a concat script would make ffmpeg read another file on this machine (or a URL): they are
    not audio, whatever they point at."""
    secret = tmp_path / "elsewhere.wav"
    secret.write_bytes(audio.wav_bytes(sine(24000, 2.0), 24000))
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nfile:{secret}\n#EXT-X-ENDLIST\n".encode()
    concat = f"ffconcat version 1.0\nfile '{secret}'\n".encode()
    for data in (playlist, concat):
        with pytest.raises(audio.AudioError, match="not audio"):
            audio.decode(data)


def test_decoding_has_a_time_limit(tmp_path):
    clip = tmp_path / "clip.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "600", "-c:a", "flac", str(clip))
    with pytest.raises(audio.AudioError, match="took more than"):
        audio.decode(clip, timeout_s=0.01)
