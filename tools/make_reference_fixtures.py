"""Make tests/fixtures/reference_t3.pt by running the reference package on deterministic random weights.

Run with the reference environment's Python (made by tools/setup_reference_env.sh), never with ours:

    /tmp/chatterbox-ref-venv/bin/python tools/make_reference_fixtures.py --out tests/fixtures/reference_t3.pt

The weights come from chatterbox/model/random_checkpoint.py, loaded by path (the reference package is also called
``chatterbox``), so our tests regenerate the very same weights without the reference installed. Everything the
file holds is produced by the reference's own code paths (``punc_norm``, ``ChatterboxTTS.generate``,
``prepare_conditionals``, ``T3.inference``); this script only observes them, through thin wrappers around the
objects those paths call. See tools/README.md for the file's contents.
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
RANDOM_CHECKPOINT = ROOT / "chatterbox" / "model" / "random_checkpoint.py"
WEIGHTS_SEED = 0
CLIP_SEED = 2024
THREADS = 1
MAX_NEW_TOKENS = 24
LOGIT_STEPS = 6

TEXTS = [
    # lower-case first letter, ':', '...', ';', ' - ', no final punctuation
    "hello there: this is a test... of the reference; normalization - with a pause",
    # curly double and single quotes, em dash, en dash, '…', ' ...' (becomes ' , ' then ','), no final punctuation
    "\u201cQuoted\u201d words \u2014 with dashes \u2013 and an ellipsis\u2026 it\u2019s \u2018fine\u2019 ...",
    # ' ,', runs of whitespace, trailing spaces, digits
    "Numbers like 42 stay as they are , and   spaces \t collapse   ",
    # already ends in a sentence ender
    "Already finished!",
    # empty text: replaced by a fixed sentence
    "",
]

DEFAULTS = dict(exaggeration=0.5, cfg_weight=0.5, temperature=0.8, min_p=0.05, top_p=1.0, repetition_penalty=1.2)
CASES = [
    dict(text_index=0, cond="builtin", exaggeration=0.5, cfg_weight=0.5, temperature=0.8, min_p=0.05, top_p=1.0,
         repetition_penalty=1.2, seed=1234),
    dict(text_index=1, cond="builtin", exaggeration=0.9, cfg_weight=0.3, temperature=1.1, min_p=0.1, top_p=0.9,
         repetition_penalty=1.3, seed=7),
    dict(text_index=2, cond="clip", **DEFAULTS, seed=42),
]


def synthetic_clip(rate: int = 24000, seconds: float = 4.0, seed: int = CLIP_SEED) -> np.ndarray:
    """A voice-like clip: 8 harmonics on a pitch gliding 110 -> 190 Hz with vibrato, a syllable-like amplitude
    envelope, a little noise, and near-silence (noise at -66 dB) for the first 0.3 s and the last 0.4 s."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    pitch = 110.0 + 80.0 * t / seconds + 6.0 * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum((0.6 / k) * np.sin(k * phase + 0.3 * k) for k in range(1, 9))
    envelope = (0.3 + 0.7 * np.sin(np.pi * 2.5 * t) ** 2) * np.minimum(1.0, np.minimum(t, seconds - t) / 0.5)
    clip = 0.2 * voice * envelope + 0.003 * rng.standard_normal(n)
    head, tail = int(0.3 * rate), int(0.4 * rate)
    clip[:head] = 0.0005 * rng.standard_normal(head)
    clip[-tail:] = 0.0005 * rng.standard_normal(tail)
    return clip.astype(np.float32)


def load_random_checkpoint():
    spec = importlib.util.spec_from_file_location("random_checkpoint", RANDOM_CHECKPOINT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cut_s3_tokenizer(random_checkpoint) -> None:
    """Have the reference build its S3 tokenizer as deep as a small checkpoint's (random_checkpoint.SMALL_DEPTHS:
    1 of its 6 blocks, every width whole)."""
    from s3tokenizer.model_v2 import S3TokenizerV2

    config = next(d for d in S3TokenizerV2.__init__.__defaults__ if hasattr(d, "n_audio_layer"))  # shared default
    config.n_audio_layer = random_checkpoint.SMALL_DEPTHS["tokenizer.encoder.blocks."]


def cut_s3gen(random_checkpoint, s3gen_class: type) -> type:
    """A subclass of the reference's S3Gen cut as a small checkpoint is (SMALL_DEPTHS: the flow encoder's first
    blocks, one mid level of the estimator; SMALL_LEVEL_BLOCKS transformer blocks a level; SMALL_HIFT_DILATIONS
    dilated convolutions in each of HiFT's residual blocks), its module lists cut once built; every width whole."""
    depths = random_checkpoint.SMALL_DEPTHS

    class SmallS3Gen(s3gen_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            encoder, estimator = self.flow.encoder, self.flow.decoder.estimator
            encoder.encoders = encoder.encoders[:depths["flow.encoder.encoders."]]
            encoder.up_encoders = encoder.up_encoders[:depths["flow.encoder.up_encoders."]]
            estimator.mid_blocks = estimator.mid_blocks[:depths["flow.decoder.estimator.mid_blocks."]]
            for level in (*estimator.down_blocks, *estimator.mid_blocks, *estimator.up_blocks):
                level[1] = level[1][:random_checkpoint.SMALL_LEVEL_BLOCKS]  # [resnet, transformer blocks, resample]
            kept = random_checkpoint.SMALL_HIFT_DILATIONS
            for block in (*self.mel2wav.resblocks, *self.mel2wav.source_resblocks):
                for name in ("convs1", "convs2", "activations1", "activations2"):
                    setattr(block, name, getattr(block, name)[:kept])

    return SmallS3Gen


def use_small_depths(random_checkpoint) -> None:
    """Have the reference build its models as deep as a small checkpoint's stacks (random_checkpoint.SMALL_DEPTHS):
    T3's Llama with its first 2 of 30 layers, the S3 tokenizer with 1 of 6 blocks; every width is the full one. The
    reference reads s3gen.safetensors with strict=False, so a block the file lacks would otherwise keep its random
    init without a word."""
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS

    LLAMA_CONFIGS["Llama_520M"]["num_hidden_layers"] = random_checkpoint.SMALL_T3_LAYERS
    cut_s3_tokenizer(random_checkpoint)


class StopAfterT3(Exception):
    """Raised by the T3 wrapper so that generate() stops before S3Gen (only T3 is recorded here)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "reference_t3.pt")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)

    import importlib.metadata as md

    import librosa
    import transformers
    from chatterbox.models.s3tokenizer import drop_invalid_tokens
    from chatterbox.models.t3 import t3 as t3_module
    from chatterbox.tts import ChatterboxTTS, Conditionals, punc_norm

    # ---- observers -------------------------------------------------------------------------------------------
    guided: list[torch.Tensor] = []  # what T3.inference hands to the repetition penalty: cond + cfg * (cond - uncond)
    backend_calls: list[dict] = []  # inputs/outputs of each T3HuggingfaceBackend forward (prefill, then decode)

    class RecordingPenalty(t3_module.RepetitionPenaltyLogitsProcessor):
        def __call__(self, input_ids, scores):
            guided.append(scores.detach().clone())
            return super().__call__(input_ids, scores)

    class RecordingBackend(t3_module.T3HuggingfaceBackend):
        def forward(self, inputs_embeds, *a, **kw):
            out = super().forward(inputs_embeds, *a, **kw)
            backend_calls.append({"inputs_embeds": inputs_embeds.detach().clone(),
                                  "last_hidden": out.hidden_states[-1][:, -1].detach().clone(),
                                  "last_logits": out.logits[:, -1].detach().clone()})
            return out

    t3_module.RepetitionPenaltyLogitsProcessor = RecordingPenalty
    t3_module.T3HuggingfaceBackend = RecordingBackend

    with tempfile.TemporaryDirectory() as tmp:
        random_checkpoint = load_random_checkpoint()
        use_small_depths(random_checkpoint)
        ckpt = random_checkpoint.write_checkpoint(Path(tmp) / "ckpt", seed=WEIGHTS_SEED, small=True)
        tts = ChatterboxTTS.from_local(ckpt, "cpu")
        assert next(tts.t3.parameters()).dtype == torch.float32
        assert len(tts.t3.tfmr.layers) == random_checkpoint.SMALL_T3_LAYERS
        assert len(tts.s3gen.tokenizer.encoder.blocks) == random_checkpoint.SMALL_DEPTHS["tokenizer.encoder.blocks."]

        original_inference = tts.t3.inference
        t3_calls: list[dict] = []
        mode = {"run": False}

        def t3_inference(**kwargs):
            """Stands in for tts.t3.inference inside generate(): records generate()'s arguments, runs T3 with
            max_new_tokens=24 instead of the hard-coded 1000 (only when asked), then stops generate()."""
            record = dict(kwargs)
            if mode["run"]:
                guided.clear()
                backend_calls.clear()
                record["result"] = original_inference(**{**kwargs, "max_new_tokens": MAX_NEW_TOKENS})
            t3_calls.append(record)
            raise StopAfterT3

        tts.t3.inference = t3_inference

        def run_generate(text, *, run, seed=None, **gen_kwargs):
            t3_calls.clear()
            mode["run"] = run
            if seed is not None:
                torch.manual_seed(seed)
            try:
                tts.generate(text, **gen_kwargs)
            except StopAfterT3:
                pass
            assert len(t3_calls) == 1
            return t3_calls[0]

        # ---- text: punc_norm and the token ids generate() hands to T3 ----------------------------------------
        normalized = [punc_norm(t) for t in TEXTS]
        text_tokens = []
        for text in TEXTS:
            call = run_generate(text, run=False)  # builtin voice, defaults (cfg 0.5: the ids come twice)
            ids = call["text_tokens"]
            assert ids.shape[0] == 2 and torch.equal(ids[0], ids[1])
            text_tokens.append([int(i) for i in ids[0]])

        # ---- the clip, through prepare_conditionals ----------------------------------------------------------
        clip24 = synthetic_clip()
        wav_path = Path(tmp) / "clip.wav"
        soundfile.write(wav_path, clip24, 24000, subtype="FLOAT")
        loaded, _ = librosa.load(wav_path, sr=24000)
        assert np.array_equal(loaded, clip24)

        seen: dict = {"ve_in": [], "ve_out": [], "ve_mels": [], "ve_partials": [], "s3": []}
        original_embeds = tts.ve.embeds_from_wavs
        original_s3 = tts.s3gen.tokenizer.forward

        def embeds_from_wavs(wavs, *a, **kw):
            seen["ve_in"].append(np.array(wavs[0], copy=True))
            out = original_embeds(wavs, *a, **kw)
            seen["ve_out"].append(np.array(out, copy=True))
            return out

        def s3_forward(wavs, *a, **kw):
            out = original_s3(wavs, *a, **kw)
            seen["s3"].append({"wav": np.asarray(wavs[0]).copy(), "kw": dict(kw), "tokens": out[0].clone()})
            return out

        def ve_hook(module, inputs, output):  # VoiceEncoder.forward: a batch of partial mels -> their embeddings
            seen["ve_mels"].append(inputs[0].detach().clone())
            seen["ve_partials"].append(output.detach().clone())

        hook = tts.ve.register_forward_hook(ve_hook)
        tts.ve.embeds_from_wavs = embeds_from_wavs
        tts.s3gen.tokenizer.forward = s3_forward
        tts.prepare_conditionals(str(wav_path), exaggeration=DEFAULTS["exaggeration"])
        hook.remove()
        tts.ve.embeds_from_wavs = original_embeds
        tts.s3gen.tokenizer.forward = original_s3
        clip_conds = tts.conds

        clip16 = seen["ve_in"][0]
        assert len(seen["ve_in"]) == 1 and clip16.dtype == np.float32
        assert np.array_equal(clip16, librosa.resample(clip24, orig_sr=24000, target_sr=16000))
        t3_s3 = [c for c in seen["s3"] if c["kw"].get("max_len") == tts.t3.hp.speech_cond_prompt_len]
        assert len(t3_s3) == 1 and np.array_equal(t3_s3[0]["wav"], clip16[: 6 * 16000])
        s3_tokens = clip_conds.t3.cond_prompt_speech_tokens.clone()
        assert torch.equal(s3_tokens, torch.atleast_2d(t3_s3[0]["tokens"]))
        ve_embedding = clip_conds.t3.speaker_emb.clone()
        assert ve_embedding.shape == (1, 256)
        assert torch.equal(ve_embedding, torch.from_numpy(seen["ve_out"][0]).mean(0, keepdim=True))
        ve_partials = torch.cat(seen["ve_partials"])
        ve_mels = torch.cat(seen["ve_mels"])

        def builtin_conds():
            return Conditionals.load(ckpt / "conds.pt", map_location="cpu")

        # ---- T3 cases, through generate() -----------------------------------------------------------------------
        cases = []
        for case in CASES:
            if case["cond"] == "builtin":
                tts.conds = builtin_conds()  # fresh per case: generate() replaces conds.t3 on a new exaggeration
                prompt = {}
            else:
                tts.conds = None
                prompt = {"audio_prompt_path": str(wav_path)}  # generate() runs prepare_conditionals itself
            gen_kwargs = {k: case[k] for k in ("repetition_penalty", "min_p", "top_p", "exaggeration",
                                               "cfg_weight", "temperature")}
            call = run_generate(TEXTS[case["text_index"]], run=True, seed=case["seed"], **prompt, **gen_kwargs)
            cond = call["t3_cond"]
            if case["cond"] == "clip":
                assert torch.equal(cond.speaker_emb, ve_embedding)
                assert torch.equal(cond.cond_prompt_speech_tokens, s3_tokens)
            ids = call["text_tokens"]
            assert [int(i) for i in ids[0]] == text_tokens[case["text_index"]]
            speech = call["result"]
            steps = len(guided)
            assert steps == MAX_NEW_TOKENS == speech.shape[1], (steps, speech.shape)
            assert len(backend_calls) == MAX_NEW_TOKENS + 1  # prefill + one forward after each sampled token
            w = case["cfg_weight"]
            for step in range(LOGIT_STEPS):
                raw = backend_calls[step]["last_logits"]
                cond_l, uncond_l = raw[0:1], raw[1:2]
                assert torch.equal(guided[step], cond_l + torch.as_tensor(w, dtype=raw.dtype) * (cond_l - uncond_l))
            prefill = backend_calls[0]["inputs_embeds"]
            assert torch.equal(prefill[:, -1], prefill[:, -2])  # start-of-speech (pos 0) appears twice
            final = drop_invalid_tokens(speech[0])
            final = final[final < 6561]
            # The keyword arguments generate() passed to T3.inference (tensors summarised), max_new_tokens as run.
            passed = {k: v for k, v in call.items() if k not in ("t3_cond", "text_tokens", "result")}
            assert all(isinstance(v, (int, float)) for v in passed.values()), passed
            passed["generate_max_new_tokens"] = passed["max_new_tokens"]
            passed["max_new_tokens"] = MAX_NEW_TOKENS
            passed["text_tokens_shape"] = list(ids.shape)
            cases.append({
                **case,
                "max_new_tokens": MAX_NEW_TOKENS,
                "t3_inference_kwargs": passed,
                "emotion_adv": float(cond.emotion_adv.view(-1)[0]),
                "guided_logits": torch.cat(guided[:LOGIT_STEPS]).float(),
                "first_hidden": backend_calls[0]["last_hidden"].float(),
                "prefill_embeds": backend_calls[0]["inputs_embeds"].float(),
                "speech_tokens": speech.long().clone(),
                # what generate() would hand to S3Gen: row 0, drop_invalid_tokens, then ids < 6561
                "speech_tokens_final": final.long().clone(),
            })

    fixtures = {
        "meta": {
            "reference": "chatterbox-tts " + md.version("chatterbox-tts") + " (upstream commit 59bc590)",
            "torch": torch.__version__, "transformers": transformers.__version__, "librosa": librosa.__version__,
            "numpy": np.__version__, "s3tokenizer": md.version("s3tokenizer"),
            "attn_implementation": str(tts.t3.tfmr.config._attn_implementation),
            "date": datetime.date.today().isoformat(), "weights_seed": str(WEIGHTS_SEED),
            "clip_seed": str(CLIP_SEED), "threads": str(THREADS), "device": "cpu", "dtype": "float32",
            "max_new_tokens": str(MAX_NEW_TOKENS), "logit_steps": str(LOGIT_STEPS),
        },
        "texts": TEXTS,
        "normalized": normalized,
        "text_tokens": text_tokens,
        "clip_24k": torch.from_numpy(clip24),
        "clip_16k": torch.from_numpy(clip16),
        "ve_embedding": ve_embedding.float(),
        "ve_partial_embeds": ve_partials.float(),
        "ve_partial_mels": ve_mels.float(),
        "s3_tokens": s3_tokens.long(),
        "t3_cases": cases,
    }
    fixtures["meta"] = {k: str(v) for k, v in fixtures["meta"].items()}  # torch.__version__ is not a plain str
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixtures, args.out)
    torch.load(args.out, weights_only=True)  # plain tensors, lists, dicts, numbers and strings only
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
