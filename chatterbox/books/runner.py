"""The worker's side of an audiobook: take the next item of a book, do it, report it; and the watchdog.

Each Celery message for a book lets one worker do one item (a chunk, a chapter's assembly or the book's), so no
task runs for long and every worker helps with every book. Everything an item produces is written atomically
before it is recorded as done, and a chunk already in the cache is never synthesized again: a worker that dies
at any moment costs at most the item it held. An item is held under a lease its worker renews; a worker that
loses it (taken for dead while frozen) stops without recording anything. The watchdog reconciles every unfinished
book against what is durable, so a book always finishes, or fails with a reason, whatever crashed where.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Callable

import numpy as np

from .. import align, audio
from ..engines import Engine, InvalidRequest
from ..jobs import JobStore
from ..leases import Lease, LeaseKeeper, LeaseLost
from ..retention import touch_chunk
from ..settings import Settings
from .assemble import Pauses, assemble_chapter_files, assemble_m4b
from . import epub_readalong, readalong
from .plan import Chunk, Plan, book_dir, cached_chunk, chunk_paths, load_plan, retry_seed
from .state import BookStore

log = logging.getLogger(__name__)

SendTokens = Callable[[str, int], None]  # (book id, how many): queue that many work messages for the book
STALL_S = 10.0  # a running book with pending items, nothing in flight and an empty bulk queue for this long has lost its tokens
RECONCILE_S = 5.0  # how often the watchdog checks an unfinished book against its durable state (and renews its TTLs)


class PermanentError(Exception):
    """A failure that retrying cannot fix (the voice was deleted, the plan is unreadable): stops the book at once."""


def describe_item(plan: Plan | None, item: str) -> str:
    if item == "b":
        return "assembling the book"
    kind, _, number = item.partition(":")
    n = int(number)
    if kind == "a":
        return f"assembling chapter {n + 1}"
    if plan is None:
        return f"chunk {n + 1}"
    chunk = plan.chunks[n]
    text = chunk.text if len(chunk.text) <= 60 else chunk.text[:57] + "..."
    return f"chunk {n + 1} (chapter {chunk.chapter + 1}: {text!r})"


class BookRunner:
    def __init__(self, engine: Engine, store: JobStore, settings: Settings, *, instance: str, worker: str,
                 send_tokens: SendTokens, keeper: LeaseKeeper):
        self.engine = engine
        self.keeper = keeper
        self._reconciled: dict[str, float] = {}  # book -> when the watchdog last reconciled it
        self.store = store
        self.books = BookStore(store)
        self.settings = settings
        self.instance = instance
        self.worker = worker
        self.send_tokens = send_tokens
        self._transcriber: object = None
        self._transcriber_made = False
        # A worker runs several items at once (its threads); the recognizer (pocketsphinx's decoder) is one object
        # with one state, so one chunk at a time is checked.
        self._checking = threading.Lock()

    # -- one item ------------------------------------------------------------------------------------------------
    def work(self, job_id: str) -> str | None:
        """Do the next item of a book, if it is running and has one; returns the item done (or tried)."""
        job = self.store.get(job_id)
        if job is None or job.get("kind") != "audiobook":
            return None
        if self.books.begin_run(job_id):
            self.store.emit(job_id, "progress", status="running", progress=job.get("progress", 0.0))
        # Nothing unless the book is running: a paused, cancelled or finished one drops this message (resume sends
        # new ones).
        lease = self.books.take(job_id, self.instance, self.worker)
        if lease is None:
            return None
        item = lease.item
        self.keeper.hold(lease)
        plan = None
        try:
            plan = load_plan(self.settings, job_id)
            if item.startswith("c:"):
                self._chunk(job, plan, int(item[2:]), lease)
            elif item.startswith("a:"):
                self._chapter(job_id, plan, int(item[2:]), lease)
            else:
                self._book(job_id, plan, lease)
        except LeaseLost:
            log.warning("book %s: %s was taken back from this worker (it was silent past its lease); dropped",
                        job_id, item)
            return item
        except (PermanentError, InvalidRequest, FileNotFoundError, ValueError) as exc:
            log.exception("book %s: %s failed", job_id, item)
            self._stop(job_id, f"{describe_item(plan, item)} failed: {_message(exc)}", lease)
        except Exception as exc:
            log.exception("book %s: %s failed", job_id, item)
            # Should Redis fail here too, the lease is not renewed any more (finally) and the watchdog hands the
            # item back once it runs out.
            failures = self.books.fail(job_id, item)
            limit = self.settings.book_chunk_attempts
            if failures >= limit:
                self._stop(job_id, f"{describe_item(plan, item)} failed {failures} times (the limit is {limit}, "
                                   f"CHATTERBOX_BOOK_CHUNK_ATTEMPTS); last error: {_message(exc)}", lease)
            else:
                self.books.retry(lease)
        finally:
            self.keeper.release(lease)
        # Each message that found work sends the next one while work remains: a window of messages circulates
        # through the bulk queue, so queueing a book costs the same for any length.
        if self.books.has_work(job_id):
            self.send_tokens(job_id, 1)
        return item

    def _stop(self, job_id: str, error: str, lease: Lease | None = None) -> None:
        """Fail the book with ``error``; the item ``lease`` holds is given back (a resume takes it up again)."""
        if lease is not None:
            try:
                self.books.retry(lease)
            except LeaseLost:
                pass  # someone else holds it now; the book stops all the same
        self.books.stop(job_id, error)

    # -- chunks --------------------------------------------------------------------------------------------------
    def _chunk(self, job: dict, plan: Plan, index: int, lease: Lease) -> None:
        job_id = job["id"]
        chunk = plan.chunks[index]
        report = cached_chunk(self.settings, chunk.key)
        made = report is None
        if made:
            report = self.render(plan, chunk, lease)
        else:
            touch_chunk(self.settings, chunk.key)  # still in use: the retention sweeper keeps it
        info = {"duration_s": report["duration_s"], "attempts": len(report["attempts"]), "ok": report["ok"],
                "problems": report.get("problems", []), "synthesized": made, "worker": self.worker,
                "key": chunk.key}
        if self.books.complete_chunk(lease, index, info, synthesized=made):
            self._report_chunk(job_id, plan, chunk, report["duration_s"])
        chapter = plan.chapters[chunk.chapter]
        # (A crash between the two steps leaves the assembly unqueued: the watchdog's reconcile queues it.)
        if self.books.all_done(job_id, chapter.chunk_range) and self.books.queue(job_id, f"a:{chapter.index}"):
            self.send_tokens(job_id, 1)

    def _report_chunk(self, job_id: str, plan: Plan, chunk: Chunk, duration_s: float) -> None:
        audio_s = self.store.add(job_id, "audio_s", duration_s)
        done = self.books.done_count(job_id)
        total = len(plan.chunks)
        chapter = plan.chapters[chunk.chapter]
        chapter_done = self.books.count_done(job_id, chapter.chunk_range)
        job = self.store.get(job_id) or {}
        progress = round(0.99 * done / total, 4)
        self.store.update(job_id, chunks_done=done, progress=progress)
        self.store.emit(job_id, "progress", status=job.get("status", "running"), progress=progress,
                        chunks_done=done, chunks_total=total, audio_s=round(audio_s, 2), eta_s=eta_seconds(job, done, total),
                        chapter={"index": chapter.index, "chunks_done": chapter_done, "chunks_total": chapter.count},
                        worker=self.worker)

    def render(self, plan: Plan, chunk: Chunk, lease: Lease | None = None) -> dict:
        """Synthesize a chunk, check it, try again with new seeds while it fails its checks (keeping the best
        attempt), and write it to the cache: audio first, then its report, each atomically. With ``lease``, stop
        (LeaseLost) as soon as it is found taken, and write nothing unless it is still held."""
        checks = self.settings.book_quality_checks
        attempts = 1 + (self.settings.book_quality_retries if checks else 0)
        engine = self.engine.for_model(plan.engine_model or None, plan.speech_language or None)
        tried: list[dict] = []
        best: tuple[float, np.ndarray, dict | None, align.Timing | None] | None = None
        for attempt in range(attempts):
            params = chunk.params
            if attempt and "seed" in params:
                params = {**params, "seed": retry_seed(int(params["seed"]), attempt)}
            started = time.perf_counter()
            pieces = []
            stream = engine.stream(chunk.text, plan.voice, params, priority="bulk")
            for piece in stream:
                if lease is not None:
                    lease.check()  # a worker thawed after its lease ran out stops here, not after the chunk
                pieces.append(piece)
            samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
            synth_s = time.perf_counter() - started
            quality = self._check(samples, chunk.text, params) if checks else None
            entry = {"attempt": attempt + 1, "seed": params.get("seed"), "synth_s": round(synth_s, 3),
                     "ok": quality.ok if quality else bool(samples.size),
                     "score": round(quality.score, 4) if quality else 0.0,
                     "problems": quality.problems if quality else []}
            tried.append(entry)
            score = quality.score if quality else 0.0
            if best is None or score < best[0]:
                best = (score, samples, quality.as_dict() if quality else None, align.stream_timing(stream))
            if entry["ok"]:
                break
        assert best is not None
        _, samples, quality, timing = best
        if not samples.size:
            raise RuntimeError(f"the {self.engine.name} engine produced no audio for {chunk.text!r}")
        chosen = min(tried, key=lambda t: t["score"])
        # Its spoken words timed now, while the samples are at hand: the chapter's subtitles and read-along need them.
        # (The engine's own timing where it gave one: Piper's.)
        timing = timing or align.time_chunk(samples, self.engine.sample_rate, chunk.text, plan.speech_language or "en")
        report = {"key": chunk.key, "text": chunk.text, "voice": plan.voice, "engine": self.engine.name,
                  "model": plan.model, "params": chunk.params, "sample_rate": self.engine.sample_rate,
                  "duration_s": round(len(samples) / self.engine.sample_rate, 3), "attempts": tried,
                  "chosen": chosen["attempt"], "ok": chosen["ok"], "problems": chosen["problems"],
                  "quality": quality, "timing": timing.as_dict(), "worker": self.worker, "created_at": time.time()}
        if lease is not None:
            self.books.check(lease)
        wav, meta = chunk_paths(self.settings, chunk.key)
        audio.write_atomic(wav, audio.wav_bytes(samples, self.engine.sample_rate))
        audio.write_atomic(meta, json.dumps(report).encode())
        return report

    def _check(self, samples: np.ndarray, text: str, params: dict):
        from ..quality import check_chunk

        speed = 1.0 / float(params.get("length_scale", 1.0) or 1.0)
        with self._checking:
            return check_chunk(samples, self.engine.sample_rate, text, transcriber=self.transcriber(), speed=speed,
                               words_per_minute=self.engine.words_per_minute)

    def transcriber(self):
        if not self._transcriber_made:
            from ..quality import make_transcriber

            whisper = str(self.settings.whisper_model) if self.settings.whisper_model else None
            self._transcriber = make_transcriber(self.settings.book_asr, whisper,
                                                 follows_text=self.engine.follows_text)
            self._transcriber_made = True
        return self._transcriber

    def _timing(self, plan: Plan, chunk: Chunk) -> align.Timing:
        """A cached chunk's word timing: from its report, or (made before reports kept it) aligned now."""
        report = cached_chunk(self.settings, chunk.key) or {}
        if report.get("timing"):
            return align.Timing.from_dict(report["timing"])
        samples, rate = audio.read_wav(chunk_paths(self.settings, chunk.key)[0])
        return align.time_chunk(samples, rate, chunk.text, plan.speech_language or "en")

    # -- assembly ------------------------------------------------------------------------------------------------
    def _chapter(self, job_id: str, plan: Plan, index: int, lease: Lease) -> None:
        chapter = plan.chapters[index]
        missing = [i for i in chapter.chunk_range if cached_chunk(self.settings, plan.chunks[i].key) is None]
        if missing:
            # A chunk was regenerated or its file vanished after it was counted: make it, then assemble again
            # (the chunk's completion queues this assembly anew).
            self.books.check(lease)
            for i in missing:
                self.books.undo_chunk(job_id, i)
                self.books.queue(job_id, f"c:{i}")
            self.books.release(lease)
            self.send_tokens(job_id, len(missing))
            return
        started = time.perf_counter()
        # Streamed from the chunk files: a chapter's memory does not grow with its length (bench/assembly_memory.py).
        paths = [chunk_paths(self.settings, plan.chunks[i].key)[0] for i in chapter.chunk_range]
        breaks = [plan.chunks[i].brk for i in chapter.chunk_range]
        pauses = Pauses(sentence_s=plan.assembly["sentence_s"], paragraph_s=plan.assembly["paragraph_s"],
                        chapter_s=plan.assembly["chapter_s"])
        lease.check()
        files = assemble_chapter_files(paths, breaks, plan.sample_rate, book_dir(self.settings, job_id) / "chapters",
                                       index=index + 1, count=len(plan.chapters), title=chapter.title,
                                       book_title=plan.title, author=plan.author, fmt=plan.format, pauses=pauses,
                                       target_lufs=plan.assembly["target_lufs"])
        timings = [self._timing(plan, plan.chunks[i]) for i in chapter.chunk_range]
        # The read-along plays a core media type: the chapter file where it is MP3, else its AAC part.
        words = readalong.write_words(files.audio.with_suffix(".words.json"), chapter.title,
                                      (files.audio if files.audio.suffix == ".mp3" else files.part).name,
                                      files.duration_s, readalong.chapter_words(plan, chapter, files.chunks, timings),
                                      readalong.block_ends(plan, chapter), all(t.aligned for t in timings))
        seconds = time.perf_counter() - started
        self.books.set_chapter(lease, index, {"file": files.audio.name, "part": files.part.name,
                                              "words_file": words.name,
                                              "duration_s": round(files.duration_s, 3),
                                              "lufs": round(files.lufs, 2) if math.isfinite(files.lufs) else None,
                                              "worker": self.worker})
        self.store.add(job_id, "assembly_s", seconds)
        done = len(self.books.chapters(job_id))
        self.store.update(job_id, chapters_done=done)
        self.store.emit(job_id, "chapter", index=index, title=chapter.title, duration_s=round(files.duration_s, 3),
                        file=files.audio.name, chapters_done=done, chapters_total=len(plan.chapters))
        if done == len(plan.chapters) and self.books.queue(job_id, "b"):
            self.send_tokens(job_id, 1)

    def _book(self, job_id: str, plan: Plan, lease: Lease) -> None:
        folder = book_dir(self.settings, job_id)
        chapters = self.books.chapters(job_id)
        # A chapter assembled before its words were kept (an older worker) is assembled again, to have them.
        missing = [c.index for c in plan.chapters
                   if c.index not in chapters or not (folder / "chapters" / chapters[c.index]["part"]).is_file()
                   or not (folder / "chapters" / chapters[c.index].get("words_file", "-")).is_file()]
        if missing:
            self.books.check(lease)
            for i in missing:
                self.books.forget_chapter(job_id, i)
                if self.books.all_done(job_id, plan.chapters[i].chunk_range) and self.books.queue(job_id, f"a:{i}"):
                    self.send_tokens(job_id, 1)
            self.books.release(lease)  # the last chapter assembled queues the book's assembly again
            return
        started = time.perf_counter()
        cover = next(iter(sorted(folder.glob("cover.*"))), None)
        parts = [folder / "chapters" / chapters[c.index]["part"] for c in plan.chapters]
        lease.check()
        marks = assemble_m4b(parts, [c.title for c in plan.chapters], folder / "book.m4b", title=plan.title,
                             author=plan.author, language=plan.language,
                             cover=cover.read_bytes() if cover else None, cover_type=plan.cover_type)
        audio.write_atomic(folder / "chapters.json", json.dumps(
            [{"title": m.title, "start_s": round(m.start_s, 3), "end_s": round(m.end_s, 3)} for m in marks]).encode())
        lease.check()
        records = [readalong.read_words(folder / "chapters" / chapters[c.index]["words_file"]) for c in plan.chapters]
        items = [readalong.EpubChapter(c, folder / "chapters" / r["audio"], r) for c, r in zip(plan.chapters, records)]
        # A book that came as an EPUB reads along in its own pages where its text still matches them; any other
        # (or one edited too much before it started) in pages made from its text.
        original = folder / "source.epub"
        if not (original.is_file()
                and epub_readalong.write_from_source(folder / "book.epub", original.read_bytes(), plan, items)):
            readalong.write_epub(folder / "book.epub", plan, items, cover)
        seconds = time.perf_counter() - started
        self.books.check(lease)  # the book ends once, by the holder of its last item
        assembly_s = self.store.add(job_id, "assembly_s", seconds)
        job = self.store.get(job_id) or {}
        total = marks[-1].end_s if marks else 0.0
        self.books.finish(job_id, output="book.m4b", duration_s=round(total, 3), chunks_done=len(plan.chunks),
                          assembly_s=round(assembly_s, 3),
                          total_s=round(time.time() - job.get("created_at", time.time()), 3))
        self.books.release(lease)

    # -- the watchdog --------------------------------------------------------------------------------------------
    def watch(self, bulk_queue_length: Callable[[], int], dead: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Keep every unfinished book moving: hand back items whose holder is gone (lease run out, or its worker
        in ``dead``), queue what its durable state says is missing, replace lost messages, keep its keys alive.
        Runs in every worker's heartbeat thread (and at its start); one worker at a time does the work."""
        if not self.books.watchdog_turn(self.instance, self.settings.heartbeat_interval_s):
            return []
        moved = []
        unfinished = self.books.unfinished()
        ids = {job["id"] for job in unfinished}
        self._reconciled = {k: v for k, v in self._reconciled.items() if k in ids}  # the ended are forgotten
        for job in unfinished:
            job_id = job["id"]
            moving = self.books.moving(job)
            back = self.books.hand_back(job_id, dead)
            stopped = False
            for item in back:
                failures = self.books.fail(job_id, item)
                if failures >= self.settings.book_chunk_attempts:
                    plan = _plan_or_none(self.settings, job_id)
                    self._stop(job_id, f"{describe_item(plan, item)} was running on a worker that stopped, "
                                       f"{failures} times; the book is stopped so that it does not loop")
                    stopped = True
                    break
                self.store.emit(job_id, "progress", status=job["status"], progress=job.get("progress", 0.0),
                                message=f"a worker stopped during {item}; it is done again")
            if stopped:
                continue
            moved.extend(back)
            queued = self._reconcile(job_id, moving)
            if moving and (back or queued):
                self.send_tokens(job_id, min(64, len(back) + queued))
            elif moving and self._stalled(job_id, job, bulk_queue_length):
                count = self.books.pending_count(job_id)
                log.warning("book %s has %d items and no messages: sending them again", job_id, count)
                self.send_tokens(job_id, min(64, count))
        return moved

    def _reconcile(self, job_id: str, moving: bool) -> int:
        """Every RECONCILE_S per book: queue what is missing (a moving book's), and renew its keys' TTLs."""
        now = time.monotonic()
        if now - self._reconciled.get(job_id, float("-inf")) < RECONCILE_S:
            return 0
        self._reconciled[job_id] = now
        self.books.touch(job_id)
        if not moving:
            return 0
        plan = _plan_or_none(self.settings, job_id)
        if plan is None:
            self._stop(job_id, "its plan (plan.json) can no longer be read; submit the book again")
            return 0
        queued = self.books.reconcile(job_id, [(c.first, c.count) for c in plan.chapters])
        if queued:
            log.warning("book %s: %d items were missing from its work state; queued again", job_id, queued)
        return queued

    def _stalled(self, job_id: str, job: dict, bulk_queue_length: Callable[[], int]) -> bool:
        if not self.books.pending_count(job_id) or self.books.inflight(job_id):
            return False
        if time.time() - float(job.get("activity_at") or job.get("created_at") or 0) < STALL_S:
            return False
        return bulk_queue_length() == 0


def eta_seconds(job: dict, done: int, total: int) -> float | None:
    """Time left at the throughput measured since the book last started running."""
    started, at_start = job.get("run_started_at"), job.get("run_done_at_start", 0)
    made = done - int(at_start or 0)
    if not started or made <= 0:
        return None
    rate = made / max(1e-3, time.time() - float(started))
    return round((total - done) / rate, 1)


def _plan_or_none(settings: Settings, job_id: str) -> Plan | None:
    try:
        return load_plan(settings, job_id)
    except (OSError, ValueError):
        return None


def _message(exc: Exception) -> str:
    return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
