"""The worker's side of an audiobook: take the next item of a book, do it, report it; and the watchdog.

Each Celery message for a book lets one worker do one item (a chunk, a chapter's assembly or the book's), so no
task runs for long and every worker helps with every book. Everything an item produces is written atomically
before it is recorded as done, and a chunk already in the cache is never synthesized again: a worker that dies
at any moment costs at most the item it held.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Callable

import numpy as np

from .. import audio
from ..engines import Engine, InvalidRequest
from ..jobs import BOOKS_WATCHDOG, TERMINAL, JobStore
from ..settings import Settings
from .assemble import Pauses, assemble_chapter, assemble_m4b
from .plan import Chunk, Plan, book_dir, cached_chunk, chunk_paths, load_plan, retry_seed
from .state import BookStore

log = logging.getLogger(__name__)

SendTokens = Callable[[str, int], None]  # (book id, how many): queue that many work messages for the book
STALL_S = 10.0  # a running book with pending items, nothing in flight and an empty bulk queue for this long has lost its tokens


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
                 send_tokens: SendTokens):
        self.engine = engine
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
        if job["status"] == "queued":
            now = time.time()
            self.books.set_status(job_id, "running", started_at=job.get("started_at") or now, run_started_at=now,
                                  run_done_at_start=self.books.done_count(job_id))
            self.store.emit(job_id, "progress", status="running", progress=job.get("progress", 0.0))
        elif job["status"] != "running":
            return None  # paused, cancelled or finished: this message is dropped, resume sends new ones
        item = self.books.take(job_id, self.instance, self.worker)
        if item is None:
            return None
        plan = None
        try:
            plan = load_plan(self.settings, job_id)
            if item.startswith("c:"):
                self._chunk(job, plan, int(item[2:]))
            elif item.startswith("a:"):
                self._chapter(job_id, plan, int(item[2:]))
            else:
                self._book(job_id, plan)
        except (PermanentError, InvalidRequest, FileNotFoundError, ValueError) as exc:
            log.exception("book %s: %s failed", job_id, item)
            self._stop(job_id, f"{describe_item(plan, item)} failed: {_message(exc)}")
        except Exception as exc:
            log.exception("book %s: %s failed", job_id, item)
            failures = self.books.fail(job_id, item)
            limit = self.settings.book_chunk_attempts
            if failures >= limit:
                self._stop(job_id, f"{describe_item(plan, item)} failed {failures} times (the limit is {limit}, "
                                   f"CHATTERBOX_BOOK_CHUNK_ATTEMPTS); last error: {_message(exc)}")
            else:
                self.books.retry(job_id, item)
        # Each message that found work sends the next one while work remains: a window of messages circulates
        # through the bulk queue, so queueing a book costs the same for any length.
        if self.books.pending_count(job_id) and (self.store.get(job_id) or {}).get("status") == "running":
            self.send_tokens(job_id, 1)
        return item

    def _stop(self, job_id: str, error: str) -> None:
        self.books.deactivate(job_id)
        self.store.finish(job_id, "failed", error=error)

    # -- chunks --------------------------------------------------------------------------------------------------
    def _chunk(self, job: dict, plan: Plan, index: int) -> None:
        job_id = job["id"]
        chunk = plan.chunks[index]
        report = cached_chunk(self.settings, chunk.key)
        made = report is None
        if made:
            report = self.render(plan, chunk)
            self.books.counted_render(job_id, index)
        info = {"duration_s": report["duration_s"], "attempts": len(report["attempts"]), "ok": report["ok"],
                "problems": report.get("problems", []), "synthesized": made, "worker": self.worker,
                "key": chunk.key}
        if self.books.complete_chunk(job_id, index, info):
            self._report_chunk(job_id, plan, chunk, report["duration_s"])
        chapter = plan.chapters[chunk.chapter]
        if self.books.all_done(job_id, chapter.chunk_range) and self.books.queue_once(job_id, f"a:{chapter.index}"):
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

    def render(self, plan: Plan, chunk: Chunk) -> dict:
        """Synthesize a chunk, check it, try again with new seeds while it fails its checks (keeping the best
        attempt), and write it to the cache: audio first, then its report, each atomically."""
        checks = self.settings.book_quality_checks
        attempts = 1 + (self.settings.book_quality_retries if checks else 0)
        tried: list[dict] = []
        best: tuple[float, np.ndarray, dict | None] | None = None
        for attempt in range(attempts):
            params = chunk.params
            if attempt and "seed" in params:
                params = {**params, "seed": retry_seed(int(params["seed"]), attempt)}
            started = time.perf_counter()
            pieces = list(self.engine.stream(chunk.text, plan.voice, params, priority="bulk"))
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
                best = (score, samples, quality.as_dict() if quality else None)
            if entry["ok"]:
                break
        assert best is not None
        _, samples, quality = best
        if not samples.size:
            raise RuntimeError(f"the {self.engine.name} engine produced no audio for {chunk.text!r}")
        chosen = min(tried, key=lambda t: t["score"])
        report = {"key": chunk.key, "text": chunk.text, "voice": plan.voice, "engine": self.engine.name,
                  "model": plan.model, "params": chunk.params, "sample_rate": self.engine.sample_rate,
                  "duration_s": round(len(samples) / self.engine.sample_rate, 3), "attempts": tried,
                  "chosen": chosen["attempt"], "ok": chosen["ok"], "problems": chosen["problems"],
                  "quality": quality, "worker": self.worker, "created_at": time.time()}
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
            self._transcriber = make_transcriber(self.settings.book_asr, whisper)
            self._transcriber_made = True
        return self._transcriber

    # -- assembly ------------------------------------------------------------------------------------------------
    def _chapter(self, job_id: str, plan: Plan, index: int) -> None:
        chapter = plan.chapters[index]
        item = f"a:{index}"
        missing = [i for i in chapter.chunk_range if cached_chunk(self.settings, plan.chunks[i].key) is None]
        if missing:
            # A chunk was regenerated or its file vanished after it was counted: make it, then assemble again.
            for i in missing:
                self.books.undo_chunk(job_id, i)
                self.books.push_front(job_id, f"c:{i}")
            self.books.unqueue(job_id, item)
            self.books.release(job_id, item)
            self.send_tokens(job_id, len(missing))
            return
        started = time.perf_counter()
        samples = [audio.read_wav(chunk_paths(self.settings, plan.chunks[i].key)[0])[0] for i in chapter.chunk_range]
        breaks = [plan.chunks[i].brk for i in chapter.chunk_range]
        pauses = Pauses(sentence_s=plan.assembly["sentence_s"], paragraph_s=plan.assembly["paragraph_s"],
                        chapter_s=plan.assembly["chapter_s"])
        files = assemble_chapter(samples, breaks, plan.sample_rate, book_dir(self.settings, job_id) / "chapters",
                                 index=index + 1, count=len(plan.chapters), title=chapter.title,
                                 book_title=plan.title, author=plan.author, fmt=plan.format, pauses=pauses,
                                 target_lufs=plan.assembly["target_lufs"])
        seconds = time.perf_counter() - started
        self.books.set_chapter(job_id, index, {"file": files.audio.name, "part": files.part.name,
                                               "duration_s": round(files.duration_s, 3),
                                               "lufs": round(files.lufs, 2) if math.isfinite(files.lufs) else None,
                                               "worker": self.worker})
        self.books.release(job_id, item)
        self.store.add(job_id, "assembly_s", seconds)
        done = len(self.books.chapters(job_id))
        self.store.update(job_id, chapters_done=done)
        self.store.emit(job_id, "chapter", index=index, title=chapter.title, duration_s=round(files.duration_s, 3),
                        file=files.audio.name, chapters_done=done, chapters_total=len(plan.chapters))
        if done == len(plan.chapters) and self.books.queue_once(job_id, "b"):
            self.send_tokens(job_id, 1)

    def _book(self, job_id: str, plan: Plan) -> None:
        folder = book_dir(self.settings, job_id)
        chapters = self.books.chapters(job_id)
        missing = [c.index for c in plan.chapters
                   if c.index not in chapters or not (folder / "chapters" / chapters[c.index]["part"]).is_file()]
        if missing:
            for i in missing:
                self.books.forget_chapter(job_id, i)
                self.books.unqueue(job_id, f"a:{i}")
                if self.books.all_done(job_id, plan.chapters[i].chunk_range) and self.books.queue_once(job_id, f"a:{i}"):
                    self.send_tokens(job_id, 1)
            self.books.unqueue(job_id, "b")
            self.books.release(job_id, "b")
            return
        started = time.perf_counter()
        cover = next(iter(sorted(folder.glob("cover.*"))), None)
        parts = [folder / "chapters" / chapters[c.index]["part"] for c in plan.chapters]
        marks = assemble_m4b(parts, [c.title for c in plan.chapters], folder / "book.m4b", title=plan.title,
                             author=plan.author, language=plan.language,
                             cover=cover.read_bytes() if cover else None, cover_type=plan.cover_type)
        audio.write_atomic(folder / "chapters.json", json.dumps(
            [{"title": m.title, "start_s": round(m.start_s, 3), "end_s": round(m.end_s, 3)} for m in marks]).encode())
        seconds = time.perf_counter() - started
        assembly_s = self.store.add(job_id, "assembly_s", seconds)
        self.books.release(job_id, "b")
        self.books.deactivate(job_id)
        job = self.store.get(job_id) or {}
        total = marks[-1].end_s if marks else 0.0
        self.store.finish(job_id, "succeeded", output="book.m4b", duration_s=round(total, 3), chunks_done=len(plan.chunks),
                          assembly_s=round(assembly_s, 3),
                          total_s=round(time.time() - job.get("created_at", time.time()), 3))

    # -- the watchdog --------------------------------------------------------------------------------------------
    def watch(self, bulk_queue_length: Callable[[], int]) -> list[str]:
        """Keep every active book moving: hand back items held by dead workers, replace lost messages.
        Runs in every worker's heartbeat thread; one worker at a time does the work."""
        if not self.store.r.set(BOOKS_WATCHDOG, self.instance, nx=True,
                                ex=max(1, int(self.settings.heartbeat_interval_s))):
            return []
        moved = []
        for job_id in self.books.active():
            job = self.store.get(job_id)
            if job is None or job["status"] in TERMINAL:
                self.books.deactivate(job_id)
                continue
            back = self.books.requeue_dead(job_id, self.store.worker_alive)
            for item in back:
                failures = self.books.fail(job_id, item)
                if failures >= self.settings.book_chunk_attempts:
                    plan = _plan_or_none(self.settings, job_id)
                    self._stop(job_id, f"{describe_item(plan, item)} was running on a worker that stopped, "
                                       f"{failures} times; the book is stopped so that it does not loop")
                    break
                self.store.emit(job_id, "progress", status=job["status"], progress=job.get("progress", 0.0),
                                message=f"a worker stopped during {item}; it is done again")
            else:
                if back and job["status"] == "running":
                    self.send_tokens(job_id, len(back))
                moved.extend(back)
                if job["status"] == "running" and self._stalled(job_id, job, bulk_queue_length):
                    count = self.books.pending_count(job_id)
                    log.warning("book %s has %d items and no messages: sending them again", job_id, count)
                    self.send_tokens(job_id, count)
        return moved

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
