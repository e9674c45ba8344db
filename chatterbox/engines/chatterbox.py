"""The Chatterbox engine: Resemble AI's three models (original, Turbo, Multilingual), run by our own code, loaded
once per worker and chosen per job.

An engine object speaks for one model and language (``for_model`` makes the view a job asks for); the views of one
worker share what is loaded (``_Shared``). Each model's requests are batched in a batch loop of its own
(``batch_loop``): the jobs' threads hand their text to it and read its audio back.

Voices: ``default`` (each model's conds.pt) and every voice of the saved-voice library made for this engine
(``chatterbox.voices``), by id or by name. The original and Multilingual read a voice's conds.pt (one format);
Turbo makes its own conditioning from the voice's recording, which must be longer than 5 s.
"""
from __future__ import annotations

import threading
import wave
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ..access import Caller
from ..text_languages import LANGUAGES, LanguageError, check_language
from ..voices import VoiceLibrary
from .base import Engine, EngineUnavailable, InvalidRequest
from .models import ALIASES, MODELS, ORIGINAL_FILES, configured_models

WEIGHT_FILES = ORIGINAL_FILES
DEFAULT_VOICE = "default"
# Part of every cached chunk's key: raised when the engine's output for the same request changes. 2: until then
# exaggeration and cfg_weight never reached the model, so chunks cached under other values of them are wrong. 3: book
# chunks are made as whole utterances (generate's audio), no longer window by window.
CACHE_REVISION = 3
TURBO_MIN_REFERENCE_S = 5.0  # the reference refuses a shorter clip for Turbo's 15 s conditioning prompt


def weights_present(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds the original model's files."""
    return all((model_dir / name).is_file() for name in WEIGHT_FILES)


class _Shared:
    """What every view of one worker's Chatterbox engine shares: the loaded models, their batch loops and the
    voice cache."""

    def __init__(self, settings, device: str):
        self.settings, self.device = settings, device
        self.tts: dict[str, Any] = {}
        self.loops: dict[str, Any] = {}  # the batch loop of each model that has one (made at its first use)
        self.lock = threading.Lock()
        # Recently used saved voices per model, on the device, at most settings.voice_cache_size of them: a saved
        # voice costs what the built-in one does after its first use, and memory does not grow with the voices used.
        self.cache: OrderedDict[tuple[str, str], tuple[float, object]] = OrderedDict()
        # Which models the system holds, where it is not this process (the web app asks the workers' heartbeats).
        self.availability: Callable[[], list[str]] | None = None


class ChatterboxEngine(Engine):
    name = "chatterbox"
    # Not measured here (no real weights on this machine): a calm narrator's pace; the duration check allows
    # 0.6 to 1.7 times the time this predicts.
    words_per_minute = 165.0
    params = MODELS["original"].params

    def __init__(self, settings, device: str = "cpu", model: str | None = None, language: str = "en",
                 shared: _Shared | None = None):
        super().__init__(settings, device)
        self._shared = shared or _Shared(settings, device)
        self.library = VoiceLibrary(settings.voices_dir)
        self.model = model or self.default_model()
        self.spec = MODELS[self.model]
        self.params = self.spec.params
        self.language = language

    # -- which model ---------------------------------------------------------------------------------------------
    def available(self) -> list[str]:
        """The models jobs may ask for: those loaded here, else those the workers hold (web), else those whose
        files are present (or that CHATTERBOX_MODELS names)."""
        if self._shared.tts:
            return list(self._shared.tts)
        if self._shared.availability is not None:
            return self._shared.availability()
        return configured_models(self.settings)

    def default_model(self, available: list[str] | None = None) -> str:
        if self.settings.default_model:
            return self.settings.default_model
        available = self.available() if available is None else available
        return "original" if "original" in available or not available else available[0]

    def for_model(self, model: Any = None, language: Any = None) -> "ChatterboxEngine":
        """The view of this engine that speaks ``model`` in ``language`` (either None: the default; a language other
        than English alone picks Multilingual); raises InvalidRequest for a model or language not to be had."""
        if model is not None and not isinstance(model, str):
            raise InvalidRequest(f"model must be a string, not {type(model).__name__}", "invalid_type", "model")
        try:
            code = check_language(language)
        except LanguageError as exc:
            raise InvalidRequest(str(exc), "unknown_language", "language") from None
        available = self.available()
        name = ALIASES.get(model, model) if model else None
        if name is None:
            name = "multilingual" if code != "en" else self.default_model(available)
        if name not in MODELS:
            raise InvalidRequest(f"unknown model {model!r}; choose one of {', '.join(MODELS)}", "unknown_model",
                                 "model")
        if name not in available:
            held = ", ".join(available) or "none"
            raise InvalidRequest(f"the {name} model is not available: no worker holds it (held: {held}); "
                                 f"its files go in {MODELS[name].directory(self.settings)} and CHATTERBOX_MODELS "
                                 "says which models a worker loads", "model_unavailable", "model")
        if code not in MODELS[name].languages:
            raise InvalidRequest(f"the {name} model speaks English only; for {LANGUAGES[code]} use "
                                 "the multilingual model", "unsupported_language", "language")
        if name == self.model and code == self.language:
            return self
        return ChatterboxEngine(self.settings, self.device, name, code, self._shared)

    def max_chars(self, settings) -> int:
        return self.spec.max_chars(settings)

    # -- loading -------------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return 24000

    @property
    def loaded(self) -> bool:
        return bool(self._shared.tts)

    def models_held(self) -> list[str]:
        return list(self._shared.tts)

    @property
    def tts(self):
        """This view's model, loaded; raises EngineUnavailable where this worker does not hold it."""
        self.load()
        try:
            return self._shared.tts[self.model]
        except KeyError:
            raise EngineUnavailable(f"this worker has not loaded the {self.model} model (it holds "
                                    f"{', '.join(self._shared.tts)}; CHATTERBOX_MODELS)") from None

    def load(self) -> None:
        shared = self._shared
        with shared.lock:
            if shared.tts:
                return
            names = configured_models(self.settings)
            if not names:
                missing = MODELS["original"].missing(self.settings)
                raise EngineUnavailable(f"Chatterbox weights are not in {self.settings.chatterbox_dir} (missing "
                                        f"{', '.join(missing)}); set CHATTERBOX_MODEL_DIR or use TTS_ENGINE=piper")
            for name in names:  # every model's files before any is loaded: a mistake is told at once
                missing = MODELS[name].missing(self.settings)
                if missing:
                    raise EngineUnavailable(f"the {name} model's files are not in "
                                            f"{MODELS[name].directory(self.settings)} (missing {', '.join(missing)}); "
                                            "see CHATTERBOX_MODELS")
            loaded = {name: self._load(name) for name in names}
            shared.tts.update(loaded)

    def _load(self, name: str):
        import torch

        from ..model.rowmatmul import set_plan_cache

        directory = MODELS[name].directory(self.settings)
        if self.settings.threads > 0 and not self.device.startswith("cuda"):
            torch.set_num_threads(self.settings.threads)
        set_plan_cache(self.settings.plan_cache_path)
        options = {"device": self.device, "dtype": getattr(torch, self.settings.model_dtype),
                   "watermark": self.settings.watermark}
        try:
            from .batch_loop import INTERACTIVE_EXTRA

            max_batch = self.settings.max_batch + INTERACTIVE_EXTRA
            if name == "original":
                from ..tts import ChatterboxTTS

                tts = ChatterboxTTS.from_local(directory, max_batch=max_batch, **options)
            elif name == "turbo":
                from ..tts_turbo import ChatterboxTurboTTS

                tts = ChatterboxTurboTTS.from_local(directory, max_batch=max_batch, **options)
            else:
                from ..mtl_tts import ChatterboxMultilingualTTS

                tts = ChatterboxMultilingualTTS.from_local(directory, max_batch=max_batch, **options)
            if hasattr(tts.speech, "cuda_graphs"):  # Llama's T3 (the original's and Multilingual's)
                tts.speech.cuda_graphs = self.settings.cuda_graphs
            return tts
        except (ValueError, RuntimeError, OSError, KeyError) as exc:
            raise EngineUnavailable(f"cannot load the Chatterbox {name} model from {directory}: {exc}") from exc

    @property
    def loop(self):
        """The batch loop every request of this view's model speaks through on this worker (made at its first
        use); each model has its own."""
        shared, tts = self._shared, self.tts
        with shared.lock:
            if self.model not in shared.loops:
                from .batch_loop import BatchLoop

                shared.loops[self.model] = BatchLoop(tts, self.settings.max_batch)
            return shared.loops[self.model]

    def occupancy(self) -> dict | None:
        """The batch loops' occupancy, summed over models (one device: they take turns on it)."""
        loops = list(self._shared.loops.values())
        if not loops:
            return None
        held = [loop.occupancy() for loop in loops]
        return {key: (max if key == "max_batch" else sum)(h[key] for h in held) for key in held[0]}

    def model_version(self, voice: str) -> str:
        directory = self.spec.directory(self.settings)
        weights = sorted(n for n in self.spec.files if n.endswith((".safetensors", ".pt")) and n != "conds.pt")
        sizes = "-".join(str((directory / n).stat().st_size) for n in weights if (directory / n).is_file())
        if self.model == "original":  # the key books cached their chunks under before there were three models
            return f"chatterbox/r{CACHE_REVISION}/{self.settings.model_dtype}/{sizes}"
        return f"chatterbox-{self.model}/{self.language}/r1/{self.settings.model_dtype}/{sizes}"

    def describe(self, caller: Caller) -> dict:
        available = self.available()
        models = [{**spec.describe(), "available": name in available} for name, spec in MODELS.items()]
        return {**super().describe(caller), "model": self.model, "language": self.language,
                "default_model": self.default_model(available), "models": models}

    # -- voices --------------------------------------------------------------------------------------------------
    def voices(self, caller: Caller) -> list[dict]:
        out = [{"id": DEFAULT_VOICE, "name": "Default", "engine": self.name, "builtin": True,
                "description": "the built-in Chatterbox voice of each model (its conds.pt)"}]
        return out + [v.public() for v in self.library.list(caller, engine=self.name)]

    def check_voice(self, voice, caller: Caller) -> str:
        voice_id = super().check_voice(voice, caller)
        if self.model == "turbo" and voice_id != DEFAULT_VOICE:
            saved = self.library.get(voice_id, caller)
            recording = self.library.conds_path(voice_id).with_name("reference.wav")
            try:
                with wave.open(str(recording)) as clip:
                    seconds = clip.getnframes() / clip.getframerate()
            except (OSError, EOFError, wave.Error):
                raise InvalidRequest(f"voice {saved.name!r} has no readable recording (it was imported "
                                     "without one); Turbo makes its voice from the recording", "voice_unusable", "voice"
                                     ) from None
            if seconds <= TURBO_MIN_REFERENCE_S:
                raise InvalidRequest(f"voice {saved.name!r} was made from {seconds:.1f} s of speech; Turbo "
                                     f"needs a recording longer than {TURBO_MIN_REFERENCE_S:.0f} s (the original and "
                                     "multilingual models can use it)", "voice_too_short", "voice")
        return voice_id

    def conditionals(self, voice_id: str):
        """A saved voice's conditionals for this view's model, from the cache while its files are unchanged."""
        path = self.library.conds_path(voice_id)
        if self.model == "turbo":
            path = path.with_name("reference.wav")
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            self._shared.cache.pop((self.model, voice_id), None)
            if self.model == "turbo" and self.library.conds_path(voice_id).is_file():
                raise InvalidRequest(f"the saved voice {voice_id} has no recording (it was imported "
                                     "without one); Turbo makes its voice from the recording", "voice_unusable",
                                     "voice") from None
            raise InvalidRequest(f"the saved voice {voice_id} no longer exists", "unknown_voice", "voice",
                                 404) from None
        key, cache = (self.model, voice_id), self._shared.cache
        cached = cache.get(key)
        if cached is None or cached[0] != mtime:
            cached = (mtime, self._read_voice(path))
            cache[key] = cached
        cache.move_to_end(key)
        while len(cache) > max(1, self.settings.voice_cache_size):
            cache.popitem(last=False)
        return cached[1]

    def _read_voice(self, path: Path):
        if self.model == "turbo":
            try:
                return self.tts.make_conditionals(path)
            except ValueError as exc:
                raise InvalidRequest(f"Turbo cannot use this voice: {exc}", "voice_unusable", "voice") from None
        from ..model.conds import Conditionals

        return Conditionals.load(path, self.device)

    def clone(self, samples24k: np.ndarray, exaggeration: float = 0.5):
        """Conditionals for a new voice from a cleaned 24 kHz recording."""
        try:
            return self.tts.make_conditionals(samples24k, exaggeration, sample_rate=24000)
        except ValueError as exc:
            raise InvalidRequest(f"the {self.model} model cannot use this recording: {exc}", "voice_unusable",
                                 "audio_prompt") from None

    def preview(self, conds, text: str, max_new_tokens: int) -> np.ndarray:
        args = {"language_id": self.language} if self.model == "multilingual" else {}
        return self.tts.generate(text, voice=conds, max_new_tokens=max_new_tokens, **args)[0].numpy()

    # -- speaking ------------------------------------------------------------------------------------------------
    def stream(self, text: str, voice, params: Mapping[str, Any], priority: str = "interactive",
               check: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        """``voice`` is a voice id, or a one-off voice's conditionals (computed from a clip sent with the job).
        Interactive requests stream window by window (``generate_stream``'s audio); book chunks ("bulk") come as
        one whole utterance (``generate``'s), made only while no listener waits for a first window."""
        tts = self.tts
        conds = tts.conds if voice == DEFAULT_VOICE else self.conditionals(voice) if isinstance(voice, str) \
            else voice
        from .batch_loop import BULK, INTERACTIVE, Request

        request = self.loop.submit(Request(text, conds, self.model_args(params), stream=priority != "bulk",
                                           priority=BULK if priority == "bulk" else INTERACTIVE,
                                           language=self.language if self.model == "multilingual" else None))
        for piece in request.pieces(check):
            yield piece[0].numpy().astype(np.float32)
