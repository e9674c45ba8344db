"""A book's work state against a real Redis: items held under leases, handed back only from holders that are gone,
and a watchdog that finds whatever a crash left missing, so that a book always finishes or fails with a reason."""
from __future__ import annotations

import json
import time

import pytest

from chatterbox.access import SYSTEM
from chatterbox.books.plan import make_plan, save_plan
from chatterbox.books.reader import book_from_chapters
from chatterbox.books.runner import BookRunner
from chatterbox.books.state import PARTS, BookStore
from chatterbox.engines import create_engine
from chatterbox.jobs import BOOKS_ACTIVE, JobStore, book_key
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
