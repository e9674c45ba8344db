"""T3 guided decoding speed: ours against the reference package, same random weights, prompt and token count.

The reference runs in its own throwaway virtual environment (tools/setup_reference_env.sh), in a subprocess,
right after ours, on the same machine. Prints tokens per second of each (fastest of --repeats runs after a warm-up, which keeps a busy machine from
deciding the ratio) and the ratio (target on CPU: >= 1.0).

Usage: python bench/t3_decode.py [--tokens 40] [--device cpu|cuda] [--dtype fp32|bf16]
       [--reference-python /tmp/chatterbox-ref-venv/bin/python]
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

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away into the quiet forest."

# Runs inside the reference's environment: build it from the checkpoint and time t3.inference alone.
REFERENCE = r"""
import json, sys, time, torch
import torch.nn.functional as F
from chatterbox.tts import ChatterboxTTS, punc_norm
ckpt, text, n, device, dtype = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
tts = ChatterboxTTS.from_local(ckpt, device)
if dtype == "bf16":
    tts.t3.to(torch.bfloat16)
tokens = tts.tokenizer.text_to_tokens(punc_norm(text)).to(device)
tokens = torch.cat([tokens, tokens], dim=0)
tokens = F.pad(F.pad(tokens, (1, 0), value=255), (0, 1), value=0)
def run():
    torch.manual_seed(0)
    start = time.perf_counter()
    out = tts.t3.inference(t3_cond=tts.conds.t3, text_tokens=tokens, max_new_tokens=n, temperature=0.8,
                           cfg_weight=0.5, repetition_penalty=1.2, min_p=0.05, top_p=1.0)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out.shape[-1]
run()  # warm-up
seconds, count = min(run() for _ in range(int(sys.argv[6])))
print(json.dumps({"seconds": seconds, "tokens": count}))
"""


def ours(ckpt: Path, n: int, device: str, dtype: str, repeats: int) -> tuple[float, int]:
    import torch

    from chatterbox.model.speech_tokens import SpeechTokenModel

    model = SpeechTokenModel.from_local(ckpt, device=device,
                                        dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)

    def run():
        start = time.perf_counter()
        count = 0
        tokens = model.tokenizer(TEXT).to(model.device)
        cond = model.conds.t3.with_exaggeration(0.5)
        for _ in model.t3.generate(cond, tokens, cfg_weight=0.5, max_new_tokens=n,
                                   generator=torch.Generator(device=device).manual_seed(0)):
            count += 1
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, count

    run()  # warm-up
    return min(run() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--reference-python", default=os.environ.get("CHATTERBOX_REFERENCE_PYTHON",
                                                                     "/tmp/chatterbox-ref-venv/bin/python"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="reuse a random checkpoint directory")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side; the fastest counts")
    args = parser.parse_args()

    from chatterbox.model.random_checkpoint import write_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or write_checkpoint(Path(tmp) / "ckpt", seed=0)
        our_s, our_n = ours(ckpt, args.tokens, args.device, args.dtype, args.repeats)
        print(f"ours:      {our_n} tokens in {our_s:.2f} s = {our_n / our_s:.2f} tokens/s "
              f"({args.device}, {args.dtype}, guided, prefill included)")
        if not Path(args.reference_python).exists():
            print(f"reference: not run ({args.reference_python} missing: run tools/setup_reference_env.sh)")
            return
        out = subprocess.run([args.reference_python, "-c", REFERENCE, str(ckpt), TEXT, str(args.tokens),
                              args.device, args.dtype, str(args.repeats)], capture_output=True, text=True, cwd=tmp)  # not our chatterbox
        if out.returncode != 0:
            print("reference failed:\n" + out.stderr[-3000:])
            sys.exit(1)
        ref = json.loads(out.stdout.strip().splitlines()[-1])
        ref_rate = ref["tokens"] / ref["seconds"]
        print(f"reference: {ref['tokens']} tokens in {ref['seconds']:.2f} s = {ref_rate:.2f} tokens/s")
        print(f"ratio ours / reference: {(our_n / our_s) / ref_rate:.2f}   (target on CPU: >= 1.0)")


if __name__ == "__main__":
    main()
