"""Answers about the service: health (with and without a key, Redis up or down), the workers, and storage."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field

from .base import Record
from .records_jobs import EngineName, ErrorDetail, ModelName, absent


class WorkerBatch(Record):
    """What it runs at once: `jobs` of its `capacity` threads (`bulk`: book items); for Chatterbox, the
    requests its batch decodes together (`active` of `max_batch`, `interactive` among them, `waiting` to join)."""
    jobs: int = Field(ge=0)
    bulk: int = Field(ge=0)
    capacity: int = Field(ge=1)
    max_batch: Optional[int] = absent(ge=1)
    active: Optional[int] = absent(ge=0)
    interactive: Optional[int] = absent(ge=0)
    waiting: Optional[int] = absent(ge=0)
    rows: Optional[int] = absent(ge=0)
    finishing: Optional[int] = absent(ge=0)
    steps: Optional[int] = absent(ge=0)


class Worker(Record):
    """A live worker, as its heartbeat tells."""
    hostname: str
    pid: int
    device: str
    engine: str
    engine_reason: Optional[str] = absent()
    model_loaded: bool
    jobs_done: int = Field(ge=0)
    models: Optional[list[ModelName]] = absent(description="the Chatterbox models it holds")
    current_job: Optional[str] = Field(None, description="a job it runs; only for an admin key")
    current_jobs: Optional[list[str]] = absent(description="every job it runs; only for an admin key")
    batch: Optional[WorkerBatch] = absent()
    consuming: Optional[bool] = absent(description="it takes tasks from its queues (false while it starts)")
    busy: Optional[bool] = absent()
    state: Literal["busy", "idle", "starting"]
    started_at: Optional[float] = absent()
    seen_at: Optional[float] = absent()
    seen_s_ago: float
    queues: list[str]
    instance: Optional[str] = absent()


# -- health ---------------------------------------------------------------------------------------------------------

class RedisHealth(Record):
    """Redis, as it answers."""
    ok: bool
    version: str
    aof: bool
    used_memory: str


class EngineHealth(Record):
    """The engine this system runs, and why."""
    name: EngineName
    reason: str


class Health(Record):
    """Redis, the engine, the queues and the live workers (with a valid key)."""
    status: Literal["ok", "no_workers"] = Field(description="`no_workers` while no worker sends heartbeats")
    redis: RedisHealth
    engine: EngineHealth
    workers: list[Worker]
    queues: dict[str, Annotated[int, Field(ge=0)]] = Field(description="messages waiting per Celery queue")


class HealthStatus(Record):
    """What anyone may know: whether the system is up (and, when it is not, `redis_unavailable`)."""
    status: Literal["ok", "no_workers", "unavailable"]
    error: Optional[ErrorDetail] = absent()


class RedisDown(Record):
    """Redis, unreachable."""
    ok: bool
    error: str


class HealthDown(Record):
    """Redis is down (with a valid key)."""
    status: Literal["unavailable"]
    redis: RedisDown
    error: ErrorDetail


# -- storage --------------------------------------------------------------------------------------------------------

class FolderUsage(Record):
    """A folder's size."""
    bytes: int = Field(ge=0)
    files: int = Field(ge=0)


class DiskUsage(Record):
    """The data directory's folders."""
    outputs: FolderUsage
    books: FolderUsage
    chunks: FolderUsage
    uploads: FolderUsage
    voices: FolderUsage


class RedisUsage(Record):
    """Redis' memory and AOF."""
    used_memory: Optional[int] = Field(description="bytes")
    maxmemory: Optional[int] = Field(description="bytes; 0: no cap")
    maxmemory_policy: Optional[str] = Field(None, description="noeviction: a full Redis refuses writes (503) rather "
                                                              "than drop a queue or a record")
    aof_enabled: Optional[bool] = absent()
    aof_size: Optional[int] = Field(None, description="bytes")
    keys: int = Field(ge=0)


class RetentionSweep(Record):
    """What the retention sweeper last deleted."""
    at: float = Field(description="Unix time")
    jobs: int = Field(ge=0)
    files: int = Field(ge=0)
    bytes: int = Field(ge=0)
    chunks: Optional[int] = absent(ge=0)
    orphans: Optional[int] = absent(ge=0)
    seconds: Optional[float] = absent(ge=0)
    dry_run: Optional[bool] = absent()


class Storage(Record):
    """What is kept and what it takes (admin keys)."""
    retention_days: float = Field(ge=0, description="finished work is deleted this long after it ended (0: kept "
                                                    "for ever)")
    jobs: int = Field(ge=0, description="job records kept")
    books_unfinished: int = Field(ge=0, description="audiobooks queued, running or paused")
    disk: DiskUsage
    disk_total: FolderUsage
    redis: RedisUsage
    measured_at: float = Field(description="Unix time of this measure (at most 15 s old)")
    last_sweep: Optional[RetentionSweep] = absent()
