"""Assembling audiobooks: chunks -> loudness-normalized chapter files (mp3/ogg + an AAC part) -> one chaptered M4B."""
from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from chatterbox.audio import ffmpeg_exe, read_wav

CHAPTER_FORMATS = ("mp3", "ogg")  # per-chapter download files; ogg = Opus

# Output options per chapter format: (muxer, codec options). Speech in mono needs far less than music.
# LAME's quality 7 encodes 2.3x faster than its default 5 and, on Piper speech at 64k mono, measured no worse (SNR
# 25.8 vs 23.2 dB): the MP3 encode was the largest part of chapter assembly.
_CHAPTER_CODECS: dict[str, tuple[str, list[str]]] = {
    "mp3": ("mp3", ["-c:a", "libmp3lame", "-b:a", "64k", "-compression_level", "7"]),
    "ogg": ("ogg", ["-c:a", "libopus", "-b:a", "48k"]),
}
# The "fast" coder is 2-3x quicker than the default "twoloop" and, at 64k for mono speech, no worse (measured SNR
# 29 vs 19 dB): the AAC encode is the slowest step of chapter assembly.
_AAC = ["-c:a", "aac", "-aac_coder", "fast", "-b:a", "64k"]
# An AAC-LC packet holds 1024 samples; ffmpeg's encoder puts 1024 priming samples in front of the audio.
_AAC_FRAME = 1024
_BREAKS = ("sentence", "paragraph", "chapter")
# Chapters are limited and encoded this many seconds at a time: 10 s of 22.05 kHz float32 is under 1 MB, and the
# limiter's reach, recomputed on both sides of each block, adds 1 % to its work. A whole chapter is never in memory:
# an 11-hour one, joined and normalized in memory, took about 20 GB.
_BLOCK_S = 10.0
# BS.1770-4 K-weighting as analog prototypes (centre frequency Hz, gain dB, Q), brought to any sample rate with the
# bilinear transform; at 48 kHz they give the standard's own coefficients. pyloudnorm's default "K-weighting" is the
# audio-EQ cookbook's approximation instead (1500 Hz, 4 dB), which reads speech 0.04 LU louder at 48 kHz and 0.09 LU
# at 22.05 kHz.
_K_SHELF = (1681.974450955533, 3.999843853973347, 0.7071752369554196, 0.4996667741545416)  # ..., mid-band exponent
_K_HIGHPASS = (38.13547087602444, 0.5003270373238773)
# ISO 639-1 -> 639-2 for the MP4 track language, which must be three letters.
_LANG3 = {"en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita", "nl": "nld", "pt": "por", "ru": "rus",
          "pl": "pol", "sv": "swe", "da": "dan", "no": "nor", "fi": "fin", "cs": "ces", "tr": "tur", "ja": "jpn",
          "zh": "zho", "ko": "kor", "ar": "ara", "hi": "hin", "el": "ell", "hu": "hun", "uk": "ukr", "he": "heb"}


@dataclass(frozen=True)
class Pauses:
    """Silences (seconds) put between chunks and around chapters."""

    sentence_s: float = 0.4  # between chunks inside a paragraph
    paragraph_s: float = 0.9  # after a chunk that ends a paragraph
    chapter_s: float = 2.0  # at the end of each chapter file, so the M4B has it between chapters
    lead_in_s: float = 0.5  # at the start of each chapter file


@dataclass(frozen=True)
class ChunkPlace:
    """Where a chunk's audio landed in its chapter file: a time t of the chunk's own audio is at
    ``start_s + t - trimmed_s`` (for trimmed_s <= t <= trimmed_s + length_s; the rest was silence, cut)."""

    start_s: float  # in the chapter file
    trimmed_s: float  # silence cut from its front
    length_s: float  # what was kept

    def at(self, t: float) -> float:
        return self.start_s + min(max(t - self.trimmed_s, 0.0), self.length_s)


@dataclass
class ChapterFiles:
    """What assemble_chapter wrote."""

    audio: Path  # the chapter file in the chosen format, tagged
    part: Path  # the same audio as AAC in an .m4a, the M4B's building block
    duration_s: float  # of the joined samples (before encoding)
    lufs: float  # integrated loudness after normalization
    chunks: list[ChunkPlace] = field(default_factory=list)  # per chunk, where it is in the chapter file


@dataclass
class ChapterMark:
    """One chapter marker of an M4B, in seconds."""

    title: str
    start_s: float
    end_s: float


def _mono(samples: np.ndarray) -> np.ndarray:
    return np.asarray(samples, dtype=np.float32).reshape(-1)


def trim_silence(samples: np.ndarray, sample_rate: int, threshold_db: float = -45.0,
                 keep_s: float = 0.03) -> np.ndarray:
    """Cut leading and trailing samples below threshold_db (dBFS), keeping keep_s of them; inner gaps stay.

    Returns a view (no copy); an empty array when nothing reaches the threshold.
    """
    samples = _mono(samples)
    start, stop = _trim_span(samples, sample_rate, threshold_db, keep_s)
    return samples[start:stop]


def _trim_span(samples: np.ndarray, sample_rate: int, threshold_db: float = -45.0,
               keep_s: float = 0.03) -> tuple[int, int]:
    """[start, stop) of what trim_silence keeps of mono ``samples``."""
    loud = np.abs(samples) >= 10.0 ** (threshold_db / 20.0)
    if not loud.any():
        return 0, 0
    first, last = int(loud.argmax()), samples.size - 1 - int(loud[::-1].argmax())
    keep = int(round(keep_s * sample_rate))
    return max(0, first - keep), min(samples.size, last + 1 + keep)


def _k_weighting(sample_rate: int) -> np.ndarray:
    """BS.1770-4's K-weighting at sample_rate: the high shelf and the high-pass as second-order sections."""
    f0, gain_db, q, tilt = _K_SHELF
    k = math.tan(math.pi * f0 / sample_rate)
    high = 10.0 ** (gain_db / 20.0)
    band = high ** tilt
    norm = 1.0 + k / q + k * k
    shelf = [(high + band * k / q + k * k) / norm, 2.0 * (k * k - high) / norm, (high - band * k / q + k * k) / norm,
             1.0, 2.0 * (k * k - 1.0) / norm, (1.0 - k / q + k * k) / norm]
    f0, q = _K_HIGHPASS
    k = math.tan(math.pi * f0 / sample_rate)
    norm = 1.0 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / norm, (1.0 - k / q + k * k) / norm]
    return np.array([shelf, highpass])


def _loudness_of(energy: float) -> float:
    """LUFS of a K-weighted mean square (BS.1770's -0.691 dB offset)."""
    return -0.691 + 10.0 * math.log10(energy) if energy > 0 else float("-inf")


class _Loudness:
    """EBU R128 / BS.1770-4 integrated loudness of a mono signal fed piece by piece, keeping only the energy of each
    100 ms of it (3.5 MB for 12 hours).

    The filters carry their state from piece to piece and a 400 ms gating block is four consecutive 100 ms steps
    (75 % overlap), so where the signal is cut into pieces does not change the result.
    """

    def __init__(self, sample_rate: int):
        self._sos = _k_weighting(sample_rate)
        self._state = np.zeros((2, 2))
        # Exact at the engines' rates (16, 22.05, 24 kHz) and at 44.1 and 48 kHz.
        self._step = max(1, int(round(0.1 * sample_rate)))
        self._rest = np.zeros(0)  # squared filtered samples after the last whole step
        self._steps: list[np.ndarray] = []  # sums of squares, one per whole step

    def add(self, samples: np.ndarray) -> None:
        from scipy.signal import sosfilt

        weighted, self._state = sosfilt(self._sos, np.asarray(samples, dtype=np.float64).reshape(-1), zi=self._state)
        np.square(weighted, out=weighted)
        if self._rest.size:
            weighted = np.concatenate([self._rest, weighted])
        whole = weighted.size - weighted.size % self._step
        if whole:
            self._steps.append(weighted[:whole].reshape(-1, self._step).sum(axis=1))
        self._rest = weighted[whole:].copy()

    def lufs(self) -> float:
        """The gated loudness so far; -inf for silence or less than one whole 400 ms block."""
        steps = np.concatenate(self._steps) if self._steps else np.zeros(0)
        if steps.size < 4:
            return float("-inf")
        blocks = (steps[:-3] + steps[1:-2] + steps[2:-1] + steps[3:]) / (4 * self._step)
        blocks = blocks[blocks >= 10.0 ** ((-70.0 + 0.691) / 10.0)]  # the absolute gate, -70 LUFS
        if not blocks.size:
            return float("-inf")
        blocks = blocks[blocks > 0.1 * blocks.mean()]  # the relative gate, 10 LU under what passed the first
        return _loudness_of(float(blocks.mean()))


def measure_lufs(samples: np.ndarray, sample_rate: int) -> float:
    """EBU R128 / BS.1770-4 integrated loudness; -inf for silence or less than one 400 ms block."""
    meter = _Loudness(sample_rate)
    meter.add(_mono(samples))
    return meter.lufs()


def _peak_envelope(x: np.ndarray) -> np.ndarray:
    """|x| raised to an estimate of the peaks between samples (4-tap half-band midpoints): "true-ish" peaks."""
    env = np.abs(x)
    if x.size >= 4:
        # mid[n] = the value halfway between x[n+1] and x[n+2]; in place, as blocks run to hundreds of thousands.
        mid = np.add(x[1:-2], x[2:-1])
        mid *= 9.0
        outer = np.add(x[:-3], x[3:])
        mid -= outer
        del outer
        np.abs(mid, out=mid)
        mid *= 1.0 / 16.0
        np.maximum(env[1:-2], mid, out=env[1:-2])
        np.maximum(env[2:-1], mid, out=env[2:-1])
    return env


def _limiter_spans(sample_rate: int) -> tuple[int, int]:
    """(ramp, hold) of the limiter in samples."""
    ramp = max(1, int(0.005 * sample_rate))  # 5 ms attack/release ramps
    hold = max(ramp, int(0.05 * sample_rate))  # held 50 ms after a peak so the gain does not flutter
    return ramp, hold


def _limit(x: np.ndarray, sample_rate: int, ceiling: float) -> tuple[np.ndarray, bool]:
    """Look-ahead limiter, in place: (x, whether any gain reduction was applied)."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    gain = _peak_envelope(x)
    if gain.size == 0 or float(gain.max()) <= ceiling:
        return x, False
    np.maximum(gain, ceiling, out=gain)
    np.divide(ceiling, gain, out=gain)  # the gain each sample needs, <= 1
    ramp, hold = _limiter_spans(sample_rate)
    # held[n] = the least gain needed in [n - hold, n + ramp]; then a box of radius ramp. At a peak p the box
    # averages held[p - ramp .. p + ramp], all windows that contain p, so the gain there is at most what p needs,
    # and it ramps down ahead of the peak (the look-ahead) and back up after the hold.
    span = ramp + hold + 1
    held = minimum_filter1d(gain, size=span, origin=hold - span // 2, mode="nearest")
    uniform_filter1d(held, size=2 * ramp + 1, output=gain, mode="nearest")
    np.multiply(x, gain, out=x)
    # Float rounding in the box average may leave a hair over the ceiling; a clip there is inaudible.
    np.clip(x, -ceiling, ceiling, out=x)
    return x, True


class _BlockLimiter:
    """_limit over a stream, block by block, with the result of _limit on the whole signal (to float rounding).

    Each block is limited inside a window reaching `reach` samples beyond it on both sides, the farthest its gain
    depends on; at the signal's own ends the window stops, as _limit's edges do.
    """

    def __init__(self, sample_rate: int, ceiling: float, block: int):
        self.sample_rate, self.ceiling, self.block = sample_rate, ceiling, max(1, block)
        ramp, hold = _limiter_spans(sample_rate)
        # The gain at n follows the peaks over [n - hold - ramp, n + 2 ramp], the peak estimate at k the samples
        # k - 2 .. k + 2, and a window's two outermost samples lack neighbours for theirs: one more.
        self.reach = hold + ramp + 3
        self.limited = False  # whether any gain reduction was applied so far

    def run(self, pieces: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The limited signal, block by block (new arrays), of the pieces joined."""
        buf = np.zeros(0, np.float32)
        base = 0  # where buf starts in the signal
        done = 0  # samples given out so far
        for piece in pieces:
            buf = np.concatenate([buf, _mono(piece)])
            while base + buf.size >= done + self.block + self.reach:
                yield self._window(buf, base, done, done + self.block)
                done += self.block
                if (cut := done - self.reach - base) > 0:
                    buf, base = buf[cut:], base + cut
        end = base + buf.size
        while done < end:
            stop = min(done + self.block, end)
            yield self._window(buf, base, done, stop)
            done = stop

    def _window(self, buf: np.ndarray, base: int, start: int, stop: int) -> np.ndarray:
        first, last = max(base, start - self.reach), min(base + buf.size, stop + self.reach)
        window, limited = _limit(buf[first - base:last - base].copy(), self.sample_rate, self.ceiling)
        self.limited |= limited
        return window[start - first:stop - first]


def _gained(pieces: Iterable[np.ndarray], gain_db: float) -> Iterator[np.ndarray]:
    gain = np.float32(10.0 ** (gain_db / 20.0))
    for piece in pieces:
        yield np.multiply(piece, gain)


def _measured(blocks: Iterable[np.ndarray], meter: _Loudness) -> Iterator[np.ndarray]:
    for block in blocks:
        meter.add(block)
        yield block


def _normalized(source: Callable[[], Iterable[np.ndarray]], sample_rate: int, target_lufs: float, peak_dbfs: float,
                write: Callable[[Iterator[np.ndarray]], None]) -> float:
    """Stream the signal source() gives (afresh at each call) gained to target_lufs, with a look-ahead limiter keeping
    (true-ish) peaks under peak_dbfs, into write; returns the loudness of what was written.

    One pass measures, the next gains, limits and writes while measuring its result. Where limiting took away
    enough loudness to land more than 0.3 LU off, further passes aim higher (measured only), and the gain that
    landed is written once more.
    """
    ceiling = float(10.0 ** (peak_dbfs / 20.0))
    block = int(_BLOCK_S * sample_rate)
    meter = _Loudness(sample_rate)
    for piece in source():
        meter.add(piece)
    lufs = meter.lufs()
    if not math.isfinite(lufs):  # silence or too short: nothing to aim at, only keep the peaks in bounds
        write(_BlockLimiter(sample_rate, ceiling, block).run(source()))
        return lufs
    gain_db = target_lufs - lufs
    result = lufs
    for attempt in range(4):
        if attempt:  # limiting took some loudness away; aim higher and try again until it lands close to the target
            gain_db += target_lufs - result
        limiter, meter = _BlockLimiter(sample_rate, ceiling, block), _Loudness(sample_rate)
        blocks = _measured(limiter.run(_gained(source(), gain_db)), meter)
        if attempt == 0:
            write(blocks)
        else:
            for _ in blocks:
                pass
        if not limiter.limited:
            result = lufs + gain_db  # a pure gain: the loudness is known exactly
            break
        result = meter.lufs()
        if abs(result - target_lufs) <= 0.3:  # well inside the 1 LU a listener could notice
            break
    if attempt:
        write(_BlockLimiter(sample_rate, ceiling, block).run(_gained(source(), gain_db)))
    return result


def normalize_loudness(samples: np.ndarray, sample_rate: int, target_lufs: float = -18.0,
                       peak_dbfs: float = -1.0) -> np.ndarray:
    """Gain to target_lufs, with a look-ahead limiter keeping (true-ish) peaks under peak_dbfs. Returns a new array."""
    samples = _mono(samples)
    out: list[np.ndarray] = []

    def keep(blocks: Iterator[np.ndarray]) -> None:
        out[:] = blocks

    _normalized(lambda: [samples], sample_rate, target_lufs, peak_dbfs, keep)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _gaps(count: int, breaks: list[str], sample_rate: int, pauses: Pauses) -> list[int]:
    """The silence (samples) after each of count chunks, from their breaks; ValueError on breaks that do not fit."""
    if count != len(breaks):
        raise ValueError(f"{count} chunks but {len(breaks)} breaks: there must be one break per chunk")
    gap_s = {"sentence": pauses.sentence_s, "paragraph": pauses.paragraph_s, "chapter": 0.0}
    for i, kind in enumerate(breaks):
        if kind not in _BREAKS:
            raise ValueError(f"break {i} is {kind!r}; it must be one of {', '.join(_BREAKS)}")
        if kind == "chapter" and i != len(breaks) - 1:
            raise ValueError(f"break {i} is 'chapter' but only the last chunk of a chapter can end it")
    return [max(0, int(round(gap_s[kind] * sample_rate))) for kind in breaks[:-1]] + [0]


def _joined(chunks: Iterable[np.ndarray], gaps: list[int], sample_rate: int,
            placed: list[ChunkPlace] | None = None) -> Iterator[np.ndarray]:
    """The joined chapter piece by piece: each chunk trimmed, then the silence that follows it. Where each chunk
    landed is appended to ``placed`` (emptied first), for the word timestamps of the chapter."""
    if placed is not None:
        placed.clear()
    at = 0
    for chunk, gap in zip(chunks, gaps):
        chunk = _mono(chunk)
        start, stop = _trim_span(chunk, sample_rate)
        if placed is not None:
            placed.append(ChunkPlace(at / sample_rate, start / sample_rate, (stop - start) / sample_rate))
        yield chunk[start:stop]
        at += stop - start + gap
        if gap:
            yield np.zeros(gap, np.float32)


def join_chunks(chunks: list[np.ndarray], breaks: list[str], sample_rate: int, pauses: Pauses) -> np.ndarray:
    """Trim each chunk and join them with the pause its break asks for; nothing follows the last chunk.

    breaks[i] is what follows chunk i: "sentence", "paragraph" or "chapter" (only the last chunk).
    """
    pieces = list(_joined(chunks, _gaps(len(chunks), breaks, sample_rate, pauses), sample_rate))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def _temp_beside(path: Path) -> Path:
    """A fresh temporary name in path's directory, so that os.replace onto path is an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would follow the file through the rename; these are for others to read
    return Path(tmp)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # The renames themselves become durable only once the directory is synced (where the OS allows it).
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _run_ffmpeg(args: list[str], feed: Iterable[memoryview | bytes] | None = None) -> None:
    """Run ffmpeg with args, writing feed (any iterable: a generator streams) to its stdin; RuntimeError with its last
    log line on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty ffmpeg can never block on it
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL if feed is None else subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            for piece in feed or ():
                proc.stdin.write(piece)
        except BrokenPipeError:
            pass  # ffmpeg quit early; its log says why
        except BaseException:
            proc.kill()  # interrupted: do not leave an ffmpeg waiting for the rest of its input
            raise
        finally:
            if proc.stdin:
                with suppress(BrokenPipeError):
                    proc.stdin.close()
            proc.wait()
        if proc.returncode != 0:
            log.seek(0)
            lines = [ln for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]
            raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {lines[-1] if lines else 'no output'}")


def _pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples (consumed: scaled in place) -> int16 for ffmpeg's stdin."""
    np.clip(samples, -1.0, 1.0, out=samples)
    np.multiply(samples, 32767.0, out=samples)
    np.rint(samples, out=samples)
    return samples.astype(np.int16)


def _assemble(chunks: Callable[[], Iterable[np.ndarray]], n_chunks: int, breaks: list[str], sample_rate: int,
              out_dir: Path, *, index: int, count: int, title: str, book_title: str, author: str, fmt: str,
              pauses: Pauses, target_lufs: float) -> ChapterFiles:
    """assemble_chapter and assemble_chapter_files: chunks() gives the chapter's chunks afresh at each pass."""
    if fmt not in CHAPTER_FORMATS:
        raise ValueError(f"unknown chapter format {fmt!r}; choose one of {', '.join(CHAPTER_FORMATS)}")
    if not n_chunks:
        raise ValueError("a chapter needs at least one chunk")
    if not 1 <= index <= count:
        raise ValueError(f"chapter index {index} is outside 1..{count}")
    gaps = _gaps(n_chunks, breaks, sample_rate, pauses)
    placed: list[ChunkPlace] = []
    lead = int(round(pauses.lead_in_s * sample_rate))
    pause = int(round(pauses.chapter_s * sample_rate))
    total = 0

    def pcm(blocks: Iterator[np.ndarray]) -> Iterator[memoryview | bytes]:
        nonlocal total
        yield bytes(2 * lead)
        speech = 0
        for block in blocks:
            speech += block.size
            yield memoryview(_pcm16(block)).cast("B")
        # Whole AAC frames: then the part has no padding, and the M4B's concat-copy lands every part exactly.
        tail = pause + (-(lead + speech + pause) % _AAC_FRAME)
        yield bytes(2 * tail)
        total = lead + speech + tail

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    audio_path, part_path = out_dir / f"{index:03d}.{fmt}", out_dir / f"{index:03d}.m4a"
    muxer, codec = _CHAPTER_CODECS[fmt]
    if fmt == "ogg":  # Opus takes only 8/12/16/24/48 kHz: the next one up keeps all the bandwidth
        codec = [*codec, "-ar", "24000" if sample_rate <= 24000 else "48000"]
    tags = {"title": title, "track": f"{index}/{count}", "album": book_title, "artist": author,
            "album_artist": author}
    with ExitStack() as cleanup:
        temps: list[Path] = []
        cleanup.callback(lambda: [t.unlink(missing_ok=True) for t in temps])  # nothing left behind on failure
        temps += [_temp_beside(audio_path), _temp_beside(part_path)]
        meta = [a for key, value in tags.items() for a in ("-metadata", f"{key}={value}")]
        # One ffmpeg reads the samples once and encodes both files (its encoders run in parallel threads), as they
        # are made: the chapter is never whole in memory.
        args = ["-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0", "-map_metadata", "-1",
                "-map", "0:a", *codec, *meta, "-f", muxer, str(temps[0]),
                "-map", "0:a", *_AAC, "-metadata", f"title={title}", "-f", "ipod", str(temps[1])]
        lufs = _normalized(lambda: _joined(chunks(), gaps, sample_rate, placed), sample_rate, target_lufs, -1.0,
                           lambda blocks: _run_ffmpeg(args, pcm(blocks)))
        for tmp in temps:
            _fsync(tmp)
        os.replace(temps[0], audio_path)
        os.replace(temps[1], part_path)
    _fsync_dir(out_dir)
    lead_s = lead / sample_rate
    return ChapterFiles(audio=audio_path, part=part_path, duration_s=total / sample_rate, lufs=lufs,
                        chunks=[ChunkPlace(p.start_s + lead_s, p.trimmed_s, p.length_s) for p in placed])


def assemble_chapter(chunks: list[np.ndarray], breaks: list[str], sample_rate: int, out_dir: Path, *, index: int,
                     count: int, title: str, book_title: str, author: str, fmt: str = "mp3",
                     pauses: Pauses = Pauses(), target_lufs: float = -18.0) -> ChapterFiles:
    """Join, normalize and encode one chapter: f"{index:03d}.{fmt}" (tagged) and f"{index:03d}.m4a" in out_dir."""
    return _assemble(lambda: chunks, len(chunks), breaks, sample_rate, out_dir, index=index, count=count,
                     title=title, book_title=book_title, author=author, fmt=fmt, pauses=pauses,
                     target_lufs=target_lufs)


def _read_chunk(path: Path, sample_rate: int) -> np.ndarray:
    samples, rate = read_wav(path)
    if rate != sample_rate:
        raise ValueError(f"chunk {path} is {rate} Hz audio, but its chapter is {sample_rate} Hz")
    return samples


def assemble_chapter_files(paths: list[Path], breaks: list[str], sample_rate: int, out_dir: Path, *, index: int,
                           count: int, title: str, book_title: str, author: str, fmt: str = "mp3",
                           pauses: Pauses = Pauses(), target_lufs: float = -18.0) -> ChapterFiles:
    """assemble_chapter from the chunks' WAV files (16-bit, as the chunk cache holds them), read one at a time in each
    pass: the memory it takes does not grow with the chapter's length."""
    paths = [Path(p) for p in paths]
    return _assemble(lambda: (_read_chunk(p, sample_rate) for p in paths), len(paths), breaks, sample_rate, out_dir,
                     index=index, count=count, title=title, book_title=book_title, author=author, fmt=fmt,
                     pauses=pauses, target_lufs=target_lufs)


def _part_span(path: Path) -> tuple[float, int]:
    """(seconds, sample rate) a part occupies once its packets are copied into the M4B: whole AAC frames.

    mutagen's length counts the priming and every sample of the packets but not the padding of the last one;
    a decoder plays that frame whole, so the next part starts at the frame boundary.
    """
    from mutagen.mp4 import MP4

    info = MP4(path).info
    rate = int(info.sample_rate)
    if not rate or info.length <= 0:
        raise ValueError(f"{path} has no audio track")
    frames = math.ceil(round(info.length * rate) / _AAC_FRAME)
    return frames * _AAC_FRAME / rate, rate


def _meta_escape(text: str) -> str:
    return re.sub(r"([=;#\\\n])", r"\\\1", text)


def _cover_kind(cover: bytes, cover_type: str | None) -> str:
    kind = (cover_type or "").lower().removeprefix("image/").replace("jpg", "jpeg")
    if not kind:
        kind = "jpeg" if cover[:3] == b"\xff\xd8\xff" else "png" if cover[:8] == b"\x89PNG\r\n\x1a\n" else ""
    if kind not in ("jpeg", "png"):
        raise ValueError(f"the cover must be a JPEG or PNG image, not {cover_type or 'unknown data'}")
    return kind


def assemble_m4b(parts: list[Path], titles: list[str], out: Path, *, title: str, author: str, language: str = "",
                 cover: bytes | None = None, cover_type: str | None = None) -> list[ChapterMark]:
    """Concatenate the AAC parts without re-encoding into a chaptered, tagged M4B at out; returns the chapter marks."""
    parts = [Path(p) for p in parts]
    if not parts:
        raise ValueError("an M4B needs at least one chapter part")
    if len(titles) != len(parts):
        raise ValueError(f"{len(parts)} chapter parts but {len(titles)} titles: there must be one title per part")
    for part in parts:
        if not part.is_file():
            raise ValueError(f"chapter part {part} does not exist")
    spans = [_part_span(p) for p in parts]
    if len({rate for _, rate in spans}) > 1:
        raise ValueError("the chapter parts have different sample rates and cannot be joined without re-encoding")
    marks, start = [], 0.0
    for name, (span, _) in zip(titles, spans):
        # Milliseconds, as the metadata file stores them; summed unrounded so rounding never accumulates.
        marks.append(ChapterMark(name, round(start, 3), round(start + span, 3)))
        start += span

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="m4b-") as work, ExitStack() as cleanup:
        listing = Path(work, "parts.ffconcat")
        # The duration lines make each part start where the previous one's last frame ends (the default, the
        # priming-less length, would overlap the priming packet with that frame and bend the timestamps).
        listing.write_text("ffconcat version 1.0\n" + "".join(
            "file '{}'\nduration {:.9f}\n".format(str(p.resolve()).replace("'", "'\\''"), span)
            for p, (span, _) in zip(parts, spans)), encoding="utf-8")
        meta = Path(work, "metadata.txt")
        tags = {"title": title, "artist": author, "album_artist": author, "album": title, "genre": "Audiobook"}
        if language:
            tags["language"] = language
        lines = [";FFMETADATA1", *(f"{k}={_meta_escape(v)}" for k, v in tags.items())]
        for mark in marks:
            lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={round(mark.start_s * 1000)}",
                      f"END={round(mark.end_s * 1000)}", f"title={_meta_escape(mark.title)}"]
        meta.write_text("\n".join(lines) + "\n", encoding="utf-8")
        args = ["-f", "concat", "-safe", "0", "-i", str(listing), "-f", "ffmetadata", "-i", str(meta)]
        maps = ["-map", "0:a", "-map_metadata", "1", "-map_chapters", "1"]
        if cover:
            kind = _cover_kind(cover, cover_type)
            picture = Path(work, f"cover.{'jpg' if kind == 'jpeg' else 'png'}")
            picture.write_bytes(cover)
            args += ["-i", str(picture)]
            maps += ["-map", "2:v", "-disposition:v:0", "attached_pic"]
        lang3 = _LANG3.get(language.lower().split("-")[0], language.lower()) if language else ""
        if len(lang3) == 3 and lang3.isalpha():
            maps += ["-metadata:s:a:0", f"language={lang3}"]
        tmp = _temp_beside(out)
        cleanup.callback(tmp.unlink, missing_ok=True)
        _run_ffmpeg([*args, *maps, "-c", "copy", "-movflags", "+faststart", "-f", "mp4", str(tmp)])
        _fsync(tmp)
        os.replace(tmp, out)
    _fsync_dir(out.parent)
    return marks


_CHAPTER_LINE = re.compile(r"^\s*Chapter #\d+:\d+: start (-?[\d.]+), end (-?[\d.]+)")
_TITLE_LINE = re.compile(r"^\s*title\s*: (.*)$")


def read_chapters(path: Path) -> list[ChapterMark]:
    """The chapter markers of an M4B, from what `ffmpeg -i` reports (the full titles, not chpl's 255 bytes)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cannot read chapters of {path}: no such file")
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", f"file:{path.resolve()}"],
                            capture_output=True)
    marks: list[ChapterMark] = []
    in_chapter = False
    for line in result.stderr.decode(errors="replace").splitlines():
        if match := _CHAPTER_LINE.match(line):
            marks.append(ChapterMark("", float(match.group(1)), float(match.group(2))))
            in_chapter = True
        elif in_chapter and not marks[-1].title and (match := _TITLE_LINE.match(line)):
            marks[-1].title = match.group(1)
        elif re.match(r"^\s*(Stream|Input|Output) #", line):
            in_chapter = False
    return marks


def probe_duration(path: Path) -> float:
    """Duration in seconds from the file's headers (mutagen): mp3, m4a/m4b, ogg opus."""
    import mutagen

    try:
        parsed = mutagen.File(path)
    except mutagen.MutagenError:  # a known extension whose content does not parse
        parsed = None
    if parsed is None or parsed.info is None:
        raise ValueError(f"{path} is not an audio file mutagen can read")
    return float(parsed.info.length)
