"""Administration on this machine, not through the web app: ``chatterbox keys`` (API keys, in Redis),
``chatterbox deploy`` (service files) and ``chatterbox gc`` (retention)."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import click

from .common import (EXIT_CODES_HELP, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, F, CliError,
                     format_when, load_settings, print_table)

# -- API keys (in Redis, not through the web app) ---------------------------------------------------------------------

def redis_errors(f: F) -> F:
    """Redis unreachable: exit 3; a key operation refused: 5 for an unknown key, else 6."""
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis

        from ..keys import ApiKeyError

        try:
            return f(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            from ..redis_client import redact_url

            where = redact_url(load_settings().broker_url)
            raise CliError(f"cannot reach Redis at {where} ({exc}); is `chatterbox up` running, or REDIS_URL set?",
                           EXIT_UNREACHABLE)
        except ApiKeyError as exc:
            raise CliError(exc.message, EXIT_NOT_FOUND if exc.code == "unknown_key" else EXIT_REFUSED)
    return wrapper  # type: ignore[return-value]


def _key_store():  # -> KeyStore; imported lazily with redis
    from .. import redis_client
    from ..keys import KeyStore

    client = redis_client.connect(load_settings().broker_url, decode_responses=True, socket_connect_timeout=5,
                                  socket_timeout=10)
    return KeyStore(client)


@click.group(epilog=EXIT_CODES_HELP)
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
    print_table([[k["id"], k["name"], "yes" if k["admin"] else "no", format_when(k["created_at"]),
                  format_when(k["last_used_at"]),
                  "active" if k["active"] else f"revoked {format_when(k['revoked_at'])}"] for k in items],
                ["ID", "NAME", "ADMIN", "CREATED", "LAST USED", "STATUS"])


@keys.command("revoke")
@click.argument("id_or_name")
@redis_errors
def keys_revoke(id_or_name: str) -> None:
    """Revoke a key by id or name; requests with it are refused at once."""
    key = _key_store().revoke(id_or_name)
    click.echo(f"revoked key {key.id} ({key.name})")


# -- deployment -----------------------------------------------------------------------------------------------------

@click.group()
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

    from ..deploy import SystemdOptions, systemd_units, write_units

    settings = load_settings()
    if gpus is None:
        found = visible_gpus(settings)
    else:
        found = [] if gpus.strip() == "cpu" else [g.strip() for g in gpus.split(",") if g.strip()]
        if not all(g.isdigit() for g in found):
            raise CliError(f"--gpus takes indices such as 0,1 (or 'cpu'), not {gpus!r}", EXIT_USAGE)
    options = SystemdOptions(python=sys.executable, workdir=Path(__file__).resolve().parents[2],
                             env_file=env_file.absolute(), user=user, gpus=found,
                             redis=not settings.redis_url if with_redis is None else with_redis,
                             flower=not no_flower, web=not no_web, worker_memory=worker_memory)
    for path in write_units(output, systemd_units(options)):
        click.echo(f"wrote {path}")
    click.echo(f"\nworkers: {', '.join(f'GPU {g}' for g in found) or 'one on the CPU'}; settings from {env_file}")
    click.echo(f"install: sudo cp {output}/* /etc/systemd/system/ && sudo systemctl daemon-reload && "
               "sudo systemctl enable --now chatterbox-backend.target")


# -- retention ------------------------------------------------------------------------------------------------------

@click.command()
@click.option("--dry-run", is_flag=True, help="say what would be deleted, delete nothing")
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
@click.option("--reindex", is_flag=True, help="first rebuild the job indices from the records (after workers of an "
                                              "older version ran beside newer ones)")
@redis_errors
def gc(dry_run: bool, as_json: bool, reindex: bool) -> None:
    """Delete what is past CHATTERBOX_RETENTION_DAYS now (finished jobs with their files, unused cached chunks,
    files no job claims), and show what is kept: jobs, disk per folder, Redis memory and AOF."""
    from .. import retention
    from ..jobs import JobStore

    store = JobStore.connect(load_settings(), socket_timeout=60)
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
    print_table(rows, ["FOLDER", "FILES", "SIZE"])
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
