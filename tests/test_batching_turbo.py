"""Batched Chatterbox Turbo equals one at a time: each request's speech tokens are the very ones it gets alone with
the same seed, whatever its companions and whenever it joined, and the worker's batch loop gives each job the audio
``generate`` or ``generate_stream`` gives it alone. On the small random Turbo checkpoint (T3 with 2 of its 24
blocks)."""
from __future__ import annotations

import pytest
import torch

from chatterbox.model.random_checkpoint import random_conds
from chatterbox.model.conds import Conditionals
from chatterbox.model.t3_turbo import TurboSampling
from chatterbox.model.t3_turbo_batch import T3TurboBatch, TurboRequest
from chatterbox.tts_turbo import SILENCE_TOKEN, ChatterboxTurboTTS

from .test_batching import assert_each_job_hears_its_audio_alone, decode_joining


@pytest.fixture(scope="module")
def turbo(turbo_checkpoint) -> ChatterboxTurboTTS:
    return ChatterboxTurboTTS.from_local(turbo_checkpoint, max_batch=4)


def voice(seed: int) -> Conditionals:
    return Conditionals.from_data(random_conds(seed, prompt_tokens=10 + 5 * seed, gen_tokens=20))


# Every request differs from the others in something: text, voice, sampling parameters, length limit and seed.
TEXTS = ["Hello there.", "A second, somewhat longer sentence [laugh] to say.", "Short.", "Hello there.",
         "Oh [sigh], the fifth one.", "And the last, late."]
SAMPLING = [TurboSampling(), TurboSampling(temperature=1.3, top_k=50), TurboSampling(top_p=0.5),
            TurboSampling(repetition_penalty=2.0), TurboSampling(temperature=0.05, top_k=0, top_p=1.0),
            TurboSampling(top_k=5, repetition_penalty=1.0)]
MAX_NEW = [30, 25, 40, 30, 20, 35]
JOIN_AT = [0, 0, 3, 5, 9, 17]  # the step at which each request joins the batch


def make_request(turbo, i: int) -> TurboRequest:
    return TurboRequest(voice(i % 3).t3, turbo.tokenizer(TEXTS[i]), sampling=SAMPLING[i], max_new_tokens=MAX_NEW[i],
                        generator=torch.Generator().manual_seed(100 + i))


def test_t3_batched_tokens_are_the_tokens_alone(turbo):
    alone = [list(turbo.t3.generate(voice(i % 3).t3, turbo.tokenizer(TEXTS[i]), sampling=SAMPLING[i],
                                    max_new_tokens=MAX_NEW[i], generator=torch.Generator().manual_seed(100 + i),
                                    matmul=turbo.speech.matmul)) for i in range(len(TEXTS))]
    assert all(alone) and len({tuple(t) for t in alone}) == len(alone)  # all different: the test means something
    batch = T3TurboBatch(turbo.t3, turbo.speech.matmul)
    requests = [make_request(turbo, i) for i in range(len(TEXTS))]
    assert decode_joining(batch, requests, JOIN_AT) >= 4  # requests really ran together
    assert [r.tokens for r in requests] == alone


def test_a_request_removed_from_the_batch_leaves_the_others_alone(turbo):
    batch = turbo.speech.new_batch()
    requests = [make_request(turbo, i) for i in range(3)]
    for r in requests:
        batch.add(r)
    for _ in range(4):
        batch.step()
    batch.remove(requests[1])
    assert requests[1].done and requests[1].cache is None and batch.rows == 2
    while batch.active:
        batch.step()
    for i in (0, 2):
        alone = list(turbo.t3.generate(voice(i).t3, turbo.tokenizer(TEXTS[i]), sampling=SAMPLING[i],
                                       max_new_tokens=MAX_NEW[i], generator=torch.Generator().manual_seed(100 + i),
                                       matmul=turbo.speech.matmul))
        assert requests[i].tokens == alone


def test_too_long_a_request_is_refused_before_it_takes_a_place(turbo):
    batch = turbo.speech.new_batch()
    request = make_request(turbo, 0)
    request.max_new_tokens = turbo.t3.cfg.gpt2.positions
    with pytest.raises(ValueError, match="positions"):
        batch.add(request)
    assert batch.active == []


def params(i: int) -> dict:
    return {"temperature": 0.8 + 0.1 * i, "top_k": [1000, 40, 5][i % 3], "top_p": [0.95, 1.0, 0.7][i % 3],
            "repetition_penalty": 1.2 + 0.1 * (i % 2), "seed": 50 + i, "max_new_tokens": 28 + 2 * i}


def test_the_batch_loop_gives_each_turbo_request_its_audio_alone(turbo):
    """Streaming jobs get generate_stream's pieces, book chunks generate's whole utterance (the three silence tokens
    included), whoever they ran beside and whenever they joined."""
    texts = ["Hello there.", "The second job [chuckle], a little longer.", "Third.", "A book's chunk, made whole.",
             "Another chunk of the book.", "The last one, late."]
    assert_each_job_hears_its_audio_alone(turbo, texts, [voice(i % 3) for i in range(len(texts))], params,
                                          bulk={3, 4}, timeout_s=180)


def test_every_turbo_utterance_ends_in_its_silence_tokens(turbo):
    tokens = list(turbo.speech.generate("Hello there.", voice(0), seed=3, max_new_tokens=12))
    assert tokens[-3:] == [SILENCE_TOKEN] * 3 and all(t < turbo.t3.cfg.speech_codes for t in tokens)
    assert turbo.speech.speech_codes([6561, 6562]) == []  # no speech code: nothing to say, not silence alone


@pytest.mark.parametrize("finalize", [True, False])
def test_the_mean_flow_over_padded_rows_equals_each_row_alone(turbo, finalize):
    """As a GPU runs it (rows of different lengths in one pass), checked on the CPU: each row's noise is drawn as
    alone (new frames first, then the whole) and padding never reaches its real frames."""
    from chatterbox.model.s3gen.flow import FlowInput

    flow, hift = turbo.s3gen.flow, turbo.s3gen.hift
    gens = [voice(i).gen for i in range(3)]
    lengths = [7, 40, 19]

    def items():
        return [FlowInput(torch.randint(0, 6561, (1, n), generator=torch.Generator().manual_seed(n)),
                          g["prompt_token"], g["prompt_feat"], g["embedding"], torch.Generator().manual_seed(i))
                for i, (n, g) in enumerate(zip(lengths, gens))]

    alone = [flow.forward_batch([item], finalize=finalize)[0] for item in items()]
    together = flow.forward_batch(items(), finalize=finalize)
    for a, b in zip(alone, together):
        assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-5
    generators = lambda: [torch.Generator().manual_seed(10 + i) for i in range(3)]  # noqa: E731
    wav_alone = [hift.forward_batch([m], [g])[0] for m, g in zip(alone, generators())]
    wav_together = hift.forward_batch(alone, generators())
    for a, b in zip(wav_alone, wav_together):
        assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-4


def test_generate_batch_equals_generate_for_mixed_texts_voices_and_parameters(turbo):
    texts = ["Hello there.", "A second, somewhat longer sentence [laugh] to say.", "Short.", "Hello there."]
    voices = [voice(0), voice(1), voice(2), voice(0)]
    params = dict(seeds=[1, 2, 3, 4], temperature=[0.8, 1.2, 0.5, 0.8], top_k=[1000, 30, 1000, 1000],
                  top_p=[0.95, 1.0, 0.6, 0.95], repetition_penalty=[1.2, 1.0, 2.0, 1.2], max_new_tokens=[25, 40, 20, 25])
    batched = turbo.generate_batch(texts, voices=voices, **params)
    for i, text in enumerate(texts):
        alone = turbo.generate(text, voice=voices[i], seed=params["seeds"][i],
                               **{k: (v[i] if isinstance(v, list) else v) for k, v in params.items() if k != "seeds"})
        assert batched[i].shape == alone.shape, i
        assert float((batched[i] - alone).abs().max()) <= 1e-4, i
    assert batched[0].shape != batched[1].shape  # different requests, different lengths: the test means something
    with pytest.raises(TypeError, match="cfg_weight"):
        turbo.generate_batch(texts, cfg_weight=0.5)
