"""The job record's schema (chatterbox/schemas/records_jobs.py): every field the code writes to a job's Redis hash is
a JobRecord field, and reads back as its type; public_view shows the Job answer's fields. Against a real Redis, and
over the source (a field written anywhere that the model does not name fails here, naming where)."""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Optional

import pytest

from chatterbox.books.state import BookStore
from chatterbox.jobs import JobStore, job_key, public_view
from chatterbox.schemas.records import Job, JobRecord, RECORDS, Record, hash_types
from chatterbox.settings import load
from chatterbox.synthesis import SynthesisRequest

ROOT = Path(__file__).resolve().parents[1]
TYPES = hash_types(JobRecord)
NOT_FIELDS = {"fence", "only_if"}  # keywords of the store's methods that are not fields
STORES = ("store", "books", "BookStore")  # what the job and book stores are called where they are used
# The methods that take fields as keywords (JobStore's, BookStore's, and BookStore's own helpers).
WRITES = ("update", "finish", "reopen", "resume", "set_status", "_reopen", "_end")


@pytest.fixture()
def store(fresh_redis, redis_url, tmp_path) -> JobStore:
    return JobStore.connect(load({"redis_url": redis_url, "data_dir": tmp_path / "data", "heartbeat_ttl_s": 600},
                                 environ={}))


def _check_hash(store: JobStore, job_id: str) -> dict:
    """The job's hash holds only JobRecord's fields, each read back as its type ("" is "none" for any field)."""
    raw = store.r.hgetall(job_key(job_id))
    assert set(raw) <= set(TYPES), f"fields JobRecord does not name: {sorted(set(raw) - set(TYPES))}"
    job = store.get(job_id)
    for name, value in job.items():
        if value == "":
            continue
        wanted = TYPES[name]
        ok = isinstance(value, (dict, list)) if wanted in (dict, list) else type(value) is wanted
        assert ok, f"{name}={value!r} read back as {type(value).__name__}, not {wanted.__name__}"
    return job


def test_a_synthesis_record_through_its_life(store, tmp_path):
    request = SynthesisRequest(text="Hello there.", voice="joe", format="mp3", params={"length_scale": 1.0},
                               model="", language="en", plan=[["Hello there.", 0.0, 1.0]], lexicon="[]")
    store.create("s1", engine="piper", source="rest", owner="k1", audio_prompt=str(tmp_path / "s1.audio"),
                 **request.as_dict())
    _check_hash(store, "s1")
    _, lease = store.claim("s1", 1, "host", "instance-1")
    store.update("s1", fence=lease, chunks_total=1, sample_rate=22050, queued_s=0.25, params={"seed": 7})
    store.put_chunk("s1", 0, b"RIFF", fence=lease)
    store.update("s1", fence=lease, chunks_done=1, progress=1.0, synth_s_done=0.5, first_chunk_s=0.3)
    store.finish("s1", "succeeded", fence=lease, output="s1.mp3", words_file="s1.words.json", duration_s=1.5,
                 synth_s=0.5, encode_s=0.1, rtf=0.33, total_s=2.0)
    job = _check_hash(store, "s1")
    assert job["pieces"] == 1 and job["plan"] == [["Hello there.", 0.0, 1.0]] and job["lexicon"] == "[]"
    view = public_view(job)
    assert set(view) <= set(Job.model_fields) and "text" not in view and "lease" not in view
    Job.model_validate(view)  # the answer is what its model says


def test_a_cancelled_and_a_requeued_record(store):
    for job_id in ("c1", "r1"):
        store.create(job_id, text="Hi.", voice="joe", format="wav", params={}, engine="piper", source="celery")
        store.claim(job_id, 1, "host", "instance-1")
    assert store.cancel("c1") == "running"
    assert _check_hash(store, "c1")["cancel_requested"] == "1"
    store.update("r1", status="queued", attempt=2, last_error="worker host stopped", lease="")  # as the reaper
    assert _check_hash(store, "r1")["attempt"] == 2


def test_a_book_record_through_its_life(store):
    store.create("b1", text="A Book", voice="joe", format="mp3", params={"length_scale": 1.0}, engine="piper",
                 source="rest", model="", language="en", kind="audiobook", title="A Book", author="Someone",
                 chapters_total=2, plan_s=0.5, audio_s=0.0, assembly_s=0.0, owner="k1")
    store.update("b1", chunks_total=3, text_chars=120, sample_rate=22050)
    books = BookStore(store)
    books.start("b1", ["c:0", "c:1", "c:2"])
    assert books.begin_run("b1")  # started_at, run_started_at, run_done_at_start
    assert books.take("b1", "instance-1", "host") is not None  # activity_at
    store.add("b1", "audio_s", 1.5)
    store.update("b1", chunks_done=1, progress=1 / 3, chapters_done=1)
    books.cancel("b1")
    assert _check_hash(store, "b1")["status"] == "cancelled"
    books.resume("b1")  # error and finished_at emptied
    job = _check_hash(store, "b1")
    assert job["finished_at"] == "" and isinstance(job["activity_at"], float) and job["run_done_at_start"] == 0
    Job.model_validate(public_view(job))


def test_a_clone_record_hides_its_upload():
    job = {"id": "v1", "kind": "clone", "status": "queued", "params": {"name": "Joe", "upload": "/up/v1.audio",
           "keep_upload": True}, "voice": "", "text": "Joe", "lease": ""}
    view = public_view(job)
    assert view == {"id": "v1", "kind": "clone", "status": "queued", "params": {"name": "Joe"}}


# -- every field the code writes, read from the source ----------------------------------------------------------

def _receiver(call: ast.Call) -> str:
    """The last name of what a method is called on: ``svc.store.update`` -> store, ``BookStore(s).x`` -> BookStore."""
    node = call.func.value
    if isinstance(node, ast.Call):
        node = node.func
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _dict_keys(function: ast.AST, name: str) -> set[str]:
    """Keys of the dict displays assigned to ``name`` in ``function`` (``extra = {...} if clip else {}``)."""
    keys: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            for part in ast.walk(node.value):
                if isinstance(part, ast.Dict):
                    keys |= {k.value for k in part.keys if isinstance(k, ast.Constant)}
    return keys


def written_fields(source: str, stores: tuple[str, ...] = STORES) -> dict[str, int]:
    """Fields a module writes to job records through the job and book stores (methods called on ``stores``):
    field -> the line."""
    tree = ast.parse(source)
    found: dict[str, int] = {}
    request_fields = [f.name for f in dataclasses.fields(SynthesisRequest)]
    for function in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
        for call in ast.walk(function):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                continue
            method, receiver = call.func.attr, _receiver(call)
            names: list[str] = []
            if receiver not in stores:
                continue
            if method == "create" and any(k.arg == "engine" for k in call.keywords):  # JobStore's (not KeyStore's)
                names = [k.arg for k in call.keywords if k.arg]
            elif method in WRITES:
                names = [k.arg for k in call.keywords if k.arg]
            elif method == "add" and len(call.args) > 1 and isinstance(call.args[1], ast.Constant):
                names = [call.args[1].value]
            else:
                continue
            for unpacked in (k.value for k in call.keywords if k.arg is None):
                if isinstance(unpacked, ast.Call) and getattr(unpacked.func, "attr", "") == "as_dict":
                    names += request_fields  # a SynthesisRequest's
                elif isinstance(unpacked, ast.Name):
                    names += sorted(_dict_keys(function, unpacked.id))
            for name in names:
                if name not in NOT_FIELDS:
                    found.setdefault(name, call.lineno)
    return found


def _lua_args(source: str, start: int) -> list[str]:
    """The arguments of a Lua call from ``start`` (just after its opening parenthesis) to its closing one."""
    args, depth, quote, part = [], 0, "", ""
    for char in source[start:]:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                break
        elif char == "," and depth == 0:
            args.append(part.strip())
            part = ""
            continue
        part += char
    return [*args, part.strip()]


def lua_fields(source: str) -> dict[str, int]:
    """Field names a module's Lua scripts set by name (``'HSET', KEYS[1], 'status', 'running', ...``): -> line."""
    names: dict[str, int] = {}
    for match in re.finditer(r"redis\.call\(", source):
        args = _lua_args(source, match.end())
        if args[0] == "'HSET'":  # then the hash, then field, value, field, value...
            line = source.count("\n", 0, match.start()) + 1
            names.update({a.strip("'"): line for a in args[2::2] if re.fullmatch(r"'\w+'", a)})
    return names


def test_every_field_the_code_writes_is_in_the_model():
    modules = [*sorted((ROOT / "chatterbox").rglob("*.py")), *sorted((ROOT / "web").glob("*.py")), ROOT / "tasks.py"]
    unknown, seen = [], set()
    for path in modules:
        source = path.read_text()
        own = path.name in ("jobs.py", "state.py")  # the stores themselves: their own methods too
        fields = written_fields(source, (*STORES, "self") if own else STORES)
        fields.update(lua_fields(source))  # scripts' HSETs (jobs.py, books/state.py, books/transitions.py)
        if own:  # JobStore's own records (create, finish, the reaper's requeue), and cancel_requested
            tree = ast.parse(source)
            fields.update(dict.fromkeys(_dict_keys(tree, "record") | _dict_keys(tree, "values") |
                                        _dict_keys(tree, "requeued"), 0))
            fields.update(dict.fromkeys(re.findall(r'\.hset\(key, "(\w+)"', source), 0))
        seen |= set(fields)
        unknown += [f"{path.relative_to(ROOT)}:{line}: {name}" for name, line in fields.items() if name not in TYPES]
    assert not unknown, "job fields that JobRecord (chatterbox/schemas/records_jobs.py) does not name:\n" + \
        "\n".join(unknown)
    # The scan finds what it should: the writes of the workers, the web app and the stores' own scripts.
    assert {"chunks_done", "synth_s_done", "run_done_at_start", "audio_s", "audio_prompt", "plan", "lexicon",
            "worker_instance", "lease", "activity_at", "output", "voice_id", "cancel_requested", "created_at",
            "last_error", "max_attempts"} <= seen


def test_a_field_missing_from_the_model_is_caught():
    source = ("def run(store, lease):\n"
              "    extra = {'brand_new': 1}\n"
              "    store.create('j', engine='piper', source='rest', **extra)\n"
              "    store.update('j', fence=lease, chunks_done=1, also_new=2)\n"
              "    store.add('j', 'third_new', 1.0)\n")
    assert set(written_fields(source)) - set(TYPES) == {"brand_new", "also_new", "third_new"}
    lua = "redis.call('HSET', KEYS[1], 'status', 'running', 'fourth_new', ARGV[4],\n           'lease', ARGV[3])"
    assert set(lua_fields(lua)) == {"status", "fourth_new", "lease"}


def test_only_types_a_hash_can_hold():
    class Flagged(Record):
        flag: Optional[bool] = None  # Redis would give back "1": a bool must be decoded on purpose

    with pytest.raises(TypeError, match="flag"):
        hash_types(Flagged)
    assert TYPES["params"] is dict and TYPES["plan"] is list and TYPES["pieces"] is int and TYPES["kind"] is str


def test_every_answer_model_writes_a_schema():
    from chatterbox.schemas.base import openapi_schemas

    schemas = openapi_schemas([], RECORDS)
    assert {m.__name__ for m in RECORDS} <= set(schemas) and "JobRecord" not in schemas
    job = schemas["Job"]
    assert set(job["properties"]) == set(Job.model_fields)
    assert "nullable" not in job["properties"]["voice"] and "voice" not in job["required"]
