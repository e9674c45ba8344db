"""The chaos run: a book on two workers while they are killed, frozen and restarted, against the same book undisturbed.

Both runs go through `chatterbox up` (embedded Redis, two CPU workers, the web app) in fresh data directories, with
Piper's noise at 0 so that the same book makes the same audio. The disturbed run SIGKILLs a worker every
--kill-every seconds (at most --kills times), freezes one past its lease and thaws it, kills Redis once, pauses it
once past the heartbeat TTL, and stops the whole system with Ctrl-C and starts it again (each once, spread over
the first part of the book; --kills-only leaves them out), while synthesis jobs come in through the API (in both
runs). It prints
the disturbed time over the undisturbed and whatever the checks found (tests/chaos.py says what they are).

Usage: python bench/chaos.py [--words 6000] [--chapters 4] [--kill-every 12] [--kills N] [--kills-only]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.audiobook import make_book  # noqa: E402
from tests.chaos import Disturbance, compare, run_book  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=6000)
    parser.add_argument("--chapters", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=12.0)
    parser.add_argument("--kills", type=int, default=None, help="at most this many kills (default: until the end)")
    parser.add_argument("--kills-only", action="store_true", help="no freeze, Redis kill or pause, or restart")
    parser.add_argument("--checks", action="store_true", help="per-chunk quality checks on (ASR)")
    parser.add_argument("--jobs-every", type=float, default=30.0,
                        help="a synthesis job through the API this often, in both runs (0: none)")
    args = parser.parse_args()
    env = {"CHATTERBOX_BOOK_QUALITY_CHECKS": "1" if args.checks else "0"}
    text = make_book(args.words, args.chapters)
    with tempfile.TemporaryDirectory(prefix="chaos-calm-") as tmp:
        calm = run_book(Path(tmp), text, None, env, jobs_every_s=args.jobs_every or None)
    audio_min = sum(calm.chapters) / 60
    print(f"undisturbed: {audio_min:.1f} min of audio in {calm.wall_s:.1f} s")
    span = calm.wall_s
    plan = Disturbance(kill_every_s=args.kill_every, kills_max=args.kills)
    if not args.kills_only:  # each once, in the first half of the book, apart from one another
        plan.freeze_at_s, plan.redis_kill_at_s = 0.15 * span, 0.25 * span
        plan.redis_pause_at_s, plan.restart_at_s = 0.35 * span, 0.5 * span
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        chaos = run_book(Path(tmp), text, plan, env, jobs_every_s=args.jobs_every or None)
    for line in chaos.events:
        print("   ", line)
    kills = sum("SIGKILL worker" in e for e in chaos.events)
    problems = compare(calm, chaos)
    print(f"disturbed: {kills} worker kills{'' if args.kills_only else ', a freeze, a Redis kill and pause, a restart'}"
          f"; {len(chaos.jobs)} synthesis jobs meanwhile ({chaos.jobs_failed_by_kills} failed: killed on every "
          f"attempt); {chaos.wall_s:.1f} s")
    print(f"disturbed / undisturbed: {chaos.wall_s / calm.wall_s:.2f}")
    print("checks: " + ("all held" if not problems else "; ".join(problems)))
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
