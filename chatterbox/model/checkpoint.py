"""Loading the official checkpoint files into our modules: built on the meta device, filled with
``load_state_dict(assign=True)``, refused with a message naming the tensor when anything does not fit."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

REPO_ID = "ResembleAI/chatterbox"
T3_FILES = ("ve.safetensors", "t3_cfg.safetensors", "tokenizer.json", "conds.pt")
ALL_FILES = (*T3_FILES, "s3gen.safetensors")


class CheckpointError(ValueError):
    pass


def check_state_dict(module: nn.Module, tensors: dict[str, Tensor], source: str, prefix_hint: str = "") -> None:
    """Raise CheckpointError naming the first missing, extra or misshaped tensors."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing tensor{'s' * (len(missing) > 1)} {_names(missing, prefix_hint)}")
    if extra:
        problems.append(f"unexpected tensor{'s' * (len(extra) > 1)} {_names(extra, prefix_hint)}")
    for k in wrong[:3]:
        problems.append(f"tensor {prefix_hint}{k} has shape {tuple(tensors[k].shape)}, expected {tuple(expected[k])}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def _names(keys: list[str], prefix: str) -> str:
    shown = ", ".join(prefix + k for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def layer_count(tensors: dict[str, Tensor], prefix: str, source: str) -> int:
    """How many numbered layers ``prefix<i>.`` the tensors hold (0 for none): the official files hold their models'
    full depth, the small random checkpoints of the tests (chatterbox.model.random_checkpoint) the first few of
    each stack, so that what surrounds the model is tested at a fraction of its cost. Layers must be 0 to n-1."""
    found = {int(name[len(prefix):].split(".", 1)[0]) for name in tensors
             if name.startswith(prefix) and name[len(prefix):].split(".", 1)[0].isdigit()}
    if found != set(range(len(found))):
        raise CheckpointError(f"{source} has layers {sorted(found)} under {prefix}, not 0 to n-1")
    return len(found)


def load_strict(module: nn.Module, tensors: dict[str, Tensor], source: str, prefix_hint: str = "") -> nn.Module:
    check_state_dict(module, tensors, source, prefix_hint)
    module.load_state_dict(tensors, strict=True, assign=True)
    return module


def read_safetensors(path: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None


class _NothingToCompute(TorchFunctionMode):
    """While a module is built on the meta device, skips what the checkpoint's tensors replace anyway: random init
    (nn.init's normal_, as in nn.Embedding) and weight_norm's first norm. Their meta kernels are written in Python,
    and the first such call imports torch._dynamo: 1.3 s of a core in every process that loads a model (measured on
    the 2-core machine, 2026-12-05), for values that are thrown away."""

    _INITS = {torch.nn.init.normal_, torch.nn.init.trunc_normal_, torch.Tensor.normal_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args else kwargs.get("tensor", kwargs.get("v"))  # nn.init passes its tensor by name
        if isinstance(first, Tensor) and first.is_meta:
            if func in self._INITS:
                return first
            if func is torch.norm_except_dim:  # (v, pow, dim): the norm of each slice along dim, kept as a dim
                dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
                return first.new_empty([size if i == dim else 1 for i, size in enumerate(first.shape)])
        return func(*args, **kwargs)


def build(factory: Callable[[], nn.Module], tensors: dict[str, Tensor], source: str, device: str | torch.device,
          dtype: torch.dtype, prefix_hint: str = "") -> nn.Module:
    """Build a module on the meta device (no memory, no random init), then take the tensors as its weights."""
    with torch.device("meta"), _NothingToCompute():
        module = factory()
    load_strict(module, tensors, source, prefix_hint)
    return module.to(device=device, dtype=dtype).eval()


def subset(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def resolve_model_dir(model_dir: str | Path | None = None, files: tuple[str, ...] = ALL_FILES,
                      timeout_s: float = 10.0, *, repo_id: str = REPO_ID) -> Path:
    """A directory holding the checkpoint files: model_dir (or CHATTERBOX_MODEL_DIR) when given, else the
    Hugging Face hub's copy of ``repo_id`` (ResembleAI/chatterbox unless told; ResembleAI/chatterbox-turbo for
    Turbo), downloaded once, with a clear error when offline."""
    model_dir = model_dir or os.environ.get("CHATTERBOX_MODEL_DIR")
    if model_dir:
        path = Path(model_dir).expanduser()
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} lacks the checkpoint file{'s' * (len(missing) > 1)} "
                                    f"{', '.join(missing)}")
        return path
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout_s)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout_s)))
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise RuntimeError("no model directory given and huggingface_hub is not installed: set "
                           "CHATTERBOX_MODEL_DIR to a directory with the checkpoint files") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or not _hub_reachable(timeout_s)
    try:
        # Offline, only files already in the local hub cache can be used: an error at once, not after retries.
        paths = [Path(hf_hub_download(repo_id, name, local_files_only=offline)) for name in files]
    except Exception as exc:
        raise RuntimeError(f"cannot fetch the Chatterbox weights from the Hugging Face hub ({repo_id}): "
                           f"{type(exc).__name__}: {str(exc)[:200]}. On a machine without internet access, "
                           "copy the files into a directory and set CHATTERBOX_MODEL_DIR") from None
    return paths[0].parent


def _hub_reachable(timeout_s: float) -> bool:
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=min(timeout_s, 5.0)):
            return True
    except OSError:
        return False
