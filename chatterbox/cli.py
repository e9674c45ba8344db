"""The one entry point: ``chatterbox up | worker | web | flower | say | book | books | jobs | keys``.

Commands import the web app, Celery, the workers and the HTTP client only when they run, so ``chatterbox --help``
stays fast and the library itself stays free of them.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from . import settings as settings_mod

if TYPE_CHECKING:
    from web.client import Client

# Exit codes scripts can rely on; the one table, also shown in --help.
EXIT_OK = 0
EXIT_FAILED = 1  # the job or book failed or was cancelled (or its output could not be written)
EXIT_USAGE = 2  # click's own code for bad options and arguments
EXIT_UNREACHABLE = 3  # the server or Redis cannot be reached (or answers 5xx)
EXIT_AUTH = 4  # authentication failed (401)
EXIT_NOT_FOUND = 5  # no such job, book, voice or key (404)
EXIT_REFUSED = 6  # the request was refused (other 4xx: bad input, conflict, rate limit)

EXIT_CODES_HELP = f"""\b
Exit codes:
  {EXIT_OK}  success
  {EXIT_FAILED}  the job or book failed or was cancelled (or the output could not be written)
  {EXIT_USAGE}  usage error (bad option or argument)
  {EXIT_UNREACHABLE}  the server or Redis is unreachable (or failing: 5xx)
  {EXIT_AUTH}  authentication failed (401: missing, wrong or revoked API key)
  {EXIT_NOT_FOUND}  not found (404)
  {EXIT_REFUSED}  request refused (other 4xx: bad input, conflict, rate limited)
  The serving commands (up, worker, web, flower, redis) exit {EXIT_UNREACHABLE} on a bad setting: misconfigured,
  which systemd and `up` do not restart.
"""

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """One line on stderr and a chosen exit code: never a traceback for a failure the user can act on."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _settings() -> settings_mod.Settings:
    try:
        return settings_mod.load()
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE)


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


@click.group(epilog=EXIT_CODES_HELP)
def main() -> None:
    """Chatterbox text to speech: a Redis/Celery job system with a web API."""
    try:
        level = settings_mod.load().log_level.upper()
    except ValueError:  # said by the command, which loads the settings again: with its exit code, if it needs them
        level = "INFO"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
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


@main.command()
@click.option("--gpu", default=None, help="index of the GPU to run on, as this process sees them (default: the CPU)")
@click.option("--name", default=None, help="worker and queue name (default: gpu<index>, or cpu)")
@click.option("--loglevel", default="INFO")
def worker(gpu: str | None, name: str | None, loglevel: str) -> None:
    """Run one Celery worker that keeps its engine warm and runs several jobs at once on its device (a pool of
    threads: Chatterbox batches them, CHATTERBOX_MAX_BATCH; Piper runs one per core)."""
    from workers.devices import WorkerSpec

    from .engines import choose_engine

    settings = _server_settings()
    spec = WorkerSpec(name or (f"gpu{gpu}" if gpu is not None else "cpu"), gpu, settings.host_name)
    # Into this process's environment before anything can initialise CUDA (CUDA_VISIBLE_DEVICES), and before tasks
    # loads the settings again: its worker_device and worker_queue are this worker's.
    os.environ.update(spec.env())
    from tasks import app, worker_concurrency

    threads = worker_concurrency(settings, choose_engine(settings)[0])
    app.worker_main(["worker", "--pool", "threads", "--concurrency", str(threads), "--hostname", spec.hostname,
                     "--loglevel", loglevel, "--queues", f"interactive,bulk,{spec.name}", "--task-events"])


@main.command()
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


@main.command()
def flower() -> None:
    """Serve Flower behind basic auth."""
    settings = _server_settings()
    user, password = settings_mod.flower_credentials(settings)
    os.environ["FLOWER_BASIC_AUTH"] = f"{user}:{password}"  # not on the command line, where ps would show it
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--address={settings.flower_host}",
            f"--port={settings.flower_port}", "--persistent=False"]
    os.execv(sys.executable, argv)


@main.command("redis")
def redis_command() -> None:
    """Run the embedded Redis in the foreground, for a service manager (`up` runs it itself): 127.0.0.1 only, the
    password of CHATTERBOX_REDIS_PASSWORD or the data directory's generated one, an append-only file."""
    from . import redis_server

    settings = _server_settings()
    if settings.redis_url:
        raise CliError("REDIS_URL is set: the system uses that Redis, not an embedded one", EXIT_USAGE)
    password = settings_mod.embedded_redis_password(settings)
    settings.redis_dir.mkdir(parents=True, exist_ok=True)
    args = redis_server.server_args(settings.redis_port, settings.redis_dir, password, settings.redis_maxmemory_mb)
    os.execv(args[0], args)


# -- talking to a running server ------------------------------------------------------------------------------------

def server_options(f: F) -> F:
    """--server and --key on every command that talks to the web app; without them, the settings' server and
    api_key (CHATTERBOX_SERVER, CHATTERBOX_API_KEY)."""
    f = click.option("--key", default=None, metavar="KEY", help="API key [env: CHATTERBOX_API_KEY]")(f)
    f = click.option("--server", default=None, metavar="URL",
                     help="the web app [env: CHATTERBOX_SERVER; default: the local one from the settings]")(f)
    return f


def _client(server: str | None, key: str | None) -> "Client":
    from web.client import Client

    settings = _settings()
    server = server or settings.server or f"http://{settings.web_host}:{settings.web_port}"
    try:
        return Client(server, api_key=key or settings.api_key)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE)


def remote_errors(f: F) -> F:
    """Turn the client's exceptions into one line on stderr and the exit code of the table above."""
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from web.client import ApiError, AuthError, ConnectionFailed, JobFailed, NotFound

        try:
            return f(*args, **kwargs)
        except ConnectionFailed as exc:
            raise CliError(f"{exc}; is `chatterbox up` running?", EXIT_UNREACHABLE)
        except AuthError as exc:
            raise CliError(f"{exc} (give a key with --key or CHATTERBOX_API_KEY)", EXIT_AUTH)
        except NotFound as exc:
            raise CliError(str(exc), EXIT_NOT_FOUND)
        except ApiError as exc:
            raise CliError(str(exc), EXIT_UNREACHABLE if exc.status >= 500 else EXIT_REFUSED)
        except JobFailed as exc:
            raise CliError(str(exc), EXIT_FAILED)
        except OSError as exc:  # our own files: an output directory that cannot be written, say
            raise CliError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), EXIT_FAILED)
    return wrapper  # type: ignore[return-value]


class ProgressLine:
    """A progress bar on stderr: rewritten in place on a terminal, a new line per change elsewhere (logs)."""

    WIDTH = 30

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled
        self.tty = sys.stderr.isatty()
        self._last = ""

    def update(self, fraction: float, detail: str = "") -> None:
        if not self.enabled:
            return
        fraction = min(1.0, max(0.0, fraction))
        filled = int(round(fraction * self.WIDTH))
        line = f"{self.label} [{'#' * filled}{'-' * (self.WIDTH - filled)}] {fraction * 100:3.0f}%  {detail}".rstrip()
        if line == self._last:
            return
        if self.tty:
            sys.stderr.write("\r" + line.ljust(len(self._last)))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self._last = line

    def finish(self) -> None:
        if self.enabled and self.tty and self._last:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self._last = ""


def _progress_enabled(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _parse_params(params: tuple[str, ...]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        try:
            parsed[name] = json.loads(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a number", param_hint="--param") from None
    return parsed


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


# -- say --------------------------------------------------------------------------------------------------------------

@main.command(epilog=EXIT_CODES_HELP)
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
    parsed = _parse_params(params)
    if local:
        from .audio import write_atomic

        data = _say_local(_settings(), {"text": text, "voice": voice, "format": fmt, "params": parsed,
                                        "model": model, "language": language})
        write_atomic(output, data)
    else:
        _say_remote(_client(server, key), text, voice, fmt, parsed, output, _progress_enabled(progress),
                    model=model, language=language)
    click.echo(f"wrote {output} ({output.stat().st_size} bytes)")


def _say_local(settings: settings_mod.Settings, body: dict) -> bytes:
    from . import audio
    from .engines import EngineUnavailable, InvalidRequest, create_engine
    from .access import SYSTEM
    from .synthesis import parse_request, synthesize_text

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

@main.group(epilog=EXIT_CODES_HELP)
def jobs() -> None:
    """List, show and cancel jobs on the server."""


@jobs.command("list")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the jobs as JSON")
@server_options
@remote_errors
def jobs_list(limit: int, as_json: bool, server: str | None, key: str | None) -> None:
    """Recent jobs, newest first."""
    items = _client(server, key).jobs(limit=limit)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _table([[j["id"], j.get("kind") or "synthesis", j.get("status", "?"), _when(j.get("created_at")),
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
    job = _client(server, key).job(job_id)
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    for name, value in job.items():
        if name.endswith("_at") and isinstance(value, (int, float)):
            value = _when(value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        click.echo(f"{name}: {value}")


@jobs.command("cancel")
@click.argument("job_id")
@server_options
@remote_errors
def jobs_cancel(job_id: str, server: str | None, key: str | None) -> None:
    """Cancel a job: a queued one at once, a running one after its current chunk."""
    result = _client(server, key).cancel(job_id)
    click.echo(f"job {job_id}: {result.get('message') or result.get('status')}")


# -- audiobooks -------------------------------------------------------------------------------------------------------

@main.command(epilog=EXIT_CODES_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="directory for the M4B and the chapter files (default: the book file's name without suffix)")
@click.option("--title", default=None)
@click.option("--author", default=None)
@click.option("--language", default=None)
@click.option("-v", "--voice", default=None)
@click.option("-f", "--format", "fmt", type=click.Choice(["mp3", "ogg"]), default=None,
              help="chapter files (default: the server's CHATTERBOX_BOOK_FORMAT)")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="an engine parameter")
@click.option("-m", "--model", default=None, help="the Chatterbox model (default: the book's language decides)")
@click.option("--lexicon", "lexicon_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="the book's own pronunciation entries, a JSON file: a list of {term, say, case_sensitive} or "
                   "{\"entries\": [...]} (as the lexicon page exports it); they win over the key's own")
@click.option("--no-wait", is_flag=True, help="print the book's job id and exit once it is queued")
@click.option("--progress/--no-progress", default=None, help="show a progress bar (default: when stderr is a terminal)")
@server_options
@remote_errors
def book(file: Path, output: Path | None, title: str | None, author: str | None, language: str | None,
         voice: str | None, fmt: str | None, params: tuple[str, ...], model: str | None, lexicon_file: Path | None,
         no_wait: bool, progress: bool | None, server: str | None, key: str | None) -> None:
    """Read FILE (.txt, .md or .epub) as an audiobook: submit it, follow it, download the M4B and chapters.

    The paths written are printed on standard output. `chatterbox books ...` manages books afterwards.
    """
    entries = None
    if lexicon_file is not None:
        try:
            entries = json.loads(lexicon_file.read_text(encoding="utf-8-sig"))
        except ValueError as exc:
            raise CliError(f"{lexicon_file}: not JSON ({exc})", EXIT_USAGE) from None
    client = _client(server, key)
    submitted = client.submit_book(file=file, title=title, author=author, language=language, voice=voice,
                                   format=fmt, params=_parse_params(params) or None, model=model, lexicon=entries)
    job_id = submitted["job_id"]
    if no_wait:
        click.echo(job_id)
        return
    click.echo(f"book {job_id}: {submitted.get('title') or file.name}, {submitted.get('chapters')} chapters, "
               f"{submitted.get('chunks')} chunks", err=True)
    _follow_book(client, job_id, output or Path(file.stem), _progress_enabled(progress))


class BookProgress:
    """Feeds a book's events to a progress bar: chunks done of all, chapters ready, and the server's ETA."""

    def __init__(self, bar: ProgressLine, state: dict):
        """``state``: the book as GET /audiobooks/<id> gave it, so that a book followed late starts where it is."""
        self.bar = bar
        self.done, self.total = state.get("chunks_done", 0), state.get("chunks_total", 0)
        chapters = state.get("chapters", [])
        # indices, not a count: the events are replayed from the start, chapters already ready included
        self.ready = {c["index"] for c in chapters if c.get("status") == "assembled"}
        self.chapters_total = len(chapters)
        self.eta: float | None = state.get("eta_s")
        self.status = state.get("status", "queued")

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "progress":
            self.status = event.get("status") or self.status
            if event.get("chunks_total"):
                self.done, self.total, self.eta = event.get("chunks_done", 0), event["chunks_total"], event.get("eta_s")
        elif kind == "chapter":
            self.ready.add(event.get("index"))
        elif kind == "done":
            self.done, self.eta, self.status = self.total, None, "done"
        else:
            return
        fraction = self.done / self.total if self.total else float(event.get("progress") or 0.0)
        detail = f"{self.done}/{self.total} chunks, {len(self.ready)}/{self.chapters_total} chapters ready" \
            if self.total else self.status
        if self.status == "paused":
            detail += ", paused"
        elif self.eta is not None and self.done < self.total:
            detail += f", ETA {_duration(self.eta)}"
        self.bar.update(1.0 if kind == "done" else fraction, detail)


def _follow_book(client: "Client", job_id: str, output: Path, show: bool) -> None:
    """Follow the book with a progress bar until it ends, then download its M4B and chapters into ``output``."""
    from web.client import JobFailed

    bar = ProgressLine("book", show)
    on_event = BookProgress(bar, client.book(job_id))  # also: a job that is not a book is refused (404) here
    try:
        client.wait(job_id, on_event=on_event)
    except KeyboardInterrupt:
        bar.finish()
        raise CliError(f"stopped following; book {job_id} goes on on the server "
                       f"(`chatterbox books download {job_id} -o {output}`)", EXIT_FAILED)
    finally:
        bar.finish()
    state = client.book(job_id)
    if state.get("status") != "succeeded":
        raise JobFailed(state)
    output.mkdir(parents=True, exist_ok=True)
    click.echo(client.download_m4b(job_id, output))
    for chapter in state.get("chapters", []):
        click.echo(client.download_chapter(job_id, chapter["index"], output))


@main.group(epilog=EXIT_CODES_HELP)
def books() -> None:
    """List audiobooks, show one, pause, resume, cancel, or download one (`chatterbox book FILE` submits)."""


@books.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the books as JSON")
@server_options
@remote_errors
def books_list(as_json: bool, server: str | None, key: str | None) -> None:
    """Audiobooks, newest first."""
    items = _client(server, key).books()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _table([[b["id"], b.get("status", "?"), _when(b.get("created_at")), f"{b.get('chunks_done', 0)}/"
             f"{b.get('chunks_total', 0)}", str(b.get("chapters_total", "-")), b.get("title") or "-"]
            for b in items], ["ID", "STATUS", "CREATED", "CHUNKS", "CHAPTERS", "TITLE"])


@books.command("status")
@click.argument("book_id")
@click.option("--json", "as_json", is_flag=True, help="print the book's whole state as JSON")
@server_options
@remote_errors
def books_status(book_id: str, as_json: bool, server: str | None, key: str | None) -> None:
    """A book's progress, per chapter."""
    state = _client(server, key).book(book_id)
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    eta = f", ETA {_duration(state['eta_s'])}" if state.get("eta_s") is not None else ""
    click.echo(f"{state.get('title') or book_id}: {state.get('status')}, {state.get('chunks_done')}/"
               f"{state.get('chunks_total')} chunks, {_duration(state.get('audio_s'))} of audio{eta}")
    if state.get("error"):
        click.echo(f"error: {state['error']}")
    for ch in state.get("chapters", []):
        click.echo(f"  {ch['index']:3d}  {ch['status']:<10}  {ch['chunks_done']}/{ch['chunks_total']}  {ch['title']}")


def _book_action(name: str, method: str, doc: str) -> None:
    @books.command(name, help=doc)
    @click.argument("book_id")
    @server_options
    @remote_errors
    def command(book_id: str, server: str | None, key: str | None) -> None:
        result = getattr(_client(server, key), method)(book_id)
        click.echo(f"book {book_id}: {result.get('status')}")


_book_action("pause", "pause_book", "Pause a book after the chunks in flight.")
_book_action("resume", "resume_book", "Resume a paused, failed or cancelled book (finished work is kept).")
_book_action("cancel", "cancel_book", "Cancel a book.")


@books.command("download")
@click.argument("book_id")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="directory for the M4B and the chapter files")
@click.option("--progress/--no-progress", default=None, help="show a progress bar (default: when stderr is a terminal)")
@server_options
@remote_errors
def books_download(book_id: str, output: Path, progress: bool | None, server: str | None, key: str | None) -> None:
    """Wait for a book (if it is not finished) and download its M4B and chapter files into a directory."""
    _follow_book(_client(server, key), book_id, output, _progress_enabled(progress))


# -- the pronunciation lexicon (through the web app, the key's own) ------------------------------------------------

@main.group(epilog=EXIT_CODES_HELP)
def lexicon() -> None:
    """How words are said in this key's jobs: whole-word respellings ("Nguyen" -> "Win"), or phonemes (IPA, which
    Piper says; other engines say the respelling, else the word as written)."""


@lexicon.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the entries as JSON")
@server_options
@remote_errors
def lexicon_list(as_json: bool, server: str | None, key: str | None) -> None:
    """Every entry, by term."""
    items = _client(server, key).lexicon()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if any(e.get("phonemes") for e in items):
        _table([[e["term"], e["say"], e.get("phonemes", ""), "yes" if e["case_sensitive"] else "no"] for e in items],
               ["TERM", "SAY", "PHONEMES", "CASE-SENSITIVE"])
        return
    _table([[e["term"], e["say"], "yes" if e["case_sensitive"] else "no"] for e in items],
           ["TERM", "SAY", "CASE-SENSITIVE"])


@lexicon.command("set")
@click.argument("term")
@click.argument("say", required=False)
@click.option("--phonemes", default=None, metavar="IPA", help="say TERM by these phonemes (IPA, e.g. ˈaɪpiːeɪ) "
              "where the engine takes phonemes (Piper); SAY, if given, is then what other engines say")
@click.option("--case-sensitive", is_flag=True, help="match TERM's case exactly (default: any case)")
@server_options
@remote_errors
def lexicon_set(term: str, say: str | None, phonemes: str | None, case_sensitive: bool, server: str | None,
                key: str | None) -> None:
    """Say TERM (a whole word, or words) as SAY, or by --phonemes."""
    from urllib.parse import quote

    client = _client(server, key)
    if phonemes is None:
        if say is None:
            raise CliError("say how TERM is said: SAY, or --phonemes IPA", EXIT_USAGE)
        entry = client.set_lexicon_entry(term, say, case_sensitive)
    else:
        body = {"phonemes": phonemes, "case_sensitive": case_sensitive, **({"say": say} if say else {})}
        entry = client.request("PUT", f"/lexicon/{quote(term, safe='')}", json=body).json()
    said = f"/{entry['phonemes']}/" + (f" (else {entry['say']})" if entry["say"] else "") \
        if entry.get("phonemes") else entry["say"]
    click.echo(f"{entry['term']} -> {said}{' (case-sensitive)' if entry['case_sensitive'] else ''}")


@lexicon.command("remove")
@click.argument("term")
@server_options
@remote_errors
def lexicon_remove(term: str, server: str | None, key: str | None) -> None:
    """Forget the entry of TERM (as it was set: case and all)."""
    _client(server, key).remove_lexicon_entry(term)
    click.echo(f"removed {term}")


CSV_HEADER = ["term", "say", "case_sensitive", "phonemes"]  # phonemes: only where an entry has them


@lexicon.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="replace the whole lexicon (default: add to it, replacing the "
                                              "entries of the same terms)")
@server_options
@remote_errors
def lexicon_import(file: Path, replace: bool, server: str | None, key: str | None) -> None:
    """Entries from a CSV file: term,say[,case_sensitive[,phonemes]] a row (a header row of those names is
    optional), stored all at once or not at all. A row with phonemes (IPA) is a phoneme entry; its say may be empty."""
    import csv

    rows = [row for row in csv.reader(file.read_text(encoding="utf-8-sig").splitlines()) if row and any(row)]
    if rows and [c.strip().lower() for c in rows[0][:3]] == CSV_HEADER[:len(rows[0][:3])]:
        rows = rows[1:]
    entries: dict[str, dict] = {}
    for number, row in enumerate(rows, 1):
        if len(row) < 2:
            raise CliError(f"{file}: row {number} has no `say` column (term,say[,case_sensitive])", EXIT_USAGE)
        flag = row[2].strip().lower() if len(row) > 2 else ""
        if flag not in ("", "0", "1", "true", "false", "yes", "no"):
            raise CliError(f"{file}: row {number}: case_sensitive is true or false, not {row[2]!r}", EXIT_USAGE)
        entries[row[0].strip()] = {"term": row[0].strip(), "say": row[1].strip(),
                                   "case_sensitive": flag in ("1", "true", "yes"),
                                   **({"phonemes": row[3].strip()} if len(row) > 3 and row[3].strip() else {})}
    client = _client(server, key)
    if not replace:  # the file's entries win over the lexicon's own of the same term
        kept = {e["term"]: {"term": e["term"], "say": e["say"], "case_sensitive": e["case_sensitive"],
                            **({"phonemes": e["phonemes"]} if e.get("phonemes") else {})}
                for e in client.lexicon()}
        entries = {**kept, **entries}
    stored = client.replace_lexicon(list(entries.values()))
    click.echo(f"{len(stored)} entries in the lexicon")


@lexicon.command("export")
@server_options
@remote_errors
def lexicon_export(server: str | None, key: str | None) -> None:
    """The lexicon as CSV on standard output (what `import` reads)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    items = _client(server, key).lexicon()
    columns = 4 if any(e.get("phonemes") for e in items) else 3
    writer.writerow(CSV_HEADER[:columns])
    for e in items:
        writer.writerow([e["term"], e["say"], "true" if e["case_sensitive"] else "false",
                         e.get("phonemes", "")][:columns])
    click.echo(out.getvalue(), nl=False)


# -- API keys (in Redis, not through the web app) ---------------------------------------------------------------------

def redis_errors(f: F) -> F:
    """Redis unreachable: exit 3; a key operation refused: 5 for an unknown key, else 6."""
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis

        from .keys import ApiKeyError

        try:
            return f(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            from .redis_client import redact_url

            where = redact_url(_settings().broker_url)
            raise CliError(f"cannot reach Redis at {where} ({exc}); is `chatterbox up` running, or REDIS_URL set?",
                           EXIT_UNREACHABLE)
        except ApiKeyError as exc:
            raise CliError(exc.message, EXIT_NOT_FOUND if exc.code == "unknown_key" else EXIT_REFUSED)
    return wrapper  # type: ignore[return-value]


def _key_store():  # -> KeyStore; imported lazily with redis
    from . import redis_client
    from .keys import KeyStore

    client = redis_client.connect(_settings().broker_url, decode_responses=True, socket_connect_timeout=5,
                                  socket_timeout=10)
    return KeyStore(client)


@main.group(epilog=EXIT_CODES_HELP)
def keys() -> None:
    """API keys, kept in Redis as salted hashes (REDIS_URL names the Redis)."""


@keys.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="make it an admin key")
@redis_errors
def keys_create(name: str, admin: bool) -> None:
    """Create a key named NAME and print it (on standard output, alone, for scripts); it is never shown again."""
    key, token = _key_store().create(name, admin=admin)
    click.echo(token)
    click.echo(f"created {'admin ' if key.admin else ''}key {key.id} ({key.name}); it cannot be shown again: "
               "store it now", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the keys as JSON")
@redis_errors
def keys_list(as_json: bool) -> None:
    """Every key: id, name, admin, created, last used, active or revoked (never the key itself)."""
    items = [k.public() for k in _key_store().list()]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _table([[k["id"], k["name"], "yes" if k["admin"] else "no", _when(k["created_at"]), _when(k["last_used_at"]),
             "active" if k["active"] else f"revoked {_when(k['revoked_at'])}"] for k in items],
           ["ID", "NAME", "ADMIN", "CREATED", "LAST USED", "STATUS"])


@keys.command("revoke")
@click.argument("id_or_name")
@redis_errors
def keys_revoke(id_or_name: str) -> None:
    """Revoke a key by id or name; requests with it are refused at once."""
    key = _key_store().revoke(id_or_name)
    click.echo(f"revoked key {key.id} ({key.name})")


# -- deployment -----------------------------------------------------------------------------------------------------

@main.group()
def deploy() -> None:
    """Files to run chatterbox-jobs as services on a server."""


@deploy.command("systemd")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("systemd-units"),
              show_default=True, help="directory to write the units to")
@click.option("--gpus", default=None, help="GPU indices, comma-separated, or 'cpu' (default: the GPUs found here)")
@click.option("--user", default=None, help="the user the services run as (default: root)")
@click.option("--env-file", type=Path, default=Path("/etc/chatterbox/chatterbox.env"), show_default=True,
              help="the environment file with the settings")
@click.option("--redis/--no-redis", "with_redis", default=None,
              help="a unit for the embedded Redis (default: unless REDIS_URL is set)")
@click.option("--no-flower", is_flag=True, help="no Flower unit")
@click.option("--no-web", is_flag=True, help="no web app unit (a machine that only adds workers: deploy/multi-host.md)")
@click.option("--worker-memory", default="32G", show_default=True, help="each worker's MemoryMax")
def deploy_systemd(output: Path, gpus: str | None, user: str | None, env_file: Path, with_redis: bool | None,
                   no_flower: bool, no_web: bool, worker_memory: str) -> None:
    """Write systemd units for this machine: a target, one worker per GPU, web, Flower and Redis."""
    from workers.devices import visible_gpus

    from .deploy import SystemdOptions, systemd_units, write_units

    settings = _settings()
    if gpus is None:
        found = visible_gpus(settings)
    else:
        found = [] if gpus.strip() == "cpu" else [g.strip() for g in gpus.split(",") if g.strip()]
        if not all(g.isdigit() for g in found):
            raise CliError(f"--gpus takes indices such as 0,1 (or 'cpu'), not {gpus!r}", EXIT_USAGE)
    options = SystemdOptions(python=sys.executable, workdir=Path(__file__).resolve().parent.parent,
                             env_file=env_file.absolute(), user=user, gpus=found,
                             redis=not settings.redis_url if with_redis is None else with_redis,
                             flower=not no_flower, web=not no_web, worker_memory=worker_memory)
    for path in write_units(output, systemd_units(options)):
        click.echo(f"wrote {path}")
    click.echo(f"\nworkers: {', '.join(f'GPU {g}' for g in found) or 'one on the CPU'}; settings from {env_file}")
    click.echo(f"install: sudo cp {output}/* /etc/systemd/system/ && sudo systemctl daemon-reload && "
               "sudo systemctl enable --now chatterbox-backend.target")


# -- retention ------------------------------------------------------------------------------------------------------

@main.command()
@click.option("--dry-run", is_flag=True, help="say what would be deleted, delete nothing")
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
@click.option("--reindex", is_flag=True, help="first rebuild the job indices from the records (after workers of an "
                                              "older version ran beside newer ones)")
@redis_errors
def gc(dry_run: bool, as_json: bool, reindex: bool) -> None:
    """Delete what is past CHATTERBOX_RETENTION_DAYS now (finished jobs with their files, unused cached chunks,
    files no job claims), and show what is kept: jobs, disk per folder, Redis memory and AOF."""
    from . import retention
    from .jobs import JobStore

    store = JobStore.connect(_settings(), socket_timeout=60)
    if reindex:
        indexed = store.reindex()
        if not as_json:
            click.echo(f"reindexed {indexed} jobs")
    report = retention.sweep(store, dry_run=dry_run)
    kept = retention.usage(store)
    if as_json:
        click.echo(json.dumps({"swept": report.as_dict(), "kept": kept}, indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    if store.settings.retention_s <= 0:
        click.echo("retention is off (CHATTERBOX_RETENTION_DAYS=0): nothing is deleted")
    else:
        click.echo(f"{verb} {report.jobs} finished jobs older than {store.settings.retention_days:g} days, "
                   f"{report.chunks} cached chunks and {report.orphans} orphaned files: {_bytes(report.bytes)}")
    rows = [[name, str(d["files"]), _bytes(d["bytes"])] for name, d in kept["disk"].items()]
    rows.append(["total", str(kept["disk_total"]["files"]), _bytes(kept["disk_total"]["bytes"])])
    _table(rows, ["FOLDER", "FILES", "SIZE"])
    redis_info = kept["redis"]
    cap = _bytes(redis_info["maxmemory"]) if redis_info["maxmemory"] else "no cap"
    click.echo(f"jobs kept: {kept['jobs']} ({kept['books_unfinished']} books unfinished); Redis: "
               f"{_bytes(redis_info['used_memory'] or 0)} of {cap} ({redis_info['maxmemory_policy'] or '?'}), "
               f"{redis_info['keys']} keys, AOF {_bytes(redis_info['aof_size'] or 0)}")


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
