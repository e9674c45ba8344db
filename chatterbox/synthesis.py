"""A synthesis job, engine-agnostic: the request a client makes, and the chunk-by-chunk run a worker does."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import audio
from .access import Caller
from .engines import Engine, InvalidRequest
from .jobs import JobStore
from .leases import Lease
from .settings import Settings
from .text import TextError

log = logging.getLogger(__name__)

REQUEST_FIELDS = ("text", "voice", "format", "params", "model", "language")


class JobCancelled(Exception):
    pass


@dataclass(frozen=True)
class SynthesisRequest:
    text: str
    voice: str
    format: str
    params: dict
    model: str = ""  # the Chatterbox model ("" for an engine of one model)
    language: str = "en"

    def as_dict(self) -> dict:
        return asdict(self)


def parse_request(body: Any, engine: Engine, settings: Settings, caller: Caller) -> SynthesisRequest:
    """Check a request against the engine (the model and language it asks for) and the limits, for ``caller``
    (whose voices it may name); raises InvalidRequest naming the field at fault."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "the request body must be a JSON object", "invalid_body")
    unknown = sorted(set(body) - set(REQUEST_FIELDS))
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field {unknown[0]!r}; known fields: {', '.join(REQUEST_FIELDS)}",
                             "unknown_field")
    text = body.get("text")
    if text is None:
        raise InvalidRequest("text", "text is required", "missing_field")
    if not isinstance(text, str):
        raise InvalidRequest("text", f"text must be a string, not {type(text).__name__}", "invalid_type")
    if not text.strip():
        raise InvalidRequest("text", "text is empty", "text_empty")
    if len(text) > settings.max_text_chars:
        raise InvalidRequest("text", f"text is {len(text)} characters long; the limit is {settings.max_text_chars} "
                             "(CHATTERBOX_MAX_TEXT_CHARS); split it or submit it as an audiobook", "text_too_long")
    engine = engine.for_model(body.get("model"), body.get("language"))
    try:
        engine.chunks(text, settings)
    except TextError as exc:
        raise InvalidRequest("text", str(exc), "text_empty") from None
    fmt = body.get("format") or "wav"
    if not isinstance(fmt, str) or fmt.lower() not in audio.FORMATS:
        raise InvalidRequest("format", f"unknown format {fmt!r}; choose one of {', '.join(audio.FORMATS)}",
                             "unknown_format")
    voice = engine.check_voice(body.get("voice"), caller)
    params = engine.validate(body.get("params"))
    return SynthesisRequest(text=text, voice=voice, format=fmt.lower(), params=params, model=engine.model or "",
                            language=engine.language)


def synthesize_text(engine: Engine, text: str, voice: str, params: dict, settings: Settings) -> np.ndarray:
    """A whole text in this process, without a job: chunked and joined as a job joins them."""
    parts = [np.concatenate(list(engine.stream(chunk, voice, params)) or [np.zeros(0, dtype=np.float32)])
             for chunk in engine.chunks(text, settings)]
    return audio.concat(parts, engine.sample_rate, settings.chunk_gap_s)


def run_job(engine: Engine, store: JobStore, job_id: str, settings: Settings, lease: Lease) -> dict:
    """Synthesize a claimed job chunk by chunk, reporting as it goes; returns the finished record.

    Every write is fenced by ``lease``: once another worker holds the job (this one was taken for dead), the next
    write raises LeaseLost and nothing more is written. A later attempt (its worker died) resumes: the text chunks
    whose pieces all went out are kept as sent, and the rest continues at the next piece index, so no listener is
    sent an index twice; the file is what was sent. Raises JobCancelled when a cancel request is seen (checked
    before each chunk and between the pieces an engine yields), leaving the caller to record it.
    """
    job = store.get(job_id)
    assert job is not None, job_id
    engine = engine.for_model(job.get("model") or None, job.get("language") or None)
    chunks = engine.chunks(job["text"], settings)
    rate = engine.sample_rate
    params = _with_seed(engine, job["params"])
    if params is not job["params"]:  # chosen once, so that a later attempt makes the same audio
        store.update(job_id, fence=lease, params=params)
    start, sent = _resume(store, job, len(chunks))
    audio_index = int(job.get("pieces") or 0)  # the next index no listener has been sent
    store.update(job_id, fence=lease, chunks_total=len(chunks), sample_rate=rate,
                 queued_s=job["started_at"] - job["created_at"])
    store.emit(job_id, "progress", fence=lease, status="running", progress=start / len(chunks), chunks_done=start,
               chunks_total=len(chunks), worker=job.get("worker"), attempt=job["attempt"],
               **({"message": f"resuming at text chunk {start + 1}"} if start else {}))
    voice = job["voice"]
    if job.get("audio_prompt"):  # a one-off voice from the clip that came with the request
        from .voices import prepare_reference

        samples, _ = prepare_reference(Path(job["audio_prompt"]))
        voice = engine.clone(samples, float(params.get("exaggeration", 0.5)))
    parts: list[np.ndarray] = [np.concatenate(sent[i]) if sent[i] else np.zeros(0, np.float32) for i in range(start)]
    synth_s = float(job.get("synth_s_done") or 0.0)
    first_chunk_s = job.get("first_chunk_s")

    def cancelled() -> None:
        if store.cancel_requested(job_id):
            raise JobCancelled()

    for index in range(start, len(chunks)):
        chunk = chunks[index]
        pieces = list(sent.get(index, []))
        heard = len(pieces)  # pieces of this chunk an earlier attempt sent: made again (same audio), not re-sent
        started = time.perf_counter()
        for n, piece in enumerate(engine.stream(chunk, voice, params, check=cancelled)):
            synth_s += time.perf_counter() - started
            if n >= heard:
                pieces.append(piece)
                # Each piece goes out as soon as it exists, so listeners hear the start while the rest is made.
                store.put_chunk(job_id, audio_index, audio.wav_bytes(piece, rate), text_index=index, fence=lease)
                if first_chunk_s is None:
                    first_chunk_s = time.time() - job["created_at"]
                store.emit(job_id, "chunk", fence=lease, index=audio_index, text_index=index,
                           duration_s=round(len(piece) / rate, 3), sample_rate=rate, text=chunk)
                audio_index += 1
            cancelled()
            started = time.perf_counter()
        synth_s += time.perf_counter() - started
        parts.append(np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32))
        progress = (index + 1) / len(chunks)
        store.update(job_id, fence=lease, chunks_done=index + 1, progress=progress, synth_s_done=round(synth_s, 4),
                     first_chunk_s=round(first_chunk_s, 4) if first_chunk_s is not None else None)
        store.emit(job_id, "progress", fence=lease, status="running", progress=progress, chunks_done=index + 1,
                   chunks_total=len(chunks))
        if store.cancel_requested(job_id) and index + 1 < len(chunks):
            raise JobCancelled()
    samples = audio.concat(parts, rate, settings.chunk_gap_s)
    if not samples.size or audio.is_silent(samples):
        raise RuntimeError(f"the {engine.name} engine produced no audible speech for this text")
    started = time.perf_counter()
    data = audio.encode(samples, rate, job["format"])
    encode_s = time.perf_counter() - started
    store.check(lease)  # the file is not in Redis: a holder that lost the job must not write it
    path = audio.write_atomic(settings.outputs_dir / f"{job_id}.{job['format']}", data)
    duration = len(samples) / rate
    store.finish(job_id, "succeeded", fence=lease, output=path.name, duration_s=round(duration, 3),
                 synth_s=round(synth_s, 4), encode_s=round(encode_s, 4), rtf=round(synth_s / duration, 4),
                 first_chunk_s=round(first_chunk_s, 4) if first_chunk_s is not None else None,
                 total_s=round(time.time() - job["created_at"], 4))
    return store.get(job_id)


def _with_seed(engine: Engine, params: dict) -> dict:
    """The job's parameters with a seed chosen where the engine takes one and the request left it open."""
    if params.get("seed") is not None or not any(p.name == "seed" for p in engine.params):
        return params
    import secrets

    return {**params, "seed": secrets.randbelow(2**31 - 1)}


def _resume(store: JobStore, job: dict, total: int) -> tuple[int, dict[int, list[np.ndarray]]]:
    """Where an attempt starts: (the first text chunk to make, the pieces already sent per text chunk). The first
    attempt, or one whose earlier pieces are gone from Redis, starts at the beginning."""
    sent_count = int(job.get("pieces") or 0)
    if job["attempt"] <= 1 or not sent_count:
        return 0, {}
    pieces = store.pieces(job["id"])
    if sorted(pieces) != list(range(sent_count)):
        log.warning("job %s: the pieces of its earlier attempt are gone; starting over", job["id"])
        return 0, {}
    sent: dict[int, list[np.ndarray]] = {}
    for index in range(sent_count):
        text_index, data = pieces[index]
        sent.setdefault(text_index, []).append(audio.read_wav(data)[0])
    return min(int(job.get("chunks_done") or 0), total), sent
