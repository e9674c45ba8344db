"""A small process supervisor: starts services, restarts one that crashes (with backoff), stops all cleanly.

Each child runs in its own session, so a Ctrl-C reaches only the supervisor, which then stops the children
in reverse order of start; each child also gets SIGTERM if the supervisor itself dies, so none is orphaned.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("chatterbox.supervisor")

EXIT_CONFIG_ERROR = 3  # a child that exits with this is misconfigured: restarting it would not help
STARTED_S = 10.0  # a child up this long got past its start: its death is not a crash loop
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[subprocess.Popen], None] | None = None  # blocks until the service answers
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    given_up: bool = False


class Supervisor:
    def __init__(self, services: list[Service], stop_timeout: float = 15.0, started_s: float = STARTED_S):
        self.services = services
        self.stop_timeout = stop_timeout
        self.started_s = started_s
        self._stopping = threading.Event()

    def start(self, service: Service) -> None:
        env = {**os.environ, **service.env}
        service.proc = subprocess.Popen(service.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=_die_with_parent)
        service.started_at = time.monotonic()
        service.restart_at = None
        threading.Thread(target=self._relay, args=(service, service.proc), daemon=True).start()
        log.info("started %s (pid %d)", service.name, service.proc.pid)
        if service.ready is not None:
            service.ready(service.proc)

    @staticmethod
    def _relay(service: Service, proc: subprocess.Popen) -> None:
        # Prefix every line with the service's name so that one terminal can follow them all.
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.write(f"[{service.name}] {line.decode(errors='replace')}")
            sys.stdout.flush()

    def run(self) -> None:
        """Start everything, then watch until stop() is called (or SIGINT/SIGTERM in the main thread)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, lambda *_: self.stop())
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
        try:
            for service in self.services:
                if self._stopping.is_set():
                    break
                self.start(service)
            while not self._stopping.wait(0.5):
                self._check()
        finally:
            self.shutdown()

    def _check(self) -> None:
        now = time.monotonic()
        for service in self.services:
            proc = service.proc
            if service.given_up or proc is None:
                continue
            if service.restart_at is not None:
                if now >= service.restart_at:
                    try:
                        self.start(service)
                    except Exception as exc:
                        log.error("%s did not come back: %s", service.name, exc)
                        self._schedule_restart(service, now)
                continue
            code = proc.poll()
            if code is None:
                if now - service.started_at > 60:
                    service.failures = 0  # it has been up a while: the next crash starts the backoff afresh
                continue
            if code == EXIT_CONFIG_ERROR:
                log.error("%s exited with a configuration error (code %d); not restarting it", service.name, code)
                service.given_up = True
                continue
            log.error("%s exited with code %s; restarting it", service.name, code)
            if now - service.started_at > self.started_s:
                service.failures = 0  # it ran: killed (OOM, a signal), not failing to start: back at once
            self._schedule_restart(service, now)

    def _schedule_restart(self, service: Service, now: float) -> None:
        # The first restart is immediate: every second a worker is down is a second its work waits. Only a service
        # that keeps dying as it starts backs off (0.5 s, 1 s, ... 30 s).
        service.failures += 1
        delay = 0.0 if service.failures == 1 else min(30.0, 0.5 * 2 ** (service.failures - 2))
        service.restart_at = now + delay
        log.info("restarting %s in %.1f s", service.name, delay)

    def stop(self) -> None:
        self._stopping.set()

    def shutdown(self) -> None:
        """SIGTERM every child's process group, newest first; SIGKILL what is left after stop_timeout."""
        self._stopping.set()
        for service in reversed(self.services):
            proc = service.proc
            if proc is None or proc.poll() is not None:
                continue
            log.info("stopping %s", service.name)
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", service.name, self.stop_timeout)
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        log.info("all stopped")


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
