"""The import graph of models_app: no cycle (module level or inside functions), engine on top;
and no bench script named like a standard module."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "models_app"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Return the project modules a file imports, anywhere in it (functions included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import mod" imports pkg.mod when that is a module.
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules}
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for p in (ROOT / PACKAGE).rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, modules) for p in files}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first.
    for name, targets in graph.items():
        graph[name] = targets | {
            ".".join(t.split(".")[:i]) for t in targets for i in range(1, t.count(".") + 1)
        }
        graph[name] &= modules
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # A package importing its own submodules is how packages re-export; the
            # submodule importing its package back is the cycle we look for.
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if state.get(nxt) is None and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_models_app():
    graph = import_graph()
    assert "models_app.services.pruning" in graph  # the graph is really read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize("leaf", ["models_app.executors", "models_app.fetch.spec"])
def test_leaves_import_nothing_above_them(leaf):
    graph = import_graph()
    if leaf not in graph:
        pytest.skip(f"{leaf} does not exist")
    assert graph[leaf] <= {"models_app", "models_app.models", "models_app.constants"}


def test_only_interfaces_import_the_engine():
    graph = import_graph()
    importers = {name for name, targets in graph.items() if "models_app.engine" in targets}
    interfaces = {"models_app.tasks"}
    cli = ("models_app.management.commands.", "models_app.management.models_cli.")
    assert importers, "nothing runs operations"
    assert all(name in interfaces or name.startswith(cli) for name in importers), importers


def test_no_bench_script_shadows_a_standard_module():
    # A script's own folder comes first on sys.path: a bench/queue.py broke every bench
    # that imports asgiref or concurrent.futures (both import `queue`).
    bench = ROOT / "bench"
    names = {path.stem for path in bench.glob("*.py")}
    assert names, "no bench scripts found"
    assert names & set(sys.stdlib_module_names) == set()
