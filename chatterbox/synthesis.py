"""A synthesis job, engine-agnostic: the request a client makes, and the chunk-by-chunk run a worker does."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import align, audio, lexicon as lexicon_mod, markup
from .access import Caller
from .engines import Engine, InvalidRequest
from .jobs import JobStore
from .leases import Lease
from .schemas.requests import SynthesizeRequest
from .settings import Settings
from .text import TextError

log = logging.getLogger(__name__)

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
    # What is said, planned once here and kept with the job: [text, gap after it, prosody rate] per chunk
    # (Spoken.stored), and the lexicon it was planned with; the worker, a resumed attempt and a stream's gaps all
    # read this, and the text is never normalized or chunked again.
    plan: list = field(default_factory=list)
    lexicon: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def parse_request(body: Any, engine: Engine, settings: Settings, caller: Caller,
                  lexicon: list[lexicon_mod.Entry] | None = None) -> SynthesisRequest:
    """Check a request against the engine (the model and language it asks for) and the limits, for ``caller``
    (whose voices it may name), and plan what it says with the owner's ``lexicon``; raises InvalidRequest naming the
    field at fault."""
    request = SynthesizeRequest.check(body)
    text = request.text
    if not text.strip():
        raise InvalidRequest("text is empty", "text_empty", "text")
    if len(text) > 4 * settings.max_text_chars:  # the markup's own share has a bound too
        raise InvalidRequest(f"text is {len(text)} characters long with its markup; the limit is "
                             f"{settings.max_text_chars} spoken characters (CHATTERBOX_MAX_TEXT_CHARS)",
                             "text_too_long", "text")
    try:
        spoken = markup.spoken_text(text)
    except markup.MarkupError as exc:
        raise InvalidRequest(str(exc), "invalid_markup", "text") from None
    if len(spoken) > settings.max_text_chars:
        raise InvalidRequest(f"text is {len(spoken)} characters long; the limit is {settings.max_text_chars} "
                             "(CHATTERBOX_MAX_TEXT_CHARS); split it or submit it as an audiobook", "text_too_long",
                             "text")
    engine = engine.for_model(request.model, request.language)
    try:
        plan = speech_plan(engine, text, {}, settings, lexicon)
    except markup.MarkupError as exc:  # what only the engine can check: <phoneme ph> symbols the voice lacks
        raise InvalidRequest(str(exc), "invalid_markup", "text") from None
    except TextError as exc:
        raise InvalidRequest(str(exc), "text_empty", "text") from None
    voice = engine.check_voice(request.voice, caller)
    params = engine.validate(request.params)
    return SynthesisRequest(text=text, voice=voice, format=request.format or "wav", params=params,
                            model=engine.model or "",
                            language=engine.language, plan=[s.stored for s in plan],
                            lexicon=lexicon_mod.dumps(lexicon or []))


@dataclass(frozen=True)
class Spoken:
    """A chunk a job speaks at once: its text, the silence after it, and the engine's parameters for it (the job's,
    at the ``rate`` its <prosody> asks for)."""
    text: str
    gap_s: float
    params: dict
    rate: float = 1.0

    @property
    def stored(self) -> list:
        """As a job's record keeps it: the parameters are the job's, applied again at the rate when it runs."""
        return [self.text, self.gap_s, self.rate]


def stored_plan(engine: Engine, stored: list, params: dict) -> list[Spoken]:
    """A plan as a job's record keeps it (SynthesisRequest.plan), with the job's parameters."""
    return [Spoken(text, float(gap), _at_rate(engine, params, float(rate)), float(rate)) for text, gap, rate in stored]


def speech_plan(engine: Engine, text: str, params: dict, settings: Settings,
                lexicon: list[lexicon_mod.Entry] | None = None) -> list[Spoken]:
    """The chunks of a text (plain, with [pause:...] tags, or SSML: chatterbox.markup) in order. The gap after a
    chunk is the pause the text asks for there, else CHATTERBOX_CHUNK_GAP_S; a <prosody rate> changes the engine's
    own speed where it has one (Piper's length_scale) and nothing where it has none. The ``lexicon``'s entries
    (chatterbox.lexicon) respell words in each segment's text, after the markup is read (never inside a tag) and
    before it is normalized and chunked, so the chunks hold the text as spoken.

    Phonemes (a lexicon entry's, SSML <phoneme>'s) are said as phonemes by an engine that reads them, one with a
    ``phoneme_token`` method (Piper): they become phoneme tokens (chatterbox.text), which the chunks carry intact
    to the engine. Any other engine says the words instead (the <phoneme> element's text; the entry's ``say``, else
    its term as written). Raises MarkupError (also for a <phoneme ph> symbol the engine lacks), or TextError when
    nothing is left to say."""
    phonemes = getattr(engine, "phoneme_token", None)
    compiled = lexicon_mod.Compiled(lexicon, phonemes) if lexicon else None
    plan: list[Spoken] = []
    refused: TextError | None = None
    for segment in markup.parse(text, phonemes):
        try:
            chunks = engine.chunks(lexicon_mod.apply(segment.text, compiled), settings)
        except TextError as exc:  # a segment of punctuation alone between two pauses: its pause still counts
            chunks, refused = [], refused or exc
        spoken = _at_rate(engine, params, segment.rate)
        plan += [Spoken(chunk, settings.chunk_gap_s, spoken, segment.rate) for chunk in chunks]
        if plan and segment.pause_s:  # the pause asked for, instead of the usual gap
            plan[-1] = Spoken(plan[-1].text, segment.pause_s, plan[-1].params, plan[-1].rate)
    if not plan:
        raise refused or TextError("the text has nothing to speak")
    return plan


def _at_rate(engine: Engine, params: dict, rate: float) -> dict:
    if rate == 1.0:
        return params
    for param in engine.params:
        if param.name == "length_scale":  # speaking time: the inverse of the rate
            base = float(params.get("length_scale", param.default))
            return {**params, "length_scale": min(param.maximum, max(param.minimum, base / rate))}
    return params


def synthesize_text(engine: Engine, text: str, voice: str, params: dict, settings: Settings) -> np.ndarray:
    """A whole text in this process, without a job: chunked and joined as a job joins them."""
    plan = speech_plan(engine, text, params, settings)
    parts = [np.concatenate(list(engine.stream(s.text, voice, s.params)) or [np.zeros(0, dtype=np.float32)])
             for s in plan]
    return audio.concat(parts, engine.sample_rate, gaps=[s.gap_s for s in plan])


def run_job(engine: Engine, store: JobStore, job_id: str, settings: Settings, lease: Lease) -> dict:
    """Synthesize a claimed job chunk by chunk, reporting as it goes; returns the finished record.

    Every write is fenced by ``lease``: once another worker holds the job (this one was taken for dead), the next
    write raises LeaseLost and nothing more is written. A later attempt (its worker died) resumes: the text chunks
    whose pieces all went out are kept as sent, and the rest continues at the next piece index, so no listener is
    sent an index twice; the file is what was sent. Raises JobCancelled when a cancel request is seen (checked
    before each chunk and between the pieces an engine yields), leaving the caller to record it.
    """
    job = lease.record if lease.record is not None and lease.record.get("id") == job_id else store.get(job_id)
    assert job is not None, job_id
    engine = engine.for_model(job.get("model") or None, job.get("language") or None)
    rate = engine.sample_rate
    params = _with_seed(engine, job["params"])
    if params is not job["params"]:  # chosen once, so that a later attempt makes the same audio
        store.update(job_id, fence=lease, params=params)
    if job.get("plan"):  # planned when it was asked for (chatterbox.synthesis.parse_request)
        plan = stored_plan(engine, job["plan"], params)
    else:  # a job queued by an older version: planned now, with its owner's lexicon as it is now
        plan = speech_plan(engine, job["text"], params, settings, _lexicon(store, job, settings, lease))
    chunks = [s.text for s in plan]
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
    # Word timestamps (chatterbox/align.py): each chunk is aligned once its audio is complete.
    words = align.JobWords(markup.spoken_text(job["text"]), chunks, rate, [s.gap_s for s in plan], engine.language)

    def cancelled() -> None:
        if store.cancel_requested(job_id):
            raise JobCancelled()

    for index in range(start, len(chunks)):
        chunk = chunks[index]
        pieces = list(sent.get(index, []))
        heard = len(pieces)  # pieces of this chunk an earlier attempt sent: made again (same audio), not re-sent
        started = time.perf_counter()
        stream = engine.stream(chunk, voice, plan[index].params, check=cancelled)
        for n, piece in enumerate(stream):
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
        # The engine's own timing of its words, where it has one (Piper), and the audio is all this attempt's.
        timing = align.stream_timing(stream) if not heard else None
        store.emit(job_id, "words", fence=lease, text_index=index, words=words.add(index, parts, timing))
        progress = (index + 1) / len(chunks)
        store.update(job_id, fence=lease, chunks_done=index + 1, progress=progress, synth_s_done=round(synth_s, 4),
                     first_chunk_s=round(first_chunk_s, 4) if first_chunk_s is not None else None)
        store.emit(job_id, "progress", fence=lease, status="running", progress=progress, chunks_done=index + 1,
                   chunks_total=len(chunks))
        if store.cancel_requested(job_id) and index + 1 < len(chunks):
            raise JobCancelled()
    samples = audio.concat(parts, rate, gaps=[s.gap_s for s in plan])
    if not samples.size or audio.is_silent(samples):
        raise RuntimeError(f"the {engine.name} engine produced no audible speech for this text")
    started = time.perf_counter()
    data = audio.encode(samples, rate, job["format"])
    encode_s = time.perf_counter() - started
    store.check(lease)  # the file is not in Redis: a holder that lost the job must not write it
    path = audio.write_atomic(settings.outputs_dir / f"{job_id}.{job['format']}", data)
    words_path = words.write(settings.outputs_dir / f"{job_id}.words.json", parts)
    duration = len(samples) / rate
    store.finish(job_id, "succeeded", fence=lease, output=path.name, words_file=words_path.name,
                 duration_s=round(duration, 3),
                 synth_s=round(synth_s, 4), encode_s=round(encode_s, 4), rtf=round(synth_s / duration, 4),
                 first_chunk_s=round(first_chunk_s, 4) if first_chunk_s is not None else None,
                 total_s=round(time.time() - job["created_at"], 4))
    return store.get(job_id)


def _lexicon(store: JobStore, job: dict, settings: Settings, lease: Lease) -> list[lexicon_mod.Entry]:
    """The job owner's lexicon as it was when the job first ran, kept in its record: a later attempt (resuming
    after its worker died) speaks the same words as the first, whatever the owner changed meanwhile."""
    if "lexicon" in job:
        return lexicon_mod.loads(job["lexicon"])
    entries = lexicon_mod.Lexicon(store.r, job.get("owner") or "", settings.lexicon_max_entries).entries()
    store.update(job["id"], fence=lease, lexicon=lexicon_mod.dumps(entries))
    return entries


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
