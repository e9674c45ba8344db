"""``chatterbox say`` (through the running server, or --local) and ``chatterbox jobs``."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import settings as settings_mod
from .common import (EXIT_CODES_HELP, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNREACHABLE, CliError,
                     ProgressLine, format_when, load_settings, make_client, parse_params, print_table,
                     progress_enabled, remote_errors, server_options)

if TYPE_CHECKING:
    from web.client import Client

# -- say --------------------------------------------------------------------------------------------------------------

@click.command(epilog=EXIT_CODES_HELP)
@click.argument("text")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="file to write (default: out.<format>)")
@click.option("-f", "--format", "fmt", default=None, help="wav, mp3, ogg or flac (default: from --output, else wav)")
@click.option("-v", "--voice", default=None)
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="an engine parameter")
@click.option("-m", "--model", default=None, help="the Chatterbox model: original, turbo or multilingual")
@click.option("-l", "--language", default=None, help="the text's language (de, fr, ja, ...: the multilingual model)")
@server_options
@click.option("--local", is_flag=True, help="synthesize in this process instead of submitting a job")
@click.option("--progress/--no-progress", default=None, help="show a progress bar (default: when stderr is a terminal)")
@remote_errors
def say(text: str, output: Path | None, fmt: str | None, voice: str | None, params: tuple[str, ...],
        model: str | None, language: str | None, server: str | None, key: str | None, local: bool,
        progress: bool | None) -> None:
    """Speak TEXT (or - for standard input) into an audio file, through the running server or --local."""
    if text == "-":
        text = sys.stdin.read()
    if fmt is None:
        fmt = output.suffix.lstrip(".").lower() if output and output.suffix else "wav"
    output = output or Path(f"out.{fmt}")
    if not output.parent.is_dir():  # before any work is queued, not after
        raise click.BadParameter(f"directory {str(output.parent)!r} does not exist", param_hint="--output")
    parsed = parse_params(params)
    if local:
        from ..audio import write_atomic

        data = _say_local(load_settings(), {"text": text, "voice": voice, "format": fmt, "params": parsed,
                                            "model": model, "language": language})
        write_atomic(output, data)
    else:
        _say_remote(make_client(server, key), text, voice, fmt, parsed, output, progress_enabled(progress),
                    model=model, language=language)
    click.echo(f"wrote {output} ({output.stat().st_size} bytes)")


def _say_local(settings: settings_mod.Settings, body: dict) -> bytes:
    from .. import audio
    from ..engines import EngineUnavailable, InvalidRequest, create_engine
    from ..access import SYSTEM
    from ..synthesis import parse_request, synthesize_text

    engine = create_engine(settings)
    try:
        req = parse_request(body, engine, settings, SYSTEM)  # this process reads the data directory itself
        engine = engine.for_model(req.model or None, req.language)
        engine.load()
    except InvalidRequest as exc:
        raise CliError(f"{exc.field}: {exc.message}", EXIT_NOT_FOUND if exc.status == 404 else EXIT_REFUSED)
    except EngineUnavailable as exc:
        raise CliError(str(exc), EXIT_FAILED)
    samples = synthesize_text(engine, req.text, req.voice, req.params, settings)
    return audio.encode(samples, engine.sample_rate, req.format)


def _say_remote(client: "Client", text: str, voice: str | None, fmt: str, params: dict, output: Path,
                show: bool, model: str | None = None, language: str | None = None) -> None:
    from web.client import ConnectionFailed, JobFailed

    try:
        job_id = client.synthesize(text, voice=voice, format=fmt, params=params, model=model,
                                   language=language)["job_id"]
    except ConnectionFailed as exc:
        raise CliError(f"{exc}; is `chatterbox up` running? (or use --local)", EXIT_UNREACHABLE)
    bar = ProgressLine("speaking", show)
    if show:
        click.echo(f"job {job_id}", err=True)  # to inspect or cancel it from elsewhere

    def on_event(event: dict) -> None:
        if event.get("type") == "progress" or event.get("type") == "done":
            total = event.get("chunks_total") or 0
            chunks = f"{event.get('chunks_done', 0)}/{total} chunks" if total else event.get("status", "")
            bar.update(float(event.get("progress") or 0.0), chunks)

    try:
        job = client.wait(job_id, on_event=on_event)
    except KeyboardInterrupt:
        bar.finish()
        _cancel_quietly(client, job_id)
        raise CliError(f"interrupted: job {job_id} cancelled", EXIT_FAILED)
    finally:
        bar.finish()
    if job.get("status") != "succeeded":
        raise JobFailed(job)
    client.download(job_id, output)


def _cancel_quietly(client: "Client", job_id: str) -> None:
    from web.client import ApiError

    try:
        client.cancel(job_id)
    except ApiError:
        pass  # finished meanwhile, or the server is gone: nothing left to stop


# -- jobs -------------------------------------------------------------------------------------------------------------

@click.group(epilog=EXIT_CODES_HELP)
def jobs() -> None:
    """List, show and cancel jobs on the server."""


@jobs.command("list")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the jobs as JSON")
@server_options
@remote_errors
def jobs_list(limit: int, as_json: bool, server: str | None, key: str | None) -> None:
    """Recent jobs, newest first."""
    items = make_client(server, key).jobs(limit=limit)
    if as_json:
        click.echo(json.dumps([j.as_dict() for j in items], indent=2))
        return
    print_table([[j["id"], j.get("kind") or "synthesis", j.get("status", "?"), format_when(j.get("created_at")),
                  f"{j.get('chunks_done', 0)}/{j.get('chunks_total', 0)}",
                  f"{j['duration_s']:.1f}s" if j.get("duration_s") is not None else "-", j.get("voice") or "-"]
                 for j in items], ["ID", "KIND", "STATUS", "CREATED", "CHUNKS", "AUDIO", "VOICE"])


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="print the job as JSON")
@server_options
@remote_errors
def jobs_show(job_id: str, as_json: bool, server: str | None, key: str | None) -> None:
    """One job's record."""
    job = make_client(server, key).job(job_id)
    if as_json:
        click.echo(json.dumps(job.as_dict(), indent=2))
        return
    for name, value in job.as_dict().items():
        if name.endswith("_at") and isinstance(value, (int, float)):
            value = format_when(value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        click.echo(f"{name}: {value}")


@jobs.command("cancel")
@click.argument("job_id")
@server_options
@remote_errors
def jobs_cancel(job_id: str, server: str | None, key: str | None) -> None:
    """Cancel a job: a queued one at once, a running one after its current chunk."""
    result = make_client(server, key).cancel(job_id)
    click.echo(f"job {job_id}: {result.get('message') or result.get('status')}")

