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

# What ffmpeg is told per format (container, then codec options).
_ENCODE = {
    "mp3": ("mp3", ["-b:a", "128k"]),
    "ogg": ("ogg", ["-c:a", "libopus", "-b:a", "64k"]),
    "flac": ("flac", []),
}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class AudioError(ValueError):
    pass


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped in the imageio-ffmpeg wheel, also handed to pydub."""
    import imageio_ffmpeg

    with warnings.catch_warnings():  # pydub looks for an "ffmpeg" on PATH at import, and warns: we give it ours
        warnings.simplefilter("ignore")
        from pydub import AudioSegment

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    AudioSegment.converter = exe
    AudioSegment.ffmpeg = exe
    return exe


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int16)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit mono PCM WAV, without ffmpeg (the fast path for chunks and WAV output)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(to_int16(samples).tobytes())
    return buf.getvalue()


def _opus_rate(sample_rate: int) -> int:
    # Opus takes only a few rates: the nearest one at or above the input keeps all of its bandwidth.
    return next((r for r in _OPUS_RATES if r >= sample_rate), 48000)


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Mono float32 samples in [-1, 1] as a file of the given format."""
    fmt = fmt.lower() if isinstance(fmt, str) else fmt
    if fmt not in FORMATS:
        raise AudioError(f"unknown audio format {fmt!r}; choose one of {', '.join(FORMATS)}")
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        raise AudioError("there are no samples to encode")
    if fmt == "wav":
        return wav_bytes(samples, sample_rate)
    ffmpeg_exe()
    from pydub import AudioSegment

    segment = AudioSegment(to_int16(samples).tobytes(), frame_rate=int(sample_rate), sample_width=2, channels=1)
    container, options = _ENCODE[fmt]
    if fmt == "ogg":
        options = [*options, "-ar", str(_opus_rate(sample_rate))]
    out = io.BytesIO()
    segment.export(out, format=container, parameters=options)
    return out.getvalue()


def decode(data: bytes | str | Path) -> tuple[np.ndarray, int]:
    """Any audio ffmpeg reads -> (mono float32 samples, sample rate). No ffprobe needed."""
    if isinstance(data, (str, Path)):
        try:
            data = Path(data).read_bytes()
        except OSError as exc:
            raise AudioError(f"cannot read {data}: {exc.strerror}") from None
    if not data:
        raise AudioError("the audio data is empty")
    with tempfile.NamedTemporaryFile(suffix=".audio") as src:
        # A file rather than a pipe: some containers (MP4, some WAVs) need to seek.
        src.write(data)
        src.flush()
        result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", src.name, "-map", "0:a:0",
                                 "-ac", "1", "-f", "f32le", "-c:a", "pcm_f32le", "-"], capture_output=True)
    header = result.stderr.decode(errors="replace")
    match = re.search(r"Audio: .*?, (\d+) Hz", header)
    if result.returncode != 0 or match is None:
        raise AudioError("the data is not audio that ffmpeg can read")
    return np.frombuffer(result.stdout, dtype=np.float32).copy(), int(match.group(1))


def silence(seconds: float, sample_rate: int) -> np.ndarray:
    return np.zeros(max(0, int(round(seconds * sample_rate))), dtype=np.float32)


def concat(chunks: list[np.ndarray], sample_rate: int, gap_seconds: float = 0.0) -> np.ndarray:
    """Join chunks with gap_seconds of silence between them."""
    gap = silence(gap_seconds, sample_rate)
    parts: list[np.ndarray] = []
    for i, chunk in enumerate(chunks):
        if i and gap.size:
            parts.append(gap)
        parts.append(np.asarray(chunk, dtype=np.float32).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside path, then rename: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    return len(samples) / float(sample_rate)


def peak_dbfs(samples: np.ndarray) -> float:
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    return 20.0 * np.log10(peak) if peak > 0 else float("-inf")


def is_silent(samples: np.ndarray, threshold_dbfs: float = -50.0) -> bool:
    return peak_dbfs(samples) < threshold_dbfs


def clipped_fraction(samples: np.ndarray) -> float:
    return float(np.mean(np.abs(samples) >= 0.999)) if len(samples) else 0.0
