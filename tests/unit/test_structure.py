"""Imports point one way (issue 18): no import circle anywhere in the package, counting imports inside
functions too, and the boundaries the folders show — tracking knows no task, the engine no built-in task."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def import_graph() -> dict[str, set[str]]:
    """module -> the freezelab modules it imports (``from a.b import c`` counts a.b.c when c is a module)."""
    mods = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = path
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges[name].add(target if target in mods else base)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names)
        edges[name] = {t for t in edges[name] if t in mods and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_a_planted_circle():
    edges = import_graph()
    assert "freezelab.engine.task" in edges["freezelab.engine.runner"]  # the parser finds real edges
    planted = {**edges, "freezelab.engine.task": edges["freezelab.engine.task"] | {"freezelab.engine.runner"}}
    assert any("freezelab.engine.task" in c for c in cycles(planted))


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_boundaries():
    edges = import_graph()
    for module, targets in edges.items():
        if module.startswith("freezelab.tracking"):
            assert not any(t.startswith(("freezelab.tasks", "freezelab.engine")) for t in targets), module
        if module.startswith("freezelab.engine"):
            assert not any(t.startswith(("freezelab.tasks.lm", "freezelab.tasks.timeseries",
                                         "freezelab.tasks.classify")) for t in targets), module
        if module.startswith("freezelab.tasks.classify"):  # the public API only
            assert targets <= {"freezelab", "freezelab.pretrained", "freezelab.tasks.classify"}, (module, targets)
