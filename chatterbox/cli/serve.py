"""The serving commands: ``up``, ``worker``, ``web``, ``flower`` and ``redis``. The only group that imports the app
(the workers, Celery's tasks, gunicorn), each inside the command that runs it."""
from __future__ import annotations

import os
import sys

import click

from .. import settings as settings_mod
from .common import EXIT_USAGE, CliError


def _server_settings() -> settings_mod.Settings:
    """The settings of a serving process (up, worker, web, Flower), which from here on writes files for this user
    only: uploads, voices, outputs, books and secrets hold other people's words and keys. The data directory itself
    is closed to others too, for what an older version left readable in it. A bad setting exits with the code
    systemd and the supervisor do not restart (workers.supervisor.EXIT_CONFIG_ERROR): it would fail again."""
    from workers.supervisor import EXIT_CONFIG_ERROR

    try:
        settings = settings_mod.load()
    except ValueError as exc:
        raise CliError(str(exc), EXIT_CONFIG_ERROR)
    os.umask(0o077)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        settings.data_dir.chmod(0o700)
    except PermissionError:  # a directory someone else owns (a shared volume): its modes are theirs to set
        pass
    return settings


@click.command()
@click.option("--no-flower", is_flag=True, help="do not start Flower")
def up(no_flower: bool) -> None:
    """Start everything: Redis (unless REDIS_URL is set), one worker per GPU (or a CPU worker), web, Flower."""
    from workers.stack import build_stack

    from workers.supervisor import Supervisor

    settings = _server_settings()
    try:
        services, summary = build_stack(settings, flower=not no_flower)
    except RuntimeError as exc:
        raise click.ClickException(str(exc))
    click.echo(summary)
    Supervisor(services).run()


@click.command()
@click.option("--gpu", default=None, help="index of the GPU to run on, as this process sees them (default: the CPU)")
@click.option("--name", default=None, help="worker and queue name (default: gpu<index>, or cpu)")
@click.option("--loglevel", default="INFO")
def worker(gpu: str | None, name: str | None, loglevel: str) -> None:
    """Run one Celery worker that keeps its engine warm and runs several jobs at once on its device (a pool of
    threads: Chatterbox batches them, CHATTERBOX_MAX_BATCH; Piper runs one per core)."""
    from workers.devices import WorkerSpec

    from ..engines import choose_engine

    settings = _server_settings()
    spec = WorkerSpec(name or (f"gpu{gpu}" if gpu is not None else "cpu"), gpu, settings.host_name)
    # Into this process's environment before anything can initialise CUDA (CUDA_VISIBLE_DEVICES), and before tasks
    # loads the settings again: its worker_device and worker_queue are this worker's.
    os.environ.update(spec.env())
    # torch's OpenMP threads wait passively (set before torch loads; a value set by the user stands): a worker runs
    # several requests at once (the batch loop, S3Gen, Piper's jobs), each with its threads on the same cores, and
    # spinning threads take the cores the others need. Measured here (2 cores): two S3Gen flows at once took 28 s
    # each spinning, 17.4 s passive; one alone 8.4 and 8.7 s; a T3 step as fast, for 30 % less CPU.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tasks import app, worker_concurrency

    threads = worker_concurrency(settings, choose_engine(settings)[0])
    app.worker_main(["worker", "--pool", "threads", "--concurrency", str(threads), "--hostname", spec.hostname,
                     "--loglevel", loglevel, "--queues", f"interactive,bulk,{spec.name}", "--task-events"])


@click.command()
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
def web(host: str | None, port: int | None) -> None:
    """Serve the web app with gunicorn (threads, so websockets and long waits do not block others)."""
    settings = _server_settings()
    bind = f"{host or settings.web_host}:{port or settings.web_port}"
    _open_files_up_to_the_hard_limit()
    # Each thread's connection and as many idle keep-alive ones: gunicorn stops accepting at this many.
    connections = 2 * settings.web_threads
    argv = [sys.executable, "-m", "gunicorn", "--bind", bind, "--worker-class", "gthread", "--workers", "1",
            "--threads", str(settings.web_threads), "--worker-connections", str(connections), "--timeout", "120",
            "--graceful-timeout", "5", "--access-logfile", "-", *_no_control_socket(), "web:create_app()"]
    os.execv(sys.executable, argv)


def _open_files_up_to_the_hard_limit() -> None:
    # An open websocket takes two descriptors (its socket, and its reader thread's selector): 500 of them reached
    # 1024 (measured), the usual soft limit, and the next failed with EMFILE. The hard limit is the operator's.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an unlimited hard limit that the kernel caps lower (macOS)
            pass


def _no_control_socket() -> list[str]:
    # gunicorn 24+ opens a control socket at one fixed path per user: two servers on a machine would fight over it,
    # and nothing here uses it.
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


@click.command()
def flower() -> None:
    """Serve Flower behind basic auth."""
    settings = _server_settings()
    user, password = settings_mod.flower_credentials(settings)
    os.environ["FLOWER_BASIC_AUTH"] = f"{user}:{password}"  # not on the command line, where ps would show it
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--address={settings.flower_host}",
            f"--port={settings.flower_port}", "--persistent=False"]
    os.execv(sys.executable, argv)


@click.command("redis")
def redis_command() -> None:
    """Run the embedded Redis in the foreground, for a service manager (`up` runs it itself): 127.0.0.1 only, the
    password of CHATTERBOX_REDIS_PASSWORD or the data directory's generated one, an append-only file."""
    from .. import redis_server

    settings = _server_settings()
    if settings.redis_url:
        raise CliError("REDIS_URL is set: the system uses that Redis, not an embedded one", EXIT_USAGE)
    password = settings_mod.embedded_redis_password(settings)
    settings.redis_dir.mkdir(parents=True, exist_ok=True)
    args = redis_server.server_args(settings.redis_port, settings.redis_dir, password, settings.redis_maxmemory_mb)
    os.execv(args[0], args)

