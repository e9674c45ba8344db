"""Make tests/fixtures/reference_turbo.pt by running the reference's Chatterbox Turbo on deterministic random weights.

Run with the reference environment's Python (tools/setup_reference_env.sh, plus ``pip install pyloudnorm``, which
the reference's ``tts_turbo`` imports), never with ours:

    /tmp/chatterbox-ref-venv/bin/python tools/make_reference_fixtures_turbo.py

The weights and tokenizer files come from chatterbox/model/random_checkpoint_turbo.py (loaded by path: the
reference package is also called ``chatterbox``), the small checkpoint (see use_small_depths), seed 0. Everything
recorded comes from the reference's own code paths (``punc_norm``, ``ChatterboxTurboTTS.generate``,
``prepare_conditionals``, ``T3.inference_turbo``, ``S3Gen.inference``); this script only observes them. See
tools/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

ROOT = Path(__file__).resolve().parents[1]
RANDOM_CHECKPOINT = ROOT / "chatterbox" / "model" / "random_checkpoint_turbo.py"
WEIGHTS_SEED = 0
CLIP_SEED = 2025
CLIP_SECONDS = 6.0  # an even number of 24 kHz mel frames: see tools/README.md (Turbo)
THREADS = 1
MAX_GEN_LEN = 7  # inference_turbo's cap: it samples cap + 1 tokens (one from the prefill, one per loop step)
LOGIT_STEPS = 3
WAVE_SEED = 21
WAVE_TOKENS = 12

TEXTS = [
    # tags, an ellipsis that Turbo keeps (the original would turn it into a comma), ';' and ' - ' kept too
    "hello there [laugh] this is a test... of Turbo; it keeps - these",
    # curly quotes, em and en dashes, '…', ':', ' ,', a tag at the start and two in a row, no final punctuation
    "[sigh] \u201cQuoted\u201d words \u2014 with dashes \u2013 and an ellipsis\u2026 it\u2019s \u2018fine\u2019 , ok: "
    "[cough][chuckle] right",
    # whitespace runs, digits, a two-word tag, text already ending in '!'
    "Numbers like 42   stay \t as they are [clear throat] and   spaces collapse!",
    # characters outside ASCII, a bracket that is not a tag, a tag glued to words
    "Na\u00efve caf\u00e9 [not a tag] word[gasp]word?",
    # empty text: replaced by a fixed sentence
    "",
]

CASES = [
    dict(text_index=0, cond="builtin", temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2, seed=1234),
    dict(text_index=1, cond="builtin", temperature=1.3, top_k=50, top_p=0.8, repetition_penalty=2.0, seed=7),
    dict(text_index=2, cond="clip", temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2, seed=42),
]


def load_by_path(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use_small_depths(t3_fixtures, base) -> None:
    """Have the reference build Turbo as deep as a small checkpoint's stacks (``base``: random_checkpoint, whose
    SMALL_DEPTHS say what a small file keeps): GPT-2 with 2 of its 24 blocks, the S3 tokenizer with 1 of 6, and
    S3Gen's flow cut as the file is (t3_fixtures.cut_s3gen). Every width is the full one; the reference then loads
    the small files with its own strict=True, which proves the cut is the file's."""
    from chatterbox import tts_turbo
    from chatterbox.models.t3.llama_configs import GPT2_MEDIUM_CONFIG

    GPT2_MEDIUM_CONFIG["n_layer"] = base.SMALL_DEPTHS["tfmr.h."]
    t3_fixtures.cut_s3_tokenizer(base)
    tts_turbo.S3Gen = t3_fixtures.cut_s3gen(base, tts_turbo.S3Gen)


class StopAfterT3(Exception):
    """Raised by the T3 wrapper so that generate() stops before S3Gen when only T3 is recorded."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "reference_turbo.pt")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(THREADS)

    import importlib.metadata as md

    import librosa
    import transformers
    from chatterbox import tts_turbo
    from chatterbox.tts_turbo import ChatterboxTurboTTS, Conditionals, punc_norm

    t3_fixtures = load_by_path(ROOT / "tools" / "make_reference_fixtures.py", "t3_fixtures")
    synthetic_clip = t3_fixtures.synthetic_clip
    base = t3_fixtures.load_random_checkpoint()
    use_small_depths(t3_fixtures, base)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = load_by_path(RANDOM_CHECKPOINT, "random_checkpoint_turbo").write_turbo_checkpoint(
            Path(tmp) / "ckpt", seed=WEIGHTS_SEED, small=True)
        tts = ChatterboxTurboTTS.from_local(ckpt, "cpu")
        assert len(tts.t3.tfmr.h) == base.SMALL_DEPTHS["tfmr.h."]
        tts.watermarker.apply_watermark = lambda wav, sample_rate: wav  # compare before the watermark
        assert next(tts.t3.parameters()).dtype == torch.float32
        assert not hasattr(tts.t3.tfmr, "wte")

        # ---- observers -----------------------------------------------------------------------------------------
        original_inference = tts.t3.inference_turbo
        calls: list[dict] = []
        mode = {"run": False, "stop": True}
        logits_seen: list[torch.Tensor] = []
        tts.t3.speech_head.register_forward_hook(lambda m, i, out: logits_seen.append(out[0, -1].detach().clone()))

        def t3_inference(**kwargs):
            """Stands in for t3.inference_turbo inside generate(): records its arguments, runs it with
            max_gen_len=MAX_GEN_LEN instead of 1000 (only when asked), then stops generate() unless told not to."""
            record = dict(kwargs)
            if mode["run"]:
                logits_seen.clear()
                record["result"] = original_inference(**{**kwargs, "max_gen_len": MAX_GEN_LEN})
                record["logits"] = torch.stack(logits_seen[:LOGIT_STEPS])
            calls.append(record)
            if mode["stop"]:
                raise StopAfterT3
            return record["result"]

        tts.t3.inference_turbo = t3_inference

        def run_generate(text, *, run, stop=True, seed=None, **kwargs):
            calls.clear()
            mode.update(run=run, stop=stop)
            if seed is not None:
                torch.manual_seed(seed)
            wav = None
            try:
                wav = tts.generate(text, **kwargs)
            except StopAfterT3:
                pass
            assert len(calls) == 1
            return calls[0], wav

        # ---- text -------------------------------------------------------------------------------------------------
        normalized = [punc_norm(t) for t in TEXTS]
        text_tokens = []
        for text in TEXTS:
            call, _ = run_generate(text, run=False)
            ids = call["text_tokens"]
            assert ids.shape[0] == 1
            text_tokens.append([int(i) for i in ids[0]])

        # ---- the clip, through prepare_conditionals (with loudness normalization) ---------------------------------
        clip24 = synthetic_clip(seconds=CLIP_SECONDS, seed=CLIP_SEED)
        wav_path = Path(tmp) / "clip.wav"
        soundfile.write(wav_path, clip24, 24000, subtype="FLOAT")
        loaded, _ = librosa.load(wav_path, sr=24000)
        assert np.array_equal(loaded, clip24)
        normed = tts.norm_loudness(clip24.copy(), 24000)
        tts.prepare_conditionals(str(wav_path), exaggeration=0.0)
        clip_conds = tts.conds
        short_path = Path(tmp) / "short.wav"
        soundfile.write(short_path, clip24[: 24000 * 4], 24000, subtype="FLOAT")
        try:
            tts.prepare_conditionals(str(short_path))
            raise SystemExit("the reference accepted a 4 s clip")
        except AssertionError as exc:
            short_clip_error = str(exc)

        def builtin_conds():
            return Conditionals.load(ckpt / "conds.pt", map_location="cpu")

        # ---- T3 cases, through generate() -------------------------------------------------------------------------
        cases = []
        for case in CASES:
            if case["cond"] == "builtin":
                tts.conds = builtin_conds()
                prompt = {}
            else:
                tts.conds = None
                prompt = {"audio_prompt_path": str(wav_path)}
            kwargs = {k: case[k] for k in ("temperature", "top_k", "top_p", "repetition_penalty")}
            call, _ = run_generate(TEXTS[case["text_index"]], run=True, seed=case["seed"], **prompt, **kwargs)
            assert [int(i) for i in call["text_tokens"][0]] == text_tokens[case["text_index"]]
            if case["cond"] == "clip":
                assert torch.equal(call["t3_cond"].speaker_emb, clip_conds.t3.speaker_emb)
            speech = call["result"]
            assert speech.shape == (1, MAX_GEN_LEN + 1), speech.shape  # random weights never sample stop early
            final = speech[speech < 6561]
            cases.append({**case, "max_gen_len": MAX_GEN_LEN,
                          "inference_kwargs": {k: v for k, v in call.items()
                                               if k not in ("t3_cond", "text_tokens", "result", "logits")},
                          "speech_tokens": speech.long().clone(), "speech_tokens_final": final.long().clone(),
                          "logits": call["logits"].float()})

        # ---- S3Gen alone: fixed tokens (+ the three silence tokens), built-in voice, seeded --------------------------
        gen = dict(builtin_conds().gen)
        wave_tokens = torch.randint(0, 6561, (WAVE_TOKENS,), generator=torch.Generator().manual_seed(9))
        wave_tokens = torch.cat([wave_tokens, torch.full((3,), 4299)])
        torch.manual_seed(WAVE_SEED)
        wave_mels = tts.s3gen.flow_inference(wave_tokens, ref_dict=dict(gen), n_cfm_timesteps=2, finalize=True)
        torch.manual_seed(WAVE_SEED)
        wave, _ = tts.s3gen.inference(speech_tokens=wave_tokens, ref_dict=dict(gen), n_cfm_timesteps=2)

        # ---- end to end: generate() with a seed, T3 capped, built-in voice -----------------------------------------
        tts.conds = builtin_conds()
        e2e_seed = 5
        call, e2e_wav = run_generate(TEXTS[0], run=True, stop=False, seed=e2e_seed)
        e2e_tokens = call["result"].long().clone()

    fixtures = {
        "meta": {
            "reference": "chatterbox-tts " + md.version("chatterbox-tts") + " (upstream commit 59bc590), tts_turbo",
            "torch": torch.__version__, "transformers": transformers.__version__, "librosa": librosa.__version__,
            "numpy": np.__version__, "s3tokenizer": md.version("s3tokenizer"),
            "pyloudnorm": md.version("pyloudnorm"),
            "attn_implementation": str(tts.t3.tfmr.config._attn_implementation),
            "date": datetime.date.today().isoformat(), "weights_seed": str(WEIGHTS_SEED),
            "clip_seed": str(CLIP_SEED), "clip_seconds": str(CLIP_SECONDS), "threads": str(THREADS),
            "device": "cpu", "dtype": "float32", "max_gen_len": str(MAX_GEN_LEN), "logit_steps": str(LOGIT_STEPS),
            "tokenizer_len": str(len(tts.tokenizer)), "module": tts_turbo.__file__,
        },
        "texts": TEXTS,
        "normalized": normalized,
        "text_tokens": text_tokens,
        "clip_24k": torch.from_numpy(clip24),
        "clip_normalized": torch.from_numpy(np.asarray(normed, dtype=np.float32)),
        "clip_conds": {
            "speaker_emb": clip_conds.t3.speaker_emb.float().clone(),
            "prompt_tokens": clip_conds.t3.cond_prompt_speech_tokens.long().clone(),
            "gen_prompt_token": clip_conds.gen["prompt_token"].long().clone(),
            "gen_prompt_feat": clip_conds.gen["prompt_feat"].float().clone(),
            "gen_embedding": clip_conds.gen["embedding"].float().clone(),
        },
        "short_clip_error": short_clip_error,
        "t3_cases": cases,
        "s3gen": {"tokens": wave_tokens.long(), "seed": WAVE_SEED, "mels": wave_mels.float(), "wav": wave.float()},
        "end_to_end": {"text_index": 0, "seed": e2e_seed, "speech_tokens": e2e_tokens, "wav": e2e_wav.float()},
    }
    fixtures["meta"] = {k: str(v) for k, v in fixtures["meta"].items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixtures, args.out)
    torch.load(args.out, weights_only=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
