"""Conditionals: a voice, in the layout of the official ``conds.pt`` (``{"t3": {...}, "gen": {...}}``)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class T3Cond:
    speaker_emb: Tensor  # (1, 256) voice-encoder embedding
    cond_prompt_speech_tokens: Tensor | None = None  # (1, <=150) S3 tokens of the reference's first 6 s
    emotion_adv: Tensor | float = 0.5  # (1, 1, 1) exaggeration
    clap_emb: Tensor | None = None  # unused by the English model, kept for the file format
    cond_prompt_speech_emb: Tensor | None = None  # derived; never stored filled in

    def with_exaggeration(self, exaggeration: float) -> "T3Cond":
        return T3Cond(self.speaker_emb, self.cond_prompt_speech_tokens,
                      torch.full((1, 1, 1), float(exaggeration)), self.clap_emb)

    def to(self, device=None, dtype=None) -> "T3Cond":
        def move(v):
            if not torch.is_tensor(v):
                return v
            return v.to(device=device, dtype=dtype if v.is_floating_point() else None)
        return T3Cond(**{f.name: move(getattr(self, f.name)) for f in fields(self)})


@dataclass
class Conditionals:
    """Everything that makes a voice: T3's half and S3Gen's half (``gen``: prompt tokens, mels, x-vector)."""

    t3: T3Cond
    gen: dict

    def to(self, device=None) -> "Conditionals":
        return Conditionals(self.t3.to(device), {k: v.to(device) if torch.is_tensor(v) else v
                                                 for k, v in self.gen.items()})

    def save(self, path: str | Path) -> None:
        t3 = {f.name: getattr(self.t3, f.name) for f in fields(self.t3)}
        t3["emotion_adv"] = torch.as_tensor(t3["emotion_adv"], dtype=torch.float32).view(1, 1, 1)
        t3["cond_prompt_speech_emb"] = None
        torch.save({"t3": t3, "gen": self.gen}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "Conditionals":
        try:
            data = torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ValueError(f"{path} is not a conditionals file (conds.pt format): {exc}") from None
        if not isinstance(data, dict) or "t3" not in data or "gen" not in data:
            raise ValueError(f"{path} is not a conditionals file: expected the keys 't3' and 'gen'")
        known = {f.name for f in fields(T3Cond)}
        t3 = {k: v for k, v in data["t3"].items() if k in known}
        if "speaker_emb" not in t3:
            raise ValueError(f"{path} has no t3.speaker_emb")
        t3["cond_prompt_speech_emb"] = None
        return cls(T3Cond(**t3), dict(data["gen"]))
