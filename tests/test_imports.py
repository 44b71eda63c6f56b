"""The import graph of reference, fast and harness: no cycles, no upward imports.

Layers: reference <- fast <- harness (an engine never imports the harness; the specification
imports neither). Every import counts, also those inside functions (a lazy import is still a
dependency), so a cycle cannot hide behind `import` in a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"reference": 0, "fast": 1, "harness": 2}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.split(".")[0] in LAYERS:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} -> {n}" for m, deps in graph.items() for n in deps
            if LAYERS[n.split(".")[0]] > LAYERS[m.split(".")[0]]]


def test_no_upward_imports():
    upward = upward_imports(import_graph())
    assert not upward, upward


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_checker_sees_a_cycle_and_an_upward_import():
    """The test above can fail: a cycle and an upward edge are found when present."""
    graph = {"harness.a": {"harness.b"}, "harness.b": {"harness.a"}, "fast.x": {"harness.a"}}
    assert find_cycle(graph) in (["harness.a", "harness.b", "harness.a"],
                                 ["harness.b", "harness.a", "harness.b"])
    assert find_cycle({"harness.a": {"harness.b"}, "harness.b": set()}) is None
    assert upward_imports(graph) == ["fast.x -> harness.a"]
    real = import_graph()
    assert "harness.verify" in real["harness.analyze"] and "fast.record" in real["fast.workers"]
