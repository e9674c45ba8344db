"""The three Chatterbox models a job may choose: what files each needs, where they are, what it takes, what it speaks.

One table, read by the engine (what to load and how to call it), the API (validation, ``GET /engine``) and the
command line: a model's parameters are written here once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..settings import Settings
from ..text_languages import LANGUAGES
from .base import Param

ORIGINAL_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")
TURBO_FILES = ("ve.safetensors", "t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors", "vocab.json", "merges.txt",
               "added_tokens.json", "conds.pt")
MULTILINGUAL_FILES = ("ve.pt", "t3_mtl23ls_v2.safetensors", "s3gen.pt", "grapheme_mtl_merged_expanded_v1.json",
                      "conds.pt")

_SEED = Param("seed", int, None, 0, 2**31 - 1, "random seed for repeatable output")
_GUIDED = (
    Param("exaggeration", float, 0.5, 0.25, 2.0, "emotion intensity"),
    Param("cfg_weight", float, 0.5, 0.0, 1.0, "classifier-free guidance weight (0: no guidance)"),
    Param("temperature", float, 0.8, 0.05, 5.0, "sampling temperature"),
    Param("min_p", float, 0.05, 0.0, 1.0, "min-p sampling threshold"),
    Param("top_p", float, 1.0, 0.01, 1.0, "nucleus sampling threshold"),
    Param("repetition_penalty", float, 1.2, 1.0, 2.0, "penalty on repeated speech tokens"),
    _SEED,
    Param("steps", int, 10, 1, 10, "flow-matching steps: fewer is faster, 10 is best"),
    Param("max_new_tokens", int, 1000, 1, 1000, "most speech tokens per chunk (25 per second of audio)"),
)
_TURBO = (
    Param("temperature", float, 0.8, 0.05, 2.0, "sampling temperature"),
    Param("top_k", int, 1000, 1, 6561, "sample among this many most likely speech tokens"),
    Param("top_p", float, 0.95, 0.01, 1.0, "nucleus sampling threshold"),
    Param("repetition_penalty", float, 1.2, 1.0, 2.0, "penalty on repeated speech tokens"),
    _SEED,
    # 25 s: past about 20-25 s of audio Turbo turns to gibberish (upstream issue 385); chunks are kept shorter.
    Param("max_new_tokens", int, 625, 1, 625, "most speech tokens per chunk (25 per second of audio)"),
)

# Turbo's own tags (the added tokens of its tokenizer): sounds said where they stand in the text, then styles.
TURBO_TAGS = ("[laugh]", "[chuckle]", "[sigh]", "[gasp]", "[cough]", "[clear throat]", "[sniff]", "[groan]",
              "[shush]", "[crying]", "[whispering]", "[angry]", "[happy]", "[sarcastic]", "[surprised]", "[fear]",
              "[dramatic]", "[narration]", "[advertisement]")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    description: str
    files: tuple[str, ...]
    params: tuple[Param, ...]
    languages: tuple[str, ...]
    # The longest chunk of English text one generation takes (other scripts: chatterbox.text_languages); also
    # bounded by CHATTERBOX_CHUNK_CHARS.
    chunk_chars: int
    tags: tuple[str, ...] = ()

    def directory(self, settings: Settings) -> Path:
        return {"original": settings.chatterbox_dir, "turbo": settings.turbo_model_dir,
                "multilingual": settings.multilingual_model_dir}[self.name]

    def missing(self, settings: Settings) -> list[str]:
        directory = self.directory(settings)
        return [name for name in self.files if not (directory / name).is_file()]

    def present(self, settings: Settings) -> bool:
        return not self.missing(settings)

    def max_chars(self, settings: Settings) -> int:
        return min(settings.chunk_chars, self.chunk_chars)

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, "description": self.description,
                "languages": [{"code": c, "name": LANGUAGES[c]} for c in self.languages],
                "params": [p.describe() for p in self.params], "tags": list(self.tags)}


MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("original", "Chatterbox", "the original English model (0.5B, Llama): emotion exaggeration and "
              "guidance", ORIGINAL_FILES, _GUIDED, ("en",), 300),
    ModelSpec("turbo", "Chatterbox Turbo", "English, fast (350M, GPT-2; two mean-flow steps), with "
              "paralinguistic tags", TURBO_FILES, _TURBO, ("en",), 200, TURBO_TAGS),
    ModelSpec("multilingual", "Chatterbox Multilingual", "23 languages (0.5B, Llama), emotion exaggeration and "
              "guidance", MULTILINGUAL_FILES, _GUIDED, tuple(LANGUAGES), 300),
)}

# Names other programs use for them (OpenAI's model names are mapped in web/openai_api.py).
ALIASES = {"chatterbox": "original", "chatterbox-turbo": "turbo", "chatterbox-multilingual": "multilingual",
           "mtl": "multilingual"}


def present_models(settings: Settings) -> list[str]:
    return [name for name, spec in MODELS.items() if spec.present(settings)]


def configured_models(settings: Settings) -> list[str]:
    """The models a worker of these settings loads: CHATTERBOX_MODELS, else every one whose files are present."""
    return list(settings.model_names) if settings.model_names else present_models(settings)
