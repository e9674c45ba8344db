"""Chatterbox Multilingual against the reference (chatterbox-tts 0.1.7) on deterministic random weights.

The fixture tests/fixtures/reference_mtl.pt is made by tools/make_reference_fixtures_mtl.py (tools/README.md).
Both sides run the small checkpoint (S3Gen's flow and the S3 tokenizer cut, every width whole), except that T3
keeps the 14 of its 30 layers that the alignment guard reads (its heads are in layers 9, 12 and 13; the small
file's 2 have none): built in memory for the speech tokens. The fixture script sets the reference's depths to
match. At full size the module took 34 s of a core for the same checks of the same code.
"""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch

from chatterbox.model.alignment import AlignmentGuard
from chatterbox.model.checkpoint import CheckpointError, build
from chatterbox.model.conds import T3Cond
from chatterbox.model.languages import FrontEnds
from chatterbox.model.mtl_tokenizer import MTLTokenizer, punc_norm
from chatterbox.model.random_checkpoint import random_conds, random_state_dict
from chatterbox.model.random_checkpoint_mtl import GUARD_LAYERS, guard_t3_state_dict
from chatterbox.model.sampling import SamplingParams
from chatterbox.model.t3 import T3, T3Config
from chatterbox.model.t3_batch import T3Batch, T3Request
from chatterbox.mtl_tts import MTL_FILES, T3_FILE, ChatterboxMultilingualTTS
from chatterbox.tts import load_s3gen

FIXTURE = Path(__file__).parent / "fixtures" / "reference_mtl.pt"


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def mtl_small_dir(mtl_checkpoint) -> Path:
    return mtl_checkpoint  # write_mtl_checkpoint(small=True): conftest's copy


@pytest.fixture(scope="module")
def mtl_small(mtl_small_dir) -> ChatterboxMultilingualTTS:
    return ChatterboxMultilingualTTS.from_local(mtl_small_dir)


@pytest.fixture(scope="module")
def guarded_t3() -> T3:
    tensors = guard_t3_state_dict(0)
    cfg = T3Config.multilingual().with_layers_of(tensors)
    assert cfg.can_align and cfg.llama.n_layers == GUARD_LAYERS
    return build(lambda: T3(cfg), tensors, T3_FILE, "cpu", torch.float32)


def _without_segmenter(tokenizer: MTLTokenizer) -> MTLTokenizer:
    # The fixture's reference ran without pkuseg's model (it cannot be downloaded here); so do we, even where it is.
    chinese = tokenizer.front_ends.chinese
    chinese._segmenter, chinese._segmenter_tried = None, True
    return tokenizer


def test_text_tokens_equal_reference(mtl_small, mtl_small_dir, ref):
    tokenizer = _without_segmenter(MTLTokenizer(mtl_small_dir / "grapheme_mtl_merged_expanded_v1.json"))
    for lang, entry in ref["texts"].items():
        if lang == "ja":
            pytest.importorskip("pykakasi")
        assert punc_norm(entry["text"]) == entry["normalized"], lang
        assert tokenizer(entry["text"], lang).tolist() == entry["text_tokens"], lang
    assert 3 <= len(ref["texts"]["zh"]["text_tokens"]) and "[cj_o][cj_1][cj_.]" in ref["texts"]["zh"]["decoded"]


# Tokens sampled under a smaller cap are the first ones of the reference's run (nothing before the cap depends
# on it), so the test decodes fewer to stay fast.
CAPS = (20, 12, 12)


def test_speech_tokens_equal_reference(guarded_t3, ref):
    def request(case, cap: int) -> T3Request:
        cond = T3Cond(case["speaker_emb"], case["cond_prompt_speech_tokens"],
                      torch.full((1, 1, 1), case["emotion_adv"]))
        sampling = SamplingParams(temperature=case["temperature"], min_p=case["min_p"], top_p=case["top_p"],
                                  repetition_penalty=case["repetition_penalty"])
        return T3Request(cond, torch.tensor(case["text_tokens"]), cfg_weight=case["cfg_weight"], sampling=sampling,
                         max_new_tokens=cap,
                         generator=torch.Generator().manual_seed(case["seed"]), alignment=True)

    cases = ref["cases"]
    # The first alone, the others decoded together: guarded requests batch, each as it would run alone.
    first = request(cases[0], CAPS[0])
    batch = T3Batch(guarded_t3)
    batch.add(first)
    while batch.active:
        batch.step()
    others = [request(c, cap) for c, cap in zip(cases[1:], CAPS[1:])]
    batch = T3Batch(guarded_t3)
    for r in others:
        batch.add(r)
    while batch.active:
        batch.step()
    for case, r, cap in zip(cases, [first, *others], CAPS):
        expected = case["speech_tokens"][0].tolist()[:cap]
        got = r.tokens + ([guarded_t3.cfg.stop_speech] if len(r.tokens) < cap else [])
        assert got == expected, (case["language"], got, expected)
        assert r.guard.alignment.shape[0] == len(got) + 1  # two frames from the prefill, then one per step


def test_waveform_equal_reference(ref):
    w = ref["waveform"]
    gen = random_conds(0, prompt_tokens=25, gen_tokens=50)["gen"]
    s3gen, _ = load_s3gen(random_state_dict("s3gen", 0, small=True), "cpu", torch.float32, "s3gen.pt")
    with torch.inference_mode():
        wav = s3gen(w["speech_tokens"], gen, torch.Generator().manual_seed(w["seed"]), steps=10)
    assert wav.shape == w["wav"].shape
    assert (wav - w["wav"]).abs().max() < 1e-4


def test_invalid_ids_are_dropped_before_s3gen(mtl_small):
    tokens = mtl_small.speech.speech_codes([1, 2, 6563, 4, 8000])
    assert tokens == [1, 2, 4]


def test_unknown_language_refused(mtl_small):
    with pytest.raises(ValueError, match="supported languages: ar, da, de"):
        mtl_small.generate("Hello.", "xx")
    assert set(ChatterboxMultilingualTTS.get_supported_languages()) == set(
        "ar da de el en es fi fr he hi it ja ko ms nl no pl pt ru sv sw tr zh".split())


def test_chinese_degrades_alone(mtl_small_dir, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "spacy_pkuseg", None)  # as if not installed
    tokenizer = MTLTokenizer(mtl_small_dir / "grapheme_mtl_merged_expanded_v1.json", FrontEnds(mtl_small_dir))
    with caplog.at_level(logging.WARNING):
        ids = tokenizer("你好。", "zh")
    assert "spacy-pkuseg is not installed" in caplog.text
    assert tokenizer.decode(ids) == "[zh][cj_o][cj_n][cj_f][cj_.][cj_v][cj_n][cj_d][cj_.]。"
    # No Cangjie file either: characters stay as they are; the other languages never notice.
    bare = MTLTokenizer(mtl_small_dir / "grapheme_mtl_merged_expanded_v1.json", FrontEnds(None))
    assert len(bare("你好。", "zh")) == 6
    assert tokenizer("Hallo.", "de").tolist() == bare("Hallo.", "de").tolist()


def test_cangjie_in_hub_cache_layout(mtl_small_dir, tmp_path):
    snap = tmp_path / "models--ResembleAI--chatterbox" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    shutil.copy(mtl_small_dir / "Cangjie5_TC.json", snap)
    (tmp_path / "models--ResembleAI--chatterbox" / "refs").mkdir()
    (tmp_path / "models--ResembleAI--chatterbox" / "refs" / "main").write_text("abc")
    assert FrontEnds(tmp_path).chinese.encode_glyph("入") == "o1"


def test_long_text_is_spoken_in_chunks_of_its_script():
    # chatterbox.text.chunk_text in the text's language (tests/test_text_languages.py has its rules)
    chunks = ChatterboxMultilingualTTS._chunks("你好。" * 200, "zh")
    assert len(chunks) > 1 and all(c.endswith("。") and " " not in c for c in chunks)
    assert ChatterboxMultilingualTTS._chunks("Kurz.", "de") == ["Kurz."]


def test_loading_errors_name_file_and_tensor(mtl_small_dir, tmp_path):
    for name in MTL_FILES:
        if name != "Cangjie5_TC.json":
            (tmp_path / name).symlink_to(mtl_small_dir / name)
    (tmp_path / "ve.pt").unlink()
    with pytest.raises(FileNotFoundError, match="ve.pt"):
        ChatterboxMultilingualTTS.from_local(tmp_path)
    ve = torch.load(mtl_small_dir / "ve.pt", weights_only=True)
    del ve["proj.weight"]
    torch.save(ve, tmp_path / "ve.pt")
    with pytest.raises(CheckpointError, match=r"ve\.pt .*missing tensor proj\.weight"):
        ChatterboxMultilingualTTS.from_local(tmp_path)


def test_seed_repeatable_and_stream(mtl_small):
    a = mtl_small.generate("Hallo Welt.", "de", seed=3, max_new_tokens=8, steps=2)
    b = mtl_small.generate("Hallo Welt.", "de", seed=3, max_new_tokens=8, steps=2)
    assert a.shape[0] == 1 and torch.equal(a, b)
    pieces = list(mtl_small.generate_stream("Hallo Welt.", "de", seed=3, max_new_tokens=8, steps=2, chunk_tokens=4,
                                            context_tokens=4))
    assert sum(p.shape[1] for p in pieces) == a.shape[1]


def test_alignment_guard_rules():
    guard = AlignmentGuard(text_start=2, text_end=12, stop_token=5, heads=((0, 0),))
    L = 14
    probs = torch.zeros(2, L)
    probs[:, 2] = 1.0  # the start tokens attend to the first text token
    guard.probe.probs[(0, 0)] = probs
    out = guard(torch.zeros(1, 8), last_token=99)
    assert out[0, 5] == -(2**15) and out[0, :5].eq(0).all()  # far from the text's end: no stop
    for token in (7, 7):  # the same id twice in a row: stop is forced at the next step
        guard.probe.probs[(0, 0)] = probs[:1]
        out = guard(torch.zeros(1, 8), last_token=token)
    assert out[0, 5] == 2**15 and out[0, :5].eq(-(2**15)).all()
