"""The Chatterbox engine: Resemble AI's model, run by our own code (chatterbox.tts), loaded once per worker.

Voices: ``default`` (the checkpoint's conds.pt) and every voice of the saved-voice library made for this engine
(``chatterbox.voices``), by id or by name.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ..access import Caller
from ..voices import VoiceLibrary
from .base import Engine, EngineUnavailable, InvalidRequest, Param

WEIGHT_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")
DEFAULT_VOICE = "default"
# Part of every cached chunk's key: raised when the engine's output for the same request changes. 2: until then
# exaggeration and cfg_weight never reached the model, so chunks cached under other values of them are wrong. 3: book
# chunks are made as whole utterances (generate's audio), no longer window by window.
CACHE_REVISION = 3


def weights_present(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() for name in WEIGHT_FILES)


class ChatterboxEngine(Engine):
    name = "chatterbox"
    # Not measured here (no real weights on this machine): a calm narrator's pace; the duration check allows
    # 0.6 to 1.7 times the time this predicts.
    words_per_minute = 165.0
    params = (
        Param("exaggeration", float, 0.5, 0.25, 2.0, "emotion intensity"),
        Param("cfg_weight", float, 0.5, 0.0, 1.0, "classifier-free guidance weight (0: no guidance)"),
        Param("temperature", float, 0.8, 0.05, 5.0, "sampling temperature"),
        Param("min_p", float, 0.05, 0.0, 1.0, "min-p sampling threshold"),
        Param("top_p", float, 1.0, 0.01, 1.0, "nucleus sampling threshold"),
        Param("repetition_penalty", float, 1.2, 1.0, 2.0, "penalty on repeated speech tokens"),
        Param("seed", int, None, 0, 2**31 - 1, "random seed for repeatable output"),
        Param("steps", int, 10, 1, 10, "flow-matching steps: fewer is faster, 10 is best"),
        Param("max_new_tokens", int, 1000, 1, 1000, "most speech tokens per chunk (25 per second of audio)"),
    )

    def __init__(self, settings, device: str = "cpu"):
        super().__init__(settings, device)
        self.tts = None
        self._loop = None
        self.library = VoiceLibrary(settings.voices_dir)
        self._lock = threading.Lock()
        # Recently used saved voices, on the device, at most settings.voice_cache_size of them: a saved voice costs
        # what the built-in one does after its first use, and memory does not grow with the voices used.
        self._cache: OrderedDict[str, tuple[float, object]] = OrderedDict()

    @property
    def sample_rate(self) -> int:
        return 24000

    @property
    def loaded(self) -> bool:
        return self.tts is not None

    def model_version(self, voice: str) -> str:
        files = sorted(self.settings.chatterbox_dir.glob("*.safetensors"))
        sizes = "-".join(str(f.stat().st_size) for f in files)
        return f"chatterbox/r{CACHE_REVISION}/{self.settings.model_dtype}/{sizes}"

    def voices(self, caller: Caller) -> list[dict]:
        out = [{"id": DEFAULT_VOICE, "name": "Default", "engine": self.name, "builtin": True,
                "description": "the built-in Chatterbox voice (conds.pt)"}]
        return out + [v.public() for v in self.library.list(caller, engine=self.name)]

    def conditionals(self, voice_id: str):
        """A saved voice's conditionals, from the cache while its file is unchanged."""
        from ..model.conds import Conditionals

        path = self.library.conds_path(voice_id)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            self._cache.pop(voice_id, None)
            raise InvalidRequest("voice", f"the saved voice {voice_id} no longer exists", "unknown_voice",
                                 404) from None
        cached = self._cache.get(voice_id)
        if cached is None or cached[0] != mtime:
            cached = (mtime, Conditionals.load(path, self.device))
            self._cache[voice_id] = cached
        self._cache.move_to_end(voice_id)
        while len(self._cache) > max(1, self.settings.voice_cache_size):
            self._cache.popitem(last=False)
        return cached[1]

    def clone(self, samples24k: np.ndarray, exaggeration: float = 0.5):
        """Conditionals for a new voice from a cleaned 24 kHz recording."""
        self.load()
        return self.tts.make_conditionals(samples24k, exaggeration, sample_rate=24000)

    def preview(self, conds, text: str, max_new_tokens: int) -> np.ndarray:
        self.load()
        return self.tts.generate(text, voice=conds, max_new_tokens=max_new_tokens)[0].numpy()

    def load(self) -> None:
        with self._lock:
            if self.tts is not None:
                return
            model_dir = self.settings.chatterbox_dir
            if not weights_present(model_dir):
                missing = [n for n in WEIGHT_FILES if not (model_dir / n).is_file()]
                raise EngineUnavailable(f"Chatterbox weights are not in {model_dir} (missing {', '.join(missing)}); "
                                        "set CHATTERBOX_MODEL_DIR or use TTS_ENGINE=piper")
            import torch

            from ..tts import ChatterboxTTS
            from .batch_loop import INTERACTIVE_EXTRA

            if self.settings.threads > 0 and not self.device.startswith("cuda"):
                torch.set_num_threads(self.settings.threads)
            try:
                self.tts = ChatterboxTTS.from_local(model_dir, device=self.device,
                                                    dtype=getattr(torch, self.settings.model_dtype),
                                                    watermark=self.settings.watermark,
                                                    max_batch=self.settings.max_batch + INTERACTIVE_EXTRA)
            except (ValueError, RuntimeError, OSError) as exc:
                raise EngineUnavailable(f"cannot load the Chatterbox model from {model_dir}: {exc}") from exc

    @property
    def loop(self):
        """The batch loop every job of this worker speaks through (made with the model, at its first use)."""
        with self._lock:
            if self._loop is None:
                from .batch_loop import BatchLoop

                self._loop = BatchLoop(self.tts, self.settings.max_batch)
            return self._loop

    def occupancy(self) -> dict | None:
        return self._loop.occupancy() if self._loop is not None else None

    def stream(self, text: str, voice, params: Mapping[str, Any], priority: str = "interactive",
               check: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        """``voice`` is a voice id, or a one-off voice's conditionals (computed from a clip sent with the job).
        Interactive requests stream window by window (``generate_stream``'s audio); book chunks ("bulk") come as
        one whole utterance (``generate``'s), made only while no listener waits for a first window."""
        from .batch_loop import BULK, INTERACTIVE, Request

        self.load()
        conds = self.tts.conds if voice == DEFAULT_VOICE else self.conditionals(voice) if isinstance(voice, str) \
            else voice
        request = self.loop.submit(Request(text, conds, self.model_args(params), stream=priority != "bulk",
                                           priority=BULK if priority == "bulk" else INTERACTIVE))
        for piece in request.pieces(check):
            yield piece[0].numpy().astype(np.float32)
