"""Matmuls over the rows of a decoding step whose results do not depend on the other rows.

Batching is only worth having if each request gets what it gets alone. BLAS does not promise that: measured with
torch 2.14's CPU kernels (2-core AMD EPYC), ``x @ W.T`` gives each row the same bits for 2 to 15 rows of x, other
bits for 1 row and for 16 or more; ``W @ x.T`` keeps its bits for 2 to 56 rows. Within one such class a row's
result depends on nothing but itself. So the rows of a step are computed in chunks that stay inside a class, a
single row is computed beside a row of zeros, and the classes are found by a probe when the model loads (they
depend on the CPU, the library and the shape), never assumed. A third form, a matrix-vector product per row, is
row-exact by construction: the fastest where steps have one row, and the way out where no class holds two.

Which form is faster depends on the machine too: on one 2-core EPYC VM ``x @ W.T`` was the faster for 2 guided rows
(77 ms a T3 step against 131 ms) and ``W @ x.T`` for 32 (163 ms against 249 ms); on another, with the same torch,
``W @ x.T`` was faster at every size (Turbo's GPT-2 weights, 2 rows: 96 ms against 164 ms; 16 rows: 159 against
281). So the plan also times each form, chunked as the batch it is planned for would be, and takes the faster,
keeping ``x @ W.T`` unless another saves 30 % (near-equal times would flip the choice between runs, and with it
the last bits of the output).
On CUDA there is no such promise to keep (cuBLAS picks kernels by shape) and rows go through as one matmul.

A plan costs time (on a 2-core VM, 0.3 to 1 s a weight shape of a model in fp32, 1 to 8 s in bf16, whose every
form keeps each row's bits, so the probe runs to its limit; four shapes a model) and its timing can come out
either way between runs. Kept in a file (``set_plan_cache``), it is made once per machine: a restarted worker
starts at once and decodes with the bits it had before, and every process of a machine (workers, the CLI, tests)
with the same forms. The file's entries are keyed by what decides the bits: the CPU, torch and its build, the
thread count, the shape, dtype and rows.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)
PROBE_LIMIT = 64  # rows the probe tries at most
COST_BYTES = 64 << 20  # weights timed at once, past the CPU's caches (32 MiB of L3 here)
# Copies of a weight timed at most: a model's weights (1024x1024 in bf16 and up, 2 MiB) need at most 32 to pass
# COST_BYTES; a test's tiny weights (64x64, 16 KiB) would take 4,096, about 10 s of Python loops a plan, measured.
COST_COPIES = 64
# Plans made in this process, for every RowMatmul: one model loaded twice (or alone and in a batch through two
# RowMatmuls) decodes with the same forms, so with the same bits.
_PLANS: dict[tuple, tuple[str, int]] = {}
CLEAR_GAIN = 0.7  # the later form is taken only when it takes at most this share of the first one's time
PLAN_VERSION = 1  # bump when the way plans are made changes: older entries are then made again
_plan_cache: Path | None = None


def set_plan_cache(path: str | Path | None) -> None:
    """Keep this process's plans in ``path`` (a JSON file, shared by every process that names it), or only in
    memory (None, the default)."""
    global _plan_cache
    _plan_cache = Path(path).expanduser() if path else None


def _machine() -> str:
    """What, besides the shape, decides a matmul's bits and speed here: CPU, torch and its build, threads."""
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next((line for line in info.splitlines() if line.startswith("model name")), "")
        flags = next((line for line in info.splitlines() if line.startswith(("flags", "Features"))), "")
        cpu += model + flags
    except OSError:
        cpu += platform.processor()
    torch_build = f"{torch.__version__}{torch.__config__.show()}{torch.get_num_threads()}"
    return hashlib.sha256(f"{PLAN_VERSION}{cpu}{torch_build}".encode()).hexdigest()[:16]


@contextmanager
def _locked(path: Path):
    """The plan file, locked against the other processes planning into it (one plans, the rest read its plan)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        try:
            import fcntl
        except ImportError:  # not POSIX: plans are still kept, two processes may time the same shape
            fcntl = None
        if fcntl:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _read_plans(path: Path) -> dict:
    try:
        plans = json.loads(path.read_text())
        return plans if isinstance(plans, dict) else {}
    except (OSError, ValueError):  # none yet, or damaged: planned again and rewritten
        return {}


def _write_plans(path: Path, plans: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(plans, indent=0, sort_keys=True))
    os.replace(tmp, path)


def _linear(weight: Tensor, x: Tensor) -> Tensor:
    return F.linear(x, weight)


def _transposed(weight: Tensor, x: Tensor) -> Tensor:
    return torch.mm(weight, x.t()).t()


def _rowwise(weight: Tensor, x: Tensor) -> Tensor:
    return torch.cat([F.linear(x[i:i + 1], weight) for i in range(x.shape[0])])


# Chunked forms: a chunk of 2 to (its class) rows gives each row the bits it gets alone. ``rowwise`` (a
# matrix-vector product per row) is row-exact by construction, and the fastest where a step has a single row
# (a worker of one unguided Turbo request at a time: 72 ms of matmuls against 96 for two rows here).
FORMS = {"linear": _linear, "transposed": _transposed}
ROWWISE = "rowwise"


def invariant_rows(form: str, out_features: int, in_features: int, dtype: torch.dtype, device, limit: int) -> int:
    """The most rows, up to ``limit``, for which ``form`` gives every row the bits it gets in a chunk of two (beside
    a row of zeros): 2 at least means chunks of 2 to that many rows are all alike."""
    g = torch.Generator(device="cpu").manual_seed(0)
    weight = (torch.randn(out_features, in_features, generator=g) / math.sqrt(in_features)).to(device, dtype)
    x = torch.randn(limit, in_features, generator=g).to(device, dtype)
    fn = FORMS[form]
    alone: list[Tensor] = []  # each row beside a row of zeros, made as far as the probe gets (often 4 rows, not 64)
    best = 1
    for rows in range(2, limit + 1):
        alone += [fn(weight, torch.stack([row, torch.zeros_like(row)]))[0] for row in x[len(alone):rows]]
        if not torch.equal(fn(weight, x[:rows]), torch.stack(alone)):
            break
        best = rows
    return best


class RowMatmul:
    """``matmul(linear, x)``: ``linear(x)`` for x (R, in_features), each row computed as it is alone. ``rows`` is
    how many rows a step may have (two per guided request, one per Turbo request): the form is chosen for it, at
    the first use of each weight shape."""

    def __init__(self, rows: int = 2, exact: bool | None = None):
        self.rows = max(1, rows)
        self.exact = exact

    def plan(self, weight: Tensor) -> tuple[str, int]:
        """(form, most rows per chunk) for matmuls with this weight's shape, dtype and device."""
        key = (tuple(weight.shape), weight.dtype, weight.device, self.rows)
        if key not in _PLANS:
            path = _plan_cache
            if path is None:
                _PLANS[key] = self._make_plan(weight)
            else:
                name = f"{_machine()} {weight.device.type} {str(weight.dtype).removeprefix('torch.')} " \
                       f"{weight.shape[0]}x{weight.shape[1]} rows={self.rows}"
                try:
                    with _locked(path):
                        plans = _read_plans(path)
                        kept = plans.get(name)
                        if isinstance(kept, list) and len(kept) == 2 and kept[0] in (*FORMS, ROWWISE):
                            _PLANS[key] = (kept[0], int(kept[1]))
                        else:
                            _PLANS[key] = self._make_plan(weight)
                            plans[name] = list(_PLANS[key])
                            _write_plans(path, plans)
                except OSError as exc:  # a read-only or full disk: planned (again) and kept in memory only
                    log.warning("cannot keep matmul plans in %s (%s): planning in memory", path, exc)
                    if key not in _PLANS:
                        _PLANS[key] = self._make_plan(weight)
        return _PLANS[key]

    def _make_plan(self, weight: Tensor) -> tuple[str, int]:
        out_features, in_features = weight.shape
        classes = {form: invariant_rows(form, out_features, in_features, weight.dtype, weight.device, PROBE_LIMIT)
                   for form in FORMS}
        classes[ROWWISE] = PROBE_LIMIT  # any number of rows: each is computed alone
        usable = [form for form in FORMS if classes[form] >= 2] + [ROWWISE]
        costs = {f: self._cost(f, classes[f], weight) for f in usable}
        form = usable[0]
        if len(usable) > 1:
            other = min(usable[1:], key=costs.get)
            if costs[other] <= CLEAR_GAIN * costs[form]:
                form = other
        return form, classes[form]

    def _cost(self, form: str, most: int, weight: Tensor) -> float:
        """Seconds ``form`` takes for the planned rows, chunked within its class, over copies of the weight that
        do not fit in the CPU's caches (as a model's weights do not); the median of three runs after a warm-up.
        Timed on the weight alone, in cache, a choice swung between runs."""
        copies = min(COST_COPIES, max(1, math.ceil(COST_BYTES / (weight.numel() * weight.element_size()))))
        weights = [weight.clone() for _ in range(copies)]
        x = torch.randn(self.rows, weight.shape[1], generator=torch.Generator(device="cpu").manual_seed(1)).to(
            weight.device, weight.dtype)
        size = math.ceil(self.rows / math.ceil(self.rows / most))
        fn = _rowwise if form == ROWWISE else FORMS[form]
        times = []
        for _ in range(4):
            start = time.perf_counter()
            for w in weights:
                for i in range(0, self.rows, size):
                    self._chunk(fn, w, x[i:i + size])
            times.append(time.perf_counter() - start)
        return sorted(times[1:])[1]

    def __call__(self, linear: nn.Linear, x: Tensor) -> Tensor:
        exact = self.exact if self.exact is not None else x.device.type == "cpu"
        if not exact:
            return linear(x)
        form, most = self.plan(linear.weight)
        rows = x.shape[0]
        if form == ROWWISE:
            out = _rowwise(linear.weight, x)
            return (out + linear.bias if linear.bias is not None else out).contiguous()
        fn = FORMS[form]
        size = math.ceil(rows / math.ceil(rows / most))  # chunks of even size, within the class
        out = torch.cat([self._chunk(fn, linear.weight, x[i:i + size]) for i in range(0, rows, size)])
        if linear.bias is not None:
            out = out + linear.bias
        return out.contiguous()

    @staticmethod
    def _chunk(fn, weight: Tensor, x: Tensor) -> Tensor:
        if x.shape[0] == 1 and fn is not _rowwise:  # a lone row takes another kernel (a matrix-vector product): give it a row of zeros
            return fn(weight, torch.cat([x, torch.zeros_like(x)]))[:1]
        return fn(weight, x)
