"""Audio handling: encoding to the output formats (pydub with the imageio-ffmpeg binary), decoding, checks."""
from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
import warnings
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np

# Format name -> Content-Type. "ogg" is Ogg with the Opus codec.
FORMATS: dict[str, str] = {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}

# What pydub/ffmpeg is told per format: (container, codec, extra options).
_ENCODE: dict[str, tuple[str, str | None, list[str]]] = {
    "mp3": ("mp3", "libmp3lame", ["-b:a", "128k"]),
    # The codec must be named: pydub's default for "ogg" is Vorbis.
    "ogg": ("ogg", "libopus", ["-b:a", "64k"]),
    "flac": ("flac", "flac", []),
}
# The only rates the Opus encoder accepts.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)

# What decode() reads: the containers of audio files and of browser recordings (WebM, Ogg, MP4), and nothing that
# makes ffmpeg open other files or URLs (playlists such as HLS, concat scripts), whatever the data claims to be.
INPUT_FORMATS = "wav,w64,mp3,flac,ogg,matroska,webm,mov,mp4,m4a,3gp,aac,aiff,caf"
# Decoded audio keeps its rate when it is one of these, else gets the nearest: a header claiming 2 MHz would
# otherwise make a minute of it 480 MB of samples.
DECODE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
DECODE_TIMEOUT_S = 60.0


class AudioError(ValueError):
    """Audio that cannot be encoded or decoded (unknown format, no samples, not audio)."""


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped in the imageio-ffmpeg wheel; pydub is configured to use it (once)."""
    import imageio_ffmpeg

    # pydub looks for "ffmpeg" on PATH when it is imported and warns when there is none (we hand it ours), and
    # its "import audioop" raises a DeprecationWarning on Python 3.11-3.12: neither is ours to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydub import AudioSegment

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    AudioSegment.converter = exe  # AudioSegment.ffmpeg is an alias of converter in pydub 0.25
    return exe


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"the sample rate must be a positive integer, not {sample_rate!r}")
    return int(sample_rate)


def _mono(samples: np.ndarray) -> np.ndarray:
    return np.asarray(samples, dtype=np.float32).reshape(-1)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16, clipped (NaN becomes silence rather than noise)."""
    clean = np.nan_to_num(_mono(samples), nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(clean, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit mono PCM WAV, without ffmpeg (the fast path for chunks and WAV output)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(_check_rate(sample_rate))
        w.writeframes(to_int16(samples).tobytes())
    return buf.getvalue()


def read_wav(path: str | Path | bytes) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV as written by wav_bytes (a file, or its bytes) -> (mono float32 samples, rate), without
    starting ffmpeg."""
    with wave.open(io.BytesIO(path) if isinstance(path, bytes) else str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise AudioError(f"{path} is not 16-bit PCM")
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels, rate = w.getnchannels(), w.getframerate()
    samples = frames.reshape(-1, channels).mean(axis=1) if channels > 1 else frames
    return (samples.astype(np.float32) / 32767.0), rate


def _opus_rate(sample_rate: int) -> int:
    # The nearest Opus rate at or above the input keeps all of its bandwidth (22050/24000 -> 24000, 44100 -> 48000).
    return next((r for r in _OPUS_RATES if r >= sample_rate), 48000)


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Mono float32 samples in [-1, 1] as a complete file in fmt (one of FORMATS)."""
    key = fmt.lower() if isinstance(fmt, str) else fmt
    if key not in FORMATS:
        raise AudioError(f"unknown audio format {fmt!r}; choose one of {', '.join(FORMATS)}")
    samples = _mono(samples)
    if samples.size == 0:
        raise AudioError("there are no samples to encode")
    sample_rate = _check_rate(sample_rate)
    if key == "wav":
        return wav_bytes(samples, sample_rate)

    ffmpeg_exe()
    from pydub import AudioSegment
    from pydub.exceptions import CouldntEncodeError

    segment = AudioSegment(to_int16(samples).tobytes(), frame_rate=sample_rate, sample_width=2, channels=1)
    container, codec, options = _ENCODE[key]
    if key == "ogg":
        options = [*options, "-ar", str(_opus_rate(sample_rate))]  # ffmpeg resamples; Opus refuses other rates
    out = io.BytesIO()
    try:
        segment.export(out, format=container, codec=codec, parameters=options)
    except CouldntEncodeError as exc:
        raise AudioError(f"ffmpeg could not encode {key}: {_last_line(str(exc))}") from None
    return out.getvalue()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def decode(data: bytes | str | Path, max_seconds: float | None = None,
           timeout_s: float = DECODE_TIMEOUT_S) -> tuple[np.ndarray, int]:
    """Any audio ffmpeg reads (bytes, or a path) -> (mono float32 samples, sample rate). No ffprobe needed.

    At most ``max_seconds`` are decoded (a 10-hour file costs what its first minute does), within ``timeout_s``, at a
    rate of DECODE_RATES. Opus always decodes at 48 kHz, whatever rate it was encoded from.
    """
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise AudioError(f"cannot read {path}: no such file")
        return _decode_file(path.resolve(), str(path), max_seconds, timeout_s)
    data = bytes(data)
    if not data:
        raise AudioError("the audio data is empty")
    # A file rather than a pipe: some containers (MP4, WAV with odd chunks) need to seek.
    with tempfile.NamedTemporaryFile(suffix=".audio") as src:
        src.write(data)
        src.flush()
        return _decode_file(Path(src.name), "the data", max_seconds, timeout_s)


def _decode_file(path: Path, what: str, max_seconds: float | None, timeout_s: float) -> tuple[np.ndarray, int]:
    # "file:" and the protocol whitelist stop ffmpeg from reading a name such as "concat:..." or "-x" as a protocol
    # or an option, or a playlist inside the data from opening anything else.
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-protocol_whitelist", "file", "-format_whitelist", INPUT_FORMATS,
           "-i", f"file:{path}", "-map", "0:a:0", *(["-t", f"{max_seconds:.3f}"] if max_seconds else []),
           "-af", "aformat=sample_rates=" + "|".join(map(str, DECODE_RATES)),
           "-ac", "1", "-f", "f32le", "-c:a", "pcm_f32le", "-"]
    try:
        result = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AudioError(f"{what} took more than {timeout_s:.0f} s to decode") from None
    log = result.stderr.decode(errors="replace")
    # The last "Audio:" line is the output stream, at the rate the format filter settled on.
    rates = re.findall(r"Audio: .*?, (\d+) Hz", log)
    if result.returncode != 0 or not rates:
        raise AudioError(f"{what} is not audio that ffmpeg can read ({_last_line(log)})")
    return np.frombuffer(result.stdout, dtype=np.float32).copy(), int(rates[-1])


def silence(seconds: float, sample_rate: int) -> np.ndarray:
    """seconds of float32 zeros (none for a negative length)."""
    return np.zeros(max(0, int(round(seconds * sample_rate))), dtype=np.float32)


def concat(chunks: list[np.ndarray], sample_rate: int, gap_seconds: float = 0.0,
           gaps: list[float] | None = None) -> np.ndarray:
    """Join chunks with gap_seconds of silence between them (not before the first or after the last); ``gaps``:
    the silence after each chunk instead (a pause the text asked for)."""
    parts: list[np.ndarray] = []
    for i, chunk in enumerate(chunks):
        gap = silence(gap_seconds if gaps is None else gaps[i - 1], sample_rate) if i else None
        if gap is not None and gap.size:
            parts.append(gap)
        parts.append(_mono(chunk))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside path, fsync, rename: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so os.replace is a rename within one filesystem (atomic), never a copy.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def duration_seconds(samples: np.ndarray, sample_rate: int) -> float:
    """Length of samples in seconds."""
    return len(samples) / float(sample_rate)


def peak_dbfs(samples: np.ndarray) -> float:
    """Peak level in dB relative to full scale; -inf for silence or no samples."""
    samples = _mono(samples)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return float(20.0 * np.log10(peak)) if peak > 0 else float("-inf")


def is_silent(samples: np.ndarray, threshold_dbfs: float = -50.0) -> bool:
    """True when the peak stays below threshold_dbfs."""
    return peak_dbfs(samples) < threshold_dbfs


def clipped_fraction(samples: np.ndarray) -> float:
    """Fraction of samples at full scale (|x| >= 0.999), a sign of a clipped recording."""
    samples = _mono(samples)
    return float(np.mean(np.abs(samples) >= 0.999)) if samples.size else 0.0
