"""No import circles among the project's modules: each module's imports, at module level and inside functions, read
with ``ast`` (nothing is imported), form a graph without cycles.

An import inside a function is counted too: it only postpones the circle to the first call, and two modules that
need each other are one module in two files. Imports under ``if TYPE_CHECKING:`` are not counted: they never run.
Importing a submodule runs its package's ``__init__`` first, but that is no dependency of the importer on the
package's contents: ``from . import auth`` in web/pages.py depends on web.auth, ``from . import error_response``
would depend on web itself.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("chatterbox", "web", "workers")
TOP_LEVEL = ("tasks.py", "celeryconfig.py")

# Circles known and not yet taken apart, each a set of modules; one taken apart must be removed from here, and
# no other may appear.
KNOWN_CYCLES = [
    # chunk_text (chatterbox.text) reaches up to the per-language rules, which build on the English ones in text.
    {"chatterbox.text", "chatterbox.text_languages"},
    # T3Turbo.generate runs a batch of one; the batch uses the sampling parameters defined with the model.
    {"chatterbox.model.t3_turbo", "chatterbox.model.t3_turbo_batch"},
]


def project_modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (its file, whether it is a package's __init__)."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    files += [ROOT / name for name in TOP_LEVEL]
    modules = {}
    for path in files:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """The import statements inside ``if TYPE_CHECKING:`` blocks (their else branches do run)."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ("TYPE_CHECKING" in ast.unparse(node.test)):
            for stmt in node.body:
                skipped.update(n for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return skipped


def imports_of(module: str, source: str, is_package: bool, modules: set[str] | dict) -> dict[str, int]:
    """The project modules that ``module`` (its source text) imports: {module: the line of its first import}."""

    def owner(name: str) -> str | None:  # the project module a dotted name is, or is inside of
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    tree = ast.parse(source)
    skipped = _type_checking_only(tree)
    edges: dict[str, int] = {}
    for node in ast.walk(tree):
        if node in skipped:
            continue
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [owner(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                package = ".".join(base + ([node.module] if node.module else []))
            else:
                package = node.module or ""
            for alias in node.names:
                name = f"{package}.{alias.name}"
                targets.append(name if name in modules else owner(package))
        for target in targets:
            if target is not None and target != module:
                edges.setdefault(target, node.lineno)
    return edges


def import_graph() -> dict[str, dict[str, int]]:
    """Module -> {project module it imports: the line of its first such import}."""
    modules = project_modules()
    return {module: imports_of(module, path.read_text(), is_package, modules)
            for module, (path, is_package) in modules.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def describe(graph: dict[str, dict[str, int]], component: set[str]) -> str:
    modules = project_modules()
    lines = [f"  {a} -> {b}  ({modules[a][0].relative_to(ROOT)}:{line})"
             for a in sorted(component) for b, line in sorted(graph[a].items()) if b in component]
    return "\n".join(lines)


def test_the_graph_sees_imports_at_every_level():
    graph = import_graph()
    assert "chatterbox.settings" in graph["workers.stack"]  # module level
    assert "workers.stack" in graph["chatterbox.cli.serve"]  # inside a function (up)
    assert "tasks" in graph["web.common"]  # inside a method (Services.enqueue)
    assert "web.auth" in graph["web.pages"] and "web" not in graph["web.pages"]  # from . import <submodule>
    modules = {"p", "p.a", "p.b", "p.c", "q"}
    source = ("from typing import TYPE_CHECKING\nfrom . import b, helper\nif TYPE_CHECKING:\n    import q\n"
              "def f():\n    from .c import thing\n")
    assert imports_of("p.a", source, False, modules) == {"p.b": 2, "p": 2, "p.c": 6}
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [{"a", "b", "c"}]


def test_no_import_cycles_among_the_projects_modules():
    graph = import_graph()
    found = cycles(graph)
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles:\n" + "\n\n".join(describe(graph, c) for c in new)
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"no longer cycles, remove them from KNOWN_CYCLES: {gone}"
