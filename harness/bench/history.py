"""Benchmark history: is this run slower than the last one, or than the committed baseline?

`make bench` saves every run through pytest-benchmark's own storage (`--benchmark-autosave`,
`--benchmark-storage`): one JSON per run under `<storage>/<machine id>/NNNN_<commit>_<date>.json`
holding the commit, the machine and every round (`--benchmark-save-data`). This module
compares one run with another, benchmark by benchmark (matched by full name), on the raw round
times through `harness.bench.significance`, the statistics `spheres ab` uses: the
Hodges-Lehmann ratio new/old, its interval and the Mann-Whitney U p-value. A benchmark
regressed when the test is significant (with too few rounds to test: on the interval alone) and
the whole interval lies beyond the noise band, max(NOISE_FLOOR, NOISE_FACTOR x the spread of
either run's rounds) (see `threshold`). A stored run without raw rounds (saved before
`--benchmark-save-data`) contributes its best and worst round. Runs are only compared when they
measured the same settings (preset, groups, rounds...); a baseline from another machine is
shown but does not gate.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.bench.significance import judge, ratio_estimate
from harness.figures.thresholds import (  # the regression noise rule, the test's alpha
    AB_ALPHA,
    NOISE_FACTOR,
    NOISE_FLOOR,
)


@dataclass(frozen=True)
class BenchDelta:
    """One benchmark in two runs: best round seconds, relative change, the noise bound."""

    name: str
    old_seconds: float
    new_seconds: float
    change: float  # Hodges-Lehmann new / old - 1 over the rounds: +0.25 is 25% slower
    noise: float  # the relative threshold this benchmark was judged with
    verdict: str  # "regressed", "faster" or "same" (within noise)
    low: float = 0.0  # interval of the change (new / old - 1)
    high: float = 0.0
    p_value: float = 1.0  # two-sided Mann-Whitney U over the rounds


@dataclass
class Comparison:
    """A run against one reference run (the previous stored run or the baseline)."""

    against: str  # label: "the previous run" / "the committed baseline"
    path: str
    commit: str | None
    gating: bool  # False when the machines or settings differ: shown, never failing
    note: str = ""
    deltas: list[BenchDelta] = field(default_factory=list)
    only_old: list[str] = field(default_factory=list)  # benchmarks the new run lacks
    only_new: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[BenchDelta]:
        return [d for d in self.deltas if d.verdict == "regressed"]

    @property
    def failed(self) -> bool:
        return self.gating and bool(self.regressions)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed}


def spread(stats: dict[str, Any]) -> float:
    """Relative spread of one benchmark's rounds: (max - min) / min (0 for one round)."""
    lo, hi = float(stats["min"]), float(stats["max"])
    return (hi - lo) / lo if lo > 0 else 0.0


def threshold(old: dict[str, Any], new: dict[str, Any]) -> float:
    """The relative slowdown that counts as real for this pair of measurements."""
    return max(NOISE_FLOOR, NOISE_FACTOR * max(spread(old), spread(new)))


def round_seconds(stats: dict[str, Any]) -> list[float]:
    """The benchmark's raw round times, or (a run saved without them) its best and worst."""
    data = stats.get("data")
    if isinstance(data, list) and len(data) >= 2:
        return [float(x) for x in data]
    return [float(stats["min"]), float(stats["max"])]


def judge_benchmark(name: str, old: dict[str, Any], new: dict[str, Any]) -> BenchDelta:
    """One benchmark's rounds in two runs, judged by the statistics of `spheres ab`."""
    o, n = float(old["min"]), float(new["min"])
    noise = threshold(old, new)
    if o <= 0 or n <= 0:  # a timer that read zero: nothing to divide, never a silent pass
        return BenchDelta(name, o, n, math.inf, noise, "regressed")
    est = ratio_estimate(round_seconds(old), round_seconds(new), alpha=AB_ALPHA)
    verdict = judge(est, noise, alpha=AB_ALPHA, higher_is_better=False)
    return BenchDelta(name, o, n, est.ratio - 1.0, noise, verdict, est.low - 1.0,
                      est.high - 1.0, est.p_value)


def _benchmarks(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["fullname"]: b["stats"] for b in run.get("benchmarks", [])}


def machine_key(run: dict[str, Any]) -> tuple:
    """What makes timings comparable: CPU model, core count, architecture."""
    cpu = (run.get("machine_info") or {}).get("cpu") or {}
    return (cpu.get("brand_raw"), cpu.get("count"), cpu.get("arch"))


def settings(run: dict[str, Any]) -> Any:
    return (run.get("kissing_spheres") or {}).get("settings")


def compare_runs(old: dict[str, Any], new: dict[str, Any], *, against: str = "the previous run",
                 path: str = "") -> Comparison:
    """Every benchmark the two runs share, judged; which ones only one of them has."""
    same_machine = machine_key(old) == machine_key(new)
    same_settings = settings(old) == settings(new)
    notes = []
    if not same_machine:
        notes.append(f"other machine ({machine_key(old)[0]}, {machine_key(old)[1]} cores): "
                     "shown, not gating")
    if not same_settings:
        notes.append("other settings: shown, not gating")
    result = Comparison(against=against, path=path,
                        commit=(old.get("commit_info") or {}).get("id"),
                        gating=same_machine and same_settings, note="; ".join(notes))
    a, b = _benchmarks(old), _benchmarks(new)
    for name in sorted(a.keys() & b.keys()):
        result.deltas.append(judge_benchmark(name, a[name], b[name]))
    result.only_old = sorted(a.keys() - b.keys())
    result.only_new = sorted(b.keys() - a.keys())
    return result


def stored_runs(storage: Path) -> list[Path]:
    """Every run saved in a pytest-benchmark file storage, oldest first (by its datetime)."""
    runs = []
    for path in storage.glob("*/*.json"):
        try:
            when = json.loads(path.read_text()).get("datetime", "")
        except (OSError, ValueError):
            continue  # a half-written or foreign file is not a run
        runs.append((when, path.name, path))
    return [p for _, _, p in sorted(runs)]


def previous_run(storage: Path, current: dict[str, Any]) -> Path | None:
    """The newest stored run before `current` on the same machine with the same settings."""
    for path in reversed(stored_runs(storage)):
        run = json.loads(path.read_text())
        if run.get("datetime") == current.get("datetime"):
            continue  # the current run itself (autosave wrote it)
        if (run.get("datetime", "") < current.get("datetime", "~")
                and machine_key(run) == machine_key(current)
                and settings(run) == settings(current)):
            return path
    return None


def _short(name: str) -> str:
    return name.split("::", 1)[-1]


def markdown_table(c: Comparison, *, only_changed: bool = False) -> list[str]:
    """| benchmark | before | after | change | noise | verdict | for one comparison."""
    head = f"Compared with {c.against}" + (f" (commit {c.commit[:10]})" if c.commit else "")
    lines = [head + (f": {c.note}" if c.note else "") + ".", "",
             "| benchmark | before (best s) | after (best s) | change | noise bound | verdict "
             "| interval | p (U test) |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for d in c.deltas:
        if only_changed and d.verdict == "same":
            continue
        mark = d.verdict
        if d.verdict == "regressed":  # only a gating comparison can fail the run
            mark = "**REGRESSED**" if c.gating else "slower (not gating)"
        lines.append(f"| {_short(d.name)} | {d.old_seconds:.4g} | {d.new_seconds:.4g} | "
                     f"{d.change:+.1%} | ±{d.noise:.1%} | {mark} | "
                     f"[{d.low:+.1%}, {d.high:+.1%}] | {d.p_value:.2g} |")
    for name in c.only_old:
        lines.append(f"| {_short(name)} | measured | missing | | | missing | | |")
    for name in c.only_new:
        lines.append(f"| {_short(name)} | | new | | | new | | |")
    return lines


def regression_message(c: Comparison) -> str:
    """One line naming each regressed benchmark and by how much."""
    parts = [f"{_short(d.name)} {d.change:+.1%} (interval [{d.low:+.1%}, {d.high:+.1%}], "
             f"p={d.p_value:.2g}; noise bound ±{d.noise:.1%})" for d in c.regressions]
    return f"slower than {c.against}: " + "; ".join(parts)
