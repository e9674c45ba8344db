"""A book's work state against a real Redis: items held under leases, handed back only from holders that are gone,
and a watchdog that finds whatever a crash left missing, so that a book always finishes or fails with a reason."""
from __future__ import annotations

import json
import threading
import time

import pytest

from chatterbox.access import SYSTEM
from chatterbox.books.plan import make_plan, save_plan
from chatterbox.books.reader import book_from_chapters
from chatterbox.books.runner import BookRunner
from chatterbox.books.state import PARTS, BookStore
from chatterbox.books.transitions import TRANSITIONS, BookStateError
from chatterbox.engines import create_engine
from chatterbox.jobs import (BOOKS_ACTIVE, STATUSES, TERMINAL, JobStore, QueueFull, book_key, events_key,
                             finished_index, job_key, owner_active, status_index)
from chatterbox.leases import LeaseKeeper, LeaseLost
from chatterbox.settings import load

CHAPTERS = [{"title": "One", "text": "First words.\n\nSecond words."}, {"title": "Two", "text": "Third words."}]


@pytest.fixture()
def setup(fresh_redis, redis_url, tmp_path):
    settings = load({"redis_url": redis_url, "data_dir": tmp_path, "heartbeat_ttl_s": 1, "heartbeat_interval_s": 1},
                    environ={})
    store = JobStore.connect(settings)
    engine = create_engine(settings, "cpu", "piper")
    book = book_from_chapters(CHAPTERS, title="A Book", author="An Author")
    plan = make_plan(book, job_id="b1", engine=engine, voice=engine.check_voice(None, SYSTEM),
                     params=engine.validate(None), fmt="mp3", settings=settings)
    save_plan(settings, plan)
    store.create("b1", text="A Book", voice=plan.voice, format="mp3", params={}, engine="piper", source="test",
                 kind="audiobook")
    store.update("b1", status="running")
    books = BookStore(store)
    books.start("b1", [f"c:{c.index}" for c in plan.chunks])
    sent = []
    runner = BookRunner(engine, store, settings, instance="watchdog", worker="w", keeper=LeaseKeeper(store.r, 1),
                        send_tokens=lambda job_id, n: sent.append(n))
    return store, books, plan, runner, sent


def take_all(books, instance="w1"):
    leases = []
    while (lease := books.take("b1", instance, "w")) is not None:
        leases.append(lease)
    return leases


def test_an_item_is_held_once_and_a_duplicate_is_never_taken_twice(setup):
    store, books, plan, _, _ = setup
    first = books.take("b1", "w1", "w")
    books.queue("b1", first.item, front=False)  # already in flight: not queued again
    store.r.rpush(book_key("b1", "pending"), first.item)  # as a racing reconcile could leave it
    rest = take_all(books, "w2")
    assert first.item not in [lease.item for lease in rest]
    assert books.complete_chunk(first, int(first.item[2:]), {"duration_s": 1.0}, synthesized=True)
    store.r.rpush(book_key("b1", "pending"), first.item)  # a done chunk that reappears is skipped too
    assert books.take("b1", "w3", "w") is None


def test_a_holder_that_lost_its_item_records_nothing(setup):
    store, books, plan, _, _ = setup
    lease = books.take("b1", "frozen", "w")
    store.r.delete(lease.key)  # it was silent past its lease
    assert books.hand_back("b1") == [lease.item]
    again = books.take("b1", "live", "w")
    assert again.item == lease.item
    index = int(lease.item[2:])
    for write in (lambda: books.complete_chunk(lease, index, {"duration_s": 1.0}, synthesized=True),
                  lambda: books.retry(lease), lambda: books.release(lease), lambda: books.check(lease),
                  lambda: books.set_chapter(lease, 0, {})):
        with pytest.raises(LeaseLost):
            write()
    assert books.done("b1") == {} and books.renders("b1") == {}
    assert books.complete_chunk(again, index, {"duration_s": 1.0}, synthesized=True)
    assert books.renders("b1") == {index: 1}


def test_items_go_back_only_from_holders_that_are_gone(setup):
    store, books, _, _, _ = setup
    a = books.take("b1", "alive", "w")
    b = books.take("b1", "crashed", "w")
    c = books.take("b1", "silent", "w")
    assert books.hand_back("b1") == []  # every lease lives
    store.r.delete(c.key)  # its lease ran out
    assert sorted(books.hand_back("b1", dead={"crashed"})) == sorted([b.item, c.item])  # and a known-dead worker's
    assert set(books.inflight("b1")) == {a.item}
    assert set(books.pending("b1")[:2]) == {b.item, c.item}  # at the front, next to be taken


def test_renewal_keeps_an_item_through_a_long_chunk(setup):
    store, books, _, _, _ = setup
    keeper = LeaseKeeper(store.r, ttl_s=1)
    lease = keeper.hold(books.take("b1", "w1", "w"))
    store.r.pexpire(lease.key, 1)
    time.sleep(0.01)
    assert keeper.renew() == []  # expired, but nobody took it: renewed
    assert books.hand_back("b1") == [] and lease.item in books.inflight("b1")


def test_the_watchdog_queues_an_assembly_a_crash_left_unqueued(setup):
    store, books, plan, runner, sent = setup
    # Every chunk of chapter one made, and the worker died before queueing its assembly.
    for index in plan.chapters[0].chunk_range:
        store.r.lrem(book_key("b1", "pending"), 0, f"c:{index}")
        store.r.hset(book_key("b1", "done"), str(index), json.dumps({"duration_s": 1.0}))
    assert "a:0" not in books.pending("b1")
    runner.watch(lambda: 0)
    assert books.pending("b1")[0] == "a:0" and sent
    # A chunk that vanished from every list (lost with a Redis that lost its last second of writes) comes back.
    store.r.lrem(book_key("b1", "pending"), 0, f"c:{plan.chapters[1].first}")
    runner._reconciled.clear()
    store.r.delete("cbx:books:watchdog")
    runner.watch(lambda: 0)
    assert f"c:{plan.chapters[1].first}" in books.pending("b1")
    # Nothing is queued twice.
    before = books.pending("b1")
    runner._reconciled.clear()
    store.r.delete("cbx:books:watchdog")
    runner.watch(lambda: 0)
    assert books.pending("b1") == before


def test_the_watchdog_queues_the_book_once_every_chapter_is_assembled(setup):
    store, books, plan, runner, _ = setup
    store.r.delete(book_key("b1", "pending"))
    for chunk in plan.chunks:
        store.r.hset(book_key("b1", "done"), str(chunk.index), json.dumps({"duration_s": 1.0}))
    for chapter in plan.chapters:
        store.r.hset(book_key("b1", "chapters"), str(chapter.index), json.dumps({"part": "x.m4a"}))
    runner.watch(lambda: 0)
    assert books.pending("b1") == ["b"]


def test_stopping_a_book_gives_its_item_back(setup):
    store, books, _, runner, _ = setup
    lease = books.take("b1", "w1", "w")
    runner._stop("b1", "the voice was deleted", lease)
    assert store.get("b1")["status"] == "failed" and books.inflight("b1") == {}
    assert books.pending("b1")[0] == lease.item  # a resume takes it up again
    assert "b1" not in store.r.smembers(BOOKS_ACTIVE)


def test_an_item_that_failed_without_its_failure_recorded_comes_back_when_its_lease_runs_out(setup):
    store, books, _, runner, sent = setup
    keeper = runner.keeper
    lease = keeper.hold(books.take("b1", "w1", "w"))
    keeper.release(lease)  # its task ended (Redis refused fail() and retry()): nobody renews it any more
    store.r.delete(lease.key)  # ... so it runs out
    assert runner.watch(lambda: 0) == [lease.item]
    assert books.pending("b1")[0] == lease.item and sent


def test_every_key_of_a_book_has_a_ttl_and_an_unfinished_record_none(setup):
    store, books, _, _, _ = setup
    lease = books.take("b1", "w1", "w")
    books.complete_chunk(lease, int(lease.item[2:]), {"duration_s": 1.0}, synthesized=True)
    books.fail("b1", "c:1")
    store.r.hset(book_key("b1", "chapters"), "0", "{}")
    books.touch("b1")
    for part in PARTS:
        key = book_key("b1", part)
        if store.r.exists(key):
            assert store.r.ttl(key) > 30 * 24 * 3600, part
    assert store.r.ttl("cbx:job:b1") == -1  # unfinished: kept for as long as it runs or waits
    assert all(store.r.ttl(k) > 0 for k in store.r.scan_iter("cbx:job:b1:book:lease:*"))


# -- the book's status: every move of transitions.TRANSITIONS, and only those -----------------------------------------
@pytest.fixture()
def moves(fresh_redis, redis_url, tmp_path):
    settings = load({"redis_url": redis_url, "data_dir": tmp_path, "max_queued_jobs": 2}, environ={})
    store = JobStore.connect(settings)
    return store, BookStore(store)


def new_book(store, books, job_id="m1", owner="k1"):
    store.create(job_id, text="A Book", voice="v", format="mp3", params={}, engine="piper", source="test",
                 kind="audiobook", owner=owner)
    books.start(job_id, ["c:0", "c:1", "b"])
    return job_id


# Each event as the runner and the controls call it; a move refused without a code answers False.
CALLS = {"start": lambda b, j: b.begin_run(j), "pause": lambda b, j: b.pause(j), "resume": lambda b, j: b.resume(j),
         "reopen": lambda b, j: b.reopen(j), "cancel": lambda b, j: b.cancel(j),
         "fail": lambda b, j: b.stop(j, "an item failed"), "finish": lambda b, j: b.finish(j, output="book.m4b")}
# How a new book (queued) is brought to each status, by the moves themselves.
ROUTES = {"queued": [], "running": ["start"], "paused": ["start", "pause"], "succeeded": ["start", "finish"],
          "failed": ["start", "fail"], "cancelled": ["cancel"]}


def bring(books, job_id, status):
    for event in ROUTES[status]:
        CALLS[event](books, job_id)
    assert books.store.get(job_id)["status"] == status


def snapshot(store, job_id):
    """Everything a move may change: the record, the sets and indices it is in, its events."""
    indices = [status_index(s, o) for s in STATUSES for o in (None, "k1")] + [finished_index(), finished_index("k1")]
    return (store.r.hgetall(job_key(job_id)), store.r.sismember(BOOKS_ACTIVE, job_id),
            store.r.sismember(owner_active("k1"), job_id), [store.r.zscore(k, job_id) for k in indices],
            store.r.xlen(events_key(job_id)), store.r.ttl(job_key(job_id)))


def consistent(store, job_id):
    """The record's status is the one its indices and sets say."""
    status = store.get(job_id)["status"]
    assert [s for s in STATUSES if store.r.zscore(status_index(s), job_id) is not None] == [status]
    assert [s for s in STATUSES if store.r.zscore(status_index(s, "k1"), job_id) is not None] == [status]
    assert store.r.sismember(BOOKS_ACTIVE, job_id) == (status not in TERMINAL)
    assert (store.r.zscore(finished_index(), job_id) is not None) == (status in TERMINAL)
    return status


ALLOWED = [(e, s) for e, m in TRANSITIONS.items() for s in sorted(m.sources)]
REFUSED = [(e, s) for e, m in TRANSITIONS.items() for s in STATUSES if s not in m.sources]


@pytest.mark.parametrize("event,source", ALLOWED)
def test_every_allowed_move_makes_it(moves, event, source):
    store, books = moves
    job_id = new_book(store, books)
    bring(books, job_id, source)
    store.r.hset(book_key(job_id, "failures"), "c:0", 2)
    answer = CALLS[event](books, job_id)
    assert answer in (None, True)
    assert consistent(store, job_id) == TRANSITIONS[event].target
    job = store.get(job_id)
    if event == "start":
        assert job["run_started_at"] and job["started_at"] and job["run_done_at_start"] == 0
    if event in ("resume", "reopen"):
        assert job["error"] == "" and job["finished_at"] == "" and store.r.ttl(job_key(job_id)) == -1
    if event == "resume":
        assert not store.r.exists(book_key(job_id, "failures"))
    if TRANSITIONS[event].target in TERMINAL:
        assert job["finished_at"] and store.r.ttl(book_key(job_id, "pending")) > 0  # kept, for a resume


@pytest.mark.parametrize("event,status", REFUSED)
def test_every_other_move_is_refused_and_changes_nothing(moves, event, status):
    store, books = moves
    job_id = new_book(store, books)
    bring(books, job_id, status)
    before = snapshot(store, job_id)
    move = TRANSITIONS[event]
    if move.code:
        with pytest.raises(BookStateError) as refused:
            CALLS[event](books, job_id)
        assert refused.value.code == move.code and refused.value.status == 409
        assert f"book {job_id} " in refused.value.message and status in refused.value.message
    else:
        assert CALLS[event](books, job_id) is False
    assert snapshot(store, job_id) == before
    consistent(store, job_id)


def test_the_codes_the_web_layer_answers_with():
    assert {e: m.code for e, m in TRANSITIONS.items() if m.code} == {
        "pause": "not_running", "resume": "not_resumable", "cancel": "job_finished"}


def test_a_move_of_a_book_that_is_gone_is_a_missing_book(moves):
    store, books = moves
    for event in ("pause", "resume", "cancel"):
        with pytest.raises(KeyError):
            CALLS[event](books, "gone")
    assert [CALLS[e](books, "gone") for e in ("start", "reopen", "fail", "finish")] == [False] * 4
    assert not store.r.exists(job_key("gone")) and not store.r.sismember(BOOKS_ACTIVE, "gone")


def test_a_resume_over_the_owners_cap_changes_nothing(moves):
    store, books = moves
    job_id = new_book(store, books)
    books.cancel(job_id)
    new_book(store, books, "m2")
    new_book(store, books, "m3")  # the cap is 2
    before = snapshot(store, job_id)
    with pytest.raises(QueueFull):
        books.resume(job_id)
    with pytest.raises(QueueFull):
        books.reopen(job_id)
    assert snapshot(store, job_id) == before


def test_a_pause_that_comes_as_the_book_ends_is_refused(moves):
    # The controls read the book running, then its last item ended it: the pause must not make it "paused" (which
    # the watchdog would keep alive for ever), as it did when the status was checked apart from the move.
    store, books = moves
    job_id = new_book(store, books)
    books.begin_run(job_id)
    seen = store.get(job_id)["status"]
    assert books.finish(job_id, output="book.m4b")
    with pytest.raises(BookStateError) as refused:
        books.pause(job_id)
    assert seen == "running" and refused.value.code == "not_running"
    assert consistent(store, job_id) == "succeeded" and books.unfinished() == []


def test_a_worker_that_saw_the_book_queued_does_not_start_it_once_cancelled(moves):
    # A worker read the book as queued; it was cancelled before the worker marked it running. It must stay
    # cancelled (the old check-then-set made it "running" again, and its items were taken).
    store, books = moves
    job_id = new_book(store, books)
    seen = store.get(job_id)["status"]
    books.cancel(job_id)
    assert seen == "queued" and books.begin_run(job_id) is False
    assert books.take(job_id, "w1", "w") is None
    assert consistent(store, job_id) == "cancelled" and books.inflight(job_id) == {}


def test_a_paused_book_gives_out_no_item_and_its_items_in_flight_finish(moves):
    store, books = moves
    job_id = new_book(store, books)
    assert books.take(job_id, "w1", "w") is None  # queued: not before a worker starts its run
    books.begin_run(job_id)
    lease = books.take(job_id, "w1", "w")
    books.pause(job_id)
    assert books.take(job_id, "w2", "w") is None and not books.has_work(job_id)
    assert books.complete_chunk(lease, 0, {"duration_s": 1.0}, synthesized=True)
    books.resume(job_id)
    assert books.begin_run(job_id) and books.has_work(job_id)
    assert store.get(job_id)["run_done_at_start"] == 1
    assert books.take(job_id, "w2", "w").item == "c:1"


def test_the_watchdog_lets_go_of_a_book_that_ended_behind_its_back(moves):
    store, books = moves
    job_id = new_book(store, books)
    other = new_book(store, books, "m2")
    books.begin_run(job_id)
    store.finish(job_id, "failed", error="ended")  # and its worker died before the set of unfinished books was told
    assert [job["id"] for job in books.unfinished()] == [other]
    assert not store.r.sismember(BOOKS_ACTIVE, job_id)
    assert BookStore.moving(books.unfinished()[0])
    assert books.watchdog_turn("i1", 5) and not books.watchdog_turn("i2", 5)


def test_moves_at_once_apply_one_after_the_other(moves):
    # A pause, a cancel, a failure and the book's end, all at once, round after round: exactly one end wins, the
    # book ends in that one's status with one final event, and a pause is made only before it.
    store, books = moves
    ends = {"cancel": "cancelled", "fail": "failed", "finish": "succeeded"}
    for round_ in range(25):
        job_id = new_book(store, books, f"r{round_}", owner="k1")
        books.begin_run(job_id)
        barrier = threading.Barrier(5)
        outcome: dict[str, object] = {}

        def act(event):
            barrier.wait()
            try:
                outcome[event] = CALLS[event](books, job_id)
            except BookStateError as exc:
                outcome[event] = exc.code

        threads = [threading.Thread(target=act, args=(e,)) for e in ("pause", "cancel", "fail", "finish", "start")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [e for e in ends if outcome[e] in (None, True)]
        assert len(won) == 1, outcome
        assert consistent(store, job_id) == ends[won[0]]
        assert outcome["pause"] in (None, "not_running") and outcome["start"] is False
        finals = [json.loads(e["e"])["type"] for _, e in store.r.xrange(events_key(job_id))]
        assert finals.count("done") + finals.count("error") == 1
        books.store.purge(job_id)


def test_two_resumes_at_once_queue_the_book_once(moves):
    store, books = moves
    job_id = new_book(store, books)
    books.cancel(job_id)
    for _ in range(10):
        barrier = threading.Barrier(2)
        answers = []

        def resume():
            barrier.wait()
            try:
                books.resume(job_id)
                answers.append("queued")
            except BookStateError as exc:
                answers.append(exc.code)

        threads = [threading.Thread(target=resume) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers) == ["not_resumable", "queued"]
        assert consistent(store, job_id) == "queued"
        books.cancel(job_id)
