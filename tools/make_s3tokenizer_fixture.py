"""Write tests/fixtures/s3tokenizer_v2.pt: what the ``s3tokenizer`` package's S3TokenizerV2 computes, so that
tests/test_model_s3tokenizer.py can check our network (chatterbox/model/s3tokenizer.py) without the package.

Needs the ``s3tokenizer`` package (0.3.0 made the committed file), which chatterbox-jobs no longer depends on, and
what it imports at its top (torchaudio, onnx, einops): run it with a Python that has them, e.g. a throwaway venv
with `pip install s3tokenizer` and this repository on its path. The inputs and weights are drawn through the test
module's own functions (fixture_mels, fixture_weights: seeded, from integers and chatterbox.model.random_checkpoint)
and only their seeds are saved. CPU, one thread, float32; a few seconds; about 200 KB.

    python tools/make_s3tokenizer_fixture.py [--out tests/fixtures/s3tokenizer_v2.pt]

For each case: the tokens and their lengths, the token count of each window the encoder saw (a clip, or a 30 s
window of a long clip), the FSQ projection (the 8 numbers before tanh and rounding) of every token within each
window, and for the short cases the encoder's whole output.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_model_s3tokenizer import (CASES, CONFIG, SHORT_CASES, WEIGHTS_SEED, fixture_mels,  # noqa: E402
                                          fixture_weights, run_with_taps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "s3tokenizer_v2.pt")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2

    model = S3TokenizerV2("speech_tokenizer_v2_25hz", ModelConfig(
        n_mels=CONFIG.n_mels, n_audio_state=CONFIG.dim, n_audio_head=CONFIG.n_heads, n_audio_layer=CONFIG.n_layers))
    model.load_state_dict(fixture_weights({k: v.shape for k, v in model.state_dict().items()}), strict=True)
    model.eval()

    cases = {}
    for name, (seed, lengths) in CASES.items():
        mel, mel_len = fixture_mels(seed, lengths, CONFIG.n_mels)
        out = run_with_taps(model, model.encoder, model.quantizer._codebook.project_down, mel, mel_len)
        case = {"seed": seed, "lengths": lengths, "tokens": out["tokens"].to(torch.int16),
                "token_lens": out["token_lens"], "window_lens": out["window_lens"],
                "projected": out["projected"].clone()}
        if name in SHORT_CASES:
            case["hidden"] = out["hidden"].clone()
        cases[name] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in case.items()}
        print(name, lengths, "->", out["token_lens"].tolist(), "tokens in windows of", out["window_lens"].tolist())

    torch.save({"meta": {"s3tokenizer": md.version("s3tokenizer"), "torch": str(torch.__version__),
                         "date": datetime.date.today().isoformat(), "threads": "1", "device": "cpu",
                         "dtype": "float32", "weights_seed": str(WEIGHTS_SEED)},
                "config": {"n_mels": CONFIG.n_mels, "dim": CONFIG.dim, "n_heads": CONFIG.n_heads,
                           "n_layers": CONFIG.n_layers},
                "cases": cases}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
