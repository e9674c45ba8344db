"""Deterministic random weights in the layout of Chatterbox Multilingual's official files, for tests and benchmarks.

The same recipe as chatterbox.model.random_checkpoint (every tensor from a generator seeded by its name; its
helpers are used as they are): ``t3_mtl23ls_v2.safetensors`` from ``layouts/checkpoint-t3-mtl.txt`` (made from
the reference's state dict by tools/make_layout_t3_mtl.py), ``ve.pt`` and ``s3gen.pt`` as torch pickles of the ve and
s3gen layouts, a grapheme tokenizer in the official file's format (2454 ids: [START] 255, [STOP] 0, the 23
language tokens, Cangjie code letters, and the characters of the scripts the tests use after NFKD), a small
``Cangjie5_TC.json`` and ``conds.pt``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .alignment import ALIGNMENT_HEADS
from .languages import CANGJIE_FILE, SUPPORTED_LANGUAGES
from .mtl_tokenizer import TOKENIZER_FILE
from .random_checkpoint import layout, random_conds, random_state_dict, random_tensor

T3_FILE = "t3_mtl23ls_v2.safetensors"
# The shallowest T3 that still decodes with its alignment guard: down to the deepest layer the guard reads (its
# heads are in layers 9, 12 and 13; 14 of 30). Tests against the reference use it: half the full model's cost.
GUARD_LAYERS = 1 + max(layer for layer, _ in ALIGNMENT_HEADS)
START_ID, STOP_ID, TEXT_VOCAB = 255, 0, 2454
SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]", "[PAD]", "[SEP]", "[CLS]", "[MASK]"]

# (glyph, Cangjie code) for the characters the tests speak; 入 shares 人's code, so it is written with index 1.
CANGJIE = [("你", "onf"), ("好", "vnd"), ("我", "hqi"), ("很", "hoav"), ("中", "l"), ("國", "wirm"), ("人", "o"),
           ("入", "o"), ("今", "oin"), ("天", "mk"), ("是", "amyo"), ("的", "hapi"), ("說", "yrcru"),
           ("話", "yrhjr"), ("學", "hbnd"), ("生", "hqm"), ("大", "k"), ("家", "jmso"), ("文", "yk")]


def _chars(first: int, last: int) -> list[str]:
    return [chr(c) for c in range(first, last + 1)]


def grapheme_symbols() -> list[str]:
    """The single characters of the tokenizer: what NFKD-normalized, lower-cased text of the test languages has."""
    symbols = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?;:'\"-()&$%/")
    symbols += list("ßøæåıłœđð")  # Latin letters NFKD leaves whole
    symbols += _chars(0x0300, 0x036F)  # combining diacritics (é -> e + U+0301)
    symbols += _chars(0x03B1, 0x03C9)  # Greek
    symbols += _chars(0x0430, 0x044F)  # Cyrillic
    symbols += _chars(0x0621, 0x0652) + ["،", "؟"]  # Arabic letters and harakat
    symbols += _chars(0x05B0, 0x05C7) + _chars(0x05D0, 0x05EA)  # Hebrew niqqud and letters
    symbols += _chars(0x0900, 0x097F)  # Devanagari
    symbols += _chars(0x3041, 0x3096) + ["\u3099", "\u309a"] + _chars(0x30A1, 0x30FA) + ["ー"]  # kana
    symbols += _chars(0x1100, 0x1112) + _chars(0x1161, 0x1175) + _chars(0x11A8, 0x11C2)  # Hangul jamo
    symbols += ["、", "。", "，", "？", "！"]
    return symbols


def grapheme_tokenizer_json() -> dict:
    """A Hugging Face tokenizers file shaped like grapheme_mtl_merged_expanded_v1.json: 2454 ids."""
    bracketed = ["[START]", *SPECIAL_TOKENS] + [f"[{code}]" for code in SUPPORTED_LANGUAGES]
    bracketed += [f"[cj_{c}]" for c in "abcdefghijklmnopqrstuvwxyz0123456789."]
    vocab: dict[str, int] = {"[STOP]": STOP_ID, "[START]": START_ID}
    next_id = 1
    for symbol in bracketed + grapheme_symbols():
        if symbol in vocab:
            continue
        if next_id == START_ID:
            next_id += 1
        vocab[symbol] = next_id
        next_id += 1
    if next_id > TEXT_VOCAB:
        raise AssertionError(f"{next_id} symbols do not fit in {TEXT_VOCAB} ids")
    for i in range(next_id, TEXT_VOCAB):
        vocab[f"[unused{i}]"] = i
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t in bracketed],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


def cangjie_json() -> list[str]:
    """Entries as in Cangjie5_TC.json: "glyph<TAB>code" (the official file may carry more columns)."""
    return [f"{glyph}\t{code}" for glyph, code in CANGJIE]


def guard_t3_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The T3 file's tensors with its first GUARD_LAYERS layers (every other tensor whole), each as the full file
    has it."""
    def kept(name: str) -> bool:
        return not name.startswith("tfmr.layers.") or int(name.split(".")[2]) < GUARD_LAYERS

    return {name: random_tensor(name, shape, dtype, seed) for name, (shape, dtype) in layout("t3-mtl").items()
            if kept(name)}


def write_mtl_checkpoint(directory: Path, seed: int = 0, small: bool = False) -> Path:
    """Write every file Chatterbox Multilingual loads (random weights) into directory; returns it.

    ``small``: the first layers of each stack (T3's 2, so no alignment guard: its heads are in layers 9 to 13; the
    flow's and the S3 tokenizer's first, as random_checkpoint.SMALL_DEPTHS) and a built-in voice of 1 s of T3
    prompt and 2 s of S3Gen prompt, as ``write_checkpoint(small=True)``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(random_state_dict("t3-mtl", seed, small), str(directory / T3_FILE))
    torch.save(random_state_dict("ve", seed), directory / "ve.pt")
    torch.save(random_state_dict("s3gen", seed, small), directory / "s3gen.pt")
    (directory / TOKENIZER_FILE).write_text(json.dumps(grapheme_tokenizer_json(), ensure_ascii=False),
                                            encoding="utf-8")
    (directory / CANGJIE_FILE).write_text(json.dumps(cangjie_json(), ensure_ascii=False), encoding="utf-8")
    conds = random_conds(seed, prompt_tokens=25, gen_tokens=50) if small else random_conds(seed)
    torch.save(conds, directory / "conds.pt")
    return directory
