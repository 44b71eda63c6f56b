"""What the run record (the data behind --trace, the timeline and the checks) costs: tokens/s
with the record written as always, against the same trainer with every record call a no-op.

Measured side by side, round after round on one trainer (traced, untraced, traced, ...), so load
from other processes hits both alike; the best round of each counts. The target
(harness.bench.targets):
traced >= (1 - 2%) of untraced tokens/s.
"""

from __future__ import annotations

import time

import pytest

from fast.record import Recorder, ThreadLog

pytestmark = pytest.mark.bench


def _untraced(mp: pytest.MonkeyPatch) -> None:
    """Every call the engine makes into the record does nothing."""
    mp.setattr(ThreadLog, "span", lambda self, *a: None)
    mp.setattr(ThreadLog, "fold", lambda self, *a: None)
    mp.setattr(Recorder, "now", lambda self: 0.0)
    mp.setattr(Recorder, "next_fold", lambda self, position: 0)


def test_trace_overhead(benchmark, bench_settings, make_group, no_thread_leak):
    from fast.trainer import FastTrainer

    threads = 2
    cfg = bench_settings.config(group_size=bench_settings.scaling_group)
    tokens, targets = make_group(cfg, bench_settings.scaling_group)
    rounds = max(3, bench_settings.rounds)
    times = {"traced": [], "untraced": []}

    def side_by_side() -> None:
        for _ in range(rounds):
            t0 = time.perf_counter()
            trainer.step(tokens, targets)
            times["traced"].append(time.perf_counter() - t0)
            with pytest.MonkeyPatch.context() as mp:
                _untraced(mp)
                t0 = time.perf_counter()
                trainer.step(tokens, targets)
                times["untraced"].append(time.perf_counter() - t0)

    with FastTrainer(cfg, threads) as trainer:
        trainer.step(tokens, targets)  # warm-up
        benchmark.pedantic(side_by_side, rounds=1, iterations=1)
    n = int(tokens.size)
    benchmark.extra_info.update(
        kind="trace_overhead", engine="fast", threads=threads, rounds=rounds,
        tokens_per_round=n, traced_seconds=times["traced"], untraced_seconds=times["untraced"],
        traced_tokens_per_s=n / min(times["traced"]),
        untraced_tokens_per_s=n / min(times["untraced"]))
    assert len(times["traced"]) == len(times["untraced"]) == rounds
