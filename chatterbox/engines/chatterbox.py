"""The Chatterbox engine: Resemble AI's model run by our own code in ``chatterbox.model`` (not written yet).

Until the model lands, this engine knows its parameters and its weights' layout, so requests can be validated
and ``TTS_ENGINE=auto`` can tell whether the weights are on the machine, but ``load()`` says clearly that the
model cannot run yet.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .base import Engine, EngineUnavailable, Param

WEIGHT_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")
IMPLEMENTED = False  # flips when chatterbox.model can run the checkpoint


def weights_present(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() for name in WEIGHT_FILES)


class ChatterboxEngine(Engine):
    name = "chatterbox"
    params = (
        Param("exaggeration", float, 0.5, 0.25, 2.0, "emotion intensity"),
        Param("cfg_weight", float, 0.5, 0.0, 1.0, "classifier-free guidance weight (0: no guidance)"),
        Param("temperature", float, 0.8, 0.05, 5.0, "sampling temperature"),
        Param("min_p", float, 0.05, 0.0, 1.0, "min-p sampling threshold"),
        Param("top_p", float, 1.0, 0.0, 1.0, "nucleus sampling threshold"),
        Param("repetition_penalty", float, 1.2, 1.0, 2.0, "penalty on repeated speech tokens"),
        Param("seed", int, None, 0, 2**31 - 1, "random seed for repeatable output"),
    )

    @property
    def sample_rate(self) -> int:
        return 24000

    @property
    def loaded(self) -> bool:
        return False

    def voices(self) -> list[dict]:
        return [{"id": "default", "name": "Default", "engine": self.name,
                 "description": "the built-in Chatterbox voice (conds.pt)"}]

    def load(self) -> None:
        model_dir = self.settings.chatterbox_dir
        if not weights_present(model_dir):
            missing = [n for n in WEIGHT_FILES if not (model_dir / n).is_file()]
            raise EngineUnavailable(f"Chatterbox weights are not in {model_dir} (missing {', '.join(missing)}); "
                                    "set CHATTERBOX_MODEL_DIR or use TTS_ENGINE=piper")
        raise EngineUnavailable("the Chatterbox model is not available yet in this version of chatterbox-jobs "
                                "(our implementation of T3 and S3Gen has not landed); use TTS_ENGINE=piper")

    def stream(self, text: str, voice: str, params: Mapping[str, Any]) -> Iterator[np.ndarray]:
        self.load()
        yield from ()
