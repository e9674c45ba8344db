"""Print the path of a CPU build of torch to install on this machine, or nothing.

PyPI's torch for Linux is the CUDA build: 4 GB more on disk (the nvidia-* wheels and triton) than the CPU build,
and CI's small disk once ran out during the tests. On a machine with no NVIDIA GPU, where pip is offered a CPU
wheel of torch through its find-links (a folder of wheels, as on our CI machines), `make` installs that one first;
setup.cfg's range (torch>=2.6) then takes it as it is. Anywhere else this prints nothing and pip chooses as usual.

CHATTERBOX_TORCH=cuda: never pick a CPU build; CHATTERBOX_TORCH=<path to a wheel>: that wheel.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MINIMUM = (2, 6)  # setup.cfg's torch>=2.6
WHEEL = re.compile(r"torch-(\d+)\.(\d+)\.(\d+)\+cpu-(cp\d+)-(cp\d+)-(\S+)\.whl")


def has_nvidia_gpu() -> bool:
    return Path("/dev/nvidia0").exists() or (shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0)


def find_links() -> list[Path]:
    """pip's find-links folders: its configuration and PIP_FIND_LINKS."""
    values = [os.environ.get("PIP_FIND_LINKS", "")]
    config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    values += [line.split("=", 1)[1].strip("'\"") for line in config.stdout.splitlines()
               if line.split("=", 1)[0].endswith("find-links")]
    return [Path(v.removeprefix("file://")) for value in values for v in value.split() if v]


def cpu_wheel() -> Path | None:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    machine = os.uname().machine
    found = []
    for folder in find_links():
        for path in folder.glob("torch-*+cpu-*.whl") if folder.is_dir() else ():
            match = WHEEL.fullmatch(path.name)
            if match and match[4] == tag and machine in match[6] and "linux" in match[6]:
                version = tuple(int(x) for x in match.groups()[:3])
                if version[:2] >= MINIMUM:
                    found.append((version, path))
    return max(found)[1] if found else None


def main() -> None:
    choice = os.environ.get("CHATTERBOX_TORCH", "")
    if choice == "cuda" or (not choice and has_nvidia_gpu()):
        return
    wheel = Path(choice) if choice else cpu_wheel()
    if wheel is not None:
        print(wheel)


if __name__ == "__main__":
    main()
