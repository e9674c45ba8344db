"""Which devices get a worker, found without initialising CUDA in this process."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass

from chatterbox.settings import Settings


@dataclass(frozen=True)
class WorkerSpec:
    name: str  # gpu0, gpu1, ... or cpu; also the worker's own queue
    gpu: str | None  # the physical GPU index, None for the CPU worker
    host: str = ""  # the machine's name in the worker's (CHATTERBOX_HOST_NAME); empty: its host name

    @property
    def hostname(self) -> str:
        # The machine is in every worker's name: workers of several machines share one Redis, and Flower, /health
        # and each job's `worker` must say which machine did what.
        return f"{self.name}@{self.host or socket.gethostname()}"

    @property
    def device(self) -> str:
        # Each GPU worker sees only its own GPU (CUDA_VISIBLE_DEVICES), which it calls cuda:0.
        return "cuda:0" if self.gpu is not None else "cpu"

    def env(self) -> dict[str, str]:
        # The worker's own settings (worker_device, worker_queue), read by tasks once they are in its environment.
        env = {"CHATTERBOX_WORKER_DEVICE": self.device, "CHATTERBOX_WORKER_QUEUE": self.name}
        # An empty CUDA_VISIBLE_DEVICES hides every GPU from the CPU worker, so nothing lands on one by accident.
        env["CUDA_VISIBLE_DEVICES"] = self.gpu if self.gpu is not None else ""
        return env


def visible_gpus(settings: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """GPU indices to run workers on: CHATTERBOX_DEVICES, else CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    env = os.environ if environ is None else environ
    if settings.devices == "cpu":
        return []
    if settings.devices != "auto":
        return [d.strip() for d in settings.devices.split(",") if d.strip()]
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def worker_specs(settings: Settings, environ: dict[str, str] | None = None) -> list[WorkerSpec]:
    gpus = visible_gpus(settings, environ)
    if not gpus:
        # Each its own queue (cpu, cpu1, cpu2, ...) and Celery node name.
        return [WorkerSpec("cpu" if i == 0 else f"cpu{i}", None, settings.host_name)
                for i in range(max(1, settings.cpu_workers))]
    return [WorkerSpec(f"gpu{index}", index, settings.host_name) for index in gpus]
