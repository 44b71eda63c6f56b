"""The import graph of reference, fast and harness: no cycles, no upward imports.

Layers: reference <- fast, torch_engine <- harness (an engine never imports the harness or
another engine; the specification imports neither). Inside harness the sub-packages have a
declared order, `HARNESS_ORDER`: a module may import its own sub-package and the ones listed
before it, never one listed after (or one in the same tier). `harness.cli` and
`harness.__main__`, the entry point, sit on top.
Every import counts, also those inside functions (a lazy import is still a dependency), so a
cycle cannot hide behind `import` in a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"plumbing": 0, "reference": 1, "fast": 2, "torch_engine": 2, "harness": 3}
# Lowest first; packages in one tier do not import each other (docs/DESIGN.md, "Module map").
HARNESS_ORDER: list[tuple[str, ...]] = [
    ("figures",),    # the typed results model (dataclasses, JSON), thresholds, plot drawing
    ("measure",),    # machine facts, CPU/memory/stack tools, the run record read as evidence
    ("run",),        # corpus, engines, checkpoints, training loop, stop/rescue, progress
    ("verify",),     # equivalence gates, JUnit, drills, stress, rank digests and gates
    ("bench",),      # make bench, MPI step bench, history, engines side by side, compare
    ("analysis",),   # spheres analyze: pipeline, checks, report, scale-out section
    ("commands",),   # one module per command: options and body; exit codes
]
ENTRY = ("harness.cli", "harness.__main__", "harness")  # top: may import every sub-package


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
            if LAYERS[n.split(".")[0]] > LAYERS[m.split(".")[0]]
            or (LAYERS[n.split(".")[0]] == LAYERS[m.split(".")[0]]
                and n.split(".")[0] != m.split(".")[0])]  # engines import no other engine


def harness_tier(module: str) -> tuple[int, str] | None:
    """(tier, sub-package) of a harness module; None for the entry point and non-harness."""
    parts = module.split(".")
    if parts[0] != "harness" or module in ENTRY:
        return None
    for tier, packages in enumerate(HARNESS_ORDER):
        if parts[1] in packages:
            return tier, parts[1]
    raise AssertionError(f"{module}: harness.{parts[1]} is in no tier of HARNESS_ORDER")


def against_harness_order(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a harness sub-package into a later (or same-tier sibling) one."""
    bad = []
    for m, deps in graph.items():
        here = harness_tier(m)
        if here is None:
            continue
        for n in deps:
            if n in ENTRY and n != "harness":
                bad.append(f"{m} -> {n} (the entry point)")
            there = harness_tier(n)
            if there is not None and there[1] != here[1] and there[0] >= here[0]:
                bad.append(f"{m} -> {n}")
    return sorted(bad)


def test_harness_subpackages_follow_the_declared_order():
    bad = against_harness_order(import_graph())
    assert not bad, bad


def test_every_harness_module_is_in_a_subpackage_with_a_tier():
    """A new flat module or sub-package must be placed in HARNESS_ORDER, not slip past it."""
    stray = [m for m in import_graph() if m.startswith("harness.") and m not in ENTRY
             and m.count(".") < 2 and not (ROOT / m.replace(".", "/") / "__init__.py").exists()]
    assert not stray, stray
    for m in import_graph():
        harness_tier(m)  # raises for a sub-package missing from the order


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
    assert upward_imports({"torch_engine.e": {"fast.y"}, "fast.y": {"reference.z"}}) == [
        "torch_engine.e -> fast.y"]  # one engine importing another
    real = import_graph()
    assert "reference.params" in real["torch_engine.engine"]  # the torch engine is covered
    assert "harness.verify.gates" in real["harness.analysis.phases"]
    assert "fast.record" in real["fast.workers"]


def test_the_order_checker_sees_an_import_against_the_order():
    """run is below commands: run -> commands is flagged, commands -> run is not; a lower tier
    importing a higher one (measure -> run) and a sub-package importing the entry point are
    flagged too."""
    graph = {"harness.run.train": {"harness.commands.failures"},
             "harness.commands.failures": {"harness.run.stop"},
             "harness.measure.trace": {"harness.run.stop"},
             "harness.verify.gates": {"harness.cli"},
             "harness.cli": {"harness.analysis.pipeline"}}
    assert against_harness_order(graph) == [
        "harness.measure.trace -> harness.run.stop",
        "harness.run.train -> harness.commands.failures",
        "harness.verify.gates -> harness.cli (the entry point)"]
