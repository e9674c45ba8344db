"""The three Chatterbox models, ours against the reference package, side by side in one run on seeded random
full-size weights: T3 speech tokens per second and S3Gen seconds of audio per second for the original, Turbo and
the multilingual model.

For each model in turn: its random checkpoint is written (chatterbox.model.random_checkpoint*, seed 0), ours is
measured, then the reference (chatterbox-tts 0.1.7 in its throwaway environment, tools/setup_reference_env.sh) in a
subprocess started from a temporary directory so that our package of the same name does not shadow it; then the
next model, so that background load falls on both sides of a ratio alike. Both processes use the same number of
threads. Each figure is the fastest of --repeats runs after a warm-up (bench/t3_decode.py, bench/s3gen.py).

- T3: the same text and built-in voice, --tokens speech tokens, prefill included. Original and multilingual
  decode with guidance (cfg_weight 0.5, temperature 0.8, min_p 0.05, repetition penalty 1.2; the multilingual one
  in English, with the alignment guard on both sides); Turbo without guidance (temperature 0.8, top_k 1000, top_p
  0.95, repetition penalty 1.2). The reference runs ``T3.inference`` / ``T3.inference_turbo`` as its ``generate``
  does.
- S3Gen: --s3gen-tokens fixed random speech tokens (25 per second of audio) with the built-in voice's prompt,
  flow and HiFT together (the reference's ``S3Gen.inference``; ours ``S3Gen.__call__``): 10 Euler steps with
  guidance for the original and the multilingual model, Turbo's 2 mean-flow steps.

Prints a table and the ratios ours / reference (target on CPU: >= 1.0 each), then one JSON line.

Usage: python bench/models.py [--models original,turbo,multilingual] [--tokens 30] [--s3gen-tokens 100]
       [--repeats 2] [--device cpu|cuda] [--threads N] [--reference-python /tmp/chatterbox-ref-venv/bin/python]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.s3gen import timed  # noqa: E402  (warm-up, then the fastest of repeats)
from bench.t3_decode import TEXT  # noqa: E402

MODELS = ("original", "turbo", "multilingual")
S3GEN_STEPS = {"original": 10, "turbo": 2, "multilingual": 10}
TOKENS_PER_SECOND = 25  # speech tokens per second of audio

# Runs inside the reference's environment: one model, T3 then S3Gen, each the fastest of `repeats` after a warm-up.
REFERENCE = r"""
import json, os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"  # the multilingual tokenizer looks for Cangjie5_TC.json on the hub: not needed
import torch
import torch.nn.functional as F
model, ckpt, text = sys.argv[1], sys.argv[2], sys.argv[3]
n, s3_tokens, device, repeats, threads, steps = (int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7]),
                                                 int(sys.argv[8]), int(sys.argv[9]))
torch.set_num_threads(threads)

def timed(fn):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best

counts = []
if model == "turbo":
    from chatterbox.tts_turbo import ChatterboxTurboTTS, punc_norm
    tts = ChatterboxTurboTTS.from_local(ckpt, device)
    tokens = tts.tokenizer(punc_norm(text), return_tensors="pt", padding=True, truncation=True).input_ids.to(device)
    def t3():
        torch.manual_seed(0)
        # inference_turbo(max_gen_len=m) samples m + 1 tokens: one from the prefill, one per step.
        out = tts.t3.inference_turbo(t3_cond=tts.conds.t3, text_tokens=tokens, temperature=0.8, top_k=1000,
                                     top_p=0.95, repetition_penalty=1.2, max_gen_len=n - 1)
        counts.append(int(out.shape[-1]))
else:
    if model == "original":
        from chatterbox.tts import ChatterboxTTS as TTS, punc_norm
        tts = TTS.from_local(ckpt, device)
        tokens = tts.tokenizer.text_to_tokens(punc_norm(text)).to(device)
    else:
        from chatterbox.models.tokenizers import tokenizer as tok_module
        # pkuseg's model cannot be downloaded here (only Chinese uses it): as tools/make_reference_fixtures_mtl.py
        tok_module.ChineseCangjieConverter._init_segmenter = lambda self: setattr(self, "segmenter", None)
        from chatterbox.mtl_tts import ChatterboxMultilingualTTS as TTS, punc_norm
        tts = TTS.from_local(ckpt, device)
        tokens = tts.tokenizer.text_to_tokens(punc_norm(text), language_id="en").to(device)
    tokens = torch.cat([tokens, tokens], dim=0)  # two rows for guidance, as generate
    tokens = F.pad(F.pad(tokens, (1, 0), value=tts.t3.hp.start_text_token), (0, 1), value=tts.t3.hp.stop_text_token)
    def t3():
        torch.manual_seed(0)
        with torch.inference_mode():
            out = tts.t3.inference(t3_cond=tts.conds.t3, text_tokens=tokens, max_new_tokens=n, temperature=0.8,
                                   cfg_weight=0.5, repetition_penalty=1.2, min_p=0.05, top_p=1.0)
        counts.append(int(out.shape[-1]))
t3_seconds = timed(t3)
speech = torch.randint(0, 6561, (s3_tokens,), generator=torch.Generator().manual_seed(0)).to(device)
def s3gen():
    torch.manual_seed(1)
    tts.s3gen.inference(speech_tokens=speech, ref_dict=dict(tts.conds.gen), n_cfm_timesteps=steps)
s3gen_seconds = timed(s3gen)
print(json.dumps({"t3_seconds": t3_seconds, "t3_tokens": counts[-1], "s3gen_seconds": s3gen_seconds}))
"""


def write(model: str, directory: Path) -> Path:
    """The model's random full-size checkpoint, seed 0."""
    if model == "original":
        from chatterbox.model.random_checkpoint import write_checkpoint

        return write_checkpoint(directory, seed=0)
    if model == "turbo":
        from chatterbox.model.random_checkpoint_turbo import write_turbo_checkpoint

        return write_turbo_checkpoint(directory, seed=0)
    from chatterbox.model.random_checkpoint_mtl import write_mtl_checkpoint

    return write_mtl_checkpoint(directory, seed=0)


def ours(model: str, ckpt: Path, n: int, s3_tokens: int, device: str, repeats: int) -> dict:
    import torch

    def generator(seed: int):
        return torch.Generator(device=device).manual_seed(seed)

    if model == "turbo":
        from chatterbox.tts_turbo import ChatterboxTurboTTS

        tts = ChatterboxTurboTTS.from_local(ckpt, device=device)
        params = {"temperature": 0.8, "top_k": 1000, "top_p": 0.95, "repetition_penalty": 1.2}
    elif model == "original":
        from chatterbox.tts import ChatterboxTTS

        tts = ChatterboxTTS.from_local(ckpt, device=device)
        params = {"cfg_weight": 0.5, "temperature": 0.8, "min_p": 0.05, "top_p": 1.0, "repetition_penalty": 1.2}
    else:
        from chatterbox.mtl_tts import ChatterboxMultilingualTTS

        tts = ChatterboxMultilingualTTS.from_local(ckpt, device=device)
        params = {"cfg_weight": 0.5, "temperature": 0.8, "min_p": 0.05, "top_p": 1.0, "repetition_penalty": 1.2,
                  "language_id": "en"}

    def t3() -> int:
        # Every decoding step counts, as every id the reference returns does: speech.generate would yield only the
        # speech codes (random weights also sample ids >= 6561, which it drops, and the rate would look low)
        request = tts.speech.request(TEXT, tts.conds, max_new_tokens=n, generator=generator(0), **params)
        batch, steps = tts.speech.new_batch(), 0
        with torch.inference_mode():
            batch.add(request)
            while not request.done:
                batch.step()
                steps += 1
        return steps

    counts: list[int] = []
    t3_seconds = timed(lambda: counts.append(t3()), repeats, device)
    speech = torch.randint(0, 6561, (1, s3_tokens), generator=torch.Generator().manual_seed(0)).to(device)
    steps = None if model == "turbo" else S3GEN_STEPS[model]
    s3gen_seconds = timed(lambda: tts.s3gen(speech, tts.conds.gen, generator(1), steps), repeats, device)
    return {"t3_seconds": t3_seconds, "t3_tokens": counts[-1], "s3gen_seconds": s3gen_seconds}


def reference(python: str, model: str, ckpt: Path, n: int, s3_tokens: int, device: str, repeats: int,
              threads: int, cwd: str) -> dict:
    out = subprocess.run([python, "-c", REFERENCE, model, str(ckpt), TEXT, str(n), str(s3_tokens), device,
                          str(repeats), str(threads), str(S3GEN_STEPS[model])],
                         capture_output=True, text=True, cwd=cwd)  # cwd: not our chatterbox
    if out.returncode != 0:
        raise RuntimeError(f"the reference failed on {model}:\n" + out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: original,turbo,multilingual")
    parser.add_argument("--tokens", type=int, default=30, help="T3 speech tokens per run")
    parser.add_argument("--s3gen-tokens", type=int, default=100, help="speech tokens through S3Gen (25 a second)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side after a warm-up (fastest counts)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on both sides (default: torch's)")
    parser.add_argument("--reference-python", default=os.environ.get("CHATTERBOX_REFERENCE_PYTHON",
                                                                     "/tmp/chatterbox-ref-venv/bin/python"))
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}: choose from {', '.join(MODELS)}")
    if args.tokens < 2:
        parser.error("--tokens must be at least 2")

    import torch

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    have_reference = Path(args.reference_python).exists()
    if not have_reference:
        print(f"reference: not run ({args.reference_python} missing: run tools/setup_reference_env.sh)")
    audio_s = args.s3gen_tokens / TOKENS_PER_SECOND
    print(f"T3: {args.tokens} tokens; S3Gen: {args.s3gen_tokens} tokens = {audio_s:.1f} s of audio; {args.device}, "
          f"fp32, {threads} threads; fastest of {args.repeats} after a warm-up", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            started = time.perf_counter()
            ckpt = write(model, Path(tmp) / model)
            mine = ours(model, ckpt, args.tokens, args.s3gen_tokens, args.device, args.repeats)
            gc.collect()
            ref = None
            if have_reference:
                ref = reference(args.reference_python, model, ckpt, args.tokens, args.s3gen_tokens, args.device,
                                args.repeats, threads, tmp)
            shutil.rmtree(ckpt)
            row = {"model": model, "ours": mine, "reference": ref}
            for side in ("ours", "reference"):
                if row[side]:
                    row[side]["t3_rate"] = row[side]["t3_tokens"] / row[side]["t3_seconds"]
                    row[side]["s3gen_rate"] = audio_s / row[side]["s3gen_seconds"]
            if ref:
                row["t3_ratio"] = mine["t3_rate"] / ref["t3_rate"]
                row["s3gen_ratio"] = mine["s3gen_rate"] / ref["s3gen_rate"]
            rows.append(row)
            line = (f"{model}: T3 ours {mine['t3_tokens']} tokens in {mine['t3_seconds']:.2f} s, S3Gen "
                    f"{mine['s3gen_seconds']:.2f} s")
            if ref:
                line += (f"; reference {ref['t3_tokens']} tokens in {ref['t3_seconds']:.2f} s, S3Gen "
                         f"{ref['s3gen_seconds']:.2f} s")
            print(f"{line} ({time.perf_counter() - started:.0f} s with the checkpoint)", flush=True)

    def figure(value, fmt="{:.2f}"):
        return fmt.format(value) if value is not None else "-"

    print()
    print(f"{'model':<14}{'T3 tokens/s: ours':>19}{'reference':>11}{'ratio':>8}"
          f"{'S3Gen s audio/s: ours':>24}{'reference':>11}{'ratio':>8}")
    for row in rows:
        ref = row["reference"] or {}
        print(f"{row['model']:<14}{figure(row['ours']['t3_rate']):>19}{figure(ref.get('t3_rate')):>11}"
              f"{figure(row.get('t3_ratio')):>8}{figure(row['ours']['s3gen_rate']):>24}"
              f"{figure(ref.get('s3gen_rate')):>11}{figure(row.get('s3gen_ratio')):>8}")
    missed = [f"{row['model']} {part}" for row in rows for part in ("T3", "S3Gen")
              if row.get(f"{part.lower()}_ratio", 1.0) < 1.0]
    print(f"ratios ours / reference (target on CPU: >= 1.0 each): "
          f"{'all met' if not missed else 'missed: ' + ', '.join(missed)}")
    print(json.dumps({"tokens": args.tokens, "s3gen_tokens": args.s3gen_tokens, "device": args.device,
                      "threads": threads, "repeats": args.repeats, "models": rows}))


if __name__ == "__main__":
    main()
