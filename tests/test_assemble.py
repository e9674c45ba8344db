"""Chapter and M4B assembly on real (synthesized) audio through the real ffmpeg: no mocks."""
from __future__ import annotations

import math
import struct
import subprocess
import zlib

import mutagen
import numpy as np
import pytest
from mutagen.mp4 import MP4, MP4Cover

from chatterbox import audio
from chatterbox.books.assemble import (_BLOCK_S, CHAPTER_FORMATS, ChapterFiles, ChapterMark, Pauses, _BlockLimiter,
                                       _k_weighting, _limit, _limiter_spans, _Loudness, assemble_chapter,
                                       assemble_chapter_files, assemble_m4b, join_chunks, measure_lufs,
                                       normalize_loudness, probe_duration, read_chapters, trim_silence)

RATE = 22050
PRIMING = 1024  # ffmpeg's AAC encoder delay, which each part carries into the M4B


def speech(seconds: float, level: float = 0.3, seed: int = 0) -> np.ndarray:
    """Speech-like: syllables (a voiced tone with harmonics plus low-passed noise) at ~4 Hz, with short gaps."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    pitch = 120 + 25 * np.sin(2 * np.pi * 0.8 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voiced = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
    noise = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same")  # crude low-pass, as speech has
    syllables = np.clip(np.sin(2 * np.pi * 4.2 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    words = (np.sin(2 * np.pi * 0.9 * t) > -0.6).astype(float)  # gaps between words
    x = (voiced + 0.6 * noise) * syllables * words
    return (level * x / np.max(np.abs(x))).astype(np.float32)


def padded(x: np.ndarray, before: float = 0.2, after: float = 0.3) -> np.ndarray:
    """A chunk as an engine returns it: the speech with silence around it."""
    return np.concatenate([np.zeros(int(before * RATE), np.float32), x, np.zeros(int(after * RATE), np.float32)])


def png(width: int = 4, height: int = 4) -> bytes:
    """A tiny valid PNG, built by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def onset(samples: np.ndarray, start: int, threshold: float = 0.01) -> int:
    """Index of the first sample at or after start above threshold."""
    return start + int(np.flatnonzero(np.abs(samples[start:]) > threshold)[0])


# -- trimming and joining ------------------------------------------------------------------------------------------

def test_trim_silence_keeps_the_inner_gap():
    burst = speech(0.3)
    burst[0] = burst[-1] = 0.2  # well above the threshold at both ends, so the cut points are exact
    x = np.concatenate([np.zeros(RATE // 2, np.float32), burst, np.zeros(RATE // 5, np.float32), burst,
                        np.zeros(RATE, np.float32)])
    keep = round(0.03 * RATE)
    trimmed = trim_silence(x, RATE)
    assert trimmed.size == 2 * burst.size + RATE // 5 + 2 * keep
    assert not np.any(trimmed[:keep]) and not np.any(trimmed[-keep:])
    inner = trimmed[keep + burst.size: keep + burst.size + RATE // 5]
    assert inner.size == RATE // 5 and not np.any(inner)  # the gap between the bursts is untouched
    assert trim_silence(x, RATE, keep_s=0.0).size == 2 * burst.size + RATE // 5
    assert trim_silence(np.zeros(RATE, np.float32), RATE).size == 0
    assert trim_silence(np.full(RATE, 1e-4, np.float32), RATE).size == 0  # -80 dBFS hiss is silence too


def test_join_chunks_inserts_exact_pauses():
    chunks = [padded(speech(d, seed=i)) for i, d in enumerate((0.7, 0.5, 0.9, 0.6))]
    breaks = ["sentence", "paragraph", "sentence", "chapter"]
    pauses = Pauses(sentence_s=0.4, paragraph_s=0.9)
    joined = join_chunks(chunks, breaks, RATE, pauses)
    sizes = [trim_silence(c, RATE).size for c in chunks]
    gaps = [round(0.4 * RATE), round(0.9 * RATE), round(0.4 * RATE)]
    assert joined.dtype == np.float32 and joined.size == sum(sizes) + sum(gaps)
    pos = 0
    for i, size in enumerate(sizes):
        assert np.array_equal(joined[pos:pos + size], trim_silence(chunks[i], RATE))
        pos += size
        if i < len(gaps):
            assert not np.any(joined[pos:pos + gaps[i]])
            pos += gaps[i]
    # Other pauses, and a last chunk marked "sentence": nothing follows the last chunk either way.
    other = join_chunks(chunks[:2], ["paragraph", "sentence"], RATE, Pauses(paragraph_s=0.25))
    assert other.size == sizes[0] + sizes[1] + round(0.25 * RATE)


def test_join_chunks_rejects_bad_breaks():
    chunks = [speech(0.5), speech(0.5)]
    with pytest.raises(ValueError, match="one break per chunk"):
        join_chunks(chunks, ["chapter"], RATE, Pauses())
    with pytest.raises(ValueError, match="must be one of"):
        join_chunks(chunks, ["comma", "chapter"], RATE, Pauses())
    with pytest.raises(ValueError, match="only the last chunk"):
        join_chunks(chunks, ["chapter", "chapter"], RATE, Pauses())


# -- loudness ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [0.005, 0.3, 0.99])
def test_normalize_loudness_hits_the_target(level):
    x = speech(8.0, level=level, seed=3)
    out = normalize_loudness(x, RATE)
    assert out.dtype == np.float32 and out.size == x.size
    assert abs(measure_lufs(out, RATE) - (-18.0)) <= 0.5
    assert audio.peak_dbfs(out) <= -1.0 + 1e-3


def test_normalize_loudness_limits_loud_peaks():
    x = speech(8.0, level=0.05, seed=4)
    x[RATE::RATE] = 0.9  # clicks far above the speech: a plain gain to -18 LUFS would clip them
    x[RATE + 1::RATE] = -0.9
    out = normalize_loudness(x, RATE, target_lufs=-20.0)
    assert abs(measure_lufs(out, RATE) - (-20.0)) <= 0.5
    assert audio.peak_dbfs(out) <= -1.0 + 1e-3
    # The speech between the clicks has one plain gain: the limiter acts only around them (look-ahead + hold).
    between = slice(int(1.1 * RATE), int(1.95 * RATE))
    ratio = out[between][np.abs(x[between]) > 0.005] / x[between][np.abs(x[between]) > 0.005]
    assert ratio.size > 1000 and np.ptp(ratio) < 1e-3 * ratio.mean()
    near = np.abs(out[RATE - 50:RATE + 50]) / np.maximum(np.abs(x[RATE - 50:RATE + 50]), 1e-9)
    assert near.min() < 0.5 * ratio.mean()  # while around a click the gain is pulled down


def test_measure_lufs_of_silence_and_short_audio():
    assert measure_lufs(np.zeros(RATE * 2, np.float32), RATE) == float("-inf")
    assert measure_lufs(speech(0.2), RATE) == float("-inf")
    assert -40 < measure_lufs(speech(2.0), RATE) < 0
    silent = normalize_loudness(np.zeros(RATE, np.float32), RATE)
    assert silent.size == RATE and not np.any(silent)



def pieces_of(x: np.ndarray, seed: int, count: int = 40) -> list[np.ndarray]:
    """x cut at random places into pieces, some of them a few samples long."""
    cuts = np.random.default_rng(seed).integers(0, x.size, count)
    return np.split(x, np.unique(np.concatenate([cuts, cuts[::7] + 3]).clip(0, x.size)).tolist())


def test_k_weighting_is_the_standards_filter():
    # ITU-R BS.1770-4, tables 1 and 2: the two stages' coefficients at 48 kHz.
    expected = [[1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
                [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621]]
    assert np.allclose(_k_weighting(48000), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("rate", [16000, 22050, 24000, 44100, 48000])
def test_streaming_loudness_equals_pyloudnorm(rate):
    import pyloudnorm

    def at_rate(seconds: float, **kwargs) -> np.ndarray:
        return speech(seconds * rate / RATE, **kwargs)

    hum = (0.05 * np.sin(2 * np.pi * 50 * np.arange(2 * rate) / rate)).astype(np.float32)  # what the high-pass cuts
    quiet = at_rate(4.0, level=0.004, seed=1)  # under the relative gate
    # 18.02 s: not whole 100 ms steps. (Where the rest is over half a step, pyloudnorm adds a block of it padded with
    # silence, which BS.1770 does not.)
    x = np.concatenate([at_rate(6.0, level=0.5, seed=rate), np.zeros(rate, np.float32), quiet, hum,
                        0.3 * at_rate(5.02, seed=2)])
    meter = _Loudness(rate)
    for piece in pieces_of(x, seed=rate):
        meter.add(piece)
    streamed = meter.lufs()
    # pyloudnorm's "DeMan" filter class is BS.1770's K-weighting. Its default class is the audio-EQ cookbook's
    # approximation of it, which reads speech 0.04 LU louder at 48 kHz and 0.09 LU at 22.05 kHz, and this hum 0.07.
    reference = pyloudnorm.Meter(rate, filter_class="DeMan").integrated_loudness(x.astype(np.float64))
    assert abs(streamed - reference) <= 0.05
    assert abs(streamed - measure_lufs(x, rate)) < 1e-9  # where the pieces were cut does not matter


def test_block_limiter_equals_the_whole_array_limiter():
    ceiling = 10 ** (-1 / 20)
    ramp, hold = _limiter_spans(RATE)
    block = 3000
    t = np.arange(4 * RATE)
    # A steady carrier (a seam error shows wherever the gain differs) under speech, with peaks just either side of
    # the block seams, as far from them as the limiter's look-ahead and hold reach.
    x = (0.3 + 0.1 * np.sin(t * 0.05) + speech(4.0, level=0.2, seed=5)).astype(np.float32)
    for seam in range(block, x.size - block, 7 * block):
        for offset in (-hold - ramp - 3, -hold - ramp, -hold, -1, 0, 1, ramp, 2 * ramp, 2 * ramp + 2):
            x[seam + offset] = 0.93 * (-1) ** offset
        x[seam - hold - ramp] = 0.99  # the loudest, the farthest back the gain at the seam looks
    x[-2] = x[1] = 0.99  # and at both ends, where the limiter holds its edge values
    whole, limited = _limit(x.copy(), RATE, ceiling)
    assert limited
    for size in (block, 1, 2 * RATE, x.size + 1):
        limiter = _BlockLimiter(RATE, ceiling, size)
        blocks = list(limiter.run(pieces_of(x, seed=size)))
        assert limiter.limited and all(b.size == min(size, x.size) for b in blocks[:-1])
        assert np.max(np.abs(np.concatenate(blocks) - whole)) <= 1e-6
    quiet = speech(3.0, level=0.5, seed=6)
    limiter = _BlockLimiter(RATE, ceiling, 1000)
    assert np.array_equal(np.concatenate(list(limiter.run(pieces_of(quiet, seed=1)))), quiet)
    assert not limiter.limited
    # The seams need the whole reach: a window short by a few samples gives a different gain near a seam.
    short = _BlockLimiter(RATE, ceiling, block)
    short.reach -= 4
    assert np.max(np.abs(np.concatenate(list(short.run([x]))) - whole)) > 1e-4


def test_normalize_aims_again_where_limiting_took_loudness():
    x = speech(8.0, level=0.05, seed=8)
    x[::RATE // 4] = 0.95  # loud clicks, 4 a second: they count in the loudness, and the limiter takes them away
    # One gain aimed by the measured loudness, then limited, lands far off the target...
    once = _limit(x * np.float32(10 ** ((-18.0 - measure_lufs(x, RATE)) / 20)), RATE, 10 ** (-1 / 20))[0]
    assert measure_lufs(once, RATE) < -20.0
    # ...so normalization tries again, aiming higher, until it lands within 0.3 LU.
    out = normalize_loudness(x, RATE)
    assert abs(measure_lufs(out, RATE) - (-18.0)) <= 0.3
    assert audio.peak_dbfs(out) <= -1.0 + 1e-3


# -- chapters ------------------------------------------------------------------------------------------------------

def chapter_chunks(seconds: list[float], seed: int) -> tuple[list[np.ndarray], list[str]]:
    chunks = [padded(speech(s, level=0.1 + 0.1 * (i % 3), seed=seed * 10 + i)) for i, s in enumerate(seconds)]
    breaks = ["paragraph" if i % 2 else "sentence" for i in range(len(chunks) - 1)] + ["chapter"]
    return chunks, breaks


@pytest.mark.parametrize("fmt", CHAPTER_FORMATS)
def test_assemble_chapter(tmp_path, fmt):
    chunks, breaks = chapter_chunks([1.5, 2.0, 1.2], seed=1)
    files = assemble_chapter(chunks, breaks, RATE, tmp_path, index=2, count=7, title="The Second", fmt=fmt,
                             book_title="A Book", author="Ann Author")
    assert isinstance(files, ChapterFiles)
    assert files.audio == tmp_path / f"002.{fmt}" and files.part == tmp_path / "002.m4a"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"002.{fmt}", "002.m4a"])  # no temp files left

    # lead-in + speech + chapter pause, the last rounded up to whole AAC frames (at most one frame more).
    pauses = Pauses()
    joined = join_chunks(chunks, breaks, RATE, pauses).size
    bare = round(pauses.lead_in_s * RATE) + joined + round(pauses.chapter_s * RATE)
    total = round(files.duration_s * RATE)
    assert bare <= total < bare + 1024 and total % 1024 == 0
    assert abs(files.lufs - (-18.0)) <= 0.5

    tags = mutagen.File(files.audio, easy=True)
    assert tags["title"] == ["The Second"] and tags["tracknumber"] == ["2/7"]
    assert tags["album"] == ["A Book"] and tags["artist"] == ["Ann Author"]

    decoded, rate = audio.decode(files.audio)
    assert abs(measure_lufs(decoded, rate) - (-18.0)) <= 1.0
    assert abs(probe_duration(files.audio) - files.duration_s) < 0.1
    assert abs(len(decoded) / rate - files.duration_s) < 0.1
    part, part_rate = audio.decode(files.part)
    assert part_rate == RATE and len(part) == total  # the AAC part holds exactly the chapter's samples
    assert abs(measure_lufs(part, RATE) - (-18.0)) <= 1.0
    # The speech starts after the lead-in (the trim keeps 30 ms before it).
    assert abs(onset(part, 0) / RATE - (pauses.lead_in_s + 0.03)) < 0.02
    assert (files.audio.stat().st_mode & 0o777) == 0o644


def test_assemble_chapter_replaces_and_cleans_up(tmp_path):
    chunks, breaks = chapter_chunks([1.0], seed=2)
    kwargs = dict(index=1, count=1, title="Only", book_title="B", author="A")
    first = assemble_chapter(chunks, breaks, RATE, tmp_path, **kwargs)
    second = assemble_chapter(chunks, breaks, RATE, tmp_path, **kwargs, pauses=Pauses(chapter_s=3.0))
    assert second.duration_s > first.duration_s + 0.9
    assert abs(probe_duration(second.part) - second.duration_s - PRIMING / RATE) < 1e-3
    # A failing rename (a directory in the way) leaves neither a temporary file nor a half-written chapter.
    blocked = tmp_path / "blocked"
    (blocked / "001.mp3").mkdir(parents=True)
    with pytest.raises(OSError):
        assemble_chapter(chunks, breaks, RATE, blocked, **kwargs)
    assert [p.name for p in blocked.iterdir()] == ["001.mp3"]


def test_assemble_chapter_rejects_unknown_format(tmp_path):
    chunks, breaks = chapter_chunks([0.5], seed=3)
    with pytest.raises(ValueError, match="unknown chapter format 'wav'"):
        assemble_chapter(chunks, breaks, RATE, tmp_path, index=1, count=1, title="t", book_title="b", author="a",
                         fmt="wav")
    with pytest.raises(ValueError, match="at least one chunk"):
        assemble_chapter([], [], RATE, tmp_path, index=1, count=1, title="t", book_title="b", author="a")
    assert list(tmp_path.iterdir()) == []



def chunk_files(folder, chunks: list[np.ndarray]) -> list:
    """The chunks as the chunk cache holds them: 16-bit WAV files."""
    folder.mkdir(parents=True, exist_ok=True)
    return [audio.write_atomic(folder / f"{i}.wav", audio.wav_bytes(c, RATE)) for i, c in enumerate(chunks)]


@pytest.mark.parametrize("fmt", CHAPTER_FORMATS)
def test_chapter_from_files_equals_chapter_from_arrays(tmp_path, fmt):
    # Longer than two blocks, with clicks that make the limiter act across the block seams and take away so much
    # loudness that normalization has to aim again.
    chunks, breaks = chapter_chunks([9.0, 0.4, 7.0, 6.5, 3.0], seed=4)
    for chunk in chunks[:3]:
        chunk[RATE // 3::RATE // 4] = 0.99
    paths = chunk_files(tmp_path / "chunks", chunks)
    read = [audio.read_wav(p)[0] for p in paths]  # the arrays the files hold (16-bit, as the runner reads them)
    kwargs = dict(index=3, count=4, title="Third", book_title="B", author="A", fmt=fmt)
    streamed = assemble_chapter_files(paths, breaks, RATE, tmp_path / "streamed", **kwargs)
    whole = assemble_chapter(read, breaks, RATE, tmp_path / "whole", **kwargs)
    assert streamed.audio == tmp_path / "streamed" / f"003.{fmt}" and streamed.part.name == "003.m4a"
    assert streamed.duration_s == whole.duration_s and streamed.lufs == whole.lufs
    assert abs(streamed.lufs - (-18.0)) <= 0.3
    assert sorted(p.name for p in streamed.audio.parent.iterdir()) == sorted([f"003.{fmt}", "003.m4a"])
    for name in (streamed.audio.name, streamed.part.name):
        a, rate = audio.decode(tmp_path / "streamed" / name)
        b, _ = audio.decode(tmp_path / "whole" / name)
        assert a.size == b.size and np.max(np.abs(a - b)) < 1e-3
    # The part holds lead-in, the normalized speech and the tail, in order: close to the chapter normalized whole.
    part, _ = audio.decode(streamed.part)
    lead = round(Pauses().lead_in_s * RATE)
    joined = join_chunks(read, breaks, RATE, Pauses())
    once = _limit(joined * np.float32(10 ** ((-18.0 - measure_lufs(joined, RATE)) / 20)), RATE, 10 ** (-1 / 20))[0]
    assert measure_lufs(once, RATE) < -18.5  # the first gain fell short
    expected = normalize_loudness(joined, RATE)
    assert expected.size > 2 * _BLOCK_S * RATE
    assert abs(measure_lufs(part, RATE) - (-18.0)) <= 0.5  # the file holds what the last aim gave
    assert round(streamed.duration_s * RATE) == part.size >= lead + expected.size
    error = part[lead:lead + expected.size] - expected
    assert 10 * np.log10(np.sum(expected ** 2) / np.sum(error ** 2)) > 15  # dB: AAC at 64k, not another signal
    assert not np.any(np.abs(part[:lead - PRIMING]) > 1e-3) and not np.any(np.abs(part[lead + expected.size:]) > 1e-2)


def test_chapter_from_files_refuses_a_chunk_of_another_rate(tmp_path):
    paths = chunk_files(tmp_path / "chunks", [padded(speech(1.0))])
    other = audio.write_atomic(tmp_path / "chunks" / "other.wav", audio.wav_bytes(speech(1.0), 16000))
    with pytest.raises(ValueError, match="16000 Hz"):
        assemble_chapter_files([paths[0], other], ["sentence", "chapter"], RATE, tmp_path / "out", index=1, count=1,
                               title="t", book_title="b", author="a")
    with pytest.raises(FileNotFoundError):
        assemble_chapter_files([paths[0], tmp_path / "gone.wav"], ["sentence", "chapter"], RATE, tmp_path / "out",
                               index=1, count=1, title="t", book_title="b", author="a")
    assert list((tmp_path / "out").iterdir()) == []  # no temporary files left


def test_chapter_from_files_takes_memory_of_a_block_not_of_the_chapter(tmp_path):
    import tracemalloc

    chunks, breaks = chapter_chunks([15.0, 14.0, 13.0], seed=5)
    paths = chunk_files(tmp_path / "chunks", chunks)
    kwargs = dict(count=2, title="t", book_title="b", author="a")
    assemble_chapter_files(paths, breaks, RATE, tmp_path / "out", index=1, **kwargs)  # imports, warm caches
    peaks = []
    for repeat in (2, 8):  # 1.5 and 6 minutes, from the same files read again and again
        many = paths * repeat
        many_breaks = (["paragraph"] * 3 * repeat)[:-1] + ["chapter"]
        tracemalloc.start()
        try:
            files = assemble_chapter_files(many, many_breaks, RATE, tmp_path / "out", index=2, **kwargs)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    whole = files.duration_s * RATE * 4  # the 6-minute chapter as float32
    assert peaks[1] < 0.5 * whole  # in memory it was several times the chapter
    assert peaks[1] < 1.25 * peaks[0] + 2**20  # four times the chapter, not four times the memory


# -- the M4B -------------------------------------------------------------------------------------------------------

TITLES = ["Chapter One", "Chapter Two: A = B; #2", "Kapitel Drei – Überall"]


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    chapters = [assemble_chapter(*chapter_chunks(lengths, seed=i), RATE, out / "chapters", index=i + 1, count=3,
                                 title=TITLES[i], book_title="The Book", author="Ann Author")
                for i, lengths in enumerate([[2.0, 1.5], [3.0], [1.0, 2.5, 1.8]])]
    cover = png()
    marks = assemble_m4b([c.part for c in chapters], TITLES, out / "book.m4b", title="The Book",
                         author="Ann Author", language="en", cover=cover)
    return chapters, marks, out / "book.m4b", cover


def test_m4b_chapter_marks(book):
    chapters, marks, path, _ = book
    parts = [probe_duration(c.part) for c in chapters]
    starts = [0.0, parts[0], parts[0] + parts[1]]
    assert [m.title for m in marks] == TITLES
    assert all(isinstance(m, ChapterMark) for m in marks)
    for mark, start, length in zip(marks, starts, parts):
        assert abs(mark.start_s - start) < 0.05 and abs(mark.end_s - (start + length)) < 0.05
    total = probe_duration(path)
    assert abs(marks[-1].end_s - total) < 0.05
    read = read_chapters(path)
    assert [m.title for m in read] == TITLES
    for got, mark in zip(read, marks):
        assert abs(got.start_s - mark.start_s) < 0.002 and abs(got.end_s - mark.end_s) < 0.002
    # The M4B is as long as the chapter files plus one AAC priming frame for each.
    files = sum(probe_duration(c.audio) for c in chapters)
    assert abs(total - files) < 0.1 * len(chapters)
    assert abs(total - sum(c.duration_s for c in chapters) - len(chapters) * PRIMING / RATE) < 0.002


def test_m4b_audio_lines_up_with_the_marks(book):
    chapters, marks, path, _ = book
    samples, rate = audio.decode(path)
    assert rate == RATE
    assert abs(len(samples) / rate - marks[-1].end_s) < 0.002
    assert abs(measure_lufs(samples, rate) - (-18.0)) <= 1.0
    # Each chapter's speech begins the same distance after its mark: the copied parts did not drift.
    lead = Pauses().lead_in_s + 0.03 + PRIMING / RATE
    for mark in marks:
        assert abs((onset(samples, round(mark.start_s * rate)) / rate - mark.start_s) - lead) < 0.02


def test_m4b_tags_and_cover(book):
    _, _, path, cover = book
    tags = MP4(path).tags
    assert tags["©nam"] == ["The Book"] and tags["©alb"] == ["The Book"]
    assert tags["©ART"] == ["Ann Author"] and tags["aART"] == ["Ann Author"]
    assert tags["©gen"] == ["Audiobook"]
    assert len(tags["covr"]) == 1 and bytes(tags["covr"][0]) == cover
    assert tags["covr"][0].imageformat == MP4Cover.FORMAT_PNG
    log = subprocess.run([audio.ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    assert "(eng): Audio: aac" in log
    assert sorted(p.name for p in path.parent.iterdir()) == ["book.m4b", "chapters"]  # no temp files left


def test_m4b_errors(tmp_path, book):
    chapters, _, _, _ = book
    parts = [c.part for c in chapters]
    with pytest.raises(ValueError, match="at least one chapter part"):
        assemble_m4b([], [], tmp_path / "x.m4b", title="t", author="a")
    with pytest.raises(ValueError, match="3 chapter parts but 2 titles"):
        assemble_m4b(parts, TITLES[:2], tmp_path / "x.m4b", title="t", author="a")
    with pytest.raises(ValueError, match="does not exist"):
        assemble_m4b([tmp_path / "missing.m4a"], ["t"], tmp_path / "x.m4b", title="t", author="a")
    with pytest.raises(ValueError, match="JPEG or PNG"):
        assemble_m4b(parts, TITLES, tmp_path / "x.m4b", title="t", author="a", cover=b"GIF89a...")
    assert list(tmp_path.iterdir()) == []


def test_probe_duration_rejects_non_audio(tmp_path):
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="not an audio file"):
        probe_duration(junk)
    assert math.isclose(probe_duration(audio.write_atomic(tmp_path / "a.wav", audio.wav_bytes(speech(1.0), RATE))),
                        1.0, abs_tol=1e-3)
