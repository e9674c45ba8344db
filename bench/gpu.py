"""Batched Chatterbox (the original model) on a GPU, side by side in one run, on seeded random full-size weights.

The checks and figures issue 13 asks of a GPU, in one short run (device time is scarce):

1. Correct: the slot step replayed as CUDA graphs gives the tokens the same step gives run kernel by kernel, and
   how many tokens agree with the plain batch of chatterbox.model.t3_batch (on a GPU rows go through cuBLAS
   together, so the last bits, and now and then a draw, may differ).
2. T3 aggregate speech tokens per second with guidance at each batch size: graphs, the slot step without graphs,
   and the plain batch.
3. S3Gen seconds of audio per second for B utterances together against one by one.
4. Book work through one worker's batch loop (in process: the queue's own cost is bench/queue_overhead.py's):
   chunks of a book decoded and voiced together, as audio seconds per second (x real time); then an interactive
   job's first audio while the book fills the batch, against an idle loop's.

Each part runs in fp32 and bf16 (the weights; sampling stays fp32). A part that fails prints its error and the
others go on. Usage: python bench/gpu.py [--dtypes fp32,bf16] [--sizes 1,8,16,32,64] [--book-chunks 64]
[--max-batch 32] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away into the quiet forest."
RESULTS: dict = {}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def part(name: str):
    def wrap(fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                RESULTS[name] = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - one part's failure must not cost the others
                traceback.print_exc()
                RESULTS[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"[{name}] {time.perf_counter() - start:.1f} s: {RESULTS[name]}", flush=True)
        return run
    return wrap


def requests(tts, n: int, tokens: int, seed0: int = 0, mixed: bool = False):
    out = []
    for i in range(n):
        params = dict(cfg_weight=[0.5, 0.0, 1.0][i % 3], temperature=0.6 + 0.1 * (i % 5),
                      top_p=[1.0, 0.9][i % 2]) if mixed else dict(cfg_weight=0.5)
        out.append(tts.speech.request(TEXT if i % 2 else TEXT[:40], tts.conds, max_new_tokens=tokens,
                                      seed=seed0 + i, **params))
    return out


def decode(batch, reqs, late: int = 0) -> float:
    """Tokens per second for the requests decoded together (``late`` of them join after 5 steps)."""
    early, later = reqs[:len(reqs) - late], reqs[len(reqs) - late:]
    for r in early:
        batch.add(r)
    sync()
    start, steps = time.perf_counter(), 0
    while batch.active or later:
        if steps == 5:
            for r in later:
                batch.add(r)
            later = []
        batch.step()
        steps += 1
    sync()
    return sum(len(r.tokens) for r in reqs) / (time.perf_counter() - start)


def plain_batch(tts):
    from chatterbox.model.rowmatmul import RowMatmul
    from chatterbox.model.t3_batch import T3Batch

    return T3Batch(tts.t3, RowMatmul(2, exact=False))


def slot_batch(tts, step):
    from chatterbox.model.t3_slots import SlotBatch

    return SlotBatch(tts.t3, tts.speech.matmul, step)


def correctness(tts, label: str) -> dict:
    slots = tts.speech.slots
    made = {}
    for name in ("graphs", "eager", "plain"):
        slots.graphs = name == "graphs" and slots.device.type == "cuda"
        reqs = requests(tts, 6, 60, seed0=100, mixed=True)
        decode(plain_batch(tts) if name == "plain" else slot_batch(tts, slots), reqs, late=2)
        made[name] = [r.tokens for r in reqs]
    slots.graphs = slots.device.type == "cuda"
    same = lambda a, b: sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb))  # noqa: E731
    total = sum(len(r) for r in made["graphs"])
    return {"tokens": total, "graphs_equal_eager": made["graphs"] == made["eager"],
            "agree_with_plain": f"{same(made['graphs'], made['plain'])}/{total}",
            "first_divergence": next((i for i, (a, b) in enumerate(zip(made['graphs'], made['plain'])) if a != b),
                                     None)}


def t3_rates(tts, sizes: list[int], tokens: int) -> dict:
    graphs = tts.speech.slots
    out = {"graphs": {}, "eager_slots": {}, "plain": {}}
    decode(slot_batch(tts, graphs), requests(tts, sizes[0], tokens))  # warm-up and captures
    for size in sizes:
        decode(slot_batch(tts, graphs), requests(tts, size, tokens))  # captures this size's graphs
        out["graphs"][size] = round(decode(slot_batch(tts, graphs), requests(tts, size, tokens)), 1)
    on = graphs.graphs
    graphs.graphs = False
    for size in (sizes[0], sizes[len(sizes) // 2], sizes[-1]):
        out["eager_slots"][size] = round(decode(slot_batch(tts, graphs), requests(tts, size, tokens)), 1)
    graphs.graphs = on
    for size in (sizes[0], sizes[len(sizes) // 2]):
        out["plain"][size] = round(decode(plain_batch(tts), requests(tts, size, tokens)), 1)
    return out


def s3gen_rates(tts, sizes: list[int], tokens: int = 100) -> dict:
    from chatterbox.model.s3gen.flow import FlowInput

    s3gen, gen = tts.s3gen, tts.conds.gen
    dev = tts.device

    def items(n):
        return [FlowInput(torch.randint(0, 6561, (1, tokens), generator=torch.Generator().manual_seed(i)).to(dev),
                          gen["prompt_token"].to(dev), gen["prompt_feat"].to(dev), gen["embedding"].to(dev),
                          torch.Generator(device=dev).manual_seed(i)) for i in range(n)]

    def run(groups) -> float:
        sync()
        start = time.perf_counter()
        for group in groups:
            mels = s3gen.flow.forward_batch(group, 10)
            s3gen.hift.forward_batch([m.float() for m in mels],
                                     [torch.Generator(device=dev).manual_seed(0) for _ in mels])
        sync()
        return time.perf_counter() - start

    run([items(1)])
    run([items(sizes[-1])])
    out = {}
    for size in sizes:
        together, alone = run([items(size)]), run([[i] for i in items(size)])
        out[size] = {"together_x_realtime": round(size * tokens / 25 / together, 1),
                     "one_by_one_x_realtime": round(size * tokens / 25 / alone, 1)}
    return out


def book_work(tts, chunks: int, max_batch: int, tokens: int) -> dict:
    """A book's chunks (whole utterances, bulk) through one batch loop; an interactive job's first audio while
    they run and on the idle loop."""
    from chatterbox.engines.batch_loop import BULK, INTERACTIVE, BatchLoop, Request

    loop = BatchLoop(tts, max_batch)
    params = {"cfg_weight": 0.5, "temperature": 0.8, "max_new_tokens": tokens, "steps": 10}

    def first_audio(seed: int) -> float:
        request = loop.submit(Request(TEXT, tts.conds, {**params, "seed": seed, "max_new_tokens": 60},
                                      stream=True, priority=INTERACTIVE))
        start = request.submitted_at
        pieces = request.pieces()
        next(pieces)
        first = time.monotonic() - start
        for _ in pieces:
            pass
        return first

    first_audio(1)  # warm-up: graphs for small batches
    idle = sorted(first_audio(2 + i) for i in range(3))[1]
    audio = [0.0]
    lock = threading.Lock()

    def chunk(i: int) -> None:
        request = loop.submit(Request(f"Chunk {i} of the book. " + TEXT, tts.conds, {**params, "seed": 1000 + i},
                                      stream=False, priority=BULK))
        samples = sum(p.shape[-1] for p in request.pieces())
        with lock:
            audio[0] += samples / tts.sr

    threads = [threading.Thread(target=chunk, args=(i,)) for i in range(chunks)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while loop.occupancy()["active"] < min(max_batch, chunks) and time.monotonic() < deadline:
        time.sleep(0.005)
    busy = [first_audio(50 + i) for i in range(3)]
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"chunks": chunks, "audio_s": round(audio[0], 1), "wall_s": round(wall, 2),
            "x_realtime": round(audio[0] / wall, 1), "first_audio_idle_s": round(idle, 3),
            "first_audio_busy_s": [round(b, 3) for b in busy], "most_together": loop.most}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--sizes", default="1,8,16,32,64")
    parser.add_argument("--tokens", type=int, default=64, help="speech tokens a request in the T3 part")
    parser.add_argument("--s3gen-sizes", default="1,8,16")
    parser.add_argument("--book-chunks", type=int, default=64)
    parser.add_argument("--book-tokens", type=int, default=100)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from chatterbox.model.random_checkpoint import write_checkpoint
    from chatterbox.tts import ChatterboxTTS

    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    RESULTS["machine"] = f"{name}, torch {torch.__version__}"
    print(RESULTS["machine"], flush=True)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        ckpt = write_checkpoint(Path(folder) / "ckpt", seed=0)
        print(f"checkpoint written in {time.perf_counter() - start:.1f} s", flush=True)
        for dtype_name in args.dtypes.split(","):
            dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
            tts = ChatterboxTTS.from_local(ckpt, device=args.device, dtype=dtype, max_batch=max(sizes))
            tts.speech.new_batch()  # makes the slots (on a GPU)
            if tts.speech.slots is None:
                tts.speech.use_slots(graphs=False)
            part(f"{dtype_name} correctness")(correctness)(tts, dtype_name)
            part(f"{dtype_name} t3 tokens/s")(t3_rates)(tts, sizes, args.tokens)
            part(f"{dtype_name} s3gen")(s3gen_rates)(tts, [int(s) for s in args.s3gen_sizes.split(",")])
            part(f"{dtype_name} book work")(book_work)(tts, args.book_chunks, args.max_batch, args.book_tokens)
            if args.device == "cuda":
                RESULTS[f"{dtype_name} peak GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
                torch.cuda.reset_peak_memory_stats()
            del tts
            torch.cuda.empty_cache() if args.device == "cuda" else None
    print("\n== summary ==")
    for key, value in RESULTS.items():
        print(f"{key}: {json.dumps(value)}")
    if args.out:
        Path(args.out).write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
