"""tools/cpu_torch.py, which `make` asks which torch wheel to install first: a CPU build from pip's find-links on a
machine without an NVIDIA GPU (the newest that setup.cfg's range takes, for this Python and platform), nothing
with CHATTERBOX_TORCH=cuda, the named wheel with CHATTERBOX_TORCH=<path>. Run as make runs it, in a subprocess, with
PIP_FIND_LINKS pointing at a folder of wheel files (only their names are read)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "cpu_torch.py"
TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
PLATFORM = f"manylinux_2_28_{os.uname().machine}"


def choose(folder: Path, **env: str) -> str:
    # PIP_CONFIG_FILE=/dev/null: pip reads no configuration, so the machine's own find-links do not count
    environ = {k: v for k, v in os.environ.items() if k != "CHATTERBOX_TORCH"}
    environ.update(PIP_FIND_LINKS=str(folder), PIP_CONFIG_FILE=os.devnull, **env)
    result = subprocess.run([sys.executable, str(TOOL)], env=environ, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def wheels(tmp_path) -> Path:
    for name in (f"torch-2.13.0+cpu-{TAG}-{TAG}-{PLATFORM}.whl",  # the one to take
                 f"torch-2.12.1+cpu-{TAG}-{TAG}-{PLATFORM}.whl",  # older
                 f"torch-2.14.1+cpu-cp39-cp39-{PLATFORM}.whl",  # another Python
                 f"torch-2.14.0-{TAG}-{TAG}-{PLATFORM}.whl",  # not a CPU build
                 f"torch-2.5.1+cpu-{TAG}-{TAG}-{PLATFORM}.whl"):  # below setup.cfg's torch>=2.6
        (tmp_path / name).write_bytes(b"")
    return tmp_path


@pytest.mark.skipif(Path("/dev/nvidia0").exists(), reason="a machine with a GPU takes the CUDA build")
def test_the_newest_cpu_wheel_for_this_python_is_chosen(wheels):
    assert choose(wheels) == str(wheels / f"torch-2.13.0+cpu-{TAG}-{TAG}-{PLATFORM}.whl")


def test_none_without_a_cpu_wheel_and_the_overrides(wheels, tmp_path_factory):
    empty = tmp_path_factory.mktemp("no-wheels")
    assert choose(empty) == ""  # pip then chooses as usual
    assert choose(wheels, CHATTERBOX_TORCH="cuda") == ""
    assert choose(empty, CHATTERBOX_TORCH="/wheels/torch-custom.whl") == "/wheels/torch-custom.whl"
