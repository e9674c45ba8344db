"""Chatterbox Multilingual's text side: punctuation clean-up, the grapheme tokenizer with language tokens, and
sentence chunking for the scripts of its 23 languages.

Text goes: ``punc_norm`` (the original's, with 、，。？！ also ending a sentence) -> lower case -> NFKD -> the
language's front end (chatterbox.model.languages) -> ``[xx]`` language token in front -> spaces as ``[SPACE]``
-> ids of ``grapheme_mtl_merged_expanded_v1.json`` (a Hugging Face tokenizers file) -> framed as
``[255] + ids + [0]`` for T3.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

import torch
from torch import Tensor

from .languages import SUPPORTED_LANGUAGES, FrontEnds, check_language
from .tokenizer import SPACE, START, STOP, UNK
from .tokenizer import punc_norm as base_punc_norm

TOKENIZER_FILE = "grapheme_mtl_merged_expanded_v1.json"
# The original's sentence ends plus the CJK ones (ideographic comma and full stop, full-width comma, ?, !).
_ENDERS = (".", "!", "?", "-", ",", "、", "，", "。", "？", "！")


def punc_norm(text: str) -> str:
    """The reference Multilingual's clean-up before tokenizing (an empty text becomes a fixed sentence)."""
    return base_punc_norm(text, enders=_ENDERS)


class MTLTokenizer:
    def __init__(self, tokenizer_json: str | Path, front_ends: FrontEnds | None = None):
        from tokenizers import Tokenizer

        path = Path(tokenizer_json)
        self.tokenizer = Tokenizer.from_file(str(path))
        vocab = self.tokenizer.get_vocab()
        for special in (START, STOP):
            if special not in vocab:
                raise ValueError(f"{path} has no {special} token: not a Chatterbox tokenizer")
        self.start_id, self.stop_id = vocab[START], vocab[STOP]
        self.front_ends = front_ends or FrontEnds(path.parent)

    def prepare(self, text: str, language_id: str | None) -> str:
        """Normalized text -> the string the tokenizer encodes (language token in front, spaces still spaces)."""
        text = unicodedata.normalize("NFKD", text.lower())
        if not language_id:
            return text
        code = language_id.lower()
        return f"[{code}]" + self.front_ends(text, code)

    def encode(self, text: str, language_id: str | None) -> list[int]:
        """Token ids of already-normalized text, without framing."""
        return self.tokenizer.encode(self.prepare(text, language_id).replace(" ", SPACE)).ids

    def __call__(self, text: str, language_id: str, normalize: bool = True) -> Tensor:
        """(T,) int64 ids framed as [start] + ids + [stop]; punc_norm first unless told not to."""
        language_id = check_language(language_id)
        if normalize:
            if not text.strip():
                raise ValueError("the text is empty: there is nothing to speak")
            text = punc_norm(text)
        return torch.tensor([self.start_id, *self.encode(text, language_id), self.stop_id], dtype=torch.long)

    def decode(self, ids) -> str:
        text = self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
        return text.replace(" ", "").replace(SPACE, " ").replace(STOP, "").replace(UNK, "").replace(START, "")


__all__ = ["MTLTokenizer", "punc_norm", "SUPPORTED_LANGUAGES", "TOKENIZER_FILE"]
