"""The saved-voice library on disk: ``<data_dir>/voices/<id>/`` holds ``meta.json``, ``conds.pt`` (the official
conds.pt format), ``reference.wav`` (the cleaned clip) and ``sample.wav`` (a preview), written atomically.

Ids are generated, never taken from users; names are unique per owner. The directory is shared by every worker and web
process (a shared volume across machines), so the files are the only state.

Every request names a voice, and finding one by name meant reading every voice's ``meta.json`` (twice: the engine
lists the caller's voices, then looks the name up). Each process keeps the library read once, with the stamp of
``<voices>/.generation``, a file every change through this class (create, import, rename, delete) rewrites after it
is done; a lookup opens that one file (open(), not stat(): on NFS, open is what sees another machine's change at once)
and reads the voices again only when it differs. A voice directory removed by hand is seen at the next change.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .access import Caller
from .errors import RequestError

NAME = re.compile(r"^[\w][\w .'-]{0,63}$")
ID = re.compile(r"^v_[0-9a-f]{12}$")
MAX_TAGS = 16


# A voice that is not there, or not this key's to change, is answered as such, whichever route looked it up.
_STATUS = {"unknown_voice": 404, "not_found": 404, "duplicate_name": 409, "forbidden": 403}


class VoiceError(RequestError):
    def __init__(self, message: str, code: str, field: str | None = None, status: int | None = None):
        super().__init__(message, code, field, status or _STATUS.get(code, 400))


@dataclass
class Voice:
    id: str
    name: str
    engine: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    owner: str = ""
    created_at: float = 0.0
    reference_seconds: float = 0.0
    model: str = ""
    job_id: str = ""  # the clone job that made it: a job run again after a crash finds its voice already made

    def public(self) -> dict:
        return {**asdict(self), "builtin": False}


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME.match(name.strip()):
        raise VoiceError("a voice name is 1 to 64 letters, digits, spaces, dots, dashes or apostrophes, "
                         "starting with a letter or digit", "invalid_name", "name")
    return name.strip()


def check_tags(tags) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [t for t in (s.strip() for s in tags.split(",")) if t]
    if not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(isinstance(t, str) and 0 < len(t) <= 32
                                                                     for t in tags):
        raise VoiceError(f"tags are at most {MAX_TAGS} words of up to 32 characters", "invalid_tags", "tags")
    return tags


class VoiceLibrary:
    """The voices on disk. Every lookup takes the Caller it is for and finds only the voices that caller may use
    (``chatterbox.access``): another key's voice is as unknown as one that does not exist."""

    # Per directory: (the .generation stamp it was read under, its voices). Shared by every library of a process.
    _read_under: dict[Path, tuple[tuple, list["Voice"]]] = {}

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    def _path(self, voice_id: str) -> Path:
        if not isinstance(voice_id, str) or not ID.match(voice_id):
            raise _unknown(voice_id)
        return self.dir / voice_id

    def _read(self, meta: Path) -> Voice | None:
        try:
            return Voice(**json.loads(meta.read_text()))
        except (OSError, ValueError, TypeError):
            return None  # a voice being written or removed right now

    def all(self) -> list[Voice]:
        """Every voice, whoever owns it: for the system's own bookkeeping, never for answering a caller. Copies:
        what a caller changes in one is not the library's until it is written."""
        return [replace(v) for v in self._voices()]

    def _voices(self) -> list[Voice]:
        stamp = self._stamp()
        cached = self._read_under.get(self.dir)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        if stamp is None and self.dir.is_dir():
            self._changed()  # a library from before the stamp: give it one, so that the next lookup is cheap
            stamp = self._stamp()
        # Read after the stamp: a change made meanwhile has a newer stamp, and the next lookup reads again.
        found = (self._read(m) for m in sorted(self.dir.glob("v_*/meta.json"))) if self.dir.is_dir() else ()
        voices = sorted((v for v in found if v is not None), key=lambda v: v.created_at)
        if stamp is not None:
            self._read_under[self.dir] = (stamp, voices)
        return voices

    def _stamp(self) -> tuple | None:
        try:
            with open(self.dir / ".generation", "rb") as f:
                stat = os.fstat(f.fileno())
                return stat.st_ino, stat.st_mtime_ns, f.read(64)
        except FileNotFoundError:
            return None

    def _changed(self) -> None:
        """Say that the library changed: every process reads it again at its next lookup."""
        tmp = self.dir / f".generation.{uuid.uuid4().hex}"
        tmp.write_text(uuid.uuid4().hex)
        os.replace(tmp, self.dir / ".generation")

    def list(self, caller: Caller, engine: str | None = None) -> list[Voice]:
        """The voices ``caller`` may use (its own and the shared ones; an admin's: all), oldest first."""
        return [v for v in self.all() if caller.may_use(v.owner) and (engine is None or v.engine == engine)]

    def get(self, key: str, caller: Caller) -> Voice:
        """A voice by id, or by name: the caller's own voice of that name first, then a shared one (then, for an
        admin, another key's, when only one has that name)."""
        if not isinstance(key, str) or not key:
            raise _unknown(key)
        if ID.match(key):
            voice = next((replace(v) for v in self._voices() if v.id == key), None)
            if voice is not None and caller.may_use(voice.owner):
                return voice
            raise _unknown(key)
        named = [v for v in self.list(caller) if v.name == key]
        for tier in ((v for v in named if caller.id and v.owner == caller.id), (v for v in named if not v.owner)):
            found = next(tier, None)
            if found is not None:
                return found
        if len(named) == 1:
            return named[0]
        if named:
            raise VoiceError(f"{len(named)} voices of other keys are named {key!r}; give the id of one: "
                             f"{', '.join(v.id for v in named)}", "ambiguous_voice", "voice")
        raise _unknown(key)

    def check_new_name(self, name, owner: str, keep: str | None = None) -> str:
        """A valid name that none of ``owner``'s other voices has (names are unique per owner)."""
        name = check_name(name)
        if any(v.name == name and v.owner == owner and v.id != keep for v in self.all()):
            whose = "this key's voices" if owner else "the shared voices"
            raise VoiceError(f"a voice named {name!r} already exists among {whose}", "duplicate_name", "name")
        return name

    def conds_path(self, voice_id: str) -> Path:
        """Where a voice's conditionals are: for a worker, by the id a checked request resolved."""
        return self._path(voice_id) / "conds.pt"

    def file(self, voice_id: str, name: str, caller: Caller) -> Path:
        path = self._path(self.get(voice_id, caller).id) / name
        if not path.is_file():
            raise VoiceError(f"voice {voice_id} has no {name}", "not_found", "voice")
        return path

    def create(self, *, name: str, engine: str, conds, reference_wav: bytes, sample_wav: bytes | None = None,
               description: str = "", tags=None, owner: str = "", reference_seconds: float = 0.0,
               model: str = "", job_id: str = "") -> Voice:
        """Write a voice into a temporary directory, then rename it into place: never half a voice."""
        self._sweep()
        name = self.check_new_name(name, owner)
        voice = Voice(id=f"v_{uuid.uuid4().hex[:12]}", name=name, engine=engine, description=str(description)[:500],
                      tags=check_tags(tags), owner=owner, created_at=time.time(),
                      reference_seconds=round(reference_seconds, 2), model=model, job_id=job_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.dir))
        try:
            conds.save(tmp / "conds.pt")
            (tmp / "reference.wav").write_bytes(reference_wav)
            if sample_wav is not None:
                (tmp / "sample.wav").write_bytes(sample_wav)
            (tmp / "meta.json").write_text(json.dumps(asdict(voice)))
            os.replace(tmp, self.dir / voice.id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._changed()
        return voice

    def _sweep(self, older_than_s: float = 600.0) -> None:
        """Remove what a process killed mid-write or mid-delete left behind (hidden, never listed)."""
        if not self.dir.is_dir():
            return
        for leftover in [*self.dir.glob(".incoming-*"), *self.dir.glob(".deleted-*"), *self.dir.glob(".generation.*")]:
            try:
                if time.time() - leftover.stat().st_mtime > older_than_s:
                    if leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)
            except FileNotFoundError:
                pass

    def made_by(self, job_id: str) -> Voice | None:
        return next((v for v in self.all() if job_id and v.job_id == job_id), None)

    def _changeable(self, voice_id: str, caller: Caller) -> Voice:
        voice = self.get(voice_id, caller)
        if voice.id != voice_id:  # changes name their voice by id, never by a name that may resolve elsewhere
            raise _unknown(voice_id)
        if not caller.may_change(voice.owner):
            raise VoiceError(f"{voice.name!r} is a shared voice: only an admin key may change or delete "
                             "it", "forbidden", "voice_id")
        return voice

    def update(self, voice_id: str, caller: Caller, **changes) -> Voice:
        voice = self._changeable(voice_id, caller)
        if "name" in changes:
            voice.name = self.check_new_name(changes["name"], voice.owner, keep=voice.id)
        if "description" in changes:
            voice.description = str(changes["description"] or "")[:500]
        if "tags" in changes:
            voice.tags = check_tags(changes["tags"])
        meta = self._path(voice.id) / "meta.json"
        tmp = meta.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(voice)))
        os.replace(tmp, meta)
        self._changed()
        return voice

    def delete(self, voice_id: str, caller: Caller) -> None:
        path = self._path(self._changeable(voice_id, caller).id)
        # Rename first so that readers never see a voice with files missing.
        doomed = self.dir / f".deleted-{voice_id}-{uuid.uuid4().hex[:6]}"
        os.replace(path, doomed)
        self._changed()
        shutil.rmtree(doomed, ignore_errors=True)

    def export(self, voice_id: str, caller: Caller) -> bytes:
        """One file with the metadata, the conditionals and the clips (tensors and plain data only)."""
        import torch

        voice = self.get(voice_id, caller)
        path = self._path(voice.id)
        conds = torch.load(path / "conds.pt", weights_only=True)
        files = {n: torch.frombuffer(bytearray((path / n).read_bytes()), dtype=torch.uint8)
                 for n in ("reference.wav", "sample.wav") if (path / n).is_file()}
        buf = io.BytesIO()
        torch.save({"format": EXPORT_FORMAT, "meta": asdict(voice), "conds": conds, "files": files}, buf)
        return buf.getvalue()

    def import_(self, data: bytes, owner: str = "", name: str | None = None) -> Voice:
        """A voice from an exported file, checked part by part: anything but a well-formed voice is refused."""
        import torch

        from .model.conds import Conditionals

        try:
            blob = torch.load(io.BytesIO(data), weights_only=True)  # never unpickles arbitrary objects
        except Exception:
            raise _not_a_voice("the file is not an exported voice") from None
        if not isinstance(blob, dict) or blob.get("format") != EXPORT_FORMAT:
            raise _not_a_voice("the file is not an exported voice")
        meta, files = blob.get("meta"), blob.get("files") or {}
        if not isinstance(meta, dict) or not isinstance(files, dict):
            raise _not_a_voice("the voice file's metadata is damaged")
        try:
            conds = Conditionals.from_data(blob.get("conds"))
        except ValueError as exc:
            raise _not_a_voice(f"the voice file's conditionals are damaged: {exc}") from None
        clips = {}
        for part in ("reference.wav", "sample.wav"):
            clip = files.get(part)
            if clip is None:
                continue
            if not (torch.is_tensor(clip) and clip.dtype == torch.uint8 and clip.dim() == 1):
                raise _not_a_voice(f"the voice file's {part} is not a byte string")
            raw = bytes(clip.numpy())
            if raw and not raw.startswith(b"RIFF"):
                raise _not_a_voice(f"the voice file's {part} is not a WAV file")
            clips[part] = raw
        engine, seconds = meta.get("engine", "chatterbox"), meta.get("reference_seconds") or 0.0
        try:
            seconds = float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None
        except OverflowError:  # an int of hundreds of digits
            seconds = None
        if not isinstance(engine, str) or seconds is None or not math.isfinite(seconds):
            raise _not_a_voice("the voice file's metadata is damaged (engine or reference_seconds)")
        return self.create(name=name or meta.get("name", ""), engine=engine, conds=conds,
                           reference_wav=clips.get("reference.wav", b""), sample_wav=clips.get("sample.wav"),
                           description=str(meta.get("description") or ""), tags=meta.get("tags"), owner=owner,
                           reference_seconds=max(0.0, min(seconds, MAX_REFERENCE_SECONDS)),
                           model=str(meta.get("model") or ""))


EXPORT_FORMAT = "chatterbox-jobs voice 1"


def _unknown(key) -> VoiceError:
    # The same answer for a voice that does not exist and another key's: nothing tells them apart.
    return VoiceError(f"no saved voice {key!r}", "unknown_voice", "voice")


def _not_a_voice(message: str) -> VoiceError:
    return VoiceError(message, "invalid_voice_file", "file")


MIN_SPEECH_SECONDS = 5.0
MAX_REFERENCE_SECONDS = 60.0
TARGET_RMS_DBFS = -20.0


def prepare_reference(data: bytes | Path, sample_rate: int = 24000) -> tuple["np.ndarray", float]:
    """An uploaded recording, decoded (any format ffmpeg reads), checked, trimmed of silence, loudness-normalized
    and resampled: (samples at sample_rate, seconds of speech). Raises VoiceError naming the problem."""
    import numpy as np

    from . import audio
    from .model.speech_tokens import resample
    from .model.voice_encoder import trim_silence

    try:
        # A second more than is taken, to tell a recording that is too long; nothing past it is ever decoded.
        samples, rate = audio.decode(data, max_seconds=MAX_REFERENCE_SECONDS + 1)
    except audio.AudioError as exc:
        raise VoiceError(f"the upload is not audio that can be decoded: {exc}", "not_audio", "file") from None
    if len(samples) / rate > MAX_REFERENCE_SECONDS:
        raise VoiceError(f"the recording is longer than {MAX_REFERENCE_SECONDS:.0f} s; at most "
                         f"{MAX_REFERENCE_SECONDS:.0f} s are taken (10 s is plenty)", "too_long", "file")
    if audio.is_silent(samples):
        raise VoiceError("the recording is silent", "silent", "file")
    if audio.clipped_fraction(samples) > 0.01:
        raise VoiceError(f"the recording is clipped ({audio.clipped_fraction(samples):.1%} of samples at full "
                         "scale); record it again, quieter", "clipped", "file")
    trimmed = trim_silence(samples.astype(np.float32), top_db=40)
    seconds = len(trimmed) / rate
    if seconds < MIN_SPEECH_SECONDS:
        raise VoiceError(f"the recording has {seconds:.1f} s of sound after trimming silence; at least "
                         f"{MIN_SPEECH_SECONDS:.0f} s of speech are needed", "too_short", "file")
    rms = float(np.sqrt(np.mean(trimmed ** 2)))
    gain = min(10 ** (TARGET_RMS_DBFS / 20) / max(rms, 1e-9), 0.95 / float(np.max(np.abs(trimmed))))
    return resample(trimmed * gain, rate, sample_rate), seconds


def clone_request(name, description, tags, exaggeration, library: VoiceLibrary, owner: str) -> dict:
    """A clone request's fields, checked before any work (the name must be new among the owner's voices)."""
    name = library.check_new_name(name, owner)
    try:
        exaggeration = float(0.5 if exaggeration in (None, "") else exaggeration)
    except (TypeError, ValueError, OverflowError):
        raise VoiceError("exaggeration must be a number", "invalid_type", "exaggeration") from None
    if not 0.25 <= exaggeration <= 2.0:
        raise VoiceError("exaggeration must be between 0.25 and 2.0", "out_of_range", "exaggeration")
    return {"name": name, "description": str(description or "")[:500], "tags": check_tags(tags),
            "exaggeration": exaggeration}
