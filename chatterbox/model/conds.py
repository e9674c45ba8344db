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
        try:
            return cls.from_data(data)
        except ValueError as exc:
            raise ValueError(f"{path} is not a conditionals file: {exc}") from None

    @classmethod
    def from_data(cls, data) -> "Conditionals":
        """Conditionals from the loaded contents of a conds.pt, every part checked (it may come from anyone: an
        imported voice): ValueError naming the first part that is not what the model takes."""
        if not isinstance(data, dict) or not isinstance(data.get("t3"), dict) or not isinstance(data.get("gen"), dict):
            raise ValueError("expected the dictionaries 't3' and 'gen'")
        known = {f.name for f in fields(T3Cond)}
        t3 = {k: v for k, v in data["t3"].items() if k in known}
        if "speaker_emb" not in t3:
            raise ValueError("t3.speaker_emb is missing")
        _floats(t3["speaker_emb"], "t3.speaker_emb", (1, SPEAKER_DIMS))
        if t3.get("cond_prompt_speech_tokens") is not None:
            _tokens(t3["cond_prompt_speech_tokens"], "t3.cond_prompt_speech_tokens")
        emotion = t3.get("emotion_adv", 0.5)
        if not isinstance(emotion, (int, float)) or isinstance(emotion, bool):
            _floats(emotion, "t3.emotion_adv", None)
            if emotion.numel() != 1:
                raise ValueError("t3.emotion_adv must be one number")
        t3["clap_emb"] = None  # unused by the model: whatever the file holds there is not kept
        t3["cond_prompt_speech_emb"] = None
        gen = {k: v for k, v in data["gen"].items() if k in GEN_KEYS}  # nothing else reaches the model
        for name in ("prompt_token", "prompt_feat", "embedding"):
            if name not in gen:
                raise ValueError(f"gen.{name} is missing")
        tokens = _tokens(gen["prompt_token"], "gen.prompt_token")
        _floats(gen["prompt_feat"], "gen.prompt_feat", (1, MELS_PER_TOKEN * tokens.shape[1], MEL_BINS))
        _floats(gen["embedding"], "gen.embedding", (1, XVECTOR_DIMS))
        gen["prompt_token_len"] = torch.tensor([tokens.shape[1]])
        gen["prompt_feat_len"] = None
        return cls(T3Cond(**t3), gen)


SPEAKER_DIMS, XVECTOR_DIMS, MEL_BINS, MELS_PER_TOKEN = 256, 192, 80, 2
SPEECH_CODES = 6561
GEN_KEYS = ("prompt_token", "prompt_token_len", "prompt_feat", "prompt_feat_len", "embedding")
MAX_PROMPT_TOKENS = 1500  # a minute of speech: far more than any reference clip gives (10 s: 250)


def _floats(value, name: str, shape: tuple[int, ...] | None) -> Tensor:
    if not torch.is_tensor(value) or not value.is_floating_point():
        raise ValueError(f"{name} must be a float tensor")
    if shape is not None and tuple(value.shape) != shape:
        raise ValueError(f"{name} has the shape {tuple(value.shape)}, not {shape}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} holds values that are not finite")
    return value


def _tokens(value, name: str) -> Tensor:
    if not torch.is_tensor(value) or value.dtype not in (torch.int64, torch.int32) or value.dim() != 2 \
            or value.shape[0] != 1 or not 0 < value.shape[1] <= MAX_PROMPT_TOKENS:
        raise ValueError(f"{name} must be a (1, n) integer tensor with 1 to {MAX_PROMPT_TOKENS} speech tokens")
    if int(value.min()) < 0 or int(value.max()) >= SPEECH_CODES:
        raise ValueError(f"{name} holds tokens outside 0..{SPEECH_CODES - 1}")
    return value
