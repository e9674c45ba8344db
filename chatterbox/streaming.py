"""Streaming encoder: mono samples in, piece by piece, one valid encoded stream out as ffmpeg produces it.

One long-lived ffmpeg process per stream (PCM s16le on stdin, the container on stdout), so that every format
comes out as a single stream a player or decoder accepts whole: MP3 frames, Ogg Opus pages, AAC in ADTS, FLAC,
WAV with an unknown-length header, or raw PCM. Samples are resampled to ``OUTPUT_RATE`` (24 kHz, what OpenAI's
speech API produces; Opus accepts it too) with soxr before they reach ffmpeg, and an optional tempo change is
applied with ffmpeg's ``atempo`` filters. A thread reads ffmpeg's stdout so that its bytes are available the
moment they are written, whatever the caller is doing.
"""
from __future__ import annotations

import io
import os
import queue
import subprocess
import threading
import time
import wave

import numpy as np

from . import audio

OUTPUT_RATE = 24000

# Format -> Content-Type. "opus" is Opus in Ogg, "aac" is AAC in ADTS frames, "pcm" raw s16le mono at OUTPUT_RATE.
CONTENT_TYPES: dict[str, str] = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                                 "wav": "audio/wav", "pcm": "audio/pcm"}

# ffmpeg output options per format. Every container here can be written to a pipe without seeking back.
_OUTPUT: dict[str, list[str]] = {
    # No Xing/LAME frame: it would be written before the frame count is known, and a player would trust it.
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k", "-write_xing", "0", "-f", "mp3"],
    # Pages of at most 100 ms instead of the muxer's 1 s, so a listener is never more than that behind.
    "opus": ["-c:a", "libopus", "-b:a", "64k", "-page_duration", "100000", "-f", "ogg"],
    "aac": ["-c:a", "aac", "-b:a", "96k", "-f", "adts"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    # The header's sizes stay 0xFFFFFFFF ("unknown"), which ffmpeg, browsers and Python's wave read to the end.
    "wav": ["-c:a", "pcm_s16le", "-bitexact", "-f", "wav"],
    "pcm": ["-c:a", "pcm_s16le", "-f", "s16le"],
}


# read() returns at most about this much at once, so a slow reader still gets a steady flow of pieces.
_READ_MAX = 256 * 1024


class EncoderError(RuntimeError):
    """ffmpeg could not start, or exited with an error."""


def atempo_chain(tempo: float) -> list[float]:
    """Factors for chained atempo filters whose product is ``tempo``, each within the 0.5-2.0 that every ffmpeg
    version accepts (newer ones go higher, but chaining costs nothing and keeps the quality)."""
    if not np.isfinite(tempo) or tempo <= 0:
        raise ValueError(f"tempo must be a positive number, not {tempo!r}")
    factors = []
    while tempo > 2.0:
        factors.append(2.0)
        tempo /= 2.0
    while tempo < 0.5:
        factors.append(0.5)
        tempo /= 0.5
    if abs(tempo - 1.0) > 1e-6:
        factors.append(tempo)
    return factors


def wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV (as the workers store chunks) -> (mono float32 samples, rate), without ffmpeg."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise audio.AudioError("the chunk is not 16-bit PCM")
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels, rate = w.getnchannels(), w.getframerate()
    samples = frames.reshape(-1, channels).mean(axis=1) if channels > 1 else frames
    return samples.astype(np.float32) / 32767.0, rate


class StreamEncoder:
    """Encode samples at ``input_rate`` into ``fmt`` (one of CONTENT_TYPES) as one stream.

    Two ways to use it. Synchronously: ``feed(samples)`` returns what is encoded so far, ``close()`` the rest.
    Or from two threads: one calls ``write(samples)`` and finally ``end()``, the other ``read()`` until None;
    ``read`` returns bytes as soon as ffmpeg writes them. ``abort()`` stops at once (a client that went away).
    """

    def __init__(self, fmt: str, input_rate: int, tempo: float = 1.0):
        if fmt not in _OUTPUT:
            raise ValueError(f"unknown stream format {fmt!r}; choose one of {', '.join(_OUTPUT)}")
        self.format = fmt
        self.content_type = CONTENT_TYPES[fmt]
        self.input_rate = int(input_rate)
        self.tempo = float(tempo)
        self.samples_in = 0  # at OUTPUT_RATE, before any tempo change
        self._resampler = None
        if self.input_rate != OUTPUT_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(self.input_rate, OUTPUT_RATE, 1, dtype="float32", quality="HQ")
        filters = ",".join(f"atempo={f:.6f}" for f in atempo_chain(self.tempo))
        cmd = [audio.ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
               "-f", "s16le", "-ar", str(OUTPUT_RATE), "-ac", "1", "-i", "pipe:0",
               *(["-af", filters] if filters else []), *_OUTPUT[fmt],
               # Each packet goes to the pipe as soon as it is muxed, not when ffmpeg's 32 KB buffer fills.
               "-flush_packets", "1", "pipe:1"]
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise EncoderError(f"could not start ffmpeg: {exc}") from exc
        self._out: queue.Queue[bytes] = queue.Queue()
        self._eof = False
        self._ended = False
        self._aborted = False
        self._lock = threading.Lock()  # write/end/abort may come from different threads
        self._reader = threading.Thread(target=self._read_stdout, name="ffmpeg-stdout", daemon=True)
        self._reader.start()

    # -- input ------------------------------------------------------------------------------------------------
    def write(self, samples: np.ndarray) -> None:
        """Queue mono float32 samples in [-1, 1] at input_rate for encoding (blocks while ffmpeg catches up)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        with self._lock:
            if self._ended:
                raise EncoderError("the stream has already ended")
            if self._resampler is not None:
                samples = self._resampler.resample_chunk(samples, last=False)
            self._send(samples)

    def end(self) -> None:
        """No more input: flush the resampler and let ffmpeg finish the stream (idempotent)."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            try:
                if self._resampler is not None:
                    self._send(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
                self._proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass  # ffmpeg already gone (aborted, or failed: close() reports it)

    def _send(self, samples: np.ndarray) -> None:
        if not samples.size:
            return
        self.samples_in += int(samples.size)
        try:
            self._proc.stdin.write(audio.to_int16(samples).tobytes())
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            reason = "aborted" if self._aborted else (self._stderr() or str(exc))
            raise EncoderError(f"ffmpeg stopped: {reason}") from None

    # -- output -----------------------------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        fd = self._proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)  # returns what is there, without waiting for a full buffer
            except OSError:
                data = b""
            self._out.put(data)
            if not data:
                return

    def read(self, timeout: float | None = None, linger: float = 0.0) -> bytes | None:
        """Everything ffmpeg has written since the last read, waiting up to ``timeout`` s for at least one byte
        (None: as long as it takes). b"" when nothing came in time, None once the stream has ended.

        ``linger`` s more are spent gathering what follows the first bytes: ffmpeg writes each packet (a 26 ms
        MP3 frame) on its own, and a few ms turn a stream of tiny pieces into a few larger ones.
        """
        if self._eof:
            return None
        try:
            parts = [self._out.get(timeout=timeout)]
        except queue.Empty:
            return b""
        deadline = time.monotonic() + linger
        size = len(parts[0])
        while parts[-1] and size < _READ_MAX:
            try:
                parts.append(self._out.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
            size += len(parts[-1])
        if not parts[-1]:
            self._eof = True
            return b"".join(parts) or None
        return b"".join(parts)

    def feed(self, samples: np.ndarray) -> bytes:
        """write() then whatever is encoded by now (never waits for ffmpeg's output)."""
        self.write(samples)
        return self.read(timeout=0) or b""

    def close(self) -> bytes:
        """end(), then the rest of the stream; raises EncoderError if ffmpeg failed."""
        self.end()
        parts = []
        while (data := self.read()) is not None:
            parts.append(data)
        self._proc.wait()
        self._reader.join()
        if self._proc.returncode != 0 and not self._aborted:
            raise EncoderError(f"ffmpeg could not encode {self.format}: {self._stderr() or 'no output'} "
                               f"(exit status {self._proc.returncode})")
        self._proc.stderr.close()
        return b"".join(parts)

    def abort(self) -> None:
        """Stop ffmpeg now and drop what it had not written (idempotent)."""
        self._aborted = True
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._reader.join(timeout=5)
        for pipe in (self._proc.stdin, self._proc.stderr):
            try:
                pipe.close()
            except (OSError, ValueError):
                pass  # a pipe another thread was writing to when it broke

    @property
    def seconds_in(self) -> float:
        """Audio written so far, in seconds, before any tempo change."""
        return self.samples_in / OUTPUT_RATE

    def _stderr(self) -> str:
        try:
            self._proc.wait(timeout=2)  # its stdin broke: it is exiting, and its last words are on stderr
        except subprocess.TimeoutExpired:
            return ""  # still running: reading its stderr would block
        try:
            lines = [ln.strip() for ln in self._proc.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return lines[-1] if lines else ""

    def __enter__(self) -> "StreamEncoder":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc.poll() is None:
            self.abort()
