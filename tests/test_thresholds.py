"""Every threshold lives once, in harness/figures/thresholds.py, with the reason for its value.

The modules that turn figures into verdicts compare only against named constants (no number
written out in a comparison), and each constant in thresholds.py carries a comment saying why.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = ROOT / "harness" / "figures" / "thresholds.py"
# the modules whose comparisons are verdicts
JUDGES = ["harness/analysis/checks.py", "harness/bench/targets.py", "harness/bench/summary.py",
          "harness/verify/gates.py", "harness/verify/drills.py", "harness/measure/evidence.py",
          "harness/analysis/scale_out.py", "harness/verify/ranks.py",
          "harness/bench/history.py", "harness/analysis/report.py"]
NEUTRAL = {0.0, 1.0}  # emptiness and "all of it" are not thresholds


def literal_comparisons(source: str) -> list[str]:
    """`x < 1.8`-style comparisons: a float literal (other than 0/1) on either side. Integers
    are counts (2 threads, 6 losses shown), not thresholds."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                for c in ast.walk(side):
                    if (isinstance(c, ast.Constant) and isinstance(c.value, float)
                            and c.value not in NEUTRAL):
                        out.append(f"line {node.lineno}: {ast.unparse(node)}")
    return out


def unexplained_constants(source: str) -> list[str]:
    """Top-level constants of thresholds.py without a comment on their line or just above."""
    lines = source.splitlines()
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            here = lines[node.lineno - 1]
            above = lines[node.lineno - 2] if node.lineno > 1 else ""
            if "#" not in here and not above.lstrip().startswith("#"):
                out.append(ast.unparse(node))
    return out


def test_verdicts_compare_against_named_thresholds_only():
    bad = {m: found for m in JUDGES if (found := literal_comparisons((ROOT / m).read_text()))}
    assert not bad, bad


def test_every_threshold_says_why():
    assert not unexplained_constants(THRESHOLDS.read_text())


def test_the_scans_can_fail():
    assert literal_comparisons("ok = ratio >= 1.8\n") == ["line 1: ratio >= 1.8"]
    assert literal_comparisons("ok = ratio >= SCALING_TARGET and n > 0 and t == 2\n") == []
    assert literal_comparisons("ok = rss < 1.32 * GB\n") == ["line 1: rss < 1.32 * GB"]
    assert unexplained_constants("LIMIT = 3\n") == ["LIMIT = 3"]
    assert unexplained_constants("# why\nLIMIT = 3\nOTHER = 4  # why\n") == []
