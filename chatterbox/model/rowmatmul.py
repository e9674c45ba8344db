"""Matmuls over the rows of a decoding step whose results do not depend on the other rows.

Batching is only worth having if each request gets what it gets alone. BLAS does not promise that: its kernels
and their order of summation change with the number of rows. Measured with torch 2.14's CPU kernels on one 2-core
AMD EPYC VM, ``x @ W.T`` gave each row the same bits for 2 to 15 rows of x, other bits for 1 row and for 16 or
more, and ``W @ x.T`` kept its bits for 2 to 56 rows; on another VM (same torch, another host) both kept them only
for 2 to 3 rows, then for 12 to 64, and ``x @ W.T`` for 4 to 64 in MKL's strict reproducibility mode (which
chatterbox/__init__.py asks for). Within one such class a row's result depends on nothing but itself. So the rows
of a step are computed in chunks that stay inside a class, a chunk with fewer rows than the class's first size is
padded with rows of zeros (a single row beside one row of zeros, or a guided request's two rows beside two), and
the classes are found by a probe when the model loads (they depend on the CPU, the library, its mode and the
shape), never assumed. A third form, a matrix-vector product per row, is row-exact by construction: the fastest
where steps have one row, and the way out where no class holds two.

Which form and class are faster depends on the machine too: on one 2-core EPYC VM ``x @ W.T`` was the faster for
2 guided rows (77 ms a T3 step against 131 ms) and ``W @ x.T`` for 32 (163 ms against 249 ms); on another, with
the same torch, ``W @ x.T`` was faster at every size (Turbo's GPT-2 weights, 2 rows: 96 ms against 164 ms; 16
rows: 159 against 281). Where classes are short, a batch in chunks of 3 rows reads every weight once a chunk: 16
guided requests took 11 passes over T3's 2 GB a step, and batching gained nothing (x1.03 at 8 requests), while
one chunk of 32 rows in the class that starts at 12 costs 2.2 ms a 4096x1024 weight against 0.8 ms for 2 rows.
So the plan times each (form, class), chunked as the batch it is planned for would be, and takes the fastest,
keeping the first unless another saves 30 % (near-equal times would flip the choice between runs, and with it
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

import ctypes
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
# The largest first size of a class the probe looks for: a chunk is padded up to it with rows of zeros, so a lone
# guided request costs a matmul of this many rows.
PAD_LIMIT = 16
COST_BYTES = 64 << 20  # weights timed at once, past the CPU's caches (32 MiB of L3 here)
# Copies of a weight timed at most: a model's weights (1024x1024 in bf16 and up, 2 MiB) need at most 32 to pass
# COST_BYTES; a test's tiny weights (64x64, 16 KiB) would take 4,096, about 10 s of Python loops a plan, measured.
COST_COPIES = 64
# Plans made in this process, for every RowMatmul: one model loaded twice (or alone and in a batch through two
# RowMatmuls) decodes with the same forms, so with the same bits.
_PLANS: dict[tuple, "Plan"] = {}
CLEAR_GAIN = 0.7  # the later form is taken only when it takes at most this share of the first one's time
PLAN_VERSION = 2  # bump when the way plans are made changes: older entries are then made again
_plan_cache: Path | None = None


def set_plan_cache(path: str | Path | None) -> None:
    """Keep this process's plans in ``path`` (a JSON file, shared by every process that names it), or only in
    memory (None, the default)."""
    global _plan_cache
    _plan_cache = Path(path).expanduser() if path else None


def _mkl_mode() -> str:
    """Intel MKL's reproducibility mode in effect in this process (chatterbox/__init__.py asks for the strict one,
    which only counts if it came before the process's first matmul); the setting asked for where MKL cannot say."""
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))  # MKL is linked into it
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):  # another platform or build: no MKL to ask
        return os.environ.get("MKL_CBWR", "")
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    return str(get(-1))  # MKL_CBWR_ALL


def _machine() -> str:
    """What, besides the shape, decides a matmul's bits and speed here: CPU, torch and its build, threads, MKL's
    mode."""
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next((line for line in info.splitlines() if line.startswith("model name")), "")
        flags = next((line for line in info.splitlines() if line.startswith(("flags", "Features"))), "")
        cpu += model + flags
    except OSError:
        cpu += platform.processor()
    torch_build = f"{torch.__version__}{torch.__config__.show()}{torch.get_num_threads()}{_mkl_mode()}"
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


# Chunked forms: a chunk whose size is within one of the form's classes gives each row the bits it gets alone.
# ``rowwise`` (a matrix-vector product per row) is row-exact by construction, and the fastest where a step has a
# single row (a worker of one unguided Turbo request at a time: 72 ms of matmuls against 96 for two rows here).
FORMS = {"linear": _linear, "transposed": _transposed}
ROWWISE = "rowwise"


Plan = tuple[str, int, int]  # (form, the fewest rows a chunk has (padded with zeros up to it), the most)


def row_class(form: str, weight: Tensor, x: Tensor, pad: int) -> int:
    """The most rows, up to ``len(x)``, for which ``form`` gives every row of a chunk of ``pad`` to that many rows
    the bits it gets beside ``pad - 1`` rows of zeros; ``pad - 1`` if a chunk of ``pad`` rows already differs."""
    fn = FORMS[form]
    zeros = torch.zeros(pad - 1, x.shape[1], dtype=x.dtype, device=x.device)
    alone: list[Tensor] = []  # each row beside zeros, made as far as the probe gets (often a few rows, not 64)
    best = pad - 1
    for rows in range(pad, x.shape[0] + 1):
        alone += [fn(weight, torch.cat([row[None], zeros]))[0] for row in x[len(alone):rows]]
        if not torch.equal(fn(weight, x[:rows]), torch.stack(alone)):
            break
        best = rows
    return best


def row_classes(form: str, out_features: int, in_features: int, dtype: torch.dtype, device,
                limit: int = PROBE_LIMIT) -> list[tuple[int, int]]:
    """Every (first, last) row count, first at most PAD_LIMIT, of a class of chunk sizes in which ``form`` keeps
    each row's bits, on random data of this shape: [(2, 3), (4, 4), (8, 8), (12, 64)] on one VM."""
    g = torch.Generator(device="cpu").manual_seed(0)
    weight = (torch.randn(out_features, in_features, generator=g) / math.sqrt(in_features)).to(device, dtype)
    x = torch.randn(limit, in_features, generator=g).to(device, dtype)
    classes: list[tuple[int, int]] = []
    pad = 2
    while pad <= min(PAD_LIMIT, limit):
        most = row_class(form, weight, x, pad)
        if most >= pad:
            classes.append((pad, most))
            if most == limit:
                break  # a class with a larger first size could only cost more
            pad = most + 1  # sizes inside this class give its bits: no other class starts there
        else:
            pad += 1
    return classes


def chunks(rows: int, most: int) -> list[tuple[int, int]]:
    """(start, stop) of the chunks ``rows`` rows are computed in: as few as a class that ends at ``most`` allows,
    of even sizes."""
    count = math.ceil(rows / most)
    size = math.ceil(rows / count)
    return [(start, min(start + size, rows)) for start in range(0, rows, size)]


class RowMatmul:
    """``matmul(linear, x)``: ``linear(x)`` for x (R, in_features), each row computed as it is alone. ``rows`` is
    how many rows a step may have (two per guided request, one per Turbo request): the form is chosen for it, at
    the first use of each weight shape."""

    def __init__(self, rows: int = 2, exact: bool | None = None):
        self.rows = max(1, rows)
        self.exact = exact

    def plan(self, weight: Tensor) -> Plan:
        """(form, fewest, most rows per chunk) for matmuls with this weight's shape, dtype and device."""
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
                        if isinstance(kept, list) and len(kept) == 3 and kept[0] in (*FORMS, ROWWISE):
                            _PLANS[key] = (kept[0], int(kept[1]), int(kept[2]))
                        else:
                            _PLANS[key] = self._make_plan(weight)
                            plans[name] = list(_PLANS[key])
                            _write_plans(path, plans)
                except OSError as exc:  # a read-only or full disk: planned (again) and kept in memory only
                    log.warning("cannot keep matmul plans in %s (%s): planning in memory", path, exc)
                    if key not in _PLANS:
                        _PLANS[key] = self._make_plan(weight)
        return _PLANS[key]

    def _make_plan(self, weight: Tensor) -> Plan:
        out_features, in_features = weight.shape
        # Classes are probed only as far as the planned rows: no chunk is larger (more rows go in more chunks), and
        # each size probed is a matmul of that many rows for every row of it (a full-size model's plans took 2.7x
        # as long probed to 64 rows).
        limit = min(PROBE_LIMIT, max(2, self.rows))
        candidates: list[Plan] = []
        for form in FORMS:
            shapes: dict[tuple[int, ...], Plan] = {}  # the chunk sizes a class gives the planned rows -> its plan
            for pad, most in row_classes(form, out_features, in_features, weight.dtype, weight.device, limit):
                sizes = tuple(sorted(max(pad, stop - start) for start, stop in chunks(self.rows, most)))
                shapes.setdefault(sizes, (form, pad, most))
            # Of the classes that chunk the planned rows differently, the ones no other beats on both counts: fewer
            # chunks (each reads the weight once) and fewer rows (padding is arithmetic too).
            candidates += [plan for sizes, plan in shapes.items()
                           if not any(len(o) <= len(sizes) and sum(o) <= sum(sizes) and o != sizes for o in shapes)]
        candidates.append((ROWWISE, 1, PROBE_LIMIT))  # any number of rows: each is computed alone
        if len(candidates) == 1:
            return candidates[0]
        chosen, cost = candidates[0], self._cost(candidates[0], weight)
        for plan in candidates[1:]:
            other = self._cost(plan, weight)
            if other <= CLEAR_GAIN * cost:
                chosen, cost = plan, other
        return chosen

    def _cost(self, plan: Plan, weight: Tensor) -> float:
        """Seconds ``plan`` takes for the planned rows, over copies of the weight that do not fit in the CPU's
        caches (as a model's weights do not); the median of three runs after a warm-up. Timed on the weight alone,
        in cache, a choice swung between runs."""
        copies = min(COST_COPIES, max(1, math.ceil(COST_BYTES / (weight.numel() * weight.element_size()))))
        weights = [weight.clone() for _ in range(copies)]
        x = torch.randn(self.rows, weight.shape[1], generator=torch.Generator(device="cpu").manual_seed(1)).to(
            weight.device, weight.dtype)
        times = []
        for _ in range(4):
            start = time.perf_counter()
            for w in weights:
                _product(plan, w, x)
            times.append(time.perf_counter() - start)
        return sorted(times[1:])[1]

    def __call__(self, linear: nn.Linear, x: Tensor) -> Tensor:
        exact = self.exact if self.exact is not None else x.device.type == "cpu"
        if not exact:
            return linear(x)
        out = _product(self.plan(linear.weight), linear.weight, x)
        if linear.bias is not None:
            out = out + linear.bias
        return out.contiguous()


def _product(plan: Plan, weight: Tensor, x: Tensor) -> Tensor:
    """x @ weight.T, each row with the bits it gets alone under ``plan``."""
    form, pad, most = plan
    if form == ROWWISE:
        return _rowwise(weight, x)
    fn = FORMS[form]
    out = []
    for start, stop in chunks(x.shape[0], most):
        chunk = x[start:stop]
        if chunk.shape[0] < pad:  # padded with rows of zeros into the class (a lone row: another kernel)
            chunk = torch.cat([chunk, chunk.new_zeros(pad - chunk.shape[0], chunk.shape[1])])
        out.append(fn(weight, chunk)[:stop - start])
    return torch.cat(out)
