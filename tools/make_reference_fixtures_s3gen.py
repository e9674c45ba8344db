"""Make tests/fixtures/reference_s3gen.pt: what the reference's S3Gen parts produce on seeded random weights.

Run with the reference environment's Python (tools/setup_reference_env.sh):

    /tmp/chatterbox-ref-venv/bin/python tools/make_reference_fixtures_s3gen.py

So far: the 24 kHz reference mel of the synthetic clip; the HiFT vocoder's waveform (and its sine source) for a
fixed mel with a fixed seed; the flow's mels for fixed tokens with the first 2 s of the built-in voice (10 and 3 steps; the
reference crashes on finalize=False, so that path has no fixture). CAMPPlus has its own fixture script.
"""
from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_SEED = 0
HIFT_SEED = 11
FLOW_SEED = 13
FLOW_PROMPT_TOKENS = 50  # 2 s of S3Gen prompt (25 tokens, 50 mel frames a second)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "reference_s3gen.pt")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from chatterbox.tts import ChatterboxTTS

    import make_reference_fixtures as t3_fixtures  # beside this script, so on sys.path when it runs

    random_checkpoint = t3_fixtures.load_random_checkpoint()
    clip24 = torch.from_numpy(t3_fixtures.synthetic_clip())

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = random_checkpoint.write_checkpoint(Path(tmp) / "ckpt", seed=WEIGHTS_SEED)
        s3gen = ChatterboxTTS.from_local(ckpt, "cpu").s3gen
        with torch.inference_mode():
            mel_24k = s3gen.mel_extractor(clip24[None])  # (1, 80, frames)
            g = torch.Generator().manual_seed(5)
            hift_mel = (torch.randn(1, 80, 40, generator=g) * 1.5 - 6.0).float()
            torch.manual_seed(HIFT_SEED)
            hift_wav, hift_source = s3gen.mel2wav.inference(speech_feat=hift_mel)
            hift_f0 = s3gen.mel2wav.f0_predictor(hift_mel)
            # The flow, finalized, with the first 2 s of the built-in voice's prompt (conds.pt's "gen" half): the
            # flow's cost grows with prompt and tokens together, and its whole 10 s made this the suite's slowest
            # model test (43 s of a 2-core CPU) without exercising anything 2 s does not.
            gen = torch.load(ckpt / "conds.pt", weights_only=True)["gen"]
            gen = random_checkpoint.prompt_head(gen, FLOW_PROMPT_TOKENS)
            flow_tokens = torch.randint(0, 6561, (1, 20), generator=torch.Generator().manual_seed(9))
            torch.manual_seed(FLOW_SEED)
            flow_mels = s3gen.flow_inference(flow_tokens, ref_dict=dict(gen), finalize=True)
            torch.manual_seed(FLOW_SEED)
            flow_mels_3 = s3gen.flow_inference(flow_tokens, ref_dict=dict(gen), finalize=True, n_cfm_timesteps=3)

    torch.save({
        "meta": {"reference": "chatterbox-tts 0.1.7", "torch": str(torch.__version__),
                 "date": datetime.date.today().isoformat(), "weights_seed": str(WEIGHTS_SEED), "threads": "1"},
        "clip_24k": clip24, "mel_24k": mel_24k.float(),
        "hift": {"mel": hift_mel, "seed": HIFT_SEED, "f0": hift_f0.float(), "source": hift_source.float(),
                 "wav": hift_wav.float()},
        "flow": {"tokens": flow_tokens, "seed": FLOW_SEED, "prompt_tokens": FLOW_PROMPT_TOKENS, "mels": flow_mels.float(), "mels_3_steps": flow_mels_3.float()},
    }, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
