"""T3's GPU decoding (fixed KV slots, the step a CUDA graph captures: chatterbox.model.t3_slots), run here on the CPU
without graphs: the same step, so the same tokens as the batch of t3_batch, and the draw for many requests at
once equal to each request's own."""
from __future__ import annotations

import pytest
import torch

from chatterbox.model.rowmatmul import RowMatmul
from chatterbox.model.sampling import SamplingParams, sample, sample_rows
from chatterbox.model.t3_batch import T3Batch
from chatterbox.model.t3_slots import SlotBatch, SlotStep, SlotView

from .test_batching import JOIN_AT, SPECS, decode_joining, request
from .test_model_t3 import tiny_t3


def test_slot_decoding_gives_each_request_the_tokens_of_the_plain_batch():
    model = tiny_t3()
    matmul = RowMatmul(2, exact=False)  # the GPU's matmuls: every row at once, as the slot step does them
    plain = [request(s) for s in SPECS]
    decode_joining(T3Batch(model, matmul), plain, JOIN_AT)
    slots = SlotStep(model, slots=12, positions=128, graphs=False)
    fixed = [request(s) for s in SPECS]
    batch = SlotBatch(model, matmul, slots)
    most = decode_joining(batch, fixed, JOIN_AT)
    assert most >= 4 and len({tuple(r.tokens) for r in plain}) == len(plain)  # together, and all different
    assert [r.tokens for r in fixed] == [r.tokens for r in plain]
    assert slots.cache.free_rows == 12  # every finished request gave its slots back


def test_the_slot_step_computes_what_the_plain_decode_does():
    """Hidden states, not only tokens: the masked attention over every slot's positions (live rows among rows
    that are not) within float rounding of each request's attention over its own."""
    model = tiny_t3()
    matmul = RowMatmul(2, exact=False)
    slots = SlotStep(model, slots=8, positions=128, graphs=False)
    plain, fixed = T3Batch(model, matmul), SlotBatch(model, matmul, slots)
    a, b = [request(s) for s in SPECS[:3]], [request(s) for s in SPECS[:3]]
    for r in a:
        plain.add(r)
    for r in b:
        fixed.add(r)
    for _ in range(5):
        plain.step()
        fixed.step()
        for x, y in zip(a, b):
            assert x.tokens == y.tokens
            if not x.done:
                got = slots.hidden[y.cache.start:y.cache.start + y.rows]
                assert torch.allclose(got, x.hidden, atol=1e-5), float((got - x.hidden).abs().max())


def test_requests_that_do_not_fit_a_slot_decode_beside_those_that_do():
    model = tiny_t3()
    matmul = RowMatmul(2, exact=False)
    plain = [request(s) for s in SPECS]
    decode_joining(T3Batch(model, matmul), plain, JOIN_AT)
    slots = SlotStep(model, slots=5, positions=60, graphs=False)  # room for two guided requests of 60 positions
    fixed = [request(s) for s in SPECS]
    batch = SlotBatch(model, matmul, slots)
    kinds = []
    original_add = batch.add

    def add(r):
        original_add(r)
        kinds.append(isinstance(r.cache, SlotView))

    batch.add = add
    decode_joining(batch, fixed, JOIN_AT)
    assert True in kinds and False in kinds  # both ways ran in one batch
    assert [r.tokens for r in fixed] == [r.tokens for r in plain]
    assert slots.cache.free_rows == 5


def test_a_removed_request_gives_its_slots_back_and_the_rest_go_on():
    model = tiny_t3()
    matmul = RowMatmul(2, exact=False)
    plain = [request(s) for s in SPECS[:3]]
    for_plain = T3Batch(model, matmul)
    slots = SlotStep(model, slots=8, positions=128, graphs=False)
    batch = SlotBatch(model, matmul, slots)
    fixed = [request(s) for s in SPECS[:3]]
    for p, f in zip(plain, fixed):
        for_plain.add(p)
        batch.add(f)
    for _ in range(3):
        for_plain.step()
        batch.step()
    for_plain.remove(plain[0])
    batch.remove(fixed[0])
    assert slots.cache.free_rows == 8 - fixed[1].rows - fixed[2].rows
    while batch.active:
        batch.step()
    while for_plain.active:
        for_plain.step()
    assert [r.tokens for r in fixed[1:]] == [r.tokens for r in plain[1:]]
    assert slots.cache.free_rows == 8


@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_drawing_for_many_requests_at_once_is_each_ones_own_draw(top_p):
    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        n, vocab = 6, 500
        logits = torch.randn(n, vocab, generator=g) * 4
        ids = [torch.randint(0, vocab, (1, 1 + trial % 20), generator=g) for _ in range(n)]
        params = [SamplingParams(temperature=0.2 + i * 0.3, min_p=0.02 * i, top_p=top_p if i % 2 else 1.0,
                                 repetition_penalty=1.0 + 0.4 * i) for i in range(n)]
        seen = torch.zeros(n, vocab, dtype=torch.bool)
        for i in range(n):
            seen[i, ids[i][0]] = True
        each = [int(sample(logits[i:i + 1], ids[i], params[i], torch.Generator().manual_seed(trial * 10 + i)))
                for i in range(n)]
        together = sample_rows(logits, seen, params, [torch.Generator().manual_seed(trial * 10 + i)
                                                      for i in range(n)])
        assert together.tolist() == each


def test_slots_are_sized_to_what_is_asked_on_a_cpu():
    model = tiny_t3()
    step = SlotStep.sized(model, rows=6, positions=64)
    assert step.cache.slots == 6 and not step.graphs  # graphs are CUDA's
    assert step.cache.take(2) == 0 and step.cache.take(1) == 2 and step.cache.take(2) == 3
    step.cache.give(0, 2)
    assert step.cache.take(2) == 0 and step.cache.take(2) is None and step.cache.free_rows == 1
