"""Voices: time from upload to a ready voice, and synthesis with a saved voice against the built-in one.

Through the whole system (REST upload, clone job on one worker) for the first figure; in one worker's engine for the
second, same text, seed and token count, the saved voice already in the worker's cache (target: ratio <= 1.05).
Uses the real weights in CHATTERBOX_MODEL_DIR when set, else seeded random weights of the official shapes.

Usage: python bench/voices.py [--tokens 50] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatterbox import audio  # noqa: E402
from chatterbox.access import SYSTEM  # noqa: E402
from tests.conftest import System  # noqa: E402
from tests.test_voices import speechlike  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from chatterbox.engines import create_engine
    from chatterbox.model.random_checkpoint import write_checkpoint
    from chatterbox.settings import load

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.environ.get("CHATTERBOX_MODEL_DIR") or str(write_checkpoint(Path(tmp) / "ckpt", seed=0))
        system = System(Path(tmp) / "system")
        system.env.update(TTS_ENGINE="chatterbox", CHATTERBOX_MODEL_DIR=model_dir,
                          CHATTERBOX_PREVIEW_MAX_TOKENS=str(args.tokens))
        system.start()
        try:
            clip = audio.encode(speechlike(10), 24000, "mp3")
            started = time.perf_counter()
            job = system.api.post("/voice-clone", files={"file": ("clip.mp3", clip)},
                                  data={"name": "Bench"}, timeout=60).json()
            done = system.wait_job(job["job_id"], timeout=600)
            ready = time.perf_counter() - started
            assert done["status"] == "succeeded", done
        finally:
            system.stop()

        settings = load({"data_dir": system.data, "model_dir": model_dir}, environ={})
        engine = create_engine(settings, name="chatterbox")
        engine.load()
        params = engine.validate({"seed": 1, "max_new_tokens": args.tokens})
        text = "The same sentence, spoken in two voices."

        def run(voice: str) -> float:
            start = time.perf_counter()
            for _ in engine.stream(text, voice, params):
                pass
            return time.perf_counter() - start

        saved = engine.check_voice("Bench", SYSTEM)
        run("default"), run(saved)  # warm both; the saved voice is now cached
        builtin_s = min(run("default") for _ in range(args.repeats))
        saved_s = min(run(saved) for _ in range(args.repeats))
    print(f"upload to ready voice (10 s clip, preview of {args.tokens} tokens): {ready:.2f} s")
    print(f"synthesis, {args.tokens} tokens: built-in voice {builtin_s:.2f} s, saved voice {saved_s:.2f} s")
    print(f"ratio saved / built-in: {saved_s / builtin_s:.3f}   (target: <= 1.05 once cached)")


if __name__ == "__main__":
    main()
