"""Word timestamps: forced alignment time (chatterbox/align.py, pocketsphinx at 16 kHz) as a share of Piper's
synthesis time for a paragraph, chunk by chunk as a job aligns it (target: under 10 %).

In one process, the engine loaded and the aligner warmed up first; each run synthesizes every chunk and aligns it,
timing the two apart. Prints the median over the runs.

Usage: python bench/align.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatterbox import align  # noqa: E402
from chatterbox.engines.piper import PiperEngine  # noqa: E402
from chatterbox.settings import load  # noqa: E402

PARAGRAPH = ("The old lighthouse stood at the edge of the cliff, two miles from the village of St. Agnes. Every night "
             "since 1887 its beam swept across the dark water, warning ships away from the rocks below. Nobody had "
             "kept it for 25 years, yet the light never failed. On the 3rd of May a storm tore the roof off the "
             "keeper's cottage, and the repairs cost $4,500. The villagers paid for them gladly, because the light "
             "was theirs.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    settings = load({"data_dir": tempfile.mkdtemp(prefix="bench-align-")})
    engine = PiperEngine(settings)
    engine.load()
    params = engine.validate({})
    chunks = engine.chunks(PARAGRAPH, settings)
    gaps = [settings.chunk_gap_s] * len(chunks)
    warm = np.concatenate(list(engine.stream("Warming up.", "joe", params)))
    align.align_chunk(warm, engine.sample_rate, "Warming up.", align.plan("Warming up.", ["Warming up."])[0])
    shares, synth_all, align_all, audio_s = [], [], [], 0.0
    for _ in range(args.repeats):
        synth_s = align_s = 0.0
        started = time.perf_counter()
        words = align.JobWords(PARAGRAPH, chunks, engine.sample_rate, gaps)
        align_s += time.perf_counter() - started  # the plan: once per job
        parts: list[np.ndarray] = []
        for index, chunk in enumerate(chunks):
            started = time.perf_counter()
            parts.append(np.concatenate(list(engine.stream(chunk, "joe", params))))
            synth_s += time.perf_counter() - started
            started = time.perf_counter()
            words.add(index, parts)
            align_s += time.perf_counter() - started
        record = words.record(parts)
        assert record["aligned"] and len(record["words"]) == len(PARAGRAPH.split())
        audio_s = (sum(len(p) for p in parts) / engine.sample_rate) + sum(gaps[:-1])
        shares.append(align_s / synth_s)
        synth_all.append(synth_s)
        align_all.append(align_s)
    print(f"{len(chunks)} chunks, {len(PARAGRAPH.split())} words, {audio_s:.1f} s of audio; median of {args.repeats}:")
    print(f"  synthesis {statistics.median(synth_all):.3f} s, alignment {statistics.median(align_all):.3f} s "
          f"({statistics.median(align_all) / audio_s:.3f} x real time)")
    print(f"  alignment / synthesis: {statistics.median(shares):.1%} (min {min(shares):.1%}, max {max(shares):.1%})")


if __name__ == "__main__":
    main()
