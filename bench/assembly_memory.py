"""Chapter assembly's memory: a 12-hour chapter streamed from its chunk files, against the old in-memory assembly.

A book without headings is one chapter, and chapter assembly used to hold it whole in memory several times over
(an 11-hour novel: about 20 GB). The chunk files are made once: a few distinct speech-like chunks of about 15 s at
22,050 Hz (Piper's rate), each named many times over in the chapter's list, so that the assembly reads a file for
every chunk of every pass as it reads the chunk cache. Each assembly runs in a child process of its own, which
reports its peak RSS (VmHWM; and its ffmpeg's apart, a process of its own) and its time. Printed side by side:

- the old way, as of commit 9714c91 (loaded from git): the chunks read into memory, joined, normalized and encoded
  whole, on a 1-hour chapter
- the streaming way, assemble_chapter_files, on the same 1-hour chapter and on a 12-hour one (target: under 1 GB)

Usage: python bench/assembly_memory.py [--hours 12] [--old-hours 1] [--fmt mp3]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OLD_COMMIT = "9714c91b05cd5da4441628379dfdf924da503c4f"  # the last commit that assembled chapters in memory
RATE = 22050
CHUNK_S = 15.0
DISTINCT = 4


def make_chunks(folder: Path) -> list[Path]:
    from chatterbox import audio
    from tests.test_assemble import padded, speech

    return [audio.write_atomic(folder / f"chunk{i}.wav",
                               audio.wav_bytes(padded(speech(CHUNK_S, level=0.15 + 0.1 * i, seed=i)), RATE))
            for i in range(DISTINCT)]


def chapter(chunks: list[Path], hours: float) -> tuple[list[str], list[str]]:
    """(paths, breaks) of a chapter of about `hours` of speech, cycling through the chunk files."""
    count = max(1, round(hours * 3600 / (CHUNK_S + 0.65)))  # the pauses average 0.65 s
    paths = [str(chunks[i % len(chunks)]) for i in range(count)]
    breaks = ["paragraph" if i % 3 == 2 else "sentence" for i in range(count - 1)] + ["chapter"]
    return paths, breaks


def _old_module(folder: Path):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:chatterbox/books/assemble.py"],
                            capture_output=True, text=True, check=True).stdout
    path = folder / "assemble_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("assemble_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _status(pid: int | str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)


def _peak_kb(pid: int | str = "self") -> int:
    """Peak resident memory (VmHWM, KiB) of a process since its exec: its own, not the parent's that fork lent it
    (which getrusage's ru_maxrss counts in)."""
    return int(_status(pid)["VmHWM"].split()[0])


class _FfmpegPeak(threading.Thread):
    """The largest peak RSS of this process' ffmpeg children, looked at every 0.2 s (VmHWM only grows)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.done.wait(0.2):
            for proc in me.children():
                try:
                    status = _status(proc.pid)
                    if status["Name"].strip().startswith("ffmpeg"):  # exec'd: no longer the forked copy of us
                        self.kb = max(self.kb, int(status["VmHWM"].split()[0]))
                except (OSError, KeyError):
                    pass  # gone in between


def child(way: str, job: Path) -> None:
    """Assemble the chapter in job.json the given way; print what it cost as JSON."""
    from chatterbox import audio
    from chatterbox.books import assemble

    spec = json.loads(job.read_text())
    paths, breaks, out = spec["paths"], spec["breaks"], Path(spec["out"])
    kwargs = dict(index=1, count=1, title="One", book_title="A Book", author="An Author", fmt=spec["fmt"])
    old = _old_module(job.parent) if way == "old" else None
    import pyloudnorm  # noqa: F401  (imported before the baseline, as the worker does at start)
    import scipy.ndimage  # noqa: F401
    import scipy.signal  # noqa: F401

    baseline = _peak_kb()
    watcher = _FfmpegPeak()
    watcher.start()
    started = time.perf_counter()
    if old is not None:  # as the runner did: every chunk read into memory, then the chapter assembled whole
        files = old.assemble_chapter([audio.read_wav(p)[0] for p in paths], breaks, RATE, out, **kwargs)
    else:
        files = assemble.assemble_chapter_files([Path(p) for p in paths], breaks, RATE, out, **kwargs)
    seconds = time.perf_counter() - started
    watcher.done.set()
    watcher.join()
    print(json.dumps({"baseline_kb": baseline, "peak_kb": _peak_kb(), "ffmpeg_kb": watcher.kb, "seconds": seconds,
                      "duration_s": files.duration_s, "lufs": files.lufs,
                      "bytes": files.audio.stat().st_size + files.part.stat().st_size}))


def run(way: str, paths: list[str], breaks: list[str], work: Path, fmt: str) -> dict:
    job = work / f"{way}-{len(paths)}.json"
    out = work / f"out-{way}-{len(paths)}"
    job.write_text(json.dumps({"paths": paths, "breaks": breaks, "out": str(out), "fmt": fmt}))
    result = subprocess.run([sys.executable, __file__, "--child", way, str(job)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the {way} assembly failed ({result.returncode}):\n{result.stderr[-3000:]}")
    for f in out.iterdir():  # 12 hours of MP3 and AAC are 700 MB: not kept
        f.unlink()
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=12.0, help="the long chapter, streamed")
    parser.add_argument("--old-hours", type=float, default=1.0, help="the chapter both ways are compared on")
    parser.add_argument("--fmt", choices=("mp3", "ogg"), default="mp3")
    parser.add_argument("--child", nargs=2, metavar=("WAY", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return

    mb = 1024.0  # VmHWM is in KiB
    rows = []
    with tempfile.TemporaryDirectory(prefix="assembly-bench-") as tmp:
        work = Path(tmp)
        chunks = make_chunks(work)
        for way, hours in (("old", args.old_hours), ("streamed", args.old_hours), ("streamed", args.hours)):
            paths, breaks = chapter(chunks, hours)
            print(f"{way}: {hours:g} h chapter, {len(paths)} chunk files ...", flush=True)
            r = run(way, paths, breaks, work, args.fmt)
            rows.append((way, hours, r))
            print(f"  peak RSS {r['peak_kb'] / mb:,.0f} MB (after imports {r['baseline_kb'] / mb:,.0f} MB), "
                  f"ffmpeg {r['ffmpeg_kb'] / mb:,.0f} MB, {r['seconds']:.1f} s "
                  f"({r['duration_s'] / r['seconds']:.0f}x real time), chapter {r['duration_s'] / 3600:.2f} h "
                  f"at {r['lufs']:.2f} LUFS", flush=True)

    print("\n| chapter | way | peak RSS of the assembling process | its ffmpeg | time | real time |")
    print("|---|---|---|---|---|---|")
    for way, hours, r in rows:
        name = f"in memory ({OLD_COMMIT[:7]})" if way == "old" else "streamed from the chunk files"
        print(f"| {hours:g} h | {name} | {r['peak_kb'] / mb:,.0f} MB | {r['ffmpeg_kb'] / mb:,.0f} MB | "
              f"{r['seconds']:.1f} s | {r['duration_s'] / r['seconds']:.0f}x |")
    old, short, long = (r for _, _, r in rows)
    print(f"\n{args.old_hours:g} h chapter: in memory / streamed peak RSS = {old['peak_kb'] / short['peak_kb']:.1f}; "
          f"time {old['seconds'] / short['seconds']:.2f}")
    verdict = "met" if long["peak_kb"] / mb < 1024 else "NOT met"
    print(f"{args.hours:g} h chapter streamed: peak RSS {long['peak_kb'] / mb:,.0f} MB (target < 1,024 MB: {verdict}); "
          f"growth from {args.old_hours:g} h: {(long['peak_kb'] - short['peak_kb']) / mb:+,.0f} MB")


if __name__ == "__main__":
    main()
