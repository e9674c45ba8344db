"""The one configuration surface: defaults, overridden by environment variables.

Every process (web, workers, Flower, the CLI, Celery's own config) reads its settings here, so that a value set
once in the environment is seen the same way everywhere. Each field can be set with ``CHATTERBOX_<FIELD>``
(upper case); ``REDIS_URL`` and ``TTS_ENGINE`` are also read without the prefix because they are the names
people already use for those two. ``load()`` checks every value (numbers against RANGES): a bad one stops a process
at its start, naming the variable, rather than failing a request later.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote

# Names read without the CHATTERBOX_ prefix as well (the prefixed name wins when both are set).
_PLAIN_NAMES = {"redis_url": "REDIS_URL", "tts_engine": "TTS_ENGINE", "model_dir": "CHATTERBOX_MODEL_DIR"}


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    # None means "the embedded Redis": `chatterbox up` starts it on redis_port and tells its children.
    redis_url: str | None = None
    redis_port: int = 6379
    # The embedded Redis' password; None: generated at its first start and kept in <data_dir>/redis-password (0600),
    # where every process of this data directory finds it.
    redis_password: str | None = None
    tts_engine: str = "auto"  # auto | piper | chatterbox
    model_dir: Path | None = None  # default: <data_dir>/models/chatterbox
    # Turbo's files (a Hugging Face repo of their own, whose ve.safetensors and conds.pt would clash with the
    # original's); default: <data_dir>/models/chatterbox-turbo
    turbo_dir: Path | None = None
    # Multilingual's files come in the original's repo, beside its files; default: the original's directory
    multilingual_dir: Path | None = None
    # Piper's voices as the workers load them, with their phoneme durations as a second output (made once from each
    # voice's model, 63 MB for the embedded one); default: <data_dir>/models/piper
    piper_dir: Path | None = None
    # The Chatterbox models a worker loads, comma-separated (original, turbo, multilingual); empty: each one whose
    # files are present. Every worker of one Redis should hold the same ones: jobs are not routed by model.
    models: str = ""
    default_model: str = ""  # the model of a job that names none; empty: original, else the first one held
    devices: str = "auto"  # auto | cpu | comma-separated GPU indices ("0,1")
    # This machine's name in its workers' names (gpu0@<host_name>, as Celery, Flower, /health and each job's
    # `worker` show them); empty: the host name. Set it where machines share a host name (cloned VMs).
    host_name: str = ""
    # CPU workers `up` starts where no GPU is used; more than one keeps a book going while one restarts, and lets
    # several share a many-core machine (give each its CHATTERBOX_THREADS).
    cpu_workers: int = 1
    watermark: bool = False  # Resemble's Perth watermark on Chatterbox output (needs resemble-perth)
    voice_cache_size: int = 32  # saved voices each worker keeps loaded
    preview_max_tokens: int = 250  # a cloned voice's preview sample: at most this many speech tokens (10 s)
    max_upload_mb: int = 20
    threads: int = 0  # CPU threads per worker for inference; 0: the libraries' default (every core)
    model_dtype: str = "float32"  # float32 | bfloat16: the Chatterbox weights' precision (bf16 suits GPUs)
    # Chatterbox requests one worker decodes together (interactive jobs and book chunks); 1: one at a time. Piper
    # runs up to one job per core.
    max_batch: int = 8
    # On a GPU, T3's decoding step runs as CUDA graphs (chatterbox.model.t3_slots); 0: its kernels one by one.
    cuda_graphs: bool = True
    # On a CPU, how T3's matmuls keep each batched row's bits (chatterbox.model.rowmatmul) is planned once per
    # machine and kept here for every worker and restart; default: <data_dir>/models/matmul-plans.json
    plan_cache: Path | None = None

    # Text limits: the API refuses text over max_text_chars; jobs synthesize chunk_chars at a time.
    max_text_chars: int = 5000
    # Pronunciation lexicon (chatterbox/lexicon.py): the most entries one key (or one book) may have.
    lexicon_max_entries: int = 1000
    chunk_chars: int = 300
    chunk_gap_s: float = 0.2

    # Audiobooks: uploads up to book_max_mb; chunks of chunk_chars on the bulk queue; assembly settings.
    book_max_mb: int = 50
    book_format: str = "mp3"  # chapter files: mp3 | ogg (Opus); the whole book is always also an M4B (AAC)
    book_pause_sentence_s: float = 0.4
    book_pause_paragraph_s: float = 0.9
    book_pause_chapter_s: float = 2.0
    book_loudness_lufs: float = -18.0  # EBU R128 integrated loudness of every chapter
    book_speak_titles: bool = True  # read each chapter's title before its text
    book_quality_checks: bool = True  # duration, clipping, silences, trailing noise and ASR per chunk
    # auto | pocketsphinx | faster-whisper | off: what hears each chunk for the check (auto: the best installed, and
    # none for Piper, which speaks every phoneme of its text)
    book_asr: str = "auto"
    whisper_model: Path | None = None  # a local faster-whisper model directory (auto prefers it when set)
    book_quality_retries: int = 2  # extra attempts, with new seeds, for a chunk that fails its checks
    book_chunk_attempts: int = 3  # a chunk that errors (or kills its worker) this often stops its book
    book_part_max_minutes: float = 60.0  # longer chapters split at paragraphs (0: never): one may be a whole book
    book_parse_timeout_s: float = 120.0  # the web app stops reading a book after this long (50 MB of text: 9 s)

    # Celery: one visibility timeout for every process, so none re-delivers another's running task early.
    visibility_timeout_s: int = 3600
    max_attempts: int = 2  # a job whose worker dies is run again until this many attempts, then failed

    # Retention: finished jobs (records, events, outputs, books, uploads) and chunks unused this long are deleted by
    # the sweeper (every sweep_interval_s, in one worker; `chatterbox gc` at will). 0: keep everything.
    retention_days: float = 30.0
    sweep_interval_s: float = 600.0
    # Job events in Redis: kept this long after the last one (a follower of an older job gets its end from the record).
    event_ttl_s: int = 24 * 3600
    event_maxlen: int = 10000
    # A job's audio pieces stay in Redis while it runs and this long after it ends (its file is the lasting copy).
    piece_ttl_s: int = 600
    # The embedded Redis' memory cap; past it Redis refuses writes (the API answers 503) and never evicts a queue or
    # a record (maxmemory-policy noeviction). 0: no cap.
    redis_maxmemory_mb: int = 2048
    # Workers beat this often; a worker silent for heartbeat_ttl_s is taken for dead and its leases (its running
    # jobs and book items) run out. One whose process died is found sooner: its Redis connections close at once.
    heartbeat_interval_s: float = 1.0
    heartbeat_ttl_s: int = 10

    # Access: API keys (chatterbox keys ...), limits per key, body sizes, browser sessions.
    admin_key: str | None = None  # registered as the admin key at start; else `up` makes one and prints it once
    allowed_origins: str = ""  # comma-separated origins allowed to open websockets besides the app's own
    rate_limit_per_minute: int = 600  # requests per key per minute (429 with Retry-After beyond)
    max_queued_jobs: int = 50  # jobs per key queued or running at once
    max_body_kb: int = 1024  # request bodies other than uploads (uploads: max_upload_mb, books: book_max_mb)
    auth_failures_per_minute: int = 30  # failed authentications per client address before it waits (429)
    cookie_secure: bool = False  # mark the sign-in cookie Secure (set it when the app is served over HTTPS)
    # Reverse proxies in front of the web app whose X-Forwarded-For/-Proto/-Host/-Port/-Prefix are believed (0: none):
    # the app then sees the browser's scheme, host and address (websocket Origin checks, limits per address).
    proxy_hops: int = 0

    # OpenAI-compatible speech: OpenAI's voice names -> ours ("alloy=joe,nova=<saved voice id>"); the rest speak
    # in the engine's default voice.
    openai_voices: str = ""

    # Web.
    web_host: str = "127.0.0.1"
    web_port: int = 5000
    web_threads: int = 1024  # an open websocket holds one for its life; 500 open took 40 MB (bench/followers.py)
    wait_timeout_s: float = 300.0  # POST /synthesize?wait=1 gives up waiting after this long

    # Flower.
    flower_host: str = "127.0.0.1"
    flower_port: int = 5555
    flower_user: str = "admin"
    flower_password: str | None = None  # None: generated once and kept in <data_dir>/flower-password

    # The log level of every `chatterbox` command (a Celery worker's own log: `chatterbox worker --loglevel`).
    log_level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR | CRITICAL, in any case

    # Set by `chatterbox worker` for itself, with CUDA_VISIBLE_DEVICES, before anything can initialise CUDA (not by
    # hand): the device its engine runs on (each GPU worker sees only its own GPU: cuda:0) and its own queue.
    worker_device: str = "cpu"
    worker_queue: str = "cpu"

    # Client side: the server the CLI's commands (and web.client.Client) talk to, and the API key they send.
    server: str = ""  # empty: the local one, http://<web_host>:<web_port> (Client: http://127.0.0.1:5000)
    api_key: str | None = None

    @property
    def broker_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        password = self.redis_password
        if password is None and self.redis_password_file.is_file():
            password = self.redis_password_file.read_text().strip()
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    @property
    def redis_password_file(self) -> Path:
        return self.data_dir / "redis-password"

    @property
    def retention_s(self) -> int:
        return max(0, int(self.retention_days * 24 * 3600))

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def voices_dir(self) -> Path:
        return self.data_dir / "voices"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def books_dir(self) -> Path:
        return self.data_dir / "books"

    @property
    def chunks_dir(self) -> Path:
        return self.data_dir / "chunks"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def chatterbox_dir(self) -> Path:
        return self.model_dir or self.data_dir / "models" / "chatterbox"

    @property
    def turbo_model_dir(self) -> Path:
        return self.turbo_dir or self.data_dir / "models" / "chatterbox-turbo"

    @property
    def multilingual_model_dir(self) -> Path:
        return self.multilingual_dir or self.chatterbox_dir

    @property
    def plan_cache_path(self) -> Path:
        return self.plan_cache or self.data_dir / "models" / "matmul-plans.json"

    @property
    def piper_model_dir(self) -> Path:
        return self.piper_dir or self.data_dir / "models" / "piper"

    @property
    def model_names(self) -> tuple[str, ...]:
        """CHATTERBOX_MODELS as a tuple (empty: every model whose files are present)."""
        return tuple(m.strip() for m in self.models.split(",") if m.strip())

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def secret_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """A secret kept in a file of the data directory: read, or made once with ``make`` and written readable by this
    user only (created exclusively, so that two processes starting at once agree on one)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def flower_credentials(settings: Settings) -> tuple[str, str]:
    """Flower's basic-auth user and password: from settings, else generated once and kept in the data directory
    (load() has refused a user or password that Flower would cut; a generated one has no ',')."""
    import secrets

    password = settings.flower_password or secret_file(
        settings.data_dir / "flower-password", lambda: secrets.token_urlsafe(12).encode()).decode().strip()
    return settings.flower_user, password


def embedded_redis_password(settings: Settings) -> str:
    """The password the embedded Redis is started with: CHATTERBOX_REDIS_PASSWORD, else the generated one."""
    if settings.redis_password:
        return settings.redis_password
    import secrets

    return secret_file(settings.redis_password_file, lambda: secrets.token_hex(24).encode()).decode().strip()


def _convert(kind: Any, raw: str, name: str) -> Any:
    text = str(kind)
    try:
        if text == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            return raw.lower() in ("1", "true", "yes", "on")
        if "Path" in text:
            return Path(raw).expanduser() if raw else None
        if "int" in text and "str" not in text:
            return int(raw)
        if "float" in text:
            return float(raw)
    except ValueError:
        raise ValueError(f"setting {name}={raw!r} is not a valid {text}") from None
    return raw or None if "None" in text else raw


_PATHS = ("data_dir", "model_dir", "turbo_dir", "multilingual_dir", "piper_dir", "whisper_model", "plan_cache")
MODEL_NAMES = ("original", "turbo", "multilingual")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_WORKER_DEVICE = re.compile(r"cpu|cuda(?::\d+)?")

# The one table of what every number may be: (lowest, highest), None for no bound above. Each bound is where a value
# beyond it would break something later (or means nothing); 0 where 0 means "off" or "none" in the field's comment.
# Floats must be finite too: int(inf) raises and NaN passes no comparison.
RANGES: dict[str, tuple[float, float | None]] = {
    "redis_port": (1, 65535),
    "web_port": (1, 65535),
    "flower_port": (1, 65535),
    "cpu_workers": (1, 256),
    "voice_cache_size": (1, None),
    # A generation's own cap (max_new_tokens=1000: 40 s of speech); a preview is a few seconds.
    "preview_max_tokens": (1, 1000),
    "max_upload_mb": (1, None),
    "threads": (0, None),
    "max_batch": (1, 256),  # each a thread of the worker and rows of its decoding step
    "max_text_chars": (1, None),
    # Every job of a key reads its whole lexicon and matches it with one pattern: a bound keeps that cheap.
    "lexicon_max_entries": (1, 100_000),
    # chatterbox.text.chunk_text refuses fewer than 20 characters. Chatterbox's models cap it at their own length
    # (chatterbox.engines.models: 300, Turbo 200); Piper takes what is set, up to a whole request's text.
    "chunk_chars": (20, 5000),
    "chunk_gap_s": (0, 10),
    "book_max_mb": (1, None),
    "book_pause_sentence_s": (0, 60),
    "book_pause_paragraph_s": (0, 60),
    "book_pause_chapter_s": (0, 60),
    # Quieter than -70 LUFS is R128's silence gate; louder than -5 the limiter would flatten every peak.
    "book_loudness_lufs": (-70, -5),
    "book_quality_retries": (0, 100),
    "book_chunk_attempts": (1, 100),
    "book_part_max_minutes": (0, None),  # 0: never split
    "book_parse_timeout_s": (1, None),
    # No task may run longer (Redis hands it to another worker): below a minute, a chunk still being synthesized on
    # a slow CPU could be run twice at once.
    "visibility_timeout_s": (60, None),
    "max_attempts": (1, 100),
    "retention_days": (0, None),  # 0: keep everything
    "sweep_interval_s": (0, None),  # 0: no sweeps
    "event_ttl_s": (1, None),  # 0 would make Redis delete a job's events as they are written
    "event_maxlen": (1, None),
    "piece_ttl_s": (1, None),
    "redis_maxmemory_mb": (0, None),  # 0: no cap
    "heartbeat_interval_s": (0.05, None),  # 0 would spin the heartbeat thread
    "heartbeat_ttl_s": (1, None),
    "rate_limit_per_minute": (0, None),  # 0: no limit
    "max_queued_jobs": (0, None),  # 0: no cap
    "max_body_kb": (1, None),
    "auth_failures_per_minute": (0, None),  # 0: no limit
    "proxy_hops": (0, None),
    "web_threads": (1, None),
    "wait_timeout_s": (1, None),
}


def _check_range(name: str, value: Any) -> None:
    low, high = RANGES[name]
    variable = f"CHATTERBOX_{name.upper()}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{variable} must be a number, not {value!r}")
    if not (math.isfinite(value) and low <= value and (high is None or value <= high)):
        allowed = f"from {low:g} to {high:g}" if high is not None else f"{low:g} or more"
        raise ValueError(f"{variable} must be {allowed}, not {value!r}")


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from defaults, then the environment, then ``overrides`` (field names, any case)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        names = [f"CHATTERBOX_{f.name.upper()}"]
        if f.name in _PLAIN_NAMES:
            names.append(_PLAIN_NAMES[f.name])
        for name in names:
            if env.get(name, "") != "":
                values[f.name] = _convert(f.type, env[name], name)
                break
    known = {f.name for f in fields(Settings)}
    for key, value in (overrides or {}).items():
        key = key.lower().removeprefix("chatterbox_")
        if key not in known:
            raise ValueError(f"unknown setting {key!r}")
        values[key] = Path(value) if key in _PATHS and value is not None else value
    settings = Settings(**values)
    for name in RANGES:
        _check_range(name, getattr(settings, name))
    if settings.model_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"CHATTERBOX_MODEL_DTYPE must be float32 or bfloat16, not {settings.model_dtype!r}")
    if settings.book_format not in ("mp3", "ogg"):
        raise ValueError(f"CHATTERBOX_BOOK_FORMAT must be mp3 or ogg, not {settings.book_format!r}")
    if settings.book_asr not in ("auto", "pocketsphinx", "faster-whisper", "off"):
        raise ValueError(f"CHATTERBOX_BOOK_ASR must be auto, pocketsphinx, faster-whisper or off, not "
                         f"{settings.book_asr!r}")
    for name in settings.model_names + ((settings.default_model,) if settings.default_model else ()):
        if name not in MODEL_NAMES:
            raise ValueError(f"CHATTERBOX_MODELS and CHATTERBOX_DEFAULT_MODEL name {', '.join(MODEL_NAMES)}, not "
                             f"{name!r}")
    if settings.tts_engine not in ("auto", "piper", "chatterbox"):
        raise ValueError(f"TTS_ENGINE must be auto, piper or chatterbox, not {settings.tts_engine!r}")
    if settings.log_level.upper() not in LOG_LEVELS:
        raise ValueError(f"CHATTERBOX_LOG_LEVEL must be {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}, not "
                         f"{settings.log_level!r}")
    if not _WORKER_DEVICE.fullmatch(settings.worker_device):
        raise ValueError(f"CHATTERBOX_WORKER_DEVICE must be cpu, cuda or cuda:N, not {settings.worker_device!r}")
    # Flower reads "user:password" pairs separated by commas (tornado's list option): a comma would cut the password
    # in two, and a colon in the user would move the rest of it into the password.
    if ":" in settings.flower_user or "," in settings.flower_user or "," in (settings.flower_password or ""):
        raise ValueError("CHATTERBOX_FLOWER_USER may not contain ':' or ',', nor CHATTERBOX_FLOWER_PASSWORD ','")
    if settings.redis_url:
        from .redis_client import check_url

        check_url(settings.redis_url)  # a Sentinel URL without its master's name, say: said at start, not at a job
    if any(c in settings.host_name for c in "@:/ \t\n"):
        raise ValueError(f"CHATTERBOX_HOST_NAME names this machine in worker names (gpu0@NAME): no '@', ':', '/' or "
                         f"spaces, not {settings.host_name!r}")
    return settings


def to_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make a child process load the same settings."""
    env: dict[str, str] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is not None:
            env[f"CHATTERBOX_{f.name.upper()}"] = str(value)
    return env
