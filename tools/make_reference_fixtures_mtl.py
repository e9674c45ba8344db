"""Make tests/fixtures/reference_mtl.pt by running the reference Chatterbox Multilingual (chatterbox-tts 0.1.7,
``mtl_tts.py``) on deterministic random weights. Run with the reference environment's Python, never with ours:

    /tmp/chatterbox-ref-venv/bin/python tools/make_reference_fixtures_mtl.py --out tests/fixtures/reference_mtl.pt

The weights are chatterbox/model/random_checkpoint_mtl.py's (its small checkpoint, with T3 as deep as its
alignment guard reads: see use_small_depths), loaded from our source tree under another
package name (the reference package is also called ``chatterbox``). pkuseg cannot download its model here, and
the reference would then fail to load for every language: its segmenter is set to None before loading, which is
what our Chinese front end does in that case (no segmentation). See tools/README.md for the file's contents.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # Cangjie5_TC.json comes from the cache layout made below

import numpy as np
import soundfile
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_SEED = 0
THREADS = 1
HUB_REVISION = "0" * 40

TEXTS = {
    "en": "hello there: this is a test of the multilingual model",
    "de": "Grüß Gott! Die Straße ist schön",
    "fr": "C'est l'été\u2026 où êtes-vous ?",
    "es": "¿Dónde está la biblioteca?",
    "el": "Γειά σου κόσμε",
    "ja": "今日は東京へ行きます。カタカナとひらがな",
    "zh": "你好，我很好。今天是大家的中國人入山",
    "ko": "안녕하세요, 반갑습니다",
    "ar": "مرحبا بالعالم، كيف حالك؟",
    "hi": "नमस्ते दुनिया। आप कैसे हैं?",
    "he": "שלום עולם",
    "ru": "Привет, мир! Ёлка",
}

CASES = [
    # A short text (6 text tokens): the guard's completion, tail and repetition checks come into play early.
    dict(language="en", text="Hi.", cond="builtin", exaggeration=0.5, cfg_weight=0.5, temperature=0.8,
         repetition_penalty=2.0, min_p=0.05, top_p=1.0, seed=1234, max_new_tokens=40),
    dict(language="ja", text=TEXTS["ja"], cond="builtin", exaggeration=0.8, cfg_weight=0.3, temperature=1.0,
         repetition_penalty=1.2, min_p=0.05, top_p=1.0, seed=7, max_new_tokens=24),
    dict(language="de", text=TEXTS["de"], cond="clip", exaggeration=0.5, cfg_weight=0.0, temperature=0.8,
         repetition_penalty=1.2, min_p=0.05, top_p=1.0, seed=42, max_new_tokens=24),
]
WAVEFORM = dict(tokens_seed=5, tokens=40, seed=99)  # fixed tokens through S3Gen with the small built-in voice


def load_ours():
    """Our chatterbox/model as the package ``ourmodel`` (only its torch-only modules are imported)."""
    spec = importlib.util.spec_from_file_location("ourmodel", ROOT / "chatterbox" / "model" / "__init__.py",
                                                  submodule_search_locations=[str(ROOT / "chatterbox" / "model")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["ourmodel"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("ourmodel.random_checkpoint_mtl"), importlib.import_module(
        "ourmodel.random_checkpoint")


def english_fixtures():
    """tools/make_reference_fixtures.py: its synthetic clip, and its cuts of the reference to a small checkpoint."""
    spec = importlib.util.spec_from_file_location("english_fixtures", ROOT / "tools" / "make_reference_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use_small_depths(ours_mtl, ours, cuts) -> None:
    """Have the reference build Multilingual as the checkpoint below is cut: T3's Llama with the GUARD_LAYERS (14 of
    30) that its alignment analyzer reads, the S3 tokenizer and S3Gen as a small checkpoint's (``cuts``:
    english_fixtures(), its cut_s3_tokenizer and cut_s3gen). Every width is the full one; the reference loads T3
    and S3Gen strict, which proves the cuts are the files'."""
    from chatterbox import mtl_tts
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS

    LLAMA_CONFIGS["Llama_520M"]["num_hidden_layers"] = ours_mtl.GUARD_LAYERS
    cuts.cut_s3_tokenizer(ours)
    mtl_tts.S3Gen = cuts.cut_s3gen(ours, mtl_tts.S3Gen)


class StopAfterT3(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "reference_mtl.pt")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)

    import importlib.metadata as md

    import transformers
    from chatterbox.models.tokenizers import tokenizer as tok_module
    from chatterbox import mtl_tts

    ours_mtl, ours = load_ours()
    english = english_fixtures()
    use_small_depths(ours_mtl, ours, english)
    with tempfile.TemporaryDirectory() as tmp:
        # The small checkpoint, with T3 as deep as its alignment guard reads (the small file's 2 layers have none).
        ckpt = ours_mtl.write_mtl_checkpoint(Path(tmp) / "ckpt", seed=WEIGHTS_SEED, small=True)
        save_file(ours_mtl.guard_t3_state_dict(WEIGHTS_SEED), str(ckpt / ours_mtl.T3_FILE))
        snap = ckpt / "models--ResembleAI--chatterbox" / "snapshots" / HUB_REVISION
        snap.mkdir(parents=True)
        (snap / "Cangjie5_TC.json").write_bytes((ckpt / "Cangjie5_TC.json").read_bytes())
        (ckpt / "models--ResembleAI--chatterbox" / "refs").mkdir()
        (ckpt / "models--ResembleAI--chatterbox" / "refs" / "main").write_text(HUB_REVISION)
        (ckpt / "Cangjie5_TC.json").unlink()  # the reference must find it in the cache layout

        tok_module.ChineseCangjieConverter._init_segmenter = lambda self: setattr(self, "segmenter", None)
        tts = mtl_tts.ChatterboxMultilingualTTS.from_local(ckpt, "cpu")
        assert len(tts.t3.tfmr.layers) == ours_mtl.GUARD_LAYERS
        assert tts.tokenizer.cangjie_converter.word2cj, "Cangjie5_TC.json was not found"

        original_inference = tts.t3.inference
        calls: list[dict] = []
        mode = {"cap": None}

        def t3_inference(**kwargs):
            record = dict(kwargs)
            if mode["cap"]:
                record["result"] = original_inference(**{**kwargs, "max_new_tokens": mode["cap"]})
                record["analyzer"] = tts.t3.patched_model.alignment_stream_analyzer
            calls.append(record)
            raise StopAfterT3

        tts.t3.inference = t3_inference

        def run_generate(text, language, cap=None, seed=None, **kw):
            calls.clear()
            mode["cap"] = cap
            if seed is not None:
                torch.manual_seed(seed)
            try:
                tts.generate(text, language, **kw)
            except StopAfterT3:
                pass
            assert len(calls) == 1
            return calls[0]

        builtin = mtl_tts.Conditionals.load(ckpt / "conds.pt")
        tts.conds = builtin
        texts = {}
        for lang, text in TEXTS.items():
            ids = run_generate(text, lang)["text_tokens"]
            assert ids.shape[0] == 2 and torch.equal(ids[0], ids[1])
            texts[lang] = {"text": text, "normalized": mtl_tts.punc_norm(text),
                           "text_tokens": [int(i) for i in ids[0]],
                           "decoded": tts.tokenizer.decode(ids[0, 1:-1])}

        clip24 = english.synthetic_clip()
        wav_path = Path(tmp) / "clip.wav"
        soundfile.write(wav_path, clip24, 24000, subtype="FLOAT")

        cases = []
        for case in CASES:
            if case["cond"] == "builtin":
                tts.conds = mtl_tts.Conditionals.load(ckpt / "conds.pt")
                prompt = {}
            else:
                tts.conds = None
                prompt = {"audio_prompt_path": str(wav_path)}
            kw = {k: case[k] for k in ("exaggeration", "cfg_weight", "temperature", "repetition_penalty", "min_p",
                                       "top_p")}
            call = run_generate(case["text"], case["language"], cap=case["max_new_tokens"], seed=case["seed"],
                                **prompt, **kw)
            assert call["analyzer"] is not None  # the multilingual T3 decodes with the alignment analyzer
            speech = call["result"].long().clone()
            cond = call["t3_cond"]
            cases.append({**case, "text_tokens": [int(i) for i in call["text_tokens"][0]],
                          "speaker_emb": cond.speaker_emb.float().clone(),
                          "cond_prompt_speech_tokens": cond.cond_prompt_speech_tokens.long().clone(),
                          "emotion_adv": float(cond.emotion_adv.view(-1)[0]),
                          "speech_tokens": speech,  # (1, n): T3.inference's output, stop included if sampled
                          "stopped": bool((speech == 6562).any()),
                          "alignment_frames": int(call["analyzer"].alignment.shape[0])})
            print(case["language"], "tokens", speech.shape[1], "stopped", cases[-1]["stopped"], flush=True)

        # ---- one waveform: fixed tokens, the small built-in voice, a seed --------------------------------------
        small = ours.random_conds(WEIGHTS_SEED, prompt_tokens=25, gen_tokens=50)
        g = torch.Generator().manual_seed(WAVEFORM["tokens_seed"])
        tokens = torch.randint(0, 6561, (1, WAVEFORM["tokens"]), generator=g)
        torch.manual_seed(WAVEFORM["seed"])
        with torch.inference_mode():
            wav, _ = tts.s3gen.inference(speech_tokens=tokens[0], ref_dict=small["gen"])

        # ---- what the reference does with ids past the speech codes (FACTS: it crashes in S3Gen) ---------------
        try:
            with torch.inference_mode():
                tts.s3gen.inference(speech_tokens=torch.tensor([1, 2, 6563, 4] * 3), ref_dict=small["gen"])
            invalid_ids = "no error"
        except Exception as exc:
            invalid_ids = f"{type(exc).__name__}: {str(exc)[:120]}"

    meta = {
        "reference": f"chatterbox-tts {md.version('chatterbox-tts')}", "torch": str(torch.__version__),
        "transformers": str(transformers.__version__), "tokenizers": md.version("tokenizers"),
        "pykakasi": md.version("pykakasi"), "numpy": str(np.__version__),
        "date": datetime.date.today().isoformat(), "weights_seed": str(WEIGHTS_SEED), "threads": str(THREADS),
        "device": "cpu", "dtype": "float32", "pkuseg": "segmenter None (its model cannot be downloaded here)",
        "dicta": "Dicta() fails without a model path: no diacritics", "russian_stresser": "not installed",
        "reference_invalid_ids": invalid_ids,
    }
    out = {"meta": meta, "texts": texts, "cases": cases,
           "waveform": {**WAVEFORM, "speech_tokens": tokens, "wav": wav.float().clone()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
