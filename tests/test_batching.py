"""Batched Chatterbox equals one at a time: each request's speech tokens are the very ones it gets alone with the
same seed, whatever its companions and whenever it joined; its audio is within 1e-4."""
from __future__ import annotations

import json

import pytest
import torch

from chatterbox.model.conds import T3Cond
from chatterbox.model import rowmatmul
from chatterbox.model.rowmatmul import RowMatmul, row_classes
from chatterbox.model.sampling import SamplingParams
from chatterbox.model.t3_batch import T3Batch, T3Request

from .conftest import wait_until
from .test_model_t3 import TINY, tiny_t3


def voice(seed: int, prompt: int = 10) -> T3Cond:
    g = torch.Generator().manual_seed(seed)
    return T3Cond(torch.randn(1, 256, generator=g), torch.randint(0, 6561, (1, prompt), generator=g),
                  torch.full((1, 1, 1), 0.3 + 0.2 * seed))


def text(length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + seed)
    return torch.cat([torch.tensor([255]), torch.randint(1, TINY.text_vocab, (length,), generator=g),
                      torch.tensor([0])])


# Every request differs from the others in something: text, voice, exaggeration, guidance (on, off, strong),
# sampling parameters, length limit and seed.
SPECS = [
    dict(text=text(5, 0), cond=voice(0), cfg_weight=0.5, sampling=SamplingParams(), max_new_tokens=40, seed=1),
    dict(text=text(9, 1), cond=voice(1), cfg_weight=0.0, sampling=SamplingParams(temperature=1.3), max_new_tokens=30,
         seed=2),
    dict(text=text(3, 2), cond=voice(2), cfg_weight=1.0, sampling=SamplingParams(min_p=0.2, top_p=0.8),
         max_new_tokens=50, seed=3),
    dict(text=text(12, 3), cond=voice(0), cfg_weight=0.3, sampling=SamplingParams(repetition_penalty=2.0),
         max_new_tokens=25, seed=4),
    dict(text=text(7, 4), cond=voice(3, prompt=4), cfg_weight=0.0, sampling=SamplingParams(temperature=0.05),
         max_new_tokens=45, seed=5),
    dict(text=text(5, 0), cond=voice(0), cfg_weight=0.5, sampling=SamplingParams(), max_new_tokens=40, seed=6),
]
JOIN_AT = [0, 0, 3, 5, 9, 17]  # the step at which each request joins the batch


def request(spec: dict) -> T3Request:
    return T3Request(spec["cond"], spec["text"], cfg_weight=spec["cfg_weight"], sampling=spec["sampling"],
                     max_new_tokens=spec["max_new_tokens"], generator=torch.Generator().manual_seed(spec["seed"]))


def decode_joining(batch, requests: list, join_at: list[int]) -> int:
    """Decode the requests in one batch, each joining at its step, until all are done; the most decoded at once."""
    step, most = 0, 0
    while step <= max(join_at) or batch.active:
        for r, join in zip(requests, join_at):
            if join == step:
                batch.add(r)
        most = max(most, len(batch.active))
        batch.step()
        step += 1
    return most


@pytest.mark.parametrize("rows", [2, 32], ids=["plan-for-one", "plan-for-a-batch"])
def test_t3_batched_tokens_are_the_tokens_alone(rows):
    model = tiny_t3()
    matmul = RowMatmul(rows)
    alone = [list(model.generate(s["cond"], s["text"], cfg_weight=s["cfg_weight"], sampling=s["sampling"],
                                 max_new_tokens=s["max_new_tokens"], generator=torch.Generator().manual_seed(s["seed"]),
                                 matmul=matmul)) for s in SPECS]
    assert all(alone) and len({tuple(t) for t in alone}) == len(alone)  # all different: the test means something
    batch = T3Batch(model, matmul)
    requests = [request(s) for s in SPECS]
    assert decode_joining(batch, requests, JOIN_AT) >= 4  # requests really ran together
    assert [r.tokens for r in requests] == alone


def test_a_request_removed_from_the_batch_leaves_the_others_alone():
    model = tiny_t3()
    matmul = RowMatmul(8)
    batch = T3Batch(model, matmul)
    requests = [request(s) for s in SPECS[:3]]
    for r in requests:
        batch.add(r)
    for _ in range(4):
        batch.step()
    batch.remove(requests[1])
    assert requests[1] not in batch.active and requests[1].cache is None
    while batch.active:
        batch.step()
    for r, s in zip(requests[::2], SPECS[::2]):
        assert r.tokens == list(model.generate(s["cond"], s["text"], cfg_weight=s["cfg_weight"],
                                               sampling=s["sampling"], max_new_tokens=s["max_new_tokens"],
                                               generator=torch.Generator().manual_seed(s["seed"]), matmul=matmul))


def test_the_probe_finds_a_class_of_rows_with_their_own_bits():
    for form in ("linear", "transposed"):
        for pad, most in row_classes(form, 256, 64, torch.float32, "cpu", 32):
            assert 2 <= pad <= most <= 32
    matmul = RowMatmul(16)
    linear = torch.nn.Linear(64, 256, bias=True)
    x = torch.randn(20, 64)
    with torch.inference_mode():
        alone = torch.cat([matmul(linear, x[i:i + 1]) for i in range(20)])
        for rows in range(1, 21):
            assert torch.equal(matmul(linear, x[:rows]), alone[:rows]), rows


def plans_here() -> list[tuple[str, int, int]]:
    """Every plan the probe could choose on this machine for a (256, 64) weight: each class of each form, rowwise."""
    found = [(form, pad, most) for form in rowmatmul.FORMS
             for pad, most in row_classes(form, 256, 64, torch.float32, "cpu", 32)]
    return found + [(rowmatmul.ROWWISE, 1, rowmatmul.PROBE_LIMIT)]


def test_each_plan_the_probe_may_take_keeps_each_rows_bits(monkeypatch):
    """The plan takes whichever form and class it times fastest here: every one of them must give a row its bits
    alone, whatever rows it shares its chunk with (a lone row padded with zeros included)."""
    linear = torch.nn.Linear(64, 256, bias=True)
    x = torch.randn(20, 64)
    for plan in plans_here():
        monkeypatch.setitem(rowmatmul._PLANS, ((256, 64), torch.float32, torch.device("cpu"), 20), plan)
        matmul = RowMatmul(20)
        with torch.inference_mode():
            assert matmul.plan(linear.weight) == plan
            alone = torch.cat([matmul(linear, x[i:i + 1]) for i in range(20)])
            for rows in range(1, 21):
                assert torch.equal(matmul(linear, x[:rows]), alone[:rows]), (plan, rows)
            assert torch.allclose(alone, linear(x), atol=1e-5)


def test_a_class_that_starts_past_two_rows_is_found_and_batches_in_one_chunk(monkeypatch):
    """Where a kernel keeps a row's bits only in chunks of 2-3 rows, or of 12 and more (measured on one VM), a
    batch of 16 rows is one matmul of 16, and a lone request's rows are padded to 12 with zeros, not 8 matmuls."""
    def kernel(weight, x):  # a row's bits depend on the chunk's size (and its place in it) as such a kernel's do
        out, rows = rowmatmul._rowwise(weight, x), x.shape[0]  # each row exact by itself: only the sizes below count
        if rows in (2, 3):
            return out + 1e-3 * out.abs()
        if rows == 4 or rows >= 12:
            return out
        return out + (1e-3 * rows + 1e-4 * torch.arange(rows)[:, None]) * out.abs()
    calls = []
    monkeypatch.setitem(rowmatmul.FORMS, "linear", lambda w, x: calls.append(x.shape[0]) or kernel(w, x))
    monkeypatch.delitem(rowmatmul.FORMS, "transposed")
    monkeypatch.setattr(rowmatmul, "_PLANS", {})
    monkeypatch.setattr(rowmatmul, "_plan_cache", None)
    assert row_classes("linear", 256, 64, torch.float32, "cpu", 32) == [(2, 3), (4, 4), (12, 32)]
    matmul = RowMatmul(16)
    linear = torch.nn.Linear(64, 256, bias=False)
    # Timed: one chunk of 16 (class 12-32) against 6 chunks of 2-3, 4 of 4, and 16 matrix-vector products.
    monkeypatch.setattr(RowMatmul, "_cost", lambda self, plan, weight: {2: 6, 4: 4, 12: 1, 1: 16}[plan[1]])
    assert matmul.plan(linear.weight) == ("linear", 12, 16)  # probed as far as the rows planned for
    x = torch.randn(16, 64)
    with torch.inference_mode():
        calls.clear()
        together = matmul(linear, x)
        assert calls == [16]
        alone = torch.cat([matmul(linear, x[i:i + 1]) for i in range(16)])
        assert calls[1:] == [12] * 16  # each row beside 11 rows of zeros
        assert torch.equal(together, alone)
        assert torch.equal(alone, kernel(linear.weight, x))


def test_a_process_runs_mkl_in_its_strict_mode_and_plans_are_kept_apart_by_mode():
    """chatterbox asks MKL for its strict mode (rows keep their bits in longer classes); a process where another
    mode is in effect (set by its user, or its first matmul came before chatterbox was imported) plans apart."""
    import os
    import subprocess
    import sys

    from chatterbox.model import rowmatmul

    if rowmatmul._mkl_mode() == os.environ.get("MKL_CBWR", ""):
        pytest.skip("this torch has no MKL to ask")
    assert int(rowmatmul._mkl_mode()) & 0x10000  # MKL_CBWR_STRICT, in this process (it imported chatterbox first)
    # Another process, as many threads as this one (part of a plan's key too), whose first matmul comes first.
    code = ("import sys, json, torch; torch.set_num_threads(int(sys.argv[1])); torch.ones(2, 2) @ torch.ones(2, 2); "
            "from chatterbox.model import rowmatmul as r; print(json.dumps([r._mkl_mode(), r._machine()]))")
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    mode, machine = json.loads(subprocess.run([sys.executable, "-c", code, str(torch.get_num_threads())], env=env,
                                              capture_output=True, text=True, check=True).stdout)
    assert not int(mode) & 0x10000
    assert machine != rowmatmul._machine()


def test_a_plan_is_made_once_per_machine_and_read_by_every_process(tmp_path, monkeypatch):
    """A worker that restarts (or a second process) reads the plan its machine made instead of timing the forms
    again, which could come out the other way and change the bits of what it decodes."""
    import subprocess
    import sys

    from chatterbox.model import rowmatmul

    path = tmp_path / "plans.json"
    # The other process uses as many threads as this one (another test of this process may have changed them): the
    # thread count is part of what a plan is made for.
    script = ("import sys, json, torch; from chatterbox.model import rowmatmul as r; r.set_plan_cache(sys.argv[1]); "
              "torch.set_num_threads(int(sys.argv[2])); print(json.dumps(r.RowMatmul(6).plan(torch.zeros(96, 48))))")
    made = subprocess.run([sys.executable, "-c", script, str(path), str(torch.get_num_threads())],
                          capture_output=True, text=True, check=True)
    made = json.loads(made.stdout)
    plans = json.loads(path.read_text())
    [(name, kept)] = plans.items()
    assert kept == made and len(kept) == 3 and name.endswith("cpu float32 96x48 rows=6")

    # Another process reads it: this one, with no plan in memory, and its own timing would now fail loudly.
    monkeypatch.setattr(rowmatmul, "_PLANS", {})
    monkeypatch.setattr(rowmatmul, "_plan_cache", None)
    rowmatmul.set_plan_cache(path)
    monkeypatch.setattr(RowMatmul, "_make_plan", lambda self, weight: pytest.fail("planned again"))
    assert list(RowMatmul(6).plan(torch.zeros(96, 48))) == made

    # A plan for other rows (or a damaged file) is made and added, keeping the others.
    monkeypatch.undo()
    monkeypatch.setattr(rowmatmul, "_PLANS", {})
    monkeypatch.setattr(rowmatmul, "_plan_cache", path)
    assert RowMatmul(3).plan(torch.zeros(96, 48))[0] in ("linear", "transposed", "rowwise")
    assert len(json.loads(path.read_text())) == 2
    path.write_text("{not json")
    RowMatmul(3).plan(torch.zeros(96, 48))  # in memory: no file read
    monkeypatch.setattr(rowmatmul, "_PLANS", {})
    RowMatmul(3).plan(torch.zeros(96, 48))
    assert [k.endswith("rows=3") for k in json.loads(path.read_text())] == [True]

    # Where the file cannot be written (a read-only data directory), the plan is made and kept in memory.
    monkeypatch.setattr(rowmatmul, "_PLANS", {})
    blocked = tmp_path / "a-file-not-a-directory"
    blocked.write_text("")
    monkeypatch.setattr(rowmatmul, "_plan_cache", blocked / "plans.json")
    assert RowMatmul(3).plan(torch.zeros(96, 48))[0] in ("linear", "transposed", "rowwise")


# -- the whole pipeline: generate_batch against generate ----------------------------------------------------------

def tiny_tts(tmp_path, max_batch: int = 8):
    """A ChatterboxTTS of tiny random models (T3, flow, HiFT) with the real tokenizer layout."""
    import json

    from chatterbox.model.random_checkpoint import tokenizer_json
    from chatterbox.model.s3gen.decoder import DecoderConfig
    from chatterbox.model.s3gen.encoder import EncoderConfig
    from chatterbox.model.s3gen.flow import Flow
    from chatterbox.model.s3gen.hift import HiFT, HiFTConfig
    from chatterbox.model.speech_tokens import SpeechTokenModel
    from chatterbox.model.tokenizer import TextTokenizer
    from chatterbox.tts import ChatterboxTTS, S3Gen

    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    torch.manual_seed(7)
    flow = Flow(EncoderConfig(dim=64, heads=2, ff_dim=128, blocks=1, up_blocks=1),
                DecoderConfig(channels=32, heads=2, head_dim=16, transformer_blocks=1, mid_blocks=1)).eval()
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if "pos_bias" in name:
                p.normal_(0, 0.1)
    hift = HiFT(HiFTConfig(base_channels=32, f0_channels=16)).eval().fold_weight_norm()
    speech = SpeechTokenModel(tiny_t3(), TextTokenizer(tmp_path / "tokenizer.json"), None, None, None,
                              torch.device("cpu"), max_batch=max_batch)
    return ChatterboxTTS(speech, S3Gen(flow, hift, None, torch.device("cpu")), torch.device("cpu"))


def tiny_voice(seed: int):
    from chatterbox.model.conds import Conditionals

    g = torch.Generator().manual_seed(seed)
    prompt = 20 + 7 * seed
    return Conditionals(voice(seed), {"prompt_token": torch.randint(0, 6561, (1, prompt), generator=g),
                                      "prompt_token_len": torch.tensor([prompt]),
                                      "prompt_feat": torch.randn(1, 2 * prompt, 80, generator=g) * 0.5 - 5,
                                      "prompt_feat_len": None, "embedding": torch.randn(1, 192, generator=g)})


def test_generate_batch_equals_generate_for_mixed_texts_voices_and_parameters(tmp_path):
    tts = tiny_tts(tmp_path)
    texts = ["Hello there.", "A second, somewhat longer sentence to say.", "Short.", "Hello there."]
    voices = [tiny_voice(0), tiny_voice(1), tiny_voice(2), tiny_voice(0)]
    params = dict(seeds=[1, 2, 3, 4], cfg_weight=[0.5, 0.0, 1.0, 0.5], temperature=[0.8, 1.2, 0.5, 0.8],
                  exaggeration=[0.5, 0.9, 0.3, 0.5], min_p=0.05, top_p=[1.0, 0.9, 1.0, 1.0],
                  repetition_penalty=[1.2, 1.0, 2.0, 1.2], steps=[2, 3, 2, 2], max_new_tokens=[30, 45, 20, 30])
    batched = tts.generate_batch(texts, voices=voices, **params)
    for i, text in enumerate(texts):
        alone = tts.generate(text, voice=voices[i], seed=params["seeds"][i],
                             **{k: (v[i] if isinstance(v, list) else v) for k, v in params.items() if k != "seeds"})
        assert batched[i].shape == alone.shape, i
        assert float((batched[i] - alone).abs().max()) <= 1e-4, i
    assert batched[0].shape != batched[1].shape  # different requests, different lengths: the test means something


@pytest.mark.parametrize("finalize", [True, False])
def test_flow_and_hift_over_padded_rows_equal_each_row_alone(tmp_path, finalize):
    """The GPU's way (rows of different lengths in one pass), checked here on the CPU: padding past each row's end
    never reaches its real frames (the embedding's bias and LayerNorm through the lookahead, attention, the
    vocoder's convolutions)."""
    from chatterbox.model.s3gen.flow import FlowInput

    tts = tiny_tts(tmp_path)
    flow, hift = tts.s3gen.flow, tts.s3gen.hift
    gens = [tiny_voice(i).gen for i in range(3)]
    lengths = [7, 40, 19]

    def items():
        return [FlowInput(torch.randint(0, 6561, (1, n), generator=torch.Generator().manual_seed(n)),
                          g["prompt_token"], g["prompt_feat"], g["embedding"], torch.Generator().manual_seed(i))
                for i, (n, g) in enumerate(zip(lengths, gens))]

    alone = [flow.forward_batch([item], steps=3, finalize=finalize)[0] for item in items()]
    together = flow.forward_batch(items(), steps=3, finalize=finalize)
    for a, b in zip(alone, together):
        assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-5
    generators = lambda: [torch.Generator().manual_seed(10 + i) for i in range(3)]  # noqa: E731
    wav_alone = [hift.forward_batch([m], [g])[0] for m, g in zip(alone, generators())]
    wav_together = hift.forward_batch(alone, generators())
    for a, b in zip(wav_alone, wav_together):
        assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-4


# -- the worker's batch loop: jobs in their own threads, audio as each alone ----------------------------------------

def loop_params(i: int) -> dict:
    return {"exaggeration": 0.4 + 0.1 * i, "cfg_weight": [0.5, 0.0, 0.8][i % 3], "temperature": 0.8 + 0.1 * i,
            "min_p": 0.05, "top_p": 1.0, "repetition_penalty": 1.2, "seed": 50 + i, "steps": 2 + i % 2,
            "max_new_tokens": 35 + 5 * i}


def assert_each_job_hears_its_audio_alone(tts, texts: list[str], voices: list, params, bulk: set[int],
                                          timeout_s: float = 120) -> None:
    """All but the last job submitted to one batch loop at once, the last once the batch is running; streaming jobs
    must hear generate_stream's pieces, bulk ones generate's whole utterance, bit for bit (``params(i)``: job i's)."""
    import threading

    from chatterbox.engines.batch_loop import BULK, BatchLoop, Request

    loop = BatchLoop(tts, max_batch=4)
    heard: dict[int, list] = {}

    def job(i: int) -> None:
        request = Request(texts[i], voices[i], params(i), stream=i not in bulk, priority=BULK if i in bulk else 0)
        heard[i] = list(loop.submit(request).pieces())

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(texts) - 1)]
    for t in threads:
        t.start()
    wait_until(lambda: loop.steps >= 6, timeout_s / 2, 0.01, "a few steps")  # the last one joins a running batch
    threads.append(threading.Thread(target=job, args=(len(texts) - 1,)))
    threads[-1].start()
    for t in threads:
        t.join(timeout_s)
    for i, text in enumerate(texts):
        p = params(i)
        kwargs = {k: v for k, v in p.items() if k != "seed"}
        if i in bulk:
            alone = [tts.generate(text, voice=voices[i], seed=p["seed"], **kwargs)]
        else:
            alone = list(tts.generate_stream(text, voice=voices[i], seed=p["seed"], **kwargs))
        assert [x.shape for x in heard[i]] == [x.shape for x in alone], i
        assert all(torch.equal(a, b) for a, b in zip(heard[i], alone)), i
    assert loop.occupancy()["active"] == 0 and loop.most >= 3  # they really ran together


def test_the_batch_loop_gives_each_request_its_audio_alone(tmp_path):
    texts = ["Hello there.", "The second job, a little longer.", "Third.", "A book's chunk, made whole.",
             "Another chunk of the book.", "The last one, late."]
    assert_each_job_hears_its_audio_alone(tiny_tts(tmp_path, max_batch=4), texts,
                                          [tiny_voice(i % 3) for i in range(len(texts))], loop_params, bulk={3, 4})


def test_a_reader_that_stops_leaves_the_batch_and_spares_the_others(tmp_path):
    import threading

    from chatterbox.engines.batch_loop import BatchLoop, Request

    tts = tiny_tts(tmp_path, max_batch=4)
    loop = BatchLoop(tts, max_batch=4)
    quitter = loop.submit(Request("One who leaves after the first piece.", tiny_voice(0),
                                  {**loop_params(0), "max_new_tokens": 78}))
    stayer = loop.submit(Request("One who stays.", tiny_voice(1), loop_params(1)))
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("stayer", list(stayer.pieces())))
    reader.start()
    pieces = quitter.pieces()
    next(pieces)
    pieces.close()  # as a cancelled job's thread does
    reader.join(120)
    p = loop_params(1)
    alone = list(tts.generate_stream("One who stays.", voice=tiny_voice(1), seed=p["seed"],
                                     **{k: v for k, v in p.items() if k != "seed"}))
    assert all(torch.equal(a, b) for a, b in zip(got["stayer"], alone)) and len(got["stayer"]) == len(alone)
    wait_until(lambda: loop.occupancy()["active"] == 0, 30, 0.05, "the quitter to leave")


def test_a_check_that_raises_ends_a_request_before_its_next_piece(tmp_path, monkeypatch):
    """A cancelled job's thread does not wait for the window (or whole utterance) in the making: its check,
    asked while it waits, raises, and the request leaves the batch."""
    from chatterbox.engines import batch_loop
    from chatterbox.engines.batch_loop import BULK, BatchLoop, Request

    class Cancelled(Exception):
        pass

    def check() -> None:
        raise Cancelled()

    monkeypatch.setattr(batch_loop, "CHECK_EVERY_S", 0.0005)  # asked long before 78 tokens are spoken
    tts = tiny_tts(tmp_path, max_batch=4)
    loop = BatchLoop(tts, max_batch=4)
    request = loop.submit(Request("A long chunk that nobody waits for any more.", tiny_voice(0),
                                  {**loop_params(0), "max_new_tokens": 78}, stream=False, priority=BULK))
    got = []
    with pytest.raises(Cancelled):
        for piece in request.pieces(check):
            got.append(piece)
    assert got == [] and request.cancelled.is_set()
    wait_until(lambda: loop.occupancy()["active"] == 0 and not loop.occupancy()["waiting"], 30, 0.05,
               "the request to leave the batch")
