"""Deterministic random weights in the official checkpoint layout, for tests and benchmarks.

Real weights cannot be downloaded everywhere, so tests build a checkpoint directory with every tensor the official
files hold (names and shapes from ``layouts/checkpoint-*.txt``), each drawn from its own generator seeded by the
tensor's name: the same bytes on every machine, whatever the order of creation, and independent of any model
code (ours or the reference's), so both load the very same weights.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import torch

LAYOUTS = Path(__file__).with_name("layouts")
FILES = {"ve": "ve.safetensors", "t3": "t3_cfg.safetensors", "s3gen": "s3gen.safetensors"}
SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]", "[PAD]", "[SEP]", "[CLS]", "[MASK]"]
START_ID, STOP_ID, TEXT_VOCAB = 255, 0, 704
SMALL_T3_LAYERS = 2
# What a small checkpoint keeps of each stack of numbered layers, the first ones, with every other tensor whole: the
# same code paths at a fraction of the cost (a system test's S3Gen spent most of its time in the flow's 12 mid
# levels, a clone in the tokenizer's blocks). The loaders read each depth from the file.
SMALL_DEPTHS = {
    "tfmr.layers.": SMALL_T3_LAYERS,  # T3 (Llama): of 30
    "tfmr.h.": SMALL_T3_LAYERS,  # Turbo's T3 (GPT-2): of 24
    "flow.encoder.encoders.": 2,  # of 6
    "flow.encoder.up_encoders.": 1,  # of 4
    "flow.decoder.estimator.mid_blocks.": 1,  # of 12 levels
    "tokenizer.encoder.blocks.": 1,  # of 6
}
_LEVEL_BLOCK = re.compile(r"flow\.decoder\.estimator\.(?:down|mid|up)_blocks\.\d+\.1\.(\d+)\.")
SMALL_LEVEL_BLOCKS = 1  # transformer blocks in each level of the flow's estimator, of 4
# HiFT's residual blocks, each a stack of dilated convolutions (1, 3, 5): the small file keeps the first, a third
# of the vocoder's cost, which every test that makes Chatterbox audio pays (measured: HiFT was a third of the
# batching tests' time).
_HIFT_DILATION = re.compile(
    r"mel2wav\.(?:source_)?resblocks\.\d+\.(?:convs1|convs2|activations1|activations2)\.(\d+)\.")
SMALL_HIFT_DILATIONS = 1


def in_small(name: str) -> bool:
    """Whether a small checkpoint keeps this tensor (of any of the official files)."""
    for prefix, kept in SMALL_DEPTHS.items():
        if name.startswith(prefix) and int(name[len(prefix):].split(".", 1)[0]) >= kept:
            return False
    level = _LEVEL_BLOCK.match(name)
    if level and int(level.group(1)) >= SMALL_LEVEL_BLOCKS:
        return False
    dilation = _HIFT_DILATION.match(name)
    return not dilation or int(dilation.group(1)) < SMALL_HIFT_DILATIONS


def layout(part: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Tensor name -> (shape, dtype) of one official file: "ve", "t3" or "s3gen"."""
    out = {}
    for line in (LAYOUTS / f"checkpoint-{part}.txt").read_text().splitlines():
        if not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").replace(" ", "").split(",") if d)
        out[name] = (dims, getattr(torch, dtype.removeprefix("torch.")))
    return out


def _generator(name: str, seed: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """One tensor, scaled so that a network of such layers keeps its activations in a sane range."""
    g = _generator(name, seed)
    if dtype in (torch.int64, torch.int32, torch.bool, torch.uint8):
        return torch.zeros(shape, dtype=dtype)
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("running_var"):  # batch-norm variances must be positive
        return (1.0 + 0.1 * torch.rand(shape, generator=g)).to(dtype)
    if name.endswith("window"):
        return torch.hann_window(shape[0], periodic=True).to(dtype)
    if "mel_filters" in name or "mel_basis" in name or "melscale" in name:
        return (torch.rand(shape, generator=g) * 0.02).to(dtype)
    if len(shape) <= 1 and ("norm" in name or leaf in ("gamma", "weight_g", "original0") or name.endswith("ln.weight")):
        return (1.0 + 0.02 * torch.randn(shape, generator=g)).to(dtype)
    if len(shape) <= 1:
        return (0.02 * torch.randn(shape, generator=g)).to(dtype)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return (torch.randn(shape, generator=g) / math.sqrt(max(1, fan_in))).to(dtype)


def random_state_dict(part: str, seed: int = 0, small: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of one official file; ``small``: only the first layers of each stack (SMALL_DEPTHS)."""
    return {name: random_tensor(name, shape, dtype, seed) for name, (shape, dtype) in layout(part).items()
            if not small or in_small(name)}


def tokenizer_json() -> dict:
    """A Hugging Face tokenizers file shaped like the official one: 704 ids, [START] 255, [STOP] 0.

    Letters, digits and punctuation map to their own ids, with a few merges as in a BPE vocabulary; [SPACE] is a
    special token (callers replace spaces with it before encoding, as the reference does).
    """
    vocab: dict[str, int] = {"[STOP]": STOP_ID}
    symbols = [s for s in SPECIAL_TOKENS if s not in vocab]
    symbols += list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?;:'\"-()&$%/ ")
    symbols += [a + b for a in "etaoinshrdlu" for b in "etaoinshrdlucmfw"]  # some merges, like a BPE vocabulary
    next_id = 1
    for symbol in symbols:
        if next_id == START_ID:
            next_id += 1
        vocab.setdefault(symbol, next_id)
        next_id += 1
    vocab["[START]"] = START_ID
    while next_id < TEXT_VOCAB:
        if next_id != START_ID:
            vocab[f"[unused{next_id}]"] = next_id
        next_id += 1
    merges = [f"{s[0]} {s[1]}" for s in symbols if len(s) == 2 and not s.startswith("[")]
    specials = ["[START]", *SPECIAL_TOKENS]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t in specials],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def random_conds(seed: int = 0, prompt_tokens: int = 150, gen_tokens: int = 250) -> dict:
    """A built-in voice in the layout of conds.pt (``{"t3": {...}, "gen": {...}}``), with a 10 s S3Gen prompt as
    the reference makes from a clip."""
    g = _generator("conds", seed)
    emb = torch.randn(1, 256, generator=g)
    return {
        "t3": {"speaker_emb": emb / emb.norm(), "clap_emb": None,
               "cond_prompt_speech_tokens": torch.randint(0, 6561, (1, prompt_tokens), generator=g),
               "cond_prompt_speech_emb": None, "emotion_adv": torch.full((1, 1, 1), 0.5)},
        "gen": {"prompt_token": torch.randint(0, 6561, (1, gen_tokens), generator=g),
                "prompt_token_len": torch.tensor([gen_tokens]),
                "prompt_feat": torch.randn(1, 2 * gen_tokens, 80, generator=g) * 0.5 - 5.0,
                "prompt_feat_len": None, "embedding": torch.randn(1, 192, generator=g)},
    }


def prompt_head(gen: dict, tokens: int) -> dict:
    """The first ``tokens`` of a voice's S3Gen prompt (conds.pt's "gen" half), with their mel frames."""
    return {**gen, "prompt_token": gen["prompt_token"][:, :tokens], "prompt_token_len": torch.tensor([tokens]),
            "prompt_feat": gen["prompt_feat"][:, :2 * tokens]}


def write_checkpoint(directory: Path, seed: int = 0, parts: tuple[str, ...] = ("ve", "t3", "s3gen"),
                     small: bool = False) -> Path:
    """Write the official files (random weights) into directory; returns it.

    ``small``: the first layers of each stack (SMALL_DEPTHS: T3's 2 of 30, the flow's and the S3 tokenizer's
    first; one dilated convolution of 3 in each of HiFT's residual blocks; the same tensors as the full file's), and
    a built-in voice of 1 s of T3 prompt and 2 s of S3Gen prompt instead of 6 and 10: the same code paths at a
    fraction of the cost, for the suite (the loaders read each depth from the file). The reference fixtures are
    made on it too, the reference cut to match (tools/README.md)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for part in parts:
        tensors = random_state_dict(part, seed, small)
        save_file(tensors, str(directory / FILES[part]))
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    conds = random_conds(seed, prompt_tokens=25, gen_tokens=50) if small else random_conds(seed)
    torch.save(conds, directory / "conds.pt")
    return directory
