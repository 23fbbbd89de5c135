"""The import graph of ``worker/``, read from the source: no cycles, dependencies pointing one way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "worker"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str) -> set[str]:
    """Every worker module ``name`` imports at run time (function-level imports included), with the
    packages Python executes on the way (``a.b.c`` runs ``a.b``'s ``__init__``)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out: set[str] = set()
    for target in found:
        if target not in MODULES:
            continue
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            step = ".".join(parts[:i])
            # Packages enclosing the importer are already running: not an edge.
            if step in MODULES and step != name and not name.startswith(step + "."):
                out.add(step)
    return out


GRAPH = {name: imports(name) for name in MODULES}


def find_cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_the_checker_sees_imports_and_cycles():
    assert "worker.pipeline" in GRAPH["worker.app"]
    assert "worker.sinks.aggregates" not in GRAPH["worker.sinks.aggregates.store"]
    GRAPH["worker.errors"].add("worker.app")  # a deliberate back edge is found
    try:
        assert find_cycle() is not None
    finally:
        GRAPH["worker.errors"].discard("worker.app")


def test_no_import_cycle_in_worker():
    assert find_cycle() is None


def test_nothing_imports_a_command_and_sinks_never_import_sources():
    for name, deps in GRAPH.items():
        if not name.startswith(("worker.commands", "worker.cli")):
            assert not {d for d in deps if d.startswith("worker.commands")}, name
        if name.startswith("worker.sinks"):
            assert not {d for d in deps if d.startswith("worker.sources")}, name
        if name.startswith("worker.sources.replay"):
            assert not {d for d in deps if d.startswith("worker.sinks")}, name


def test_only_the_fixture_recorder_uses_the_development_poller():
    users = {name for name, deps in GRAPH.items() if "worker.sources.poller" in deps}
    # The backfill reads the stream once from its beginning (its change index); local runs with
    # --table-items consume the emulated stream with it.
    assert users <= {"worker.commands.fixtures", "worker.sources.backfill", "worker.commands.local_items"}
