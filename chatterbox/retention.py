"""Retention: how long finished work is kept, the sweeper that deletes the rest, and what is kept now.

A finished job is kept ``retention_days`` (30) after it ended: its record, events and files (the output, a book's
folder, an upload). Then the sweeper deletes all of them together; its Redis record also carries a TTL a day past
that, so Redis stays bounded even where no sweeper runs. Unfinished work is never swept. The chunk cache (shared
by every book, content-addressed) keeps a chunk while any kept book uses it or it was used within the retention
period. Files that no record claims (a record lost with a Redis that was reset) go once they are as old.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .jobs import BOOKS_ACTIVE, JOB_INDEX, PREFIX, TERMINAL, JobStore, kind_index, uploads_of
from .settings import Settings

log = logging.getLogger(__name__)

SWEEP_LOCK = f"{PREFIX}:sweeper"
USAGE_KEY = f"{PREFIX}:storage"  # the last measure of what is kept, for the operations page
UPLOAD_GRACE_S = 3600  # an upload no unfinished job claims is deleted after this long (it leaked)


@dataclass
class SweepReport:
    jobs: int = 0  # finished jobs deleted (records, events, files)
    files: int = 0  # files and folders deleted, orphans and cached chunks included
    bytes: int = 0
    chunks: int = 0  # cached chunks deleted
    orphans: int = 0  # files no record claimed
    seconds: float = 0.0
    dry_run: bool = False
    deleted: list[str] = field(default_factory=list)  # job ids

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "deleted"}


def job_files(settings: Settings, job: dict) -> list[Path]:
    """The files and folders a job owns on disk."""
    paths = []
    if job.get("kind") == "audiobook":
        paths.append(settings.books_dir / job["id"])
    if job.get("output") and job.get("kind") != "audiobook":
        paths.append(settings.outputs_dir / job["output"])
    if job.get("words_file"):  # a synthesis' word timestamps (chatterbox/align.py)
        paths.append(settings.outputs_dir / job["words_file"])
    if job.get("kind") != "audiobook" and job.get("id"):  # the other formats made of its output on request
        paths += [p for p in sorted(settings.outputs_dir.glob(f"{job['id']}.*")) if p not in paths]
    return paths + uploads_of(job, settings)


def delete_job(store: JobStore, job: dict) -> int:
    """Delete a finished job wholly: its files, then its record, events and work state. Returns bytes freed.
    (The chunk cache is shared by books: what this book used is left to the sweeper.)"""
    freed = sum(_remove(path) for path in job_files(store.settings, job))
    store.purge(job["id"], job.get("owner", ""))
    return freed


class Sweeper:
    """Runs sweep() every sweep_interval_s in one worker at a time (a lock in Redis), from the heartbeat thread."""

    def __init__(self, store: JobStore, settings: Settings, instance: str):
        self.store, self.settings, self.instance = store, settings, instance

    def maybe_sweep(self) -> SweepReport | None:
        if self.settings.retention_s <= 0 or self.settings.sweep_interval_s <= 0:
            return None
        if not self.store.r.set(SWEEP_LOCK, self.instance, nx=True, ex=max(1, int(self.settings.sweep_interval_s))):
            return None
        report = sweep(self.store)
        if report.jobs or report.files:
            log.info("retention: deleted %d jobs, %d chunks and %d orphaned files (%.1f MB) in %.1f s",
                     report.jobs, report.chunks, report.orphans, report.bytes / 1e6, report.seconds)
        return report


def sweep(store: JobStore, now: float | None = None, dry_run: bool = False) -> SweepReport:
    """Delete what is past the retention period: finished jobs with their files, cached chunks no kept book uses,
    files no record claims, uploads no unfinished job needs. With ``dry_run``, only count them."""
    settings = store.settings
    started = time.monotonic()
    report = SweepReport(dry_run=dry_run)
    if settings.retention_s <= 0:
        return report
    now = time.time() if now is None else now
    cutoff = now - settings.retention_s
    store.ensure_indexed()
    # Finished jobs: a job ends after it was created, so only those created before the cutoff can qualify.
    ids = store.r.zrangebyscore(JOB_INDEX, "-inf", cutoff)
    for start in range(0, len(ids), 500):
        for job_id, job in zip(ids[start:start + 500], store.records(ids[start:start + 500])):
            if job is None:
                # Its record expired (no sweep ran for a day past the retention): out of every index, whoever's it
                # was; its files, if any are left, are orphans (below).
                if not dry_run:
                    store.purge(job_id)
            elif job["status"] in TERMINAL and float(job.get("finished_at") or job["created_at"]) < cutoff:
                report.jobs += 1
                report.deleted.append(job_id)
                report.bytes += sum(_size(p) for p in job_files(settings, job)) if dry_run else delete_job(store, job)
    _sweep_orphans(store, cutoff, now, report)
    _sweep_chunks(store, cutoff, report)
    report.seconds = round(time.monotonic() - started, 3)
    if not dry_run:
        store.r.set(USAGE_KEY, json.dumps({**usage(store), "last_sweep": {"at": now, **report.as_dict()}}))
    return report


def _sweep_orphans(store: JobStore, cutoff: float, now: float, report: SweepReport) -> None:
    settings = store.settings

    def record(job_id: str) -> dict | None:
        return store.get(job_id) if job_id else None

    for folder, name_of, older_than in ((settings.outputs_dir, lambda p: p.name.split(".")[0], cutoff),
                                        (settings.books_dir, lambda p: p.name, cutoff),
                                        (settings.uploads_dir, lambda p: p.name.split(".")[0],
                                         now - UPLOAD_GRACE_S)):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            try:
                if path.stat().st_mtime >= older_than:
                    continue
            except FileNotFoundError:
                continue
            job = record(name_of(path))
            leaked_upload = folder == settings.uploads_dir and job is not None and job["status"] in TERMINAL
            if job is None or leaked_upload:
                report.orphans += 1
                report.files += 1
                report.bytes += _size(path) if report.dry_run else _remove(path)


def _sweep_chunks(store: JobStore, cutoff: float, report: SweepReport) -> None:
    """Cached chunks last used before the cutoff, unless a kept book's plan names them."""
    chunks_dir = store.settings.chunks_dir
    if not chunks_dir.is_dir():
        return
    keep = _chunks_in_use(store)
    for shard in chunks_dir.iterdir():
        if not shard.is_dir():
            continue
        for meta in shard.glob("*.json"):
            try:
                if meta.stat().st_mtime >= cutoff or meta.stem in keep:
                    continue
            except FileNotFoundError:
                continue
            wav = meta.with_suffix(".wav")
            report.chunks += 1
            report.files += 1
            # The report goes first: a chunk without it is not whole, so a reader never takes a half-deleted one.
            report.bytes += _size(meta) + _size(wav) if report.dry_run else _remove(meta) + _remove(wav)


def _chunks_in_use(store: JobStore) -> set[str]:
    """The chunk keys of every book still kept (finished ones may be regenerated, which reassembles a chapter)."""
    from .books.plan import book_dir, load_plan

    keys: set[str] = set()
    ids = set(store.r.smembers(BOOKS_ACTIVE)) | set(store.r.zrange(kind_index("audiobook"), 0, -1))
    for job_id in ids:
        if (book_dir(store.settings, job_id) / "plan.json").is_file():
            try:
                keys.update(chunk.key for chunk in load_plan(store.settings, job_id).chunks)
            except (OSError, ValueError):
                continue
    return keys


def touch_chunk(settings: Settings, key: str) -> None:
    """Mark a cached chunk used now (its report's time), so the sweeper keeps what books still reuse."""
    from .books.plan import chunk_paths

    try:
        os.utime(chunk_paths(settings, key)[1])
    except OSError:
        pass


def usage(store: JobStore) -> dict:
    """What is kept: jobs, disk per folder, Redis' memory and AOF, and the retention settings."""
    settings = store.settings
    r = store.r
    info = r.info()
    try:
        policy = r.config_get("maxmemory-policy").get("maxmemory-policy")
    except Exception:  # CONFIG may be refused on a managed Redis
        policy = None
    disk = {name: _folder_size(path) for name, path in (
        ("outputs", settings.outputs_dir), ("books", settings.books_dir), ("chunks", settings.chunks_dir),
        ("uploads", settings.uploads_dir), ("voices", settings.voices_dir))}
    return {"retention_days": settings.retention_days, "jobs": int(r.zcard(JOB_INDEX)),
            "books_unfinished": int(r.scard(BOOKS_ACTIVE)), "disk": disk,
            "disk_total": {"bytes": sum(d["bytes"] for d in disk.values()),
                           "files": sum(d["files"] for d in disk.values())},
            "redis": {"used_memory": info.get("used_memory"), "maxmemory": info.get("maxmemory"),
                      "maxmemory_policy": policy, "aof_enabled": bool(info.get("aof_enabled")),
                      "aof_size": info.get("aof_current_size"), "keys": r.dbsize()},
            "measured_at": time.time()}


def last_usage(store: JobStore, max_age_s: float = 15.0) -> dict:
    """usage(), as the last sweep (or the last caller within max_age_s) measured it: walking a large cache takes a
    while, and the operations page asks every minute."""
    cached = store.r.get(USAGE_KEY)
    report = json.loads(cached) if cached else {}
    if time.time() - float(report.get("measured_at", 0)) > max_age_s:
        report = {**usage(store), **({"last_sweep": report["last_sweep"]} if "last_sweep" in report else {})}
        store.r.set(USAGE_KEY, json.dumps(report))
    return report


def _folder_size(path: Path) -> dict:
    total = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                pass
    return {"bytes": total, "files": files}


def _size(path: Path) -> int:
    if path.is_dir():
        return _folder_size(path)["bytes"]
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _remove(path: Path) -> int:
    """Delete a file or folder; returns the bytes it held."""
    size = _size(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return size
