"""S3Gen speed: seconds of audio made per second by the flow and by HiFT, ours against the reference (same random
weights, same inputs, in one run), and time to the first streamed chunk against time to the whole utterance.

Usage: python bench/s3gen.py [--tokens 100] [--device cpu|cuda] [--dtype fp32|bf16]
       [--reference-python /tmp/chatterbox-ref-venv/bin/python] [--checkpoint DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Runs inside the reference's environment: time its flow and its HiFT on the same inputs, fastest of `repeats`.
REFERENCE = r"""
import json, sys, time, torch
from chatterbox.tts import ChatterboxTTS
ckpt, n, device, dtype, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
s3gen = ChatterboxTTS.from_local(ckpt, device).s3gen
if dtype == "bf16":
    s3gen.flow.to(torch.bfloat16)
gen = torch.load(f"{ckpt}/conds.pt", weights_only=True)["gen"]
tokens = torch.randint(0, 6561, (1, n), generator=torch.Generator().manual_seed(0)).to(device)
mels = (torch.randn(1, 80, 2 * n, generator=torch.Generator().manual_seed(1)) - 5).to(device)
def timed(fn):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter(); fn()
        if device == "cuda": torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best
flow = timed(lambda: s3gen.flow_inference(tokens, ref_dict=dict(gen), finalize=True))
hift = timed(lambda: s3gen.mel2wav.inference(speech_feat=mels))
print(json.dumps({"flow": flow, "hift": hift}))
"""


def timed(fn, repeats: int, device: str) -> float:
    import torch

    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100, help="speech tokens (25 per second of audio)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-python", default=os.environ.get("CHATTERBOX_REFERENCE_PYTHON",
                                                                     "/tmp/chatterbox-ref-venv/bin/python"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="reuse a random checkpoint directory")
    args = parser.parse_args()

    import torch

    from chatterbox.model.random_checkpoint import write_checkpoint
    from chatterbox.tts import ChatterboxTTS

    n, seconds = args.tokens, args.tokens / 25
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or write_checkpoint(Path(tmp) / "ckpt", seed=0)
        tts = ChatterboxTTS.from_local(ckpt, device=args.device,
                                       dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32)
        gen = torch.load(ckpt / "conds.pt", weights_only=True)["gen"]
        tokens = torch.randint(0, 6561, (1, n), generator=torch.Generator().manual_seed(0)).to(args.device)
        mels = (torch.randn(1, 80, 2 * n, generator=torch.Generator().manual_seed(1)) - 5).to(args.device)
        flow = timed(lambda: tts.s3gen.mels(tokens, gen), args.repeats, args.device)
        hift = timed(lambda: tts.s3gen.vocode(mels), args.repeats, args.device)
        print(f"audio: {seconds:.1f} s ({n} tokens), {args.device}, {args.dtype}")
        print(f"ours:      flow {seconds / flow:.2f} s of audio per second, HiFT {seconds / hift:.2f}")

        # Streaming: the first chunk against the whole utterance, same text, seed and token count.
        start = time.perf_counter()
        stream = tts.generate_stream("Streaming starts quickly.", seed=1, max_new_tokens=n, chunk_tokens=25)
        next(stream)
        first = time.perf_counter() - start
        for _ in stream:
            pass
        streamed = time.perf_counter() - start
        start = time.perf_counter()
        tts.generate("Streaming starts quickly.", seed=1, max_new_tokens=n)
        whole = time.perf_counter() - start
        print(f"streaming: first chunk after {first:.2f} s, all chunks after {streamed:.2f} s; "
              f"whole utterance at once {whole:.2f} s")
        del tts

        if not Path(args.reference_python).exists():
            print(f"reference: not run ({args.reference_python} missing: run tools/setup_reference_env.sh)")
            return
        out = subprocess.run([args.reference_python, "-c", REFERENCE, str(ckpt), str(n), args.device, args.dtype,
                              str(args.repeats)], capture_output=True, text=True, cwd=tmp)
        if out.returncode != 0:
            print("reference failed:\n" + out.stderr[-3000:])
            sys.exit(1)
        ref = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"reference: flow {seconds / ref['flow']:.2f} s of audio per second, HiFT {seconds / ref['hift']:.2f}")
        print(f"ratios ours / reference: flow {ref['flow'] / flow:.2f}, HiFT {ref['hift'] / hift:.2f}   "
              "(target on CPU: >= 1.0)")


if __name__ == "__main__":
    main()
