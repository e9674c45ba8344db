"""Make tests/fixtures/reference_t3.pt by running the reference package on deterministic random weights.

Run with the reference environment's Python (tools/setup_reference_env.sh):

    /tmp/chatterbox-ref-venv/bin/python tools/make_reference_fixtures.py --out tests/fixtures/reference_t3.pt

The weights come from chatterbox/model/random_checkpoint.py, loaded by path (the reference package is also
called ``chatterbox``), so our tests can regenerate the very same weights without the reference installed.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_SEED = 0
TEXTS = [
    "hello there: this is a test... of the reference; normalization",
    "\u201cQuoted\u201d words \u2014 with dashes \u2013 and an ellipsis\u2026 end",
    "Numbers like 42 stay as they are , and spaces   collapse",
    "Already finished!",
    "",
]
MAX_NEW_TOKENS = 24
LOGIT_STEPS = 6
CASES = [
    dict(text_index=0, cond="builtin", exaggeration=0.5, cfg_weight=0.5, temperature=0.8, min_p=0.05, top_p=1.0,
         repetition_penalty=1.2, seed=1234),
    dict(text_index=1, cond="builtin", exaggeration=0.9, cfg_weight=0.3, temperature=1.1, min_p=0.1, top_p=0.9,
         repetition_penalty=1.3, seed=7),
    dict(text_index=2, cond="clip", exaggeration=0.5, cfg_weight=0.5, temperature=0.8, min_p=0.05, top_p=1.0,
         repetition_penalty=1.2, seed=42),
]


def synthetic_clip(rate: int = 24000, seconds: float = 4.0) -> np.ndarray:
    """A voice-like clip: harmonics on a gliding pitch, a syllable-like envelope, noise, silence at both ends."""
    rng = np.random.default_rng(2024)
    t = np.arange(int(rate * seconds)) / rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum((0.5 / k) * np.sin(k * phase) for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    clip = 0.25 * voice * envelope + 0.005 * rng.standard_normal(len(t))
    clip[: int(0.3 * rate)] = 0.0005 * rng.standard_normal(int(0.3 * rate))
    clip[-int(0.4 * rate):] = 0.0005 * rng.standard_normal(int(0.4 * rate))
    return clip.astype(np.float32)


def load_random_checkpoint():
    spec = importlib.util.spec_from_file_location("random_checkpoint",
                                                  ROOT / "chatterbox" / "model" / "random_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "reference_t3.pt")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import librosa
    import transformers
    from chatterbox.models.t3 import t3 as t3_module
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.tts import ChatterboxTTS, punc_norm

    captured: list[torch.Tensor] = []

    class RecordingPenalty(t3_module.RepetitionPenaltyLogitsProcessor):
        # The reference hands the guided logits (cond + cfg * (cond - uncond)) to this processor first.
        def __call__(self, input_ids, scores):
            captured.append(scores[0].detach().clone())
            return super().__call__(input_ids, scores)

    t3_module.RepetitionPenaltyLogitsProcessor = RecordingPenalty

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = load_random_checkpoint().write_checkpoint(Path(tmp) / "ckpt", seed=WEIGHTS_SEED)
        tts = ChatterboxTTS.from_local(ckpt, "cpu")

        normalized = [punc_norm(t) for t in TEXTS]
        text_tokens = []
        for text in normalized:
            ids = tts.tokenizer.text_to_tokens(text)
            ids = F.pad(F.pad(ids, (1, 0), value=tts.t3.hp.start_text_token), (0, 1), value=tts.t3.hp.stop_text_token)
            text_tokens.append([int(i) for i in ids[0]])

        clip24 = synthetic_clip()
        wav_path = Path(tmp) / "clip.wav"
        soundfile.write(wav_path, clip24, 24000, subtype="FLOAT")
        loaded24, _ = librosa.load(wav_path, sr=24000)
        assert np.array_equal(loaded24, clip24)
        clip16 = librosa.resample(loaded24, orig_sr=24000, target_sr=16000)
        ve_embedding = torch.from_numpy(tts.ve.embeds_from_wavs([clip16], sample_rate=16000)).mean(0, keepdim=True)
        s3_tokens, _ = tts.s3gen.tokenizer.forward([clip16[: 6 * 16000]], max_len=150)

        tts.prepare_conditionals(str(wav_path), exaggeration=0.5)
        clip_cond = tts.conds.t3
        assert torch.allclose(clip_cond.speaker_emb.float(), ve_embedding.float())
        builtin = ChatterboxTTS.from_local(ckpt, "cpu").conds.t3

        cases = []
        for case in CASES:
            base = builtin if case["cond"] == "builtin" else clip_cond
            cond = T3Cond(speaker_emb=base.speaker_emb, cond_prompt_speech_tokens=base.cond_prompt_speech_tokens,
                          emotion_adv=case["exaggeration"] * torch.ones(1, 1, 1))
            tokens = torch.tensor([text_tokens[case["text_index"]]])
            tokens = torch.cat([tokens, tokens], dim=0)
            captured.clear()
            torch.manual_seed(case["seed"])
            speech = tts.t3.inference(t3_cond=cond, text_tokens=tokens, max_new_tokens=MAX_NEW_TOKENS,
                                      temperature=case["temperature"], cfg_weight=case["cfg_weight"],
                                      repetition_penalty=case["repetition_penalty"], min_p=case["min_p"],
                                      top_p=case["top_p"])
            cases.append({**case, "max_new_tokens": MAX_NEW_TOKENS,
                          "guided_logits": torch.stack(captured[:LOGIT_STEPS]).float(),
                          "speech_tokens": speech.view(-1).long()})

    fixtures = {
        "meta": {"reference": "chatterbox-tts 0.1.7", "torch": str(torch.__version__),
                 "transformers": str(transformers.__version__), "librosa": str(librosa.__version__),
                 "date": datetime.date.today().isoformat(), "weights_seed": str(WEIGHTS_SEED), "threads": "1"},
        "texts": TEXTS, "normalized": normalized, "text_tokens": text_tokens,
        "clip_24k": torch.from_numpy(clip24), "clip_16k": torch.from_numpy(clip16.astype(np.float32)),
        "ve_embedding": ve_embedding.float(), "s3_tokens": s3_tokens.long(), "t3_cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixtures, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
