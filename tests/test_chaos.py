"""The chaos run, short: a small book through `chatterbox up` while workers are killed and frozen, Redis is killed
and paused, and everything is stopped with Ctrl-C and started again; it must come out as it does undisturbed
(tests/chaos.py; bench/chaos.py is the long run with figures)."""
from __future__ import annotations

from bench.audiobook import make_book
from tests.chaos import Disturbance, compare, run_book

# Short chunks, so that a worker killed every few seconds costs a chunk, not the book; a short lease, so that the
# freeze and the pause outlast it within the test's time.
ENV = {"CHATTERBOX_BOOK_QUALITY_CHECKS": "0", "CHATTERBOX_CHUNK_CHARS": "120", "CHATTERBOX_HEARTBEAT_INTERVAL_S": "0.5",
       "CHATTERBOX_HEARTBEAT_TTL_S": "3"}


def test_a_book_comes_out_whole_through_kills_freezes_and_restarts(tmp_path):
    text = make_book(700, 2, seed=11)
    jobs_every_s = 8.0
    calm = run_book(tmp_path / "calm", text, None, ENV, jobs_every_s=jobs_every_s, timeout_s=600)
    assert not calm.problems, calm.problems
    span = calm.wall_s
    plan = Disturbance(kill_every_s=max(6.0, span / 8), kills_max=3, freeze_at_s=0.1 * span,
                       redis_kill_at_s=0.25 * span, redis_pause_at_s=0.35 * span, restart_at_s=0.5 * span)
    chaos = run_book(tmp_path / "chaos", text, plan, ENV, jobs_every_s=jobs_every_s, timeout_s=900)
    report = "\n".join(chaos.events)
    assert not compare(calm, chaos), f"{compare(calm, chaos)}\n{report}"
    assert sum("SIGKILL worker" in e for e in chaos.events) >= 2, report
    for what in ("SIGCONT worker", "SIGKILL redis", "SIGCONT redis", "started again"):
        assert any(what in e for e in chaos.events), f"{what} did not happen while the book ran:\n{report}"
    print(f"disturbed / undisturbed: {chaos.wall_s / calm.wall_s:.2f}\n{report}")
