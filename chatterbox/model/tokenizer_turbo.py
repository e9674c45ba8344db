"""Chatterbox Turbo's text tokenizer: GPT-2's byte-level BPE, built with the ``tokenizers`` library from the
checkpoint's ``vocab.json`` and ``merges.txt``, plus the added tokens of ``added_tokens.json`` (``<|endoftext|>``
and the paralinguistic tags ``[laugh]``, ``[sigh]``, ``[clear throat]``, ...), which are matched whole in the text
before the BPE sees it, exactly as the reference's ``transformers`` tokenizer does (same ids, tested against it).

Turbo's own punctuation clean-up comes first: it is the original's less three replacements ("...", " - ", ";" are
kept as they are). No start/stop ids frame the text.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import Tensor

from .tokenizer import punc_norm as base_punc_norm

log = logging.getLogger(__name__)

# The original's replacements without three of them ("...", " - ", ";"), as the reference's Turbo has them.
_REPLACEMENTS = (("\u2026", ", "), (":", ","), ("\u2014", "-"), ("\u2013", "-"), (" ,", ","), ("\u201c", '"'),
                 ("\u201d", '"'), ("\u2018", "'"), ("\u2019", "'"))
_ENDERS = (".", "!", "?", "-", ",")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "added_tokens.json")


def punc_norm(text: str) -> str:
    """Turbo's clean-up before tokenizing (an empty text becomes a fixed sentence, as in the reference)."""
    return base_punc_norm(text, _REPLACEMENTS, _ENDERS)


class TurboTokenizer:
    def __init__(self, directory: str | Path):
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        directory = Path(directory)
        missing = [name for name in TOKENIZER_FILES[:2] if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} lacks the tokenizer file{'s' * (len(missing) > 1)} "
                                    f"{', '.join(missing)}")
        vocab = _json(directory / "vocab.json")
        merges = [line for line in (directory / "merges.txt").read_text(encoding="utf-8").splitlines()
                  if line and not line.startswith("#version")]
        try:
            merge_pairs = [tuple(line.split(" ")) for line in merges]
            bpe = models.BPE(vocab, merge_pairs, dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                             fuse_unk=False)
        except Exception as exc:
            raise ValueError(f"{directory} holds no usable GPT-2 vocabulary and merges: {exc}") from None
        self.tokenizer = Tokenizer(bpe)
        self.tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self.tokenizer.decoder = decoders.ByteLevel()
        config = _json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
        added = _json(directory / "added_tokens.json") if (directory / "added_tokens.json").is_file() else {}
        # Each added token's flags as transformers would take them: from tokenizer_config.json where it lists
        # them, else as transformers' add_tokens makes them (a normalized, non-special token).
        flags = {entry["content"]: entry for entry in config.get("added_tokens_decoder", {}).values()}
        ids = {**{entry["content"]: int(i) for i, entry in config.get("added_tokens_decoder", {}).items()}, **added}
        for content, wanted in sorted(ids.items(), key=lambda item: item[1]):
            f = flags.get(content, {})
            special = bool(f.get("special", False))
            token = AddedToken(content, single_word=bool(f.get("single_word", False)),
                               lstrip=bool(f.get("lstrip", False)), rstrip=bool(f.get("rstrip", False)),
                               normalized=bool(f.get("normalized", not special)), special=special)
            (self.tokenizer.add_special_tokens if special else self.tokenizer.add_tokens)([token])
            got = self.tokenizer.token_to_id(content)
            if got != wanted:
                raise ValueError(f"{directory}: the added token {content!r} has id {wanted} in the tokenizer files, "
                                 f"but {got} when added to the vocabulary (ids must follow it without gaps)")
        self.tags = tuple(content for content in added if content.startswith("["))
        self.bos_id = self.tokenizer.token_to_id(config.get("bos_token") or "<|endoftext|>")
        self.add_bos = bool(config.get("add_bos_token", False))
        self.max_length = int(config.get("model_max_length", 0) or 0)
        if self.max_length > 10**9:  # transformers' "no limit" value
            self.max_length = 0

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of already-normalized text, as the reference's ``tokenizer(text, truncation=True)`` gives
        them (cut at ``model_max_length`` when the tokenizer's config sets one)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if self.add_bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        if self.max_length and len(ids) > self.max_length:
            log.warning("text of %d tokens cut to the tokenizer's limit of %d", len(ids), self.max_length)
            ids = ids[: self.max_length]
        return ids

    def __call__(self, text: str, normalize: bool = True) -> Tensor:
        """(T,) int64 ids; normalizes with Turbo's punc_norm first unless told not to."""
        if normalize:
            if not text.strip():
                raise ValueError("the text is empty: there is nothing to speak")
            text = punc_norm(text)
        return torch.tensor(self.encode(text), dtype=torch.long)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable JSON file: {exc}") from None
