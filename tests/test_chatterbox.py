"""The whole Chatterbox pipeline on CPU (the small seeded random checkpoint), and as the job system's engine."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from chatterbox.model.conds import Conditionals
from chatterbox.model.rowmatmul import RowMatmul

from .conftest import System

CLIP_RATE = 24000


def voice_clip(seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * CLIP_RATE)) / CLIP_RATE
    return (0.3 * np.sin(2 * np.pi * (150 + 30 * t) * t) * np.minimum(1, t)).astype(np.float32)


def test_generate_whole_utterance(tts):
    wav = tts.generate("Hello there.", seed=1, max_new_tokens=12, steps=2)
    assert wav.dim() == 2 and wav.shape[0] == 1 and tts.sr == 24000
    assert 0 < wav.shape[1] <= 12 * 960 and wav.shape[1] % 960 == 0
    assert float(wav.abs().max()) <= 0.99 + 1e-6  # clamped, as the reference does
    assert torch.all(wav[0, :480] == 0)  # the first 20 ms are silenced, as the reference does
    again = tts.generate("Hello there.", seed=1, max_new_tokens=12, steps=2)
    assert torch.equal(wav, again)


def test_stream_yields_chunks_before_the_end(tts):
    chunks = list(tts.generate_stream("Streaming works.", seed=3, max_new_tokens=50, steps=2, chunk_tokens=10))
    assert len(chunks) >= 3
    whole = tts.generate("Streaming works.", seed=3, max_new_tokens=50, steps=2)
    assert abs(sum(c.shape[1] for c in chunks) - whole.shape[1]) <= 960  # same tokens, same length


def test_cloned_voice_round_trip(tts, tmp_path):
    conds = tts.prepare_conditionals(voice_clip(), sample_rate=CLIP_RATE, exaggeration=0.7)
    assert conds.gen["prompt_feat"].shape[1] == 2 * conds.gen["prompt_token"].shape[1]
    assert conds.gen["embedding"].shape == (1, 192) and torch.isfinite(conds.gen["embedding"]).all()
    path = tmp_path / "voice.pt"
    conds.save(path)
    loaded = Conditionals.load(path)
    a = tts.generate("Same voice.", voice=conds, seed=4, max_new_tokens=8, steps=2)
    b = tts.generate("Same voice.", voice=path, seed=4, max_new_tokens=8, steps=2)
    assert torch.equal(a, b) and loaded.t3.speaker_emb.shape == (1, 256)


def test_bad_tokens_and_input(tts):
    with pytest.raises(ValueError, match="no speech tokens"):
        tts.s3gen.check_tokens([6561, 7000])
    assert tts.s3gen.check_tokens([1, 6562, 2]).tolist() == [[1, 2]]  # dropped with a warning
    with pytest.raises(ValueError, match="empty"):
        tts.generate("   ")


def test_chatterbox_engine_in_the_job_system(tmp_path, random_checkpoint, tts):
    system = System(tmp_path)
    system.env.update(TTS_ENGINE="auto", CHATTERBOX_MODEL_DIR=str(random_checkpoint))
    from chatterbox.voices import VoiceLibrary

    saved = VoiceLibrary(system.data / "voices").create(
        name="narrator", engine="chatterbox", conds=tts.make_conditionals(voice_clip(), sample_rate=CLIP_RATE),
        reference_wav=b"")
    system.start()
    try:
        health = system.api.get("/health", timeout=10).json()
        assert health["engine"]["name"] == "chatterbox"
        assert health["workers"][0]["engine"] == "chatterbox" and health["workers"][0]["model_loaded"]
        assert [v["id"] for v in system.api.get("/voices", timeout=10).json()["voices"]] == \
            ["default", saved.id]
        params = {"max_new_tokens": 10, "seed": 5, "steps": 2}
        for voice in ("default", "narrator"):
            job = system.submit("Hello from Chatterbox.", voice=voice, params=params)
            done = system.wait_job(job["job_id"], timeout=180)
            assert done["status"] == "succeeded", done
            assert done["sample_rate"] == 24000 and done["engine"] == "chatterbox"
        bad = system.api.post("/synthesize", json={"text": "Hi.", "params": {"steps": 50}}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "params.steps"
    finally:
        system.stop()


def test_flow_and_t3_run_in_bf16(tts):
    import copy

    flow = copy.deepcopy(tts.s3gen.flow).to(torch.bfloat16)
    gen = tts.conds.gen
    tokens = torch.randint(0, 6561, (1, 12), generator=torch.Generator().manual_seed(0))
    mels = flow(tokens, gen["prompt_token"], gen["prompt_feat"], gen["embedding"],
                generator=torch.Generator().manual_seed(1), steps=2)
    assert mels.shape == (1, 80, 24) and mels.dtype == torch.bfloat16 and torch.isfinite(mels.float()).all()
    t3 = copy.deepcopy(tts.t3).to(torch.bfloat16)
    # Without the CPU's row-exact matmuls (RowMatmul): at these widths their first use plans each weight shape, and
    # bf16's probe runs all 64 rows (every form keeps each row's bits here), 16 s of a core on a fresh machine.
    # The row-exact path in bf16 is test_model_t3's, at tiny widths.
    ids = tts.tokenizer("Half precision.")
    tokens = list(t3.generate(tts.conds.t3, ids, max_new_tokens=4, generator=torch.Generator().manual_seed(0),
                              matmul=RowMatmul(exact=False)))
    assert len(tokens) <= 4
