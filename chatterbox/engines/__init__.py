"""The engines and the choice between them."""
from __future__ import annotations

from ..settings import Settings
from .base import Engine, EngineError, EngineUnavailable, InvalidRequest, Param
from .chatterbox import ChatterboxEngine
from .models import MODELS, present_models
from .piper import PiperEngine

ENGINES: dict[str, type[Engine]] = {"piper": PiperEngine, "chatterbox": ChatterboxEngine}

__all__ = ["Engine", "EngineError", "EngineUnavailable", "InvalidRequest", "Param", "ENGINES", "choose_engine",
           "create_engine"]


def choose_engine(settings: Settings) -> tuple[str, str]:
    """The engine name that settings.tts_engine resolves to, and why (for logs and /health)."""
    if settings.tts_engine != "auto":
        return settings.tts_engine, f"TTS_ENGINE={settings.tts_engine}"
    present = present_models(settings)
    if present:
        where = ", ".join(f"{name} in {MODELS[name].directory(settings)}" for name in present)
        return "chatterbox", f"TTS_ENGINE=auto: Chatterbox weights found ({where})"
    return "piper", (f"TTS_ENGINE=auto: no Chatterbox weights in {settings.chatterbox_dir} or "
                     f"{settings.turbo_model_dir}; using the embedded Piper engine")


def create_engine(settings: Settings, device: str = "cpu", name: str | None = None) -> Engine:
    """An engine object (cheap: nothing heavy is loaded until ``load()``)."""
    name = name or choose_engine(settings)[0]
    if name not in ENGINES:
        raise EngineUnavailable(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    return ENGINES[name](settings, device)
