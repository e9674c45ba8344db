"""The one entry point: ``chatterbox up | worker | web | flower | say``.

Commands import the web app, Celery and the workers only when they run, so the library itself stays free of
them.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from pathlib import Path

import click

from . import settings as settings_mod


def _settings() -> settings_mod.Settings:
    try:
        return settings_mod.load()
    except ValueError as exc:
        raise click.ClickException(str(exc))


@click.group()
def main() -> None:
    """Chatterbox text to speech: a Redis/Celery job system with a web API."""
    logging.basicConfig(level=os.environ.get("CHATTERBOX_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def flower_credentials(settings: settings_mod.Settings) -> tuple[str, str]:
    """Flower's basic-auth user and password: from settings, else generated once and kept in the data dir."""
    if settings.flower_password:
        return settings.flower_user, settings.flower_password
    path = settings.data_dir / "flower-password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return settings.flower_user, path.read_text().strip()


@main.command()
@click.option("--no-flower", is_flag=True, help="do not start Flower")
def up(no_flower: bool) -> None:
    """Start everything: Redis (unless REDIS_URL is set), one worker per GPU (or a CPU worker), web, Flower."""
    from workers.stack import build_stack

    from workers.supervisor import Supervisor

    settings = _settings()
    try:
        services, summary = build_stack(settings, flower=not no_flower)
    except RuntimeError as exc:
        raise click.ClickException(str(exc))
    click.echo(summary)
    Supervisor(services).run()


@main.command()
@click.option("--gpu", default=None, help="index of the GPU to run on, as this process sees them (default: the CPU)")
@click.option("--name", default=None, help="worker and queue name (default: gpu<index>, or cpu)")
@click.option("--loglevel", default="INFO")
def worker(gpu: str | None, name: str | None, loglevel: str) -> None:
    """Run one Celery worker that keeps its engine warm (solo pool: one job at a time on its device)."""
    from workers.devices import WorkerSpec

    spec = WorkerSpec(name or (f"gpu{gpu}" if gpu is not None else "cpu"), gpu)
    os.environ.update(spec.env())  # before anything can initialise CUDA
    from tasks import app

    app.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--hostname", spec.hostname, "--loglevel", loglevel,
                     "--queues", f"interactive,bulk,{spec.name}", "--task-events"])


@main.command()
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
def web(host: str | None, port: int | None) -> None:
    """Serve the web app with gunicorn (threads, so websockets and long waits do not block others)."""
    settings = _settings()
    bind = f"{host or settings.web_host}:{port or settings.web_port}"
    argv = [sys.executable, "-m", "gunicorn", "--bind", bind, "--worker-class", "gthread", "--workers", "1",
            "--threads", str(settings.web_threads), "--timeout", "120", "--graceful-timeout", "5",
            "--access-logfile", "-", "web:create_app()"]
    os.execv(sys.executable, argv)


@main.command()
def flower() -> None:
    """Serve Flower behind basic auth."""
    settings = _settings()
    user, password = flower_credentials(settings)
    os.environ["FLOWER_BASIC_AUTH"] = f"{user}:{password}"  # not on the command line, where ps would show it
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--address={settings.flower_host}",
            f"--port={settings.flower_port}", "--persistent=False"]
    os.execv(sys.executable, argv)


@main.command()
@click.argument("text")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="file to write (default: out.<format>)")
@click.option("-f", "--format", "fmt", default=None, help="wav, mp3, ogg or flac (default: from --output, else wav)")
@click.option("-v", "--voice", default=None)
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="an engine parameter")
@click.option("--server", default=None, help="web app to submit to (default: the local one)")
@click.option("--local", is_flag=True, help="synthesize in this process instead of submitting a job")
def say(text: str, output: Path | None, fmt: str | None, voice: str | None, params: tuple[str, ...],
        server: str | None, local: bool) -> None:
    """Speak TEXT (or - for standard input) into an audio file."""
    settings = _settings()
    if text == "-":
        text = sys.stdin.read()
    if fmt is None:
        fmt = output.suffix.lstrip(".").lower() if output and output.suffix else "wav"
    output = output or Path(f"out.{fmt}")
    parsed = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        try:
            parsed[name] = json.loads(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a number", param_hint="--param") from None
    body = {"text": text, "voice": voice, "format": fmt, "params": parsed}
    if local:
        data = _say_local(settings, body)
    else:
        data = _say_remote(server or f"http://{settings.web_host}:{settings.web_port}", body)
    from .audio import write_atomic

    write_atomic(output, data)
    click.echo(f"wrote {output} ({len(data)} bytes)")


def _say_local(settings: settings_mod.Settings, body: dict) -> bytes:
    from . import audio
    from .engines import EngineUnavailable, InvalidRequest, create_engine
    from .synthesis import parse_request, synthesize_text

    engine = create_engine(settings)
    try:
        req = parse_request(body, engine, settings)
        engine.load()
    except InvalidRequest as exc:
        raise click.ClickException(f"{exc.field}: {exc.message}")
    except EngineUnavailable as exc:
        raise click.ClickException(str(exc))
    samples = synthesize_text(engine, req.text, req.voice, req.params, settings)
    return audio.encode(samples, engine.sample_rate, req.format)


def _say_remote(server: str, body: dict) -> bytes:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{server.rstrip('/')}/synthesize?wait=1", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            if response.status != 200:
                raise click.ClickException(f"the job did not finish in time: {response.read().decode()}")
            return response.read()
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = str(exc)
        raise click.ClickException(message)
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {server} ({exc.reason}); is `chatterbox up` running? "
                                   "(or use --local)")
