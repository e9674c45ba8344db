"""The Celery tasks: thin adapters from Celery messages to the chatterbox library.

Other programs submit work with ``from tasks import synthesize; synthesize.delay(text="Hello.")``; the result
is the job's record (``status``, ``output``, ``audio_path``, timings), and its progress is on the same per-job
stream and websocket as a job submitted through the REST API.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from celery import Celery, signals
from celery.exceptions import Ignore

import celeryconfig
from chatterbox import audio, jobs, retention, settings as settings_mod, synthesis, voices
from chatterbox.access import SYSTEM
from chatterbox.books.runner import BookRunner
from chatterbox.engines import Engine, EngineUnavailable, InvalidRequest, choose_engine, create_engine
from chatterbox.leases import Lease, LeaseKeeper, LeaseLost
from workers.supervisor import EXIT_CONFIG_ERROR  # the supervisor does not restart a worker that exits with it

log = logging.getLogger("chatterbox.worker")

app = Celery("chatterbox")
app.config_from_object(celeryconfig)



class WorkerState:
    """What one worker process holds: its warm engine, its Redis connection and its heartbeat. Its tasks run in a
    pool of threads (several jobs at once: the engine batches them), so what it counts is kept under a lock."""

    def __init__(self, hostname: str | None = None):
        self.settings = settings_mod.load()
        # Put in this process's environment by `chatterbox worker` before it imported this module (and CUDA).
        self.device = self.settings.worker_device
        self.queue = self.settings.worker_queue  # this device's own queue
        self.hostname = hostname or f"worker@{socket.gethostname()}"
        self.instance = f"{self.hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Its connections carry its name: when the process dies they close, and the others see it at once.
        self.store = jobs.JobStore.connect(self.settings, client_name=jobs.connection_name(self.instance))
        self.keeper = LeaseKeeper(self.store.r, self.settings.heartbeat_ttl_s)
        self.engine_name, self.engine_reason = choose_engine(self.settings)
        self.engine: Engine = create_engine(self.settings, self.device, self.engine_name)
        self.books = BookRunner(self.engine, self.store, self.settings, instance=self.instance,
                                worker=self.hostname, send_tokens=send_book_tokens, keeper=self.keeper)
        self.sweeper = retention.Sweeper(self.store, self.settings, self.instance)
        self.jobs_done = 0
        # What its threads run: a token per task -> (job id, "interactive" or "bulk"); a book has several at once.
        self.running: dict[object, tuple[str, str]] = {}
        self._counts = threading.Lock()
        self.started_at = time.time()
        # Whether Celery takes tasks from its queues yet: the model is loaded before the consumer connects, and a
        # worker that says it is ready while it cannot take a task is one a deployment (or a test) trusts too soon.
        self.consuming = False
        self._tended = time.monotonic()  # the last heartbeat that reached Redis
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def info(self) -> dict:
        with self._counts:
            running = list(self.running.values())
        jobs = list(dict.fromkeys(job_id for job_id, _ in running))
        batch = {"jobs": len(running), "bulk": sum(kind == "bulk" for _, kind in running),
                 "capacity": worker_concurrency(self.settings, self.engine_name), **(self.engine.occupancy() or {})}
        return {"hostname": self.hostname, "pid": os.getpid(), "device": self.device, "engine": self.engine_name,
                "engine_reason": self.engine_reason, "model_loaded": self.engine.loaded,
                "models": self.engine.models_held(),
                "consuming": self.consuming,
                "jobs_done": self.jobs_done, "current_job": jobs[0] if jobs else None, "current_jobs": jobs,
                "busy": bool(running), "batch": batch, "started_at": self.started_at,
                "queues": [celeryconfig.INTERACTIVE_QUEUE, celeryconfig.BULK_QUEUE, self.queue]}

    def begin(self, job_id: str, kind: str = "interactive") -> object | None:
        """Count a task as running; returns its token for ``end``. A book item ("bulk") is refused (None) when the
        threads left for interactive jobs are all that is free: checked and counted in one step."""
        token = object()
        with self._counts:
            if kind == "bulk" and sum(k == "bulk" for _, k in self.running.values()) >= \
                    bulk_limit(self.settings, self.engine_name):
                return None
            self.running[token] = (job_id, kind)
        self.beat()
        return token

    def end(self, token: object) -> None:
        with self._counts:
            self.running.pop(token, None)
            self.jobs_done += 1
        self.beat()

    def beat(self) -> None:
        self.store.heartbeat(self.instance, self.info())

    def start_heartbeat(self) -> None:
        self._tended = time.monotonic()  # its first round takes back what dead workers left (none was tended yet)
        self._thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._thread.start()

    def _heartbeat_loop(self) -> None:
        self.tend()  # at start: work left by a worker that died before this one came up is taken back at once
        while not self._stop.wait(self.settings.heartbeat_interval_s):
            self.tend()

    def tend(self) -> None:
        """One heartbeat: say this worker is alive, renew the leases of what it runs, and take back the work of
        workers that are gone (and every so often, sweep what is past its retention)."""
        try:
            for lease in self.keeper.renew():
                log.warning("job %s %s is held by another worker now (this one was silent past its lease); "
                            "it stops without writing", lease.job_id, lease.item)
            self.beat()
            gap = time.monotonic() - self._tended > 2 * self.settings.heartbeat_interval_s + 1
            self._tended = time.monotonic()
            if gap:
                # Redis was away (paused, restarting) or this worker was: every lease may have run out meanwhile
                # with its holder alive. Take nothing back this round, so that every live holder renews first.
                log.warning("the last heartbeat was long ago: taking no work back this round")
                return
            dead = self.store.dead_instances()
            for job_id in self.store.reap_orphans(_requeue, dead):
                log.warning("job %s was left running by a worker that is gone: requeued or failed", job_id)
            for item in self.books.watch(lambda: self.store.r.llen(celeryconfig.BULK_QUEUE), dead):
                log.warning("book item %s was left by a worker that is gone: queued again", item)
            self.sweeper.maybe_sweep()
        except Exception as exc:  # Redis away: keep beating, Celery reconnects on its own
            log.warning("heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        try:
            self.store.forget_worker(self.instance)
        except Exception:
            pass


_state: WorkerState | None = None


def worker_state() -> WorkerState:
    global _state
    if _state is None:
        _state = WorkerState()
    return _state


def worker_concurrency(settings: settings_mod.Settings, engine_name: str) -> int:
    """Threads a worker runs its tasks in: for Chatterbox, a batch's worth of requests and room for interactive
    jobs beside it; for Piper, one job per core (its inference releases the GIL)."""
    if engine_name == "chatterbox":
        return max(1, settings.max_batch) + INTERACTIVE_RESERVE
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def bulk_limit(settings: settings_mod.Settings, engine_name: str) -> int:
    """Book items one worker runs at once: all its threads but those kept for interactive jobs."""
    return max(1, worker_concurrency(settings, engine_name) - INTERACTIVE_RESERVE)


# Threads kept for interactive jobs: a thread busy with a book item is busy for seconds, and the broker hands a
# waiting synthesis to a worker only when one of its threads is free.
INTERACTIVE_RESERVE = 1


@signals.worker_init.connect
def _load_engine(sender=None, **_kwargs) -> None:
    # The threads pool has no child processes: the model, and CUDA with it, is initialised here, in the process
    # that runs the tasks, before the pool starts.
    global _state
    try:
        _state = WorkerState(hostname=getattr(sender, "hostname", None))
        log.info("engine: %s", _state.engine_reason)
        started = time.perf_counter()
        _state.engine.load()
        log.info("%s engine loaded on %s in %.1f s", _state.engine_name, _state.device, time.perf_counter() - started)
        _state.beat()
        _state.start_heartbeat()
    except EngineUnavailable as exc:
        log.error("cannot start: %s", exc)
        logging.shutdown()
        os._exit(EXIT_CONFIG_ERROR)


@functools.cache
def _warm_up_assembly() -> None:
    """What chapter assembly imports (scipy: 1.5 s, 1 s of a core) is imported beside a worker's first book chunk:
    not before the worker consumes (a worker restarted after a kill takes work back 1.5 s sooner), not in the
    workers that never assemble a book, and not in the way of the first chapter either (it comes after its
    chunks)."""
    threading.Thread(target=_import_assembly, name="warm-up", daemon=True).start()


def _import_assembly() -> None:
    import scipy.ndimage, scipy.signal  # noqa: E401,F401


@signals.worker_ready.connect
def _consuming(**_kwargs) -> None:
    if _state is not None:
        _state.consuming = True
        try:
            _state.beat()
        except Exception as exc:  # Redis away: the next heartbeat says it
            log.warning("heartbeat failed: %s", exc)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _stop_heartbeat(**_kwargs) -> None:
    if _state is not None:
        _state.stop()


def _requeue(job: dict) -> None:
    task = clone_voice if job.get("kind") == "clone" else synthesize
    task.apply_async(kwargs={"job_id": job["id"], "attempt": job["attempt"]}, task_id=job["id"])


def result_of(job: dict, settings: settings_mod.Settings) -> dict:
    out = jobs.public_view(job)
    if job.get("output"):
        out["audio_path"] = str((settings.outputs_dir / job["output"]).resolve())
    if job.get("words_file"):  # the word timestamps, as GET /jobs/<id>/words gives them
        from chatterbox import align

        path = (settings.outputs_dir / job["words_file"]).resolve()
        out["words_path"] = str(path)
        try:
            out.update(align.read(path))
        except (OSError, ValueError):
            pass  # purged or swept since: the path says where they were
    return out


@app.task(name="tasks.synthesize", bind=True)
def synthesize(self, text: str | None = None, voice: str | None = None, format: str = "wav",
               params: dict | None = None, job_id: str | None = None, attempt: int = 1, model: str | None = None,
               language: str | None = None) -> dict:
    """Synthesize text into an audio file; returns the finished job record.

    Called with ``text`` (and optionally voice, format, params, the Chatterbox ``model`` and the ``language``) by
    other programs, or with the ``job_id`` of a record the web app already wrote.
    """
    state = worker_state()
    store = state.store
    job_id = job_id or self.request.id or jobs.new_job_id()
    verdict, lease = store.claim(job_id, attempt, state.hostname, state.instance)  # the web app's record, mostly
    if verdict == "missing":
        if text is None:
            raise ValueError(f"job {job_id} does not exist and no text was given")
        # Jobs sent through Celery belong to no key: they are spoken by the lexicon of no key ("-" over REST).
        from chatterbox.lexicon import Lexicon

        entries = Lexicon(store.r, "", state.settings.lexicon_max_entries).entries()
        request = synthesis.parse_request({"text": text, "voice": voice, "format": format, "params": params,
                                           "model": model, "language": language},
                                          state.engine, state.settings, SYSTEM, entries)
        store.create(job_id, engine=state.engine_name, source="celery", **request.as_dict())
        verdict, lease = store.claim(job_id, attempt, state.hostname, state.instance)
    if verdict == "cancelled":
        return result_of(store.get(job_id), state.settings)
    if lease is None:
        log.info("skipping job %s (attempt %s): %s", job_id, attempt, verdict)
        raise Ignore()  # leaves the result of the run that counts untouched
    state.keeper.hold(lease)
    token = state.begin(job_id)
    try:
        job = synthesis.run_job(state.engine, store, job_id, state.settings, lease)
    except LeaseLost:
        log.warning("job %s was taken back from this worker (silent past its lease); stopped without writing",
                    job_id)
        raise Ignore()
    except synthesis.JobCancelled:
        _finish_held(store, lease, "cancelled", error="cancelled by request")
        job = store.get(job_id)
    except Exception as exc:
        message = exc.message if isinstance(exc, InvalidRequest) else f"{type(exc).__name__}: {exc}"
        log.exception("job %s failed", job_id)
        # Should this fail too (Redis away), the lease is no longer renewed: the job is taken back once it runs out.
        _finish_held(store, lease, "failed", error=message)
        raise
    finally:
        state.keeper.release(lease)
        state.end(token)
    return result_of(job, state.settings)


def _finish_held(store: jobs.JobStore, lease: Lease, status: str, **fields) -> None:
    """End a job this worker holds; nothing if another holds it now."""
    try:
        store.finish(lease.job_id, status, fence=lease, **fields)
    except LeaseLost:
        log.warning("job %s is held by another worker now; its end is theirs to record", lease.job_id)


PREVIEW_TEXT = "Hello! This is how my new voice sounds."


@app.task(name="tasks.clone_voice", bind=True)
def clone_voice(self, file: str | None = None, name: str | None = None, description: str = "",
                tags: list | None = None, exaggeration: float = 0.5, job_id: str | None = None,
                attempt: int = 1) -> dict:
    """Make a saved voice from a recording (any format ffmpeg reads); returns the finished job with ``voice_id``.

    Called with ``file`` (a path the worker can read) and ``name`` by other programs, or with the ``job_id`` of a
    record the web app wrote after storing the upload.
    """
    state = worker_state()
    store, library = state.store, voices.VoiceLibrary(state.settings.voices_dir)
    job_id = job_id or self.request.id or jobs.new_job_id()
    verdict, lease = store.claim(job_id, attempt, state.hostname, state.instance)
    if verdict == "missing":
        if file is None or name is None:
            raise ValueError(f"job {job_id} does not exist and no file and name were given")
        request = voices.clone_request(name, description, tags, exaggeration, library, owner="")
        store.create(job_id, text=request["name"], voice="", format="wav", engine=state.engine_name,
                     source="celery", kind="clone", params={**request, "upload": str(file), "keep_upload": True})
        verdict, lease = store.claim(job_id, attempt, state.hostname, state.instance)
    if lease is None:
        if verdict == "cancelled":
            return result_of(store.get(job_id), state.settings)
        raise Ignore()
    state.keeper.hold(lease)
    token = state.begin(job_id)
    request = lease.record["params"]
    try:
        if not hasattr(state.engine, "clone"):
            raise voices.VoiceError(f"voice cloning needs the chatterbox engine; this worker runs "
                                    f"{state.engine_name}", "cloning_unavailable", "engine")
        made = library.made_by(job_id)
        if made is not None:  # an earlier attempt made the voice and died before it could say so
            store.finish(job_id, "succeeded", fence=lease, voice_id=made.id, duration_s=made.reference_seconds)
            return result_of(store.get(job_id), state.settings)
        store.emit(job_id, "progress", fence=lease, status="running", progress=0.1, message="checking the recording")
        samples, seconds = voices.prepare_reference(Path(request["upload"]))
        store.emit(job_id, "progress", fence=lease, status="running", progress=0.3, message="computing the voice")
        conds = state.engine.clone(samples, float(request["exaggeration"]))
        store.emit(job_id, "progress", fence=lease, status="running", progress=0.7,
                   message="synthesizing a preview")
        preview = state.engine.preview(conds, PREVIEW_TEXT, state.settings.preview_max_tokens)
        store.check(lease)  # the library is on disk, not in Redis: a holder that lost the job must not write it
        voice = library.create(name=request["name"], engine=state.engine_name, conds=conds,
                               reference_wav=audio.wav_bytes(samples, 24000),
                               sample_wav=audio.wav_bytes(preview, 24000), description=request["description"],
                               tags=request["tags"], reference_seconds=seconds, model="chatterbox-en-0.5b",
                               job_id=job_id, owner=lease.record.get("owner", ""))
        store.finish(job_id, "succeeded", fence=lease, voice_id=voice.id, duration_s=round(seconds, 2))
    except LeaseLost:
        log.warning("clone job %s was taken back from this worker; stopped without writing", job_id)
        raise Ignore()
    except voices.VoiceError as exc:
        _finish_held(store, lease, "failed", error=exc.message)
    except Exception as exc:
        log.exception("clone job %s failed", job_id)
        _finish_held(store, lease, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        state.keeper.release(lease)
        state.end(token)
    return result_of(store.get(job_id), state.settings)


BULK_BACKOFF_S = 0.5


def send_book_tokens(job_id: str, count: int) -> None:
    """Queue ``count`` work messages for a book on the bulk queue (each lets one worker do one item)."""
    for _ in range(count):
        audiobook_work.apply_async(args=[job_id], queue=celeryconfig.BULK_QUEUE)


@app.task(name="tasks.audiobook_work", ignore_result=True)
def audiobook_work(job_id: str) -> None:
    """Do the next item (a chunk, a chapter's or the book's assembly) of a running book. Short by design."""
    state = worker_state()
    token = state.begin(job_id, "bulk")
    if token is None:
        # Every thread but the interactive ones is on a book: hand the message back (a book's messages are
        # interchangeable) after a moment, rather than hold the thread a synthesis request would need.
        time.sleep(BULK_BACKOFF_S)
        send_book_tokens(job_id, 1)
        return
    try:
        _warm_up_assembly()
        state.books.work(job_id)
    finally:
        state.end(token)


@app.task(name="tasks.audiobook", bind=True)
def audiobook(self, text: str | None = None, file: str | None = None, format: str | None = None,
              voice: str | None = None, params: dict | None = None, title: str = "", chapters: list | None = None,
              source_format: str | None = None, job_id: str | None = None, model: str | None = None,
              language: str | None = None, lexicon: list | None = None) -> dict:
    """Submit a book from other programs: ``text`` (plain or Markdown with source_format="md"), a ``file`` path the
    worker can read (.txt, .md, .epub), or reviewed ``chapters`` ([{"title", "text"}]); ``model`` and ``language``
    as a synthesis job's (a book in another language than English names it, or its EPUB does); ``lexicon``: the
    book's own pronunciation entries, as POST /audiobooks takes them. Returns the queued job's record at once;
    follow it like any job (its events, GET /audiobooks/<id>)."""
    from chatterbox.books import control, reader

    state = worker_state()
    original = None
    if chapters is not None:
        book = reader.book_from_chapters(chapters, title=title)
    elif file is not None:
        path = Path(file)
        data = path.read_bytes()
        book = reader.read_book(data, path.name, max_bytes=state.settings.book_max_mb * 1024 * 1024,
                                format=source_format)
        original = (path.name, data)
    elif text is not None:
        book = reader.book_from_text(text, format=source_format or "txt", title=title)
    else:
        raise ValueError("give text, file or chapters")
    if title:
        book.title = title
    job, _ = control.submit_book(state.store, state.engine, state.settings, book, voice=voice, fmt=format,
                                 params=params, source="celery", send_tokens=send_book_tokens, caller=SYSTEM,
                                 job_id=job_id or self.request.id, original=original, model=model,
                                 language=language, lexicon=lexicon)
    return jobs.public_view(job)
