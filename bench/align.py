"""Word timestamps: what timing Piper's chunks costs, and how well the forced aligner does against Piper's own
durations.

1. Time share (target: under 10 %): forced alignment (chatterbox/align.py: pocketsphinx at 16 kHz) as a share of
   Piper's synthesis time for a paragraph, chunk by chunk as a job aligns it; beside it, the same share for timing
   the chunks by Piper's own phoneme durations (chatterbox/engines/piper.py: word_timing), which jobs now use.
2. Accuracy (target: median error under 50 ms): on the same audio, each spoken word's start and end as pocketsphinx
   finds them against those Piper made it with (its phoneme durations, exact to its 256-sample frames).
3. What the durations cost the engine: its model loaded with them (the alignment output) against as it is: load
   time and memory (each in a process of its own), synthesis time of the same chunks (paired, chunk by chunk).

In one process, the engine loaded and the aligner warmed up first; each run synthesizes every chunk and times its
words both ways. Prints medians over the runs (errors: over every word of every run).

Usage: python bench/align.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatterbox import align  # noqa: E402
from chatterbox.engines.piper import EMBEDDED_VOICE, PiperEngine, word_timing  # noqa: E402
from chatterbox.settings import load  # noqa: E402

PARAGRAPH = ("The old lighthouse stood at the edge of the cliff, two miles from the village of St. Agnes. Every night "
             "since 1887 its beam swept across the dark water, warning ships away from the rocks below. Nobody had "
             "kept it for 25 years, yet the light never failed. On the 3rd of May a storm tore the roof off the "
             "keeper's cottage, and the repairs cost $4,500. The villagers paid for them gladly, because the light "
             "was theirs.")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def cost(settings, chunks: list[str], repeats: int) -> None:
    """The engine with and without the durations output: load time and memory each in a process of its own (memory
    is the process'), then synthesis time paired: both loaded here, each chunk made by one then the other, so that
    whatever else the machine is doing weighs on both alike."""
    PiperEngine(settings).load()  # makes the patched model once (not timed: once per data directory)
    for variant in ("as it is", "with durations"):
        out = subprocess.run([sys.executable, __file__, "--cost-of", variant, "--data-dir", str(settings.data_dir)],
                             capture_output=True, text=True, check=True)
        print(f"  {variant}: {out.stdout.strip()}")
    engines = {variant: _engine(settings, variant) for variant in ("as it is", "with durations")}
    params = engines["as it is"].validate({})
    spent: dict[str, list[float]] = {variant: [] for variant in engines}
    for _ in range(repeats):
        for chunk in chunks:
            for variant, engine in engines.items():
                started = time.perf_counter()
                list(engine.stream(chunk, EMBEDDED_VOICE, params))  # with the words' timing where it has durations
                spent[variant].append(time.perf_counter() - started)
    ratios = [b / a for a, b in zip(spent["as it is"], spent["with durations"])]
    print(f"  synthesis of a chunk, paired over {len(ratios)}: as it is {_ms(spent['as it is'])}, with durations "
          f"{_ms(spent['with durations'])} (and the words' timing); with / without: median "
          f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


def _engine(settings, variant: str) -> PiperEngine:
    engine = PiperEngine(settings)
    if variant == "as it is":
        engine._with_durations = lambda model: None  # type: ignore[method-assign]
    return engine


def cost_of(variant: str, data_dir: str) -> None:
    settings = load({"data_dir": data_dir})
    engine = _engine(settings, variant)
    before, started = _rss_mb(), time.perf_counter()
    engine.load()
    load_s, loaded_mb = time.perf_counter() - started, _rss_mb() - before
    params = engine.validate({})
    for chunk in engine.chunks(PARAGRAPH, settings):
        list(engine.stream(chunk, EMBEDDED_VOICE, params))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"load {load_s:.2f} s, resident +{loaded_mb:.0f} MB once loaded; the process' peak {peak:.0f} MB after "
          "synthesizing the paragraph")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-cost", action="store_true", help="skip part 3 (two more processes)")
    parser.add_argument("--cost-of", help=argparse.SUPPRESS)  # part 3's own processes
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cost_of:
        return cost_of(args.cost_of, args.data_dir)
    settings = load({"data_dir": tempfile.mkdtemp(prefix="bench-align-")})
    engine = PiperEngine(settings)
    engine.load()
    word_phonemes = engine._word_phonemes[EMBEDDED_VOICE]
    params = engine.validate({})
    chunks = engine.chunks(PARAGRAPH, settings)
    gaps = [settings.chunk_gap_s] * len(chunks)
    rate = engine.sample_rate
    warm = np.concatenate(list(engine.stream("Warming up.", EMBEDDED_VOICE, params)))
    align.align_chunk(warm, rate, "Warming up.", align.plan("Warming up.", ["Warming up."])[0])
    shares, engine_shares, synth_all, align_all, engine_all, audio_s = [], [], [], [], [], 0.0
    start_err: list[float] = []
    end_err: list[float] = []
    start_bias: list[float] = []
    end_bias: list[float] = []
    boundary_err: list[float] = []
    by_engine = 0
    for _ in range(args.repeats):
        synth_s = align_s = engine_s = 0.0
        started = time.perf_counter()
        words = align.JobWords(PARAGRAPH, chunks, rate, gaps)
        plan_s = time.perf_counter() - started  # the plan: once per job, either way
        align_s += plan_s
        engine_s += plan_s
        parts: list[np.ndarray] = []
        for index, chunk in enumerate(chunks):
            started = time.perf_counter()
            stream = engine.stream(chunk, EMBEDDED_VOICE, params)
            parts.append(np.concatenate(list(stream)))
            synth_s += time.perf_counter() - started  # with the engine's own timing, made at the stream's end
            started = time.perf_counter()
            own = word_timing(chunk, stream.phonemes, rate, word_phonemes)
            if own is not None:
                align.place_words(words.plans[index], own)
            engine_s += time.perf_counter() - started  # what the stream spent on it, measured again apart
            by_engine += own is not None
            started = time.perf_counter()
            asr = align.time_chunk(parts[index], rate, chunk)
            words.add(index, parts, asr)
            align_s += time.perf_counter() - started
            if own is None or not asr.aligned:
                continue
            for i, (start, end) in own.spans.items():
                if i in asr.spans:
                    start_err.append(abs(asr.spans[i][0] - start))
                    end_err.append(abs(asr.spans[i][1] - end))
                    start_bias.append(asr.spans[i][0] - start)
                    end_bias.append(asr.spans[i][1] - end)
                if i + 1 in own.spans and i in asr.spans and i + 1 in asr.spans:
                    # Piper gives the space between two words time of its own, the recognizer gives it to one of
                    # them: how far its boundary lies outside that space (0 inside it).
                    gap = (end, own.spans[i + 1][0])
                    for edge in (asr.spans[i][1], asr.spans[i + 1][0]):
                        boundary_err.append(max(0.0, gap[0] - edge, edge - gap[1]))
        record = words.record(parts)
        assert record["aligned"] and len(record["words"]) == len(PARAGRAPH.split())
        audio_s = (sum(len(p) for p in parts) / rate) + sum(gaps[:-1])
        shares.append(align_s / synth_s)
        engine_shares.append(engine_s / synth_s)
        synth_all.append(synth_s)
        align_all.append(align_s)
        engine_all.append(engine_s)
    print(f"{len(chunks)} chunks, {len(PARAGRAPH.split())} words, {audio_s:.1f} s of audio; median of {args.repeats}:")
    print(f"  synthesis {statistics.median(synth_all):.3f} s, alignment {statistics.median(align_all):.3f} s "
          f"({statistics.median(align_all) / audio_s:.3f} x real time), Piper's own timing "
          f"{statistics.median(engine_all) * 1000:.1f} ms")
    print(f"  alignment / synthesis: {statistics.median(shares):.1%} (min {min(shares):.1%}, max {max(shares):.1%});"
          f" Piper's own timing / synthesis: {statistics.median(engine_shares):.2%}")
    print(f"  chunks timed by Piper's durations: {by_engine} of {len(chunks) * args.repeats}")
    if start_err:
        q90 = lambda v: float(np.percentile(v, 90))  # noqa: E731
        print(f"  pocketsphinx against Piper's durations, {len(start_err)} words: median |error| start "
              f"{_ms(start_err)}, end {_ms(end_err)}; 90th percentile start {q90(start_err) * 1000:.0f} ms, end "
              f"{q90(end_err) * 1000:.0f} ms; median signed (pocketsphinx - Piper) start {_ms(start_bias)}, "
              f"end {_ms(end_bias)}")
        print(f"  its boundaries between words outside Piper's space between them: median {_ms(boundary_err)}, "
              f"90th percentile {float(np.percentile(boundary_err, 90)) * 1000:.0f} ms")
    if not args.no_cost:
        print("  the durations output (part 3):")
        cost(settings, chunks, args.repeats)


if __name__ == "__main__":
    main()
