"""T3's text tokenizer: the reference's punctuation normalization and framing (start 255, stop 0)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

START, STOP, UNK, SPACE = "[START]", "[STOP]", "[UNK]", "[SPACE]"
EMPTY_TEXT = "You need to add some text for me to talk."

# Order matters: "..." must become ", " before ":" and the dashes are looked at.
_REPLACEMENTS = (("...", ", "), ("\u2026", ", "), (":", ","), (" - ", ", "), (";", ", "), ("\u2014", "-"),
                 ("\u2013", "-"), (" ,", ","), ("\u201c", '"'), ("\u201d", '"'), ("\u2018", "'"), ("\u2019", "'"))
_ENDERS = (".", "!", "?", "-", ",")


def punc_norm(text: str, replacements: tuple[tuple[str, str], ...] = _REPLACEMENTS,
              enders: tuple[str, ...] = _ENDERS) -> str:
    """The reference's clean-up before tokenizing (an empty text becomes a fixed sentence, as there); Turbo and
    Multilingual use it with their own ``replacements`` and sentence ``enders``."""
    if len(text) == 0:
        return EMPTY_TEXT
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = " ".join(text.split())
    for old, new in replacements:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    if not text.endswith(enders):
        text += "."
    return text


class TextTokenizer:
    def __init__(self, tokenizer_json: str | Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        vocab = self.tokenizer.get_vocab()
        for special in (START, STOP):
            if special not in vocab:
                raise ValueError(f"{tokenizer_json} has no {special} token: not a Chatterbox tokenizer")
        self.start_id, self.stop_id = vocab[START], vocab[STOP]

    def encode(self, text: str) -> list[int]:
        """Token ids of already-normalized text, without framing."""
        return self.tokenizer.encode(text.replace(" ", SPACE)).ids

    def __call__(self, text: str, normalize: bool = True) -> Tensor:
        """(T,) int64 ids framed as [start] + ids + [stop]; normalizes with punc_norm first unless told not to."""
        if normalize:
            if not text.strip():
                raise ValueError("the text is empty: there is nothing to speak")
            text = punc_norm(text)
        return torch.tensor([self.start_id, *self.encode(text), self.stop_id], dtype=torch.long)

    def decode(self, ids) -> str:
        text = self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
        return text.replace(" ", "").replace(SPACE, " ").replace(STOP, "").replace(UNK, "").replace(START, "")
