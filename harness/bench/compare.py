"""`spheres compare A B`: what changed between two runs, as markdown for a CI job summary.

A and B are two `results.json` of `spheres analyze`, two `summary.json` of `make bench`, or two
pytest-benchmark JSON files (a stored `make bench` run). Each input is identified by its schema
and kind first (`kind_of`): anything else (two unrelated JSON objects, a `train --json`
summary), or two inputs of different kinds, is refused (exit 2) naming both, never reported as
"changed" or "no change". A results.json or summary.json is read through its typed model
(`AnalysisResults`, `BenchSummary`): one of another schema version is refused (exit 2) rather
than compared key by key with a file whose keys mean something else. Benchmark runs are judged
benchmark by benchmark with the noise rule of `harness.bench.history`; a benchmark of A that B
lacks is a failure (asked for, not measured), as is a run with no benchmark at all. The typed
documents are flattened to dotted paths (lists of records keyed by their name, title or thread
count), and every figure and verdict whose value differs is listed, verdicts first. Exit 1 when
a verdict got worse (a pass became a fail), a benchmark regressed beyond its noise or went
missing; else 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.bench.history import compare_runs, markdown_table
from harness.figures.bench_metrics import BenchSummary
from harness.figures.results import AnalysisResults
from plumbing.errors import InputError

KEY_FIELDS = ("name", "title", "check", "threads", "preset", "kind")  # a record's identity
MAX_SERIES = 16  # longer lists of numbers are sample series (memory over time...), not figures
MAX_TEXT = 80  # longer strings (stack dumps, config text) are shown truncated
VERDICT_KEYS = ("passed", "status", "verdict")
GOOD = {True, "pass", "PASS", "passed"}
BAD = {False, "fail", "FAIL", "failed"}


@dataclass
class Change:
    path: str
    old: Any
    new: Any

    @property
    def is_verdict(self) -> bool:
        return self.path.rsplit(".", 1)[-1] in VERDICT_KEYS

    @property
    def worse(self) -> bool:
        return self.is_verdict and self.old in GOOD and self.new in BAD


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: bool = False


# kinds compare reads, by the keys that identify them (see `kind_of`)
ANALYZE, BENCH, BENCH_RUN = "analyze results.json", "bench summary.json", "pytest-benchmark run"
# kinds we write that compare does not read, by the keys that identify them, with the advice
FOREIGN = (({"final_loss", "losses", "tokens_per_s", "steps"}, "a `spheres train --json` summary",
            "compare two analyze results.json (spheres analyze --out) instead"),
           ({"records", "failures", "passed"}, "a `spheres verify --json` report",
            "its verdict is its exit code; compare analyze results.json instead"),
           ({"workload", "rows", "sgemm_limit_flops"}, "a `spheres engines --json` table",
            "compare two bench summary.json (make bench) instead"))


def kind_of(data: dict[str, Any]) -> str:
    """The kind of document `data` is, by its schema: ANALYZE, BENCH or BENCH_RUN; else an
    InputError's text (the empty string never: every input has a kind or is refused)."""
    if "checks" in data and "verdict" in data:
        return ANALYZE
    if "targets" in data and "metrics" in data:
        return BENCH
    if is_benchmark_run(data):
        return BENCH_RUN
    return ""


def _foreign(data: dict[str, Any], path: Path) -> InputError:
    for keys, what, advice in FOREIGN:
        if keys <= data.keys():
            return InputError(f"compare: {path} is {what}, which compare does not read; "
                              f"{advice}")
    keys = ", ".join(list(data)[:5]) + (", ..." if len(data) > 5 else "")
    return InputError(f"compare: {path} is not a document compare reads (keys: {keys or 'none'})"
                      f"; pass two {ANALYZE} (spheres analyze), two {BENCH} (make bench) or two "
                      "pytest-benchmark JSON files")


def load_pair(a: Path, b: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both inputs, each identified by its kind and the two kinds the same, then read through
    their typed models: every refusal (exit 2) before any comparison."""
    old, new = read(a), read(b)
    same_kind(kind_of(old), kind_of(new), str(a), str(b))
    return typed(old, a), typed(new, b)


def same_kind(ka: str, kb: str, a: str, b: str) -> None:
    if ka != kb:
        raise InputError(f"compare: {a} is {_article(ka)} but {b} is {_article(kb)}; compare "
                         "two of the same kind")


def load(path: Path) -> dict[str, Any]:
    """One input, identified by its kind and read through its typed model."""
    return typed(read(path), path)


def read(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, refused (InputError) unless it is of a kind compare reads."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"compare: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InputError(f"compare: {path} is not JSON ({exc}); pass results.json, a bench "
                         "summary.json or a pytest-benchmark JSON") from None
    if not isinstance(data, dict):
        raise InputError(f"compare: {path} holds a JSON {type(data).__name__}, not an object")
    if not kind_of(data):
        raise _foreign(data, path)
    return data


def typed(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A results.json or bench summary.json read into its dataclasses (schema version checked,
    unknown fields refused) and written back as the JSON the comparison flattens."""
    model = {ANALYZE: AnalysisResults, BENCH: BenchSummary}.get(kind_of(data))
    if model is None:
        return data
    try:
        return model.from_json(data, what=f"compare: {path}").to_json()
    except InputError as exc:
        if str(path) in str(exc):
            raise
        raise InputError(f"compare: {path} is {_article(kind_of(data))} that cannot be read: "
                         f"{exc}") from None


def is_benchmark_run(data: dict[str, Any]) -> bool:
    """A pytest-benchmark JSON: a list of benchmarks, each with its round statistics."""
    runs = data.get("benchmarks")
    return isinstance(runs, list) and "machine_info" in data and all(
        isinstance(b, dict) and isinstance(b.get("fullname"), str) and isinstance(
            b.get("stats"), dict) and isinstance(b["stats"].get("min"), int | float)
        for b in runs)


def _record_key(item: dict[str, Any], index: int) -> str:
    for k in KEY_FIELDS:
        if k in item and isinstance(item[k], str | int) and not isinstance(item[k], bool):
            return f"{k}={item[k]}"
    return str(index)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> scalar, for every figure and verdict in a JSON document."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                out.update(flatten(v, f"{prefix}[{_record_key(v, i)}]"))
        elif len(value) <= MAX_SERIES:
            for i, v in enumerate(value):
                out.update(flatten(v, f"{prefix}[{i}]"))
        else:
            out[f"{prefix}[len]"] = len(value)
    else:
        out[prefix] = value
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    a, b = flatten(old), flatten(new)
    out = [Change(p, a.get(p), b.get(p)) for p in sorted(a.keys() | b.keys())
           if not _same(a.get(p), b.get(p))]
    return sorted(out, key=lambda c: (not c.is_verdict, c.path))


def _show(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    text = str(v).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _delta(c: Change) -> str:
    if c.worse:
        return "**WORSE**"
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (c.old, c.new))
    if numbers and c.old:
        return f"{c.new / c.old - 1:+.1%}"
    return ""


def _article(kind: str) -> str:
    if not kind:
        return "not a document compare reads"
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _compare_bench_runs(old: dict[str, Any], new: dict[str, Any], a: str, b: str,
                        report: Report) -> Report:
    """Benchmark by benchmark; one A measured that B did not (or an empty run) fails."""
    c = compare_runs(old, new, against=f"A (`{a}`)", path=a)
    report.lines += markdown_table(c, only_changed=True)
    same = sum(d.verdict == "same" for d in c.deltas)
    report.lines += ["", f"{same} of {len(c.deltas)} benchmarks within their noise bound."]
    empty = [p for p, run in ((a, old), (b, new)) if not run.get("benchmarks")]
    if empty:
        report.lines.append(f"FAIL: {' and '.join(empty)} hold(s) no benchmark: nothing was "
                            "measured")
    if c.only_old:
        report.lines.append(f"FAIL: {len(c.only_old)} of {len(c.only_old) + len(c.deltas)} "
                            f"benchmarks of A are missing from B: {', '.join(c.only_old[:5])}"
                            + (" ..." if len(c.only_old) > 5 else ""))
    report.failed = c.failed or bool(empty) or bool(c.only_old)
    return report


def compare_documents(old: dict[str, Any], new: dict[str, Any], a: str, b: str) -> Report:
    """The markdown of every change between two documents, and whether B is worse."""
    report = Report([f"# Comparison: `{a}` -> `{b}`", ""])
    same_kind(kind_of(old), kind_of(new), a, b)
    if kind_of(old) == BENCH_RUN:
        return _compare_bench_runs(old, new, a, b, report)
    found = changes(old, new)
    if not found:
        report.lines.append("No figure or verdict changed.")
        return report
    report.lines += ["| figure | A | B | change |", "|---|---|---|---:|"]
    report.lines += [f"| `{c.path}` | {_show(c.old)} | {_show(c.new)} | {_delta(c)} |"
                     for c in found]
    worse = [c for c in found if c.worse]
    verdicts = sum(c.is_verdict for c in found)
    report.lines += ["", f"{len(found)} changed ({verdicts} verdicts, {len(worse)} worse)."]
    # a bench figure A measured and B did not: B's run did not do what was asked (fails closed)
    lost = [c.path for c in found if kind_of(old) == BENCH and c.path.startswith("metrics.")
            and c.old is not None and c.new is None]
    if lost:
        report.lines.append(f"FAIL: {len(lost)} figures of A are missing from B: "
                            f"{', '.join(lost[:5])}" + (" ..." if len(lost) > 5 else ""))
    report.failed = bool(worse) or bool(lost)
    return report
