"""Our T3, tokenizer, sampling and checkpoint loading at tiny size: the logic, quickly."""
from __future__ import annotations

import json

import pytest
import torch

from chatterbox.model.checkpoint import CheckpointError, build
from chatterbox.model.conds import Conditionals, T3Cond
from chatterbox.model.llama import KVCache, LlamaConfig
from chatterbox.model.random_checkpoint import random_conds, tokenizer_json
from chatterbox.model.sampling import SamplingParams, min_p_filter, repetition_penalty, top_p_filter
from chatterbox.model.t3 import T3, T3Config
from chatterbox.model.tokenizer import TextTokenizer, punc_norm

TINY = T3Config(llama=LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, hidden_dim=128),
                perceiver_queries=4, perceiver_heads=2, text_positions=64, speech_positions=80)


def tiny_t3(seed=0) -> T3:
    torch.manual_seed(seed)
    model = T3(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def cond(prompt=10) -> T3Cond:
    g = torch.Generator().manual_seed(3)
    return T3Cond(torch.randn(1, 256, generator=g), torch.randint(0, 6561, (1, prompt), generator=g),
                  torch.full((1, 1, 1), 0.5))


TEXT = torch.tensor([255, 10, 20, 30, 40, 0])


def test_cached_decoding_matches_full_recompute():
    model = tiny_t3()
    embeds = model.prefill_embeds(cond(), TEXT, guided=True)  # (2, L, dim)
    cache = KVCache(TINY.llama, 2, embeds.shape[1] + 3, embeds.device, embeds.dtype)
    with torch.inference_mode():
        model.tfmr(embeds, cache)
        extra = torch.randn(2, 3, TINY.dim)
        stepwise = torch.cat([model.tfmr(extra[:, i:i + 1], cache) for i in range(3)], dim=1)
        full = model.tfmr(torch.cat([embeds, extra], dim=1))[:, -3:]
    torch.testing.assert_close(stepwise, full, rtol=1e-5, atol=1e-5)


def test_prefill_layout():
    model = tiny_t3()
    with torch.inference_mode():
        guided = model.prefill_embeds(cond(), TEXT, guided=True)
        plain = model.prefill_embeds(cond(), TEXT, guided=False)
    conditioning = 1 + TINY.perceiver_queries + 1
    assert guided.shape == (2, conditioning + len(TEXT) + 2, TINY.dim) and plain.shape[0] == 1
    torch.testing.assert_close(guided[0], plain[0])
    text = slice(conditioning, conditioning + len(TEXT))
    # the unconditioned row carries only the text positions
    torch.testing.assert_close(guided[1, text], model.text_pos_emb(0, len(TEXT)))
    torch.testing.assert_close(guided[1, :conditioning], guided[0, :conditioning])
    torch.testing.assert_close(guided[0, -1], guided[0, -2])  # start of speech twice


@pytest.mark.parametrize("cfg_weight", [0.0, 0.5])
def test_generation_is_seeded_and_streams(cfg_weight):
    model = tiny_t3()
    params = SamplingParams()
    run = lambda seed: list(model.generate(cond(), TEXT, cfg_weight=cfg_weight, sampling=params,
                                           max_new_tokens=20, generator=torch.Generator().manual_seed(seed)))
    first, again, other = run(1), run(1), run(2)
    assert first == again and first != other
    assert 0 < len(first) <= 20 and all(isinstance(t, int) for t in first)
    stream = model.generate(cond(), TEXT, cfg_weight=cfg_weight, sampling=params, max_new_tokens=20,
                            generator=torch.Generator().manual_seed(1))
    assert next(stream) == first[0]  # tokens come one at a time, before the rest are made


def test_guidance_combines_rows():
    model = tiny_t3()
    seen = {}
    list(model.generate(cond(), TEXT, cfg_weight=0.7, max_new_tokens=1, generator=torch.Generator().manual_seed(0),
                        on_logits=lambda step, logits: seen.setdefault(step, logits)))
    with torch.inference_mode():
        rows = model.speech_head(model.tfmr(model.prefill_embeds(cond(), TEXT, guided=True))[:, -1])
    torch.testing.assert_close(seen[0], rows[0:1] + 0.7 * (rows[0:1] - rows[1:2]), rtol=1e-4, atol=1e-4)


def test_text_limits():
    model = tiny_t3()
    with pytest.raises(ValueError, match="empty"):
        list(model.generate(cond(), torch.tensor([255, 0]), max_new_tokens=2))
    with pytest.raises(ValueError, match="at most 64 in one pass"):
        list(model.generate(cond(), torch.tensor([255] + [5] * 70 + [0]), max_new_tokens=2))
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(model.generate(cond(), TEXT, max_new_tokens=500))


def test_sampling_processors():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    penalized = repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert penalized.tolist() == [[1.0, -4.0, 1.0, 0.5]]  # once per distinct id
    kept = min_p_filter(logits, 0.3)
    probs = torch.softmax(logits, -1)
    assert torch.isinf(kept[0]).tolist() == (probs[0] < 0.3 * probs.max()).tolist()
    top = top_p_filter(logits, 0.5)
    assert torch.isfinite(top[0]).tolist() == [True, False, False, False]
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)


def test_tokenizer_normalization_and_framing(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tokenizer_json()))
    tok = TextTokenizer(path)
    ids = tok("hello world")
    assert ids[0] == 255 and ids[-1] == 0 and ids.dtype == torch.long
    assert tok.decode(ids[1:-1]) == "Hello world."
    assert punc_norm("") == "You need to add some text for me to talk."
    assert punc_norm("wait... what: yes; no \u2014 ok") == "Wait,  what, yes,  no - ok."  # as the reference: spaces collapse first
    with pytest.raises(ValueError, match="empty"):
        tok("   ")


def test_checkpoint_errors_name_the_tensor():
    state = tiny_t3().state_dict()
    missing = {k: v for k, v in state.items() if k != "speech_head.weight"}
    with pytest.raises(CheckpointError, match="missing tensor speech_head.weight"):
        build(lambda: T3(TINY), missing, "t3_cfg.safetensors", "cpu", torch.float32)
    with pytest.raises(CheckpointError, match="unexpected tensor extra.bias"):
        build(lambda: T3(TINY), {**state, "extra.bias": torch.zeros(1)}, "t3_cfg.safetensors", "cpu", torch.float32)
    wrong = {**state, "text_emb.weight": torch.zeros(3, 3)}
    with pytest.raises(CheckpointError, match=r"text_emb.weight has shape \(3, 3\), expected \(704, 64\)"):
        build(lambda: T3(TINY), wrong, "t3_cfg.safetensors", "cpu", torch.float32)
    loaded = build(lambda: T3(TINY), state, "t3_cfg.safetensors", "cpu", torch.bfloat16)
    assert loaded.speech_head.weight.dtype == torch.bfloat16 and not loaded.speech_head.weight.is_meta


def test_bf16_generation_runs():
    model = tiny_t3().to(torch.bfloat16)
    tokens = list(model.generate(cond(), TEXT, max_new_tokens=5, generator=torch.Generator().manual_seed(0)))
    assert len(tokens) <= 5


def test_conditionals_round_trip(tmp_path):
    raw = random_conds(1)
    torch.save(raw, tmp_path / "conds.pt")
    conds = Conditionals.load(tmp_path / "conds.pt")
    assert conds.t3.cond_prompt_speech_tokens.shape == (1, 150) and conds.gen["embedding"].shape == (1, 192)
    conds.save(tmp_path / "again.pt")
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    assert set(again["t3"]) == set(raw["t3"]) and torch.equal(again["t3"]["speaker_emb"], raw["t3"]["speaker_emb"])
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a conditionals file"):
        Conditionals.load(tmp_path / "bad.pt")


def test_model_dir_errors(tmp_path, monkeypatch):
    from chatterbox.model.checkpoint import resolve_model_dir

    with pytest.raises(FileNotFoundError, match="lacks the checkpoint files ve.safetensors, t3_cfg.safetensors"):
        resolve_model_dir(tmp_path)
    monkeypatch.delenv("CHATTERBOX_MODEL_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hub"))
    with pytest.raises(RuntimeError, match="set CHATTERBOX_MODEL_DIR"):
        resolve_model_dir(None)


def test_t3_takes_its_layer_count_from_the_checkpoint(random_checkpoint):
    from chatterbox.model.speech_tokens import SpeechTokenModel

    official = T3Config()
    layers = lambda n: {f"tfmr.layers.{i}.mlp.up_proj.weight": None for i in n}  # noqa: E731
    assert official.with_layers_of(layers(range(30))) is official
    assert official.with_layers_of(layers(range(2))).llama.n_layers == 2
    with pytest.raises(CheckpointError, match=r"\[0, 2\]"):  # a layer missing is a damaged file, not a smaller model
        official.with_layers_of(layers([0, 2]))
    # The tests' small checkpoint loads as a 2-layer T3 through the same loader as the official files.
    model = SpeechTokenModel.from_local(random_checkpoint, device="cpu")
    assert model.t3.cfg.llama.n_layers == 2 and len(model.t3.tfmr.layers) == 2


def test_loading_a_model_computes_nothing_on_the_meta_device(random_checkpoint):
    """A build on the meta device skips random init and weight_norm's first norm (checkpoint._NothingToCompute):
    their meta kernels are Python whose first call imports torch._dynamo, 1.3 s of a core in every worker. Checked
    in a fresh process, where nothing else has imported it; the weights loaded are the file's, whole."""
    import subprocess
    import sys

    script = ("import sys, torch\n"
              "from chatterbox.tts import ChatterboxTTS\n"
              "from safetensors.torch import load_file\n"
              f"tts = ChatterboxTTS.from_local({str(random_checkpoint)!r}, device='cpu')\n"
              "assert 'torch._dynamo' not in sys.modules, 'a model build imported torch._dynamo'\n"
              f"file = load_file({str(random_checkpoint / 's3gen.safetensors')!r})\n"
              "assert torch.equal(tts.s3gen.flow.input_embedding.weight, file['flow.input_embedding.weight'])\n"
              "g, v = (file[f'mel2wav.conv_pre.parametrizations.weight.original{i}'] for i in (0, 1))\n"
              "expected = g * v / v.norm(dim=(1, 2), keepdim=True)  # weight_norm along dim 0\n"
              "torch.testing.assert_close(tts.s3gen.hift.conv_pre.weight, expected)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("part", ["t3", "t3-turbo", "t3-mtl"])
def test_the_full_depth_t3_takes_every_tensor_of_its_official_file(part):
    """The reference tests run small checkpoints (every width whole, fewer layers); the official files' full depth
    (30 Llama layers, 24 GPT-2 blocks) is checked here against their layouts, built on the meta device through the
    loaders' own steps (no weights drawn): the strict load refuses any missing, extra or misshaped tensor."""
    from chatterbox.model.random_checkpoint import layout
    from chatterbox.tts_turbo import load_t3

    tensors = {name: torch.empty(shape, dtype=dtype, device="meta") for name, (shape, dtype) in layout(part).items()}
    if part == "t3-turbo":
        model = load_t3(tensors, "meta", torch.float32)
        assert len(model.tfmr.h) == 24
    else:
        official = T3Config.multilingual() if part == "t3-mtl" else T3Config()
        cfg = official.with_layers_of(tensors)
        assert cfg == official and cfg.llama.n_layers == 30
        assert cfg.can_align == (part == "t3-mtl")  # Multilingual's alignment guard reads layers 9 to 13
        model = build(lambda: T3(cfg), tensors, part, "meta", torch.float32)
    assert set(model.state_dict()) == set(tensors) - {"tfmr.wte.weight"}  # Turbo drops GPT-2's token table
