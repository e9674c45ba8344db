"""Deterministic random weights in Chatterbox Turbo's official checkpoint layout, for tests and benchmarks.

Like chatterbox.model.random_checkpoint (whose per-tensor seeding it uses): every tensor of the official files
(names and shapes from ``layouts/checkpoint-t3-turbo.txt``, ``checkpoint-s3gen-meanflow.txt``, ``checkpoint-ve.txt``)
drawn from its own generator seeded by its name, so ours and the reference's code load the very same weights. The
text tokenizer is a small byte-level BPE in GPT-2's file format (``vocab.json``, ``merges.txt``, ``added_tokens.json``
and the two ``transformers`` config files), with GPT-2's ids where it matters: ``<|endoftext|>`` 50256 and the 19
paralinguistic tags at 50257-50275, 50276 ids in all.

The tool scripts load this file by path in the reference's environment (where ``chatterbox`` is the reference
package), so it imports its sibling by path too when it is not imported as part of our package.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

try:
    from . import random_checkpoint as _base
except ImportError:  # loaded by path (tools/make_reference_fixtures_turbo.py)
    import importlib.util

    _spec = importlib.util.spec_from_file_location("_random_checkpoint", Path(__file__).with_name("random_checkpoint.py"))
    _base = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_base)

FILES = {"ve": "ve.safetensors", "t3-turbo": "t3_turbo_v1.safetensors", "s3gen-meanflow": "s3gen_meanflow.safetensors"}
SMALL_T3_LAYERS = _base.SMALL_T3_LAYERS
EOS = "<|endoftext|>"
EOS_ID = 50256
# The tags of the official added_tokens.json (their order there is not known to us; ours is fixed).
TAGS = ("[advertisement]", "[angry]", "[fear]", "[surprised]", "[whispering]", "[dramatic]", "[narration]",
        "[crying]", "[happy]", "[sarcastic]", "[clear throat]", "[sigh]", "[shush]", "[cough]", "[groan]", "[sniff]",
        "[gasp]", "[chuckle]", "[laugh]")
TEXT_VOCAB = EOS_ID + 1 + len(TAGS)  # 50276


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """As random_checkpoint.random_tensor, with GPT-2's LayerNorm gains (``ln_1``, ``ln_2``, ``ln_f``) near 1
    like every other norm's, instead of near 0 (which would silence every block)."""
    leaf = name.rsplit(".", 2)
    if len(shape) == 1 and len(leaf) == 3 and leaf[1] in ("ln_1", "ln_2", "ln_f") and leaf[2] == "weight":
        return (1.0 + 0.02 * torch.randn(shape, generator=_base._generator(name, seed))).to(dtype)
    return _base.random_tensor(name, shape, dtype, seed)


def random_state_dict(part: str, seed: int = 0, small: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of one official file ("ve", "t3-turbo", "s3gen-meanflow"); ``small``: only the first layers of
    each stack (random_checkpoint.SMALL_DEPTHS)."""
    return {name: random_tensor(name, shape, dtype, seed) for name, (shape, dtype) in _base.layout(part).items()
            if not small or _base.in_small(name)}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character (spaces become "Ġ", newlines "Ċ")."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tokenizer_files() -> dict[str, str]:
    """The text tokenizer's files (name -> contents): the 256 byte symbols, merges for letter pairs, common
    words and space + word starts (so English takes a few ids per word, as with GPT-2's), unused fillers up to
    id 50255, then ``<|endoftext|>`` and the tags as added tokens."""
    alphabet = list(bytes_to_unicode().values())
    merges: list[tuple[str, str]] = []
    vocab: dict[str, int] = {c: i for i, c in enumerate(alphabet)}

    def merge(a: str, b: str) -> None:
        if a in vocab and b in vocab and a + b not in vocab:
            merges.append((a, b))
            vocab[a + b] = len(vocab)

    lower, common = "abcdefghijklmnopqrstuvwxyz", "etaoinshrdlucmfwypvbgk"
    for a in common[:14]:
        for b in common:
            merge(a, b)
    for c in lower + lower.upper():
        merge("Ġ", c)
    for a in "tsawbcmhfdpil":
        for b in common[:10]:
            merge("Ġ" + a, b)
    for word in ("the", "and", "ing", "you", "that", "was", "for", "this", "with", "there", "here", "hello"):
        built = word[0]
        for c in word[1:]:  # left to right: "th", "the"; then "Ġ" + "the"
            merge(built, c)
            built += c
        merge("Ġ", word)
    filler = 0
    while len(vocab) < EOS_ID:
        vocab[f"<unused{filler}>"] = len(vocab)
        filler += 1
    vocab[EOS] = EOS_ID
    added = {tag: EOS_ID + 1 + i for i, tag in enumerate(TAGS)}

    def token(content: str, special: bool) -> dict:
        return {"content": content, "lstrip": False, "normalized": not special, "rstrip": False,
                "single_word": False, "special": special}

    config = {
        "add_bos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": {str(EOS_ID): token(EOS, True),
                                 **{str(i): token(tag, False) for tag, i in added.items()}},
        "bos_token": EOS, "clean_up_tokenization_spaces": False, "eos_token": EOS, "errors": "replace",
        "model_max_length": 1024, "pad_token": None, "tokenizer_class": "GPT2Tokenizer", "unk_token": EOS,
    }
    special = {name: {k: v for k, v in token(EOS, True).items() if k != "special"}
               for name in ("bos_token", "eos_token", "unk_token")}
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
        "added_tokens.json": json.dumps(added, ensure_ascii=False, indent=2),
        "special_tokens_map.json": json.dumps(special, indent=2),
        "tokenizer_config.json": json.dumps(config, indent=2),
    }


def write_turbo_checkpoint(directory: Path, seed: int = 0, small: bool = False) -> Path:
    """Write every official Turbo file (random weights, the tokenizer files, ``conds.pt``) into directory.

    ``small``: the first layers of each stack (T3's 2 blocks of 24, the flow's and the S3 tokenizer's first: the
    same tensors as the full file's, random_checkpoint.SMALL_DEPTHS) and a built-in voice of 1 s of T3 prompt and 2 s of S3Gen prompt: the same code paths at a fraction of the cost, for tests of
    what surrounds the model (the loader reads the block count from the file). Tests of the model's numbers
    against the reference use the full size, whose built-in voice has 6 s of T3 prompt and 4 s of S3Gen prompt
    (the official one has up to 15 s and 10 s; shorter keeps the tests fast)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for part, name in FILES.items():
        save_file(random_state_dict(part, seed, small), str(directory / name))
    for name, text in tokenizer_files().items():
        (directory / name).write_text(text, encoding="utf-8")
    conds = _base.random_conds(seed, prompt_tokens=25, gen_tokens=50) if small else \
        _base.random_conds(seed, prompt_tokens=150, gen_tokens=100)
    conds["t3"]["emotion_adv"] = torch.full((1, 1, 1), 0.5)  # unused by Turbo; present in the official file
    torch.save(conds, directory / "conds.pt")
    return directory
