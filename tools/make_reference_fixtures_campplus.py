"""Make tests/fixtures/reference_campplus.pt: what the reference's CAMPPlus speaker encoder (S3Gen's x-vector)
produces on seeded random weights.

Run with the reference environment's Python (tools/setup_reference_env.sh):

    /tmp/chatterbox-ref-venv/bin/python tools/make_reference_fixtures_campplus.py

Only the reference's CAMPPlus class is built (as S3Gen builds it, memory_efficient=False) and given the
``speaker_encoder.*`` tensors of the random s3gen.safetensors; S3Gen's own non-strict load of the whole file
fills exactly these tensors, so the strict load here is the same and fails loudly if a name did not fit.
The input is the synthetic 24 kHz clip of make_reference_fixtures.py brought to 16 kHz with the resampler
S3Gen.embed_ref uses (torchaudio Resample 24000 -> 16000); a second, shorter case is a 0.75 s slice of it.

Two weight sets: "seed0", the random checkpoint as written, and "normalized", the same with every batch norm's
statistics and affine parameters redrawn by ``normalized_batchnorms`` below. The seeded generator gives the
xvector batch norms running means and biases near 1 and the head's batch norms scales near 0.02, so with "seed0"
the x-vector is about -running_mean / sqrt(running_var) of the last batch norm (near -1 in every dimension) and
depends on the audio only in its third decimal; "normalized" keeps activations of order 1 through the network, so
the comparison sees every layer.
"""
from __future__ import annotations

import argparse
import datetime
import tempfile
import zlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_SEED = 0


def normalized_batchnorms(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of a CAMPPlus state dict in which every batch norm has running mean 0.1 z, weight 1 + 0.1 z and bias
    0.1 z (z standard normal from a generator seeded by the module's name); running variances are kept."""
    out = dict(tensors)
    for key, var in tensors.items():
        if not key.endswith(".running_var"):
            continue
        module = key[: -len("running_var")]
        g = torch.Generator().manual_seed(zlib.crc32(module.encode()))
        out[module + "running_mean"] = 0.1 * torch.randn(var.shape, generator=g)
        if module + "weight" in tensors:  # the last batch norm has no affine parameters
            out[module + "weight"] = 1.0 + 0.1 * torch.randn(var.shape, generator=g)
            out[module + "bias"] = 0.1 * torch.randn(var.shape, generator=g)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "reference_campplus.pt")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import torchaudio
    from safetensors.torch import load_file
    from chatterbox.models.s3gen.s3gen import get_resampler
    from chatterbox.models.s3gen.xvector import CAMPPlus, extract_feature

    import make_reference_fixtures as t3_fixtures  # beside this script, so on sys.path when it runs

    random_checkpoint = t3_fixtures.load_random_checkpoint()
    clip24 = torch.from_numpy(t3_fixtures.synthetic_clip())

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = random_checkpoint.write_checkpoint(Path(tmp) / "ckpt", seed=WEIGHTS_SEED, parts=("s3gen",))
        tensors = load_file(str(ckpt / "s3gen.safetensors"))
    prefix = "speaker_encoder."
    seed0 = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    weight_sets = {"seed0": seed0, "normalized": normalized_batchnorms(seed0)}

    with torch.inference_mode():
        clip16 = get_resampler(24000, 16000, "cpu")(clip24[None]).float()  # (1, L16), as in embed_ref
        wavs = {"clip": clip16, "short": clip16[:, 16000:28000].clone()}
        cases = {}
        for name, wav in wavs.items():
            feats, _, _ = extract_feature(wav)  # (1, frames, 80), what inference() feeds the network
            cases[name] = {"wav_16k": wav.clone(), "fbank": feats.float().clone()}
        xvectors = {}
        for weights_name, weights in weight_sets.items():
            encoder = CAMPPlus(memory_efficient=False)
            encoder.load_state_dict(weights, strict=True)
            encoder.eval()
            xvectors[weights_name] = {}
            for name, wav in wavs.items():
                xvec = encoder.inference(wav)  # (1, 192)
                assert torch.isfinite(xvec).all(), (weights_name, name)
                xvectors[weights_name][name] = xvec.float().clone()
                print(f"{weights_name}/{name}: wav {tuple(wav.shape)} fbank {tuple(cases[name]['fbank'].shape)} "
                      f"xvector mean {xvec.mean():+.4f} std {xvec.std():.4f}")

    torch.save({
        "meta": {"reference": "chatterbox-tts 0.1.7", "torch": str(torch.__version__),
                 "torchaudio": str(torchaudio.__version__), "date": datetime.date.today().isoformat(),
                 "weights_seed": str(WEIGHTS_SEED), "threads": "1"},
        "cases": cases, "xvectors": xvectors,
    }, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
