"""One batch loop per model on a device: the Chatterbox requests of every job a worker runs, decoded together
(the original model's, Turbo's, and the multilingual model's, each request in its own language).

Jobs run in their own threads and hand their requests to the loop; the loop owns the model. Each round it admits
waiting requests (interactive ones first; book chunks up to ``max_batch``, and an interactive request one beyond it,
so that a listener never waits for a book chunk to finish), prefills them, takes one T3 step
for all, and makes audio: a streaming request's next window as soon as its tokens are in (so that its listener
hears it at once), a book chunk's whole utterance once all its tokens are. While a streaming request still waits
for its first audio, no book chunk's utterance is made: on one device they would only delay it. A request whose
reader stopped (a cancelled job) leaves at the next round.

Each request is computed as it is alone (chatterbox.model.t3_batch, t3_turbo_batch; S3Gen on its own generator), so
its audio is ``generate_stream``'s (streaming) or ``generate``'s (whole) for the same text, voice, parameters and
seed. The loop takes of a model (``tts``): ``speech`` (``new_batch``, ``request``, ``speech_codes``,
``closing_tokens``: the T3 side), ``s3gen``, ``_chunks`` and ``_finish``.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import Tensor

from ..tts import CHUNK_GAP_S
from ..tts_stream import TokenStream

log = logging.getLogger(__name__)

INTERACTIVE, BULK = 0, 1
INTERACTIVE_EXTRA = 1  # places for interactive requests beyond max_batch
CHECK_EVERY_S = 0.5  # while a reader waits for its next piece, how often it asks whether to stop
_END = object()


@dataclass(eq=False)
class Request:
    """One text to speak, as a job's thread hands it to the loop; its audio comes out of ``pieces()``."""

    text: str
    conds: object  # Conditionals
    params: dict  # the engine's parameters, checked (seed included)
    stream: bool = True  # pieces window by window (a listener waits), or the whole utterance at the end
    priority: int = INTERACTIVE
    language: str | None = None  # the multilingual model's language (None: a model of one language)
    submitted_at: float = field(default_factory=time.monotonic)
    out: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # The loop's state of it:
    chunks: list[str] = field(default_factory=list)
    index: int = 0  # the chunk being spoken
    t3: object = None  # its T3 request (T3Request, TurboRequest)
    tokens: TokenStream | None = None
    generator: torch.Generator | None = None  # a whole utterance's, shared by T3, the flow and HiFT, as generate's
    heard: bool = False  # a piece has gone out

    def pieces(self, check: Callable[[], None] | None = None) -> Iterator[Tensor]:
        """The request's audio, (1, samples) pieces in order; a reader that stops early cancels it. ``check`` is
        called every CHECK_EVERY_S while the next piece is not there: what it raises ends the request at once
        (a cancelled job's window of many seconds is not waited for)."""
        try:
            while True:
                try:
                    item = self.out.get(timeout=CHECK_EVERY_S if check else None)
                except queue.Empty:
                    check()
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancelled.set()


class BatchLoop:
    def __init__(self, tts, max_batch: int):
        self.tts, self.max_batch = tts, max(1, max_batch)
        self.batch = tts.speech.new_batch()
        self._cond = threading.Condition()
        self._waiting: list[Request] = []
        self._speaking: dict[int, Request] = {}  # id(its T3 request) -> the request
        self._whole: list[Request] = []  # tokens all in, waiting for their utterance
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.most = 0  # the most requests it has decoded together
        self._held = {"active": 0, "interactive": 0, "rows": 0, "finishing": 0, "steps": 0}

    # -- from the jobs' threads --------------------------------------------------------------------------------------
    def submit(self, request: Request) -> Request:
        request.chunks = self.tts._chunks(request.text) if request.language is None else \
            self.tts._chunks(request.text, request.language)
        if request.params.get("seed") is None:  # each request draws from its own generator, never a shared one
            request.params = {**request.params, "seed": int(torch.randint(0, 2**31 - 1, (1,)))}
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="batch-loop", daemon=True)
                self._thread.start()
            self._waiting.append(request)
            self._cond.notify()
        return request

    def occupancy(self) -> dict:
        """What the loop held after its last round, and how many wait: for /health and the operations page."""
        with self._cond:
            return {"max_batch": self.max_batch, "waiting": len(self._waiting), **self._held}

    # -- the loop ------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._speaking or self._whole):
                    self._cond.wait()
                self._waiting.sort(key=lambda r: (r.priority, r.submitted_at))
                admitted, active = [], len(self._speaking)
                # On a GPU the batch has KV slots for a full batch, sized to the device's memory: a request is
                # admitted while two rows (a guided request's) are free.
                room = getattr(self.batch, "free_rows", None)
                for request in self._waiting:
                    if active < self.max_batch + (INTERACTIVE_EXTRA if request.priority == INTERACTIVE else 0) \
                            and (room is None or room >= 2):
                        admitted.append(request)
                        active += 1
                        room = None if room is None else room - 2
                self._waiting = [r for r in self._waiting if r not in admitted]
            try:
                self._round(admitted)
            except Exception as exc:  # the model itself failed: every request in it hears why
                log.exception("the batch loop failed")
                for request in [*admitted, *self._speaking.values(), *self._whole]:
                    self._fail(request, exc)

    def _round(self, admitted: list[Request]) -> None:
        for request in admitted:
            self._start(request)
        for request in [r for r in self._speaking.values() if r.cancelled.is_set()]:
            self.batch.remove(request.t3)
            self._forget(request)
        self._whole = [r for r in self._whole if not r.cancelled.is_set()]
        if self.batch.active:
            with self.tts.speech._lock:
                results = self.batch.step()
            self.steps += 1
            for t3, token in results:  # in order: a window as soon as its tokens are in, as generate_stream does
                request = self._speaking[id(t3)]
                if token is None:
                    self._spoken(request)
                elif request.tokens is not None and token < self.tts.t3.cfg.speech_codes:
                    request.tokens.push(token)
                    if request.tokens.ready:
                        self._window(request, finished=False)
        if self._whole and not any(r.stream and not r.heard for r in self._speaking.values()):
            # S3Gen takes the finished chunks together on a GPU; on a CPU one at a time (S3Gen.batch says why),
            # so that the next round's T3 step is not held back by all of them.
            n = 1 if self.tts.device.type == "cpu" else self.max_batch
            self._utterances([self._whole.pop(0) for _ in range(min(n, len(self._whole)))])
        active = list(self._speaking.values())
        self.most = max(self.most, len(active))
        with self._cond:
            self._held = {"active": len(active), "interactive": sum(r.priority == INTERACTIVE for r in active),
                          "rows": self.batch.rows, "finishing": len(self._whole), "steps": self.steps}

    def _start(self, request: Request) -> None:
        """Prefill the request's current chunk into the batch."""
        if request.cancelled.is_set():
            return
        params, conds = request.params, request.conds
        seed = int(params["seed"]) + (request.index if request.stream else 0)
        if request.stream:
            if request.index == 0:
                request.generator = torch.Generator(device=self.tts.device).manual_seed(int(params["seed"]))
            request.tokens = TokenStream(self.tts.s3gen, conds.gen, seed, params.get("steps"))
        elif request.index == 0:
            request.generator = torch.Generator(device=self.tts.device).manual_seed(seed)
        language = {} if request.language is None else {"language_id": request.language}
        t3_params = {n: v for n, v in params.items() if n not in ("seed", "steps")}  # those are S3Gen's and ours
        try:
            request.t3 = self.tts.speech.request(request.chunks[request.index], conds, generator=request.generator,
                                                 **language, **t3_params)
            with self.tts.speech._lock:
                self.batch.add(request.t3)
        except Exception as exc:
            self._fail(request, exc)
            return
        self._speaking[id(request.t3)] = request

    def _spoken(self, request: Request) -> None:
        """The request's chunk has all its tokens."""
        self._speaking.pop(id(request.t3), None)
        if request.stream:
            if request.tokens.tokens:  # Turbo's silence ends every utterance (none ends no speech: that fails)
                for token in self.tts.speech.closing_tokens:  # pushed as generate_stream pushes them
                    request.tokens.push(token)
                    if request.tokens.ready:
                        self._window(request, finished=False)
            self._window(request, finished=True)
            self._next_chunk(request)
        else:
            self._whole.append(request)

    def _window(self, request: Request, finished: bool) -> None:
        try:
            with self.tts._lock:
                piece = request.tokens.window(finished)
        except Exception as exc:
            self._fail(request, exc)
            return
        if piece is not None:
            self._send(request, piece)

    def _utterances(self, requests: list[Request]) -> None:
        """Whole chunks' audio, made together (S3Gen.batch); each as generate makes it."""
        ready = []
        for request in requests:
            if self.tts.speech.speech_codes(request.t3.tokens):
                ready.append(request)
            else:
                self._fail(request, ValueError(f"T3 produced no speech for {request.chunks[request.index][:40]!r}"))
        if not ready:
            return
        try:
            with self.tts._lock:
                wavs = self.tts.s3gen.batch([self.tts.speech.speech_codes(r.t3.tokens) for r in ready],
                                            [r.conds.gen for r in ready], [r.generator for r in ready],
                                            [r.params.get("steps") for r in ready])
        except Exception as exc:
            for request in ready:
                self._fail(request, exc)
            return
        for request, wav in zip(ready, wavs):
            self._send(request, wav)
            self._next_chunk(request)

    def _next_chunk(self, request: Request) -> None:
        if request.index + 1 < len(request.chunks) and not request.cancelled.is_set():
            request.index += 1
            request.out.put(torch.zeros(1, int(CHUNK_GAP_S * self.tts.sr)))  # the silence generate puts between
            self._start(request)
        else:
            request.out.put(_END)

    def _send(self, request: Request, piece: Tensor) -> None:
        request.heard = True
        request.out.put(self.tts._finish(piece))

    def _fail(self, request: Request, exc: BaseException) -> None:
        if request.t3 is not None and request.t3 in self.batch.active:
            self.batch.remove(request.t3)
        self._forget(request)
        self._whole = [r for r in self._whole if r is not request]
        request.out.put(exc)

    def _forget(self, request: Request) -> None:
        if request.t3 is not None:
            self._speaking.pop(id(request.t3), None)
