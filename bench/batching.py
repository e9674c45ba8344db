"""Batched Chatterbox against one at a time, side by side in one run, on seeded random full-size weights.

1. T3: aggregate speech tokens per second with guidance at each batch size (prefill excluded), the decoding step
   planned for the biggest batch (as a worker is); also batch 1 planned for one (what a worker with
   CHATTERBOX_MAX_BATCH=1 runs).
2. S3Gen: seconds of audio per second for B utterances through the flow and HiFT together, against the same B one
   by one.
3. With --system: a book of 16 chunks through one worker of the running system (the embedded Redis, a Celery
   worker, the web app), with CHATTERBOX_MAX_BATCH=8 against 1; and an interactive job's first audio while the book
   fills the batch, against an idle worker's.

With --model turbo, parts 1 and 2 are Chatterbox Turbo's: T3 on GPT-2 without guidance, S3Gen with its two
mean-flow steps.

Usage: python bench/batching.py [--model original|turbo] [--device cpu|cuda] [--dtype fp32|bf16] [--tokens 24]
       [--sizes 1,4,8,16] [--s3gen-sizes 1,4,8] [--system] [--book-tokens 100]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away into the quiet forest."


def load(model: str, ckpt: Path, device: str, dtype, plan_for: int):
    """The model's TTS object, its decoding step planned for ``plan_for`` requests."""
    if model == "turbo":
        from chatterbox.tts_turbo import ChatterboxTurboTTS

        return ChatterboxTurboTTS.from_local(ckpt, device=device, dtype=dtype, max_batch=plan_for)
    from chatterbox.tts import ChatterboxTTS

    return ChatterboxTTS.from_local(ckpt, device=device, dtype=dtype, max_batch=plan_for)


def t3_rates(model: str, ckpt: Path, sizes: list[int], tokens: int, device: str, dtype,
             plan_for: int) -> dict[int, float]:
    """Speech tokens per second, in all, at each batch size; the step planned for ``plan_for`` requests."""
    import torch

    tts = load(model, ckpt, device, dtype, plan_for)
    guidance = {} if model == "turbo" else {"cfg_weight": 0.5}
    rates = {}
    for size in [sizes[0], *sizes]:  # the first size twice: a warm-up
        batch = tts.speech.new_batch()
        for i in range(size):
            batch.add(tts.speech.request(TEXT, tts.conds, max_new_tokens=tokens, seed=i, **guidance))
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        made = 0
        while batch.active:
            made += sum(token is not None for _, token in batch.step())
        if device == "cuda":
            torch.cuda.synchronize()
        rates[size] = made / (time.perf_counter() - start)
    return rates


def s3gen_rates(model: str, ckpt: Path, sizes: list[int], tokens: int, device: str, dtype
                ) -> dict[int, tuple[float, float]]:
    """(together, one by one) seconds of audio per second for each batch size."""
    import torch

    from chatterbox.model.s3gen.flow import FlowInput

    tts = load(model, ckpt, device, dtype, 1)
    s3gen, gen = tts.s3gen, tts.conds.gen
    steps = None if model == "turbo" else 10
    seconds = tokens / 25

    def items(n: int) -> list[FlowInput]:
        return [FlowInput(torch.randint(0, 6561, (1, tokens), generator=torch.Generator().manual_seed(i)).to(device),
                          gen["prompt_token"], gen["prompt_feat"], gen["embedding"],
                          torch.Generator(device=device).manual_seed(i)) for i in range(n)]

    def run(groups: list[list[FlowInput]]) -> float:
        start = time.perf_counter()
        for group in groups:
            mels = s3gen.flow.forward_batch(group, steps)
            s3gen.hift.forward_batch([m.float() for m in mels], [torch.Generator(device=device).manual_seed(0)
                                                                  for _ in mels])
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run([items(1)])  # warm-up
    out = {}
    for size in sizes:
        together = run([items(size)])
        alone = run([[item] for item in items(size)])
        out[size] = (size * seconds / together, size * seconds / alone)
    return out


def system_figures(ckpt: Path, book_tokens: int) -> dict:
    """Book time with max batch 8 and 1; an interactive job's first audio while the book runs, and idle."""
    from tests.conftest import System, wait_until

    paragraphs = [f"Paragraph {i} of the benchmark's book, one chunk each." for i in range(15)]
    params = {"max_new_tokens": book_tokens}
    out = {}
    for max_batch in (8, 1):
        with tempfile.TemporaryDirectory() as folder:
            system = System(Path(folder))
            system.env.update(TTS_ENGINE="chatterbox", CHATTERBOX_MODEL_DIR=str(ckpt),
                              CHATTERBOX_MAX_BATCH=str(max_batch), CHATTERBOX_BOOK_QUALITY_CHECKS="0",
                              CHATTERBOX_BOOK_SPEAK_TITLES="0")
            system.start()
            try:
                idle = system.submit("An interactive job on an idle worker.", params={"max_new_tokens": 30})
                idle_first = system.wait_job(idle["job_id"], timeout=600)["first_chunk_s"]
                start = time.perf_counter()
                book = system.api.post("/audiobooks", timeout=60, json={
                    "chapters": [{"title": "One", "text": "\n\n".join(paragraphs)}], "params": params}).json()
                wait_until(lambda: (system.api.get(f"/audiobooks/{book['job_id']}", timeout=10).json()
                                    .get("chunks_in_flight", 0) >= min(4, max_batch)), 600, 0.2, "the book")
                busy = system.submit("An interactive job while a book runs.", params={"max_new_tokens": 30})
                busy_first = system.wait_job(busy["job_id"], timeout=1200)["first_chunk_s"]
                wait_until(lambda: system.api.get(f"/audiobooks/{book['job_id']}", timeout=10)
                           .json()["status"] in ("succeeded", "failed"), 3600, 1.0, "the book to finish")
                chunks = system.api.get(f"/audiobooks/{book['job_id']}", timeout=10).json()["chunks_total"]
                out[max_batch] = {"book_s": time.perf_counter() - start, "chunks": chunks,
                                  "first_idle_s": idle_first, "first_busy_s": busy_first}
            finally:
                system.stop()
    return out


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("original", "turbo"), default="original")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--tokens", type=int, default=24, help="speech tokens per request in the T3 part")
    parser.add_argument("--sizes", default="1,4,8,16")
    parser.add_argument("--s3gen-sizes", default="1,4,8")
    parser.add_argument("--s3gen-tokens", type=int, default=100, help="speech tokens per utterance (4 s)")
    parser.add_argument("--system", action="store_true", help="also the book through the running system")
    parser.add_argument("--book-tokens", type=int, default=100)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    sizes = [int(s) for s in args.sizes.split(",")]

    from chatterbox.model.random_checkpoint import write_checkpoint
    from chatterbox.model.random_checkpoint_turbo import write_turbo_checkpoint

    if args.system and args.model != "original":
        parser.error("--system runs the original model")
    with tempfile.TemporaryDirectory() as folder:
        write = write_turbo_checkpoint if args.model == "turbo" else write_checkpoint
        ckpt = write(Path(folder) / "ckpt", seed=0)
        print(f"{args.model}: device {args.device}, {args.dtype}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        alone = t3_rates(args.model, ckpt, [1], args.tokens, args.device, dtype, plan_for=1)[1]
        rates = t3_rates(args.model, ckpt, sizes, args.tokens, args.device, dtype, plan_for=max(sizes))
        kind = "unguided (Turbo)" if args.model == "turbo" else "guided"
        print(f"T3, {kind}, {args.tokens} tokens a request; batch 1 planned for one: {alone:.2f} tokens/s")
        for size, rate in rates.items():
            print(f"  batch {size:2d}: {rate:7.2f} tokens/s   x{rate / rates[sizes[0]]:.2f} of batch {sizes[0]} "
                  f"(same plan)   x{rate / alone:.2f} of one planned for one")
        s3 = s3gen_rates(args.model, ckpt, [int(s) for s in args.s3gen_sizes.split(",")], args.s3gen_tokens,
                         args.device, dtype)
        flow_steps = "2 mean-flow steps" if args.model == "turbo" else "10 steps"
        print(f"S3Gen, {args.s3gen_tokens} tokens ({args.s3gen_tokens / 25:.0f} s) an utterance, {flow_steps}:")
        for size, (together, one_by_one) in s3.items():
            print(f"  batch {size}: {together:.2f} s of audio per s together, {one_by_one:.2f} one by one   "
                  f"x{together / one_by_one:.2f}")
        if args.system:
            figures = system_figures(ckpt, args.book_tokens)
            batched, single = figures[8], figures[1]
            print(f"book of {batched['chunks']} chunks ({args.book_tokens} tokens each) through one worker: "
                  f"{batched['book_s']:.1f} s with max batch 8, {single['book_s']:.1f} s with 1   "
                  f"x{single['book_s'] / batched['book_s']:.2f}")
            for size, f in figures.items():
                print(f"  max batch {size}: interactive first audio {f['first_busy_s']:.2f} s while the book runs, "
                      f"{f['first_idle_s']:.2f} s idle   x{f['first_busy_s'] / f['first_idle_s']:.2f}")


if __name__ == "__main__":
    main()
