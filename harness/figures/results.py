"""The typed pieces of `results.json` shared by producers and consumers (checks, report, bench).

`results.json` is their serialisation (dataclasses.asdict) under `schema_version`; bump it
when a field changes meaning or goes away, so a reader of an old file can tell.
Per-thread statistics are `harness.record.evidence.ThreadStats`; bench verdicts
`harness.bench.targets.Verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass

# 2: checks carry an id; thread statistics and structure come from the run record; `record`
#    (findings, trace, timeline) added; Node Zero's phases under honest names.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Check:
    """One verdict: which check (`id`, in a registry with a breaker), where it goes in the
    report, whether it passed, and the measured figure behind it."""

    id: str
    section: str
    title: str
    passed: bool
    figure: str


@dataclass
class ThroughputPoint:
    """Tokens/s of one thread count, measured side by side with the others in one run."""

    threads: int
    tokens_per_s: float
    seconds: float
    group_size: int
    speedup: float = 1.0  # against the first (1-thread) point
