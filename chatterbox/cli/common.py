"""What the command groups share: the exit codes, the settings, the web app's client and the turning of its
exceptions into exit codes, and the progress bar and formatting helpers."""
from __future__ import annotations

import functools
import json
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from .. import settings as settings_mod

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


def load_settings() -> settings_mod.Settings:
    try:
        return settings_mod.load()
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE)


def server_options(f: F) -> F:
    """--server and --key on every command that talks to the web app; without them, the settings' server and
    api_key (CHATTERBOX_SERVER, CHATTERBOX_API_KEY)."""
    f = click.option("--key", default=None, metavar="KEY", help="API key [env: CHATTERBOX_API_KEY]")(f)
    f = click.option("--server", default=None, metavar="URL",
                     help="the web app [env: CHATTERBOX_SERVER; default: the local one from the settings]")(f)
    return f


def make_client(server: str | None, key: str | None) -> "Client":
    from web.client import Client

    settings = load_settings()
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


def progress_enabled(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def parse_params(params: tuple[str, ...]) -> dict[str, Any]:
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


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def format_when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
