"""Service files for running chatterbox-jobs on a server: systemd units, one worker per GPU under one target.

``chatterbox deploy systemd`` writes them (``deploy/systemd/README.md`` says how to install them):

- ``chatterbox-backend.target``: the whole system; starting, stopping or restarting it does that to every unit.
- ``chatterbox-worker@.service``: a template, one instance per GPU (``chatterbox-worker@0.service`` runs on GPU 0
  only); ``chatterbox-worker-cpu.service`` instead on a machine without GPUs.
- ``chatterbox-web.service``, ``chatterbox-flower.service``, and ``chatterbox-redis.service`` (the embedded Redis,
  when no REDIS_URL names another).

All read their settings from one environment file (the same ``CHATTERBOX_*`` variables as ``make run``) and log to
the journal (journald rotates it: ``SystemMaxUse=`` in journald.conf). A worker that exits with the configuration
error code (no weights, a bad setting) is not restarted: it would only fail again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from workers.supervisor import EXIT_CONFIG_ERROR

TARGET = "chatterbox-backend.target"


@dataclass(frozen=True)
class SystemdOptions:
    python: str  # the interpreter of the installed virtual environment
    workdir: Path  # the checkout: tasks.py, celeryconfig.py and web/ are imported from there
    env_file: Path = Path("/etc/chatterbox/chatterbox.env")
    user: str | None = None  # None: root (better: a user of its own that owns the data directory)
    gpus: list[str] = field(default_factory=list)  # [] for one CPU worker
    redis: bool = True  # the embedded Redis as a unit of its own
    flower: bool = True
    web: bool = True  # False on a machine that only adds workers to a system served elsewhere (deploy/multi-host.md)
    # Limits: the worker's memory holds its models and batches (a full-size original model in fp32 is ~3 GB of
    # host memory while loading, its batch loop's caches more); the web app holds websockets and uploads.
    worker_memory: str = "32G"
    web_memory: str = "4G"
    flower_memory: str = "1G"
    redis_memory: str = "8G"


def _service(opts: SystemdOptions, description: str, command: str, *, after: list[str], memory: str,
             extra: list[str] = (), identifier: str, wanted: bool = True) -> str:
    unit = [
        "[Unit]",
        f"Description={description}",
        f"PartOf={TARGET}",
        f"After=network-online.target {' '.join(after)}".rstrip(),
        "Wants=network-online.target",
        # At most 10 starts in 5 minutes, then systemd gives up on the unit (and says so in its status).
        "StartLimitIntervalSec=300",
        "StartLimitBurst=10",
        "",
        "[Service]",
        "Type=simple",
        *([f"User={opts.user}", f"Group={opts.user}"] if opts.user else []),
        f"WorkingDirectory={opts.workdir}",
        # '-': a missing file is no error (every setting has a default).
        f"EnvironmentFile=-{opts.env_file}",
        f"ExecStart={opts.python} -m chatterbox {command}",
        "Restart=on-failure",
        "RestartSec=5",
        "UMask=0077",
        "NoNewPrivileges=yes",
        f"MemoryMax={memory}",
        *extra,
        "StandardOutput=journal",
        "StandardError=journal",
        f"SyslogIdentifier={identifier}",
    ]
    if wanted:
        unit += ["", "[Install]", f"WantedBy={TARGET}"]
    return "\n".join(unit) + "\n"


def systemd_units(opts: SystemdOptions) -> dict[str, str]:
    """File name -> contents of every unit for these options."""
    redis_unit = ["chatterbox-redis.service"] if opts.redis else []
    worker_extra = [
        # The worker's configuration error: restarting cannot help (no weights, a setting out of range).
        f"RestartPreventExitStatus={EXIT_CONFIG_ERROR}",
        # Celery's warm shutdown on SIGTERM finishes the pieces in hand; what is cut off is redelivered (late acks).
        "KillSignal=SIGTERM",
        "TimeoutStopSec=90",
        "LimitNOFILE=65536",
    ]
    units: dict[str, str] = {}
    if opts.gpus:
        units["chatterbox-worker@.service"] = _service(
            opts, "chatterbox-jobs worker on GPU %i", "worker --gpu %i", after=redis_unit,
            memory=opts.worker_memory, identifier="chatterbox-worker-gpu%i", wanted=True,
            extra=worker_extra)
        workers = [f"chatterbox-worker@{gpu}.service" for gpu in opts.gpus]
    else:
        units["chatterbox-worker-cpu.service"] = _service(
            opts, "chatterbox-jobs worker on the CPU", "worker", after=redis_unit, memory=opts.worker_memory,
            identifier="chatterbox-worker-cpu", extra=worker_extra)
        workers = ["chatterbox-worker-cpu.service"]
    services = [*redis_unit, *workers]
    if opts.web:
        units["chatterbox-web.service"] = _service(
            opts, "chatterbox-jobs web app and API", "web", after=redis_unit, memory=opts.web_memory,
            identifier="chatterbox-web",
            # Each open websocket takes two descriptors; the app raises its soft limit to this hard one.
            extra=["LimitNOFILE=65536", "TimeoutStopSec=30"])
        services.append("chatterbox-web.service")
    if opts.flower:
        units["chatterbox-flower.service"] = _service(
            opts, "Flower for chatterbox-jobs' queues and workers", "flower", after=redis_unit,
            memory=opts.flower_memory, identifier="chatterbox-flower")
        services.append("chatterbox-flower.service")
    if opts.redis:
        units["chatterbox-redis.service"] = _service(
            opts, "Redis for chatterbox-jobs (embedded, append-only file in the data directory)", "redis", after=[],
            memory=opts.redis_memory, identifier="chatterbox-redis",
            # Redis flushes its AOF on SIGTERM; give it the time a large one takes.
            extra=["KillSignal=SIGTERM", "TimeoutStopSec=60", "LimitNOFILE=65536"])
    units[TARGET] = "\n".join([
        "[Unit]",
        "Description=chatterbox-jobs: Redis, one worker per GPU, the web app and Flower",
        f"Wants={' '.join(services)}",
        f"After={' '.join(services)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]) + "\n"
    return units


def write_units(directory: Path, units: dict[str, str]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in units.items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


# The units in deploy/systemd/ of the repository: these options, for a checkout in /opt/chatterbox-jobs run by a user
# of its own on a server with two GPUs (tests/test_deploy.py keeps the files equal to what this module writes).
EXAMPLE = SystemdOptions(python="/opt/chatterbox-jobs/.venv/bin/python", workdir=Path("/opt/chatterbox-jobs"),
                         user="chatterbox", gpus=["0", "1"])

ENV_EXAMPLE = """\
# chatterbox-jobs' settings for its systemd units (EnvironmentFile=): the same variables as README.md's settings
# table. Readable by root and the service user only: it may hold passwords.
CHATTERBOX_DATA_DIR=/var/lib/chatterbox
TTS_ENGINE=auto
# CHATTERBOX_MODEL_DIR=/var/lib/chatterbox/models/chatterbox
# CHATTERBOX_MODELS=original,turbo,multilingual
# CHATTERBOX_MAX_BATCH=8
# Another Redis instead of the embedded one (then: chatterbox deploy systemd --no-redis):
# REDIS_URL=redis://:password@redis.internal:6379/0
# or the master that Redis Sentinels point to (the quotes keep a shell from cutting at ';'; deploy/multi-host.md):
# REDIS_URL="sentinel://:password@sentinel1:26379;sentinel2:26379;sentinel3:26379/0?master_name=mymaster"
# More than one machine (deploy/multi-host.md): the data directory on shared storage, mounted at the same path on
# each, and this machine's name in its workers' names (default: its host name).
# CHATTERBOX_HOST_NAME=gpu-box-2
# Behind nginx (deploy/nginx/): the number of proxies in front, whose forwarded headers are believed.
CHATTERBOX_PROXY_HOPS=1
CHATTERBOX_WEB_HOST=127.0.0.1
CHATTERBOX_WEB_PORT=5000
"""
