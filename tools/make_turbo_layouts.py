"""Write chatterbox/model/layouts/checkpoint-t3-turbo.txt and checkpoint-s3gen-meanflow.txt: every tensor (name,
shape, dtype) of Turbo's official files ``t3_turbo_v1.safetensors`` and ``s3gen_meanflow.safetensors``, as the
reference's modules name them (their state dicts are what the reference's ``from_local`` loads strictly).

Run with the reference environment's Python (tools/setup_reference_env.sh, plus ``pyloudnorm``, which
``chatterbox.tts_turbo`` imports):

    /tmp/chatterbox-ref-venv/bin/python tools/make_turbo_layouts.py

``ve.safetensors`` is the original model's file (layouts/checkpoint-ve.txt).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ROOT / "chatterbox" / "model" / "layouts"


def turbo_t3_config():
    """The T3 hyper-parameters ``ChatterboxTurboTTS.from_local`` sets (the reference builds them the same way)."""
    from chatterbox.models.t3.modules.t3_config import T3Config

    hp = T3Config(text_tokens_dict_size=50276)
    hp.llama_config_name = "GPT2_medium"
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    return hp


def write(path: Path, state: dict[str, torch.Tensor]) -> None:
    lines = [f"{name}\t{tuple(t.shape)}\t{t.dtype}" for name, t in state.items()]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path} ({len(lines)} tensors, {sum(t.numel() for t in state.values()) / 1e6:.1f} M values)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=LAYOUTS)
    args = parser.parse_args()
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3

    with torch.device("meta"):  # shapes only: nothing is computed or initialized
        t3 = T3(turbo_t3_config())
        s3gen = S3Gen(meanflow=True)
    write(args.out / "checkpoint-t3-turbo.txt", t3.state_dict())
    write(args.out / "checkpoint-s3gen-meanflow.txt", s3gen.state_dict())


if __name__ == "__main__":
    main()
