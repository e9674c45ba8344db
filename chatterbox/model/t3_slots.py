"""T3's decoding on a GPU: every request's rows in fixed slots of one KV cache, the step replayed as a CUDA graph.

Why: on a GPU a decoding step of the batch in chatterbox.model.t3_batch is many small kernels (30 layers, each
request's attention by itself, each request's sampling by itself, a host sync per request) and their launches, not
the arithmetic, set its time. Here each row of a request lives in a slot of one cache made when the model loads;
a step computes the slots 0..B-1 together whatever the requests are (which slots are live, and at which position,
is data: a mask and an index), so its shapes depend only on (B, L), the slots and positions in use rounded up to
powers of two, and each such step is captured once as a CUDA graph and replayed as one launch. The draw is one
set of kernels for all the batch's requests, each still with its own parameters and its own random generator, and
one host sync per step.

The cache is the memory a full batch needs, taken at load and sized to what the device has free, so that a full
batch cannot run out of memory in the middle of a book; ``free_rows`` is what the worker admits by. A request that
does not fit (longer than a slot, or no slot free) and one that needs what the graph does not give (the
multilingual model's alignment guard, an ``on_logits`` callback) decodes as in chatterbox.model.t3_batch, beside.

On the CPU the same step runs without graphs (tests compare it with t3_batch's). On a GPU the batch's rows go
through cuBLAS together, so a request's floats may differ in the last bits with its companions: the tokens-equal
promise of t3_batch is the CPU's (rowmatmul.py says why).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from .llama import LlamaConfig, apply_rope, rope_cos_sin
from .sampling import sample_rows
from .t3_batch import T3Batch, T3Request

log = logging.getLogger(__name__)

SLOT_POSITIONS = 1536  # a slot's positions: 34 of voice, a chunk's text (< 400 tokens), 1,000 speech tokens
MIN_LENGTH_BUCKET = 64
MEMORY_SHARE = 0.5  # of the device's free memory at load, at most, for the slots (S3Gen and activations need room)


def slot_bytes(cfg: LlamaConfig, positions: int, dtype: torch.dtype) -> int:
    """Bytes of keys and values one slot holds (one more position than it serves: the scratch one)."""
    return 2 * cfg.n_layers * cfg.n_kv_heads * (positions + 1) * cfg.head_dim * dtype.itemsize


def _bucket(n: int, smallest: int, largest: int) -> int:
    size = smallest
    while size < n:
        size *= 2
    return min(size, largest)


class SlotCache:
    """Keys and values of ``slots`` rows of ``positions`` each, plus one scratch position per slot that rows not
    live in a step write to and nothing reads."""

    def __init__(self, cfg: LlamaConfig, slots: int, positions: int, device, dtype):
        self.slots, self.positions = slots, positions
        shape = (cfg.n_layers, slots, cfg.n_kv_heads, positions + 1, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.taken = [False] * slots

    @property
    def free_rows(self) -> int:
        return self.taken.count(False)

    def take(self, rows: int) -> int | None:
        """The first of ``rows`` adjacent free slots (a guided request's two rows are adjacent), or None."""
        for start in range(self.slots - rows + 1):
            if not any(self.taken[start:start + rows]):
                self.taken[start:start + rows] = [True] * rows
                return start
        return None

    def give(self, start: int, rows: int) -> None:
        self.taken[start:start + rows] = [False] * rows


class SlotView:
    """A request's rows in a SlotCache, with KVCache's interface (the prefill and t3_batch's decode write through
    it)."""

    def __init__(self, cache: SlotCache, start: int, rows: int, max_len: int):
        self.cache, self.start, self.rows, self.max_len = cache, start, rows, max_len
        self.length = 0
        self.probe = None

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        begin, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"the sequence is longer than the KV cache ({self.max_len} positions)")
        rows = slice(self.start, self.start + self.rows)
        self.cache.k[layer, rows, :, begin:end] = k
        self.cache.v[layer, rows, :, begin:end] = v
        return self.cache.k[layer, rows, :, :end], self.cache.v[layer, rows, :, :end]


class SlotStep:
    """One decoding position for slots 0..B-1 of a model's SlotCache: the inputs ``x`` and ``pos`` are written
    before ``run``, which leaves the final hidden states of the live rows in ``hidden`` (other rows keep theirs:
    several batches of one model share the slots). ``seen`` marks the ids each slot's request has drawn (the
    repetition penalty's)."""

    def __init__(self, t3, slots: int, positions: int = SLOT_POSITIONS, graphs: bool = True):
        w = t3.speech_emb.weight
        self.t3, self.device = t3, w.device
        self.cache = SlotCache(t3.cfg.llama, slots, positions, w.device, w.dtype)
        self.x = torch.zeros(slots, t3.cfg.dim, device=w.device, dtype=w.dtype)
        self.pos = torch.full((slots,), positions, device=w.device, dtype=torch.long)
        self.hidden = torch.zeros(slots, t3.cfg.dim, device=w.device, dtype=w.dtype)
        self.seen = torch.zeros(slots, t3.cfg.speech_vocab, device=w.device, dtype=torch.bool)
        self._keys = torch.arange(positions, device=w.device)
        self._rows = torch.arange(slots, device=w.device)
        self.graphs = graphs and w.device.type == "cuda"
        self._captured: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._pool = None

    @classmethod
    def sized(cls, t3, rows: int, positions: int = SLOT_POSITIONS, graphs: bool = True) -> "SlotStep":
        """Slots for ``rows`` rows, or as many as half the device's free memory holds (a warning says so)."""
        w = t3.speech_emb.weight
        slots = rows
        if w.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(w.device)
            fits = int(free * MEMORY_SHARE) // slot_bytes(t3.cfg.llama, positions, w.dtype)
            if fits < rows:
                log.warning("the device holds KV slots for %d rows, not the %d asked for (CHATTERBOX_MAX_BATCH): "
                            "requests beyond them wait", fits, rows)
                slots = max(2, fits)
        return cls(t3, slots, positions, graphs)

    def run(self, rows: int, length: int) -> None:
        """The step over slots 0..rows-1 (rounded up), attention over the first ``length`` positions (rounded up;
        every live row's position is below it)."""
        B = _bucket(rows, 1, self.cache.slots)
        L = _bucket(length, MIN_LENGTH_BUCKET, self.cache.positions)
        if not self.graphs:
            self._compute(B, L)
            return
        graph = self._captured.get((B, L))
        if graph is None:
            try:
                graph = self._capture(B, L)
            except RuntimeError:  # a capture this torch or driver refuses: the same step, kernel by kernel
                log.exception("cannot capture T3's decoding step as a CUDA graph; running it without graphs")
                self.graphs = False
                self._compute(B, L)
                return
        graph.replay()

    def _capture(self, B: int, L: int) -> "torch.cuda.CUDAGraph":
        # The warm-up computes what the replay will (the same inputs), so the cache writes it makes are the replay's.
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self._compute(B, L)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):  # replays never overlap: one pool serves every graph
            self._compute(B, L)
        self._captured[(B, L)] = graph
        log.debug("captured T3's decoding step for %d slots, %d positions", B, L)
        return graph

    def _compute(self, B: int, L: int) -> None:
        llama, cache = self.t3.tfmr, self.cache
        cfg = llama.cfg
        x, pos, rows = self.x[:B], self.pos[:B], self._rows[:B]  # (B, dim), (B,), (B,)
        cos, sin = rope_cos_sin(llama.inv_freq(x.device), pos, x.dtype)  # (B, D)
        cos, sin = cos[:, None, None], sin[:, None, None]  # over (B, H, 1, D)
        mask = (self._keys[:L][None, :] <= pos[:, None])[:, None, None, :]  # (B, 1, 1, L): a row's own positions
        for i, layer in enumerate(llama.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(B, cfg.n_heads, 1, cfg.head_dim)
            k = attn.k_proj(h).view(B, cfg.n_kv_heads, 1, cfg.head_dim)
            v = attn.v_proj(h).view(B, cfg.n_kv_heads, 1, cfg.head_dim)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            cache.k[i, rows, :, pos] = k[:, :, 0]  # rows not live write their scratch position
            cache.v[i, rows, :, pos] = v[:, :, 0]
            keys, values = cache.k[i, :B, :, :L], cache.v[i, :B, :, :L]  # (B, KV, L, D)
            if cfg.n_kv_heads != cfg.n_heads:
                keys = keys.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
                values = values.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, H, 1, D)
            x = x + attn.o_proj(out.reshape(B, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        live = (pos < cache.positions)[:, None]
        self.hidden[:B] = torch.where(live, llama.norm(x), self.hidden[:B])


class SlotBatch(T3Batch):
    """T3Batch whose requests decode in a SlotStep's slots where they fit (the rest as T3Batch decodes them)."""

    def __init__(self, t3, matmul, slots: SlotStep):
        super().__init__(t3, matmul)
        self.slots = slots
        self._drawn: tuple[list[T3Request], Tensor] | None = None

    @property
    def free_rows(self) -> int:
        return self.slots.cache.free_rows

    def _cache_for(self, request: T3Request, prefill: int):
        need = prefill + request.max_new_tokens
        if request.alignment or request.on_logits is not None or need > self.slots.cache.positions:
            return super()._cache_for(request, prefill)
        start = self.slots.cache.take(request.rows)
        if start is None:
            return super()._cache_for(request, prefill)
        return SlotView(self.slots.cache, start, request.rows, need)

    @torch.inference_mode()
    def add(self, request: T3Request) -> None:
        try:
            super().add(request)
        except BaseException:
            self._release(request)
            raise
        view = request.cache
        if isinstance(view, SlotView):
            rows = slice(view.start, view.start + request.rows)
            self.slots.hidden[rows] = request.hidden
            self.slots.seen[view.start] = False
            self.slots.seen[view.start, self.t3.cfg.start_speech] = True
            request.hidden = None  # the slots hold it

    def _release(self, request) -> None:
        if isinstance(request.cache, SlotView):
            self.slots.cache.give(request.cache.start, request.rows)
        super()._release(request)

    @torch.inference_mode()
    def step(self) -> list[tuple[T3Request, int | None]]:
        if not self.active:
            return []
        fixed = [r for r in self.active if isinstance(r.cache, SlotView)]
        others = [r for r in self.active if not isinstance(r.cache, SlotView)]
        out: list[tuple[T3Request, int | None]] = []
        going = (self._draw_fixed(fixed, out) if fixed else []) + (self._draw(others, out) if others else [])
        self._retire(going)
        if any(isinstance(r.cache, SlotView) for r in going):
            self._decode_fixed()
        rest = [r for r in going if not isinstance(r.cache, SlotView)]
        if rest:
            self._decode(rest)
        return out

    def _draw_fixed(self, requests: list[T3Request], out: list) -> list[T3Request]:
        t3, cfg, slots = self.t3, self.t3.cfg, self.slots
        device = slots.device
        top = max(r.cache.start + r.rows for r in requests)
        logits = F.linear(slots.hidden[:top], t3.speech_head.weight).float()  # (top, V)
        cond = torch.tensor([r.cache.start for r in requests], device=device)
        uncond = torch.tensor([r.cache.start + r.rows - 1 for r in requests], device=device)
        weight = torch.tensor([[r.cfg_weight if r.guided else 0.0] for r in requests], device=device)
        c = logits[cond]
        guided = c + weight * (c - logits[uncond])  # (N, V); unguided rows: c + 0 * 0, c itself
        tokens = sample_rows(guided, slots.seen[cond], [r.sampling for r in requests],
                              [r.generator for r in requests])  # (N,)
        slots.seen[cond, tokens] = True
        going = []
        for request, value in zip(requests, tokens.tolist()):  # the step's one host sync
            if self._take(request, None if value == cfg.stop_speech else value, out):
                going.append(request)
        self._drawn = (requests, tokens)
        return going

    def _decode_fixed(self) -> None:
        t3, slots = self.t3, self.slots
        requests, tokens = self._drawn
        self._drawn = None
        device = slots.device
        positions = torch.tensor([len(r.tokens) for r in requests], device=device)
        emb = t3.speech_emb(tokens) + t3.speech_pos_emb.emb.weight[positions]  # (N, dim)
        target, source = [], []
        pos = [slots.cache.positions] * slots.cache.slots  # rows not live: the scratch position
        for i, request in enumerate(requests):
            if request.done:
                continue
            for row in range(request.cache.start, request.cache.start + request.rows):
                target.append(row)
                source.append(i)
                pos[row] = request.cache.length
        slots.x[torch.tensor(target, device=device)] = emb[torch.tensor(source, device=device)]
        slots.pos.copy_(torch.tensor(pos))
        slots.run(max(target) + 1, max(pos[t] for t in target) + 1)
        for request in requests:
            if not request.done:
                request.cache.length += 1

