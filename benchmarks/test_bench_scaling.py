"""The fast engine's thread scaling, side by side in one run, and the seed's own workload.

Every measurement: build the trainer (Numba compiled by its warm-up), one warm-up step on a
one-batch group (first-touch allocations), then `rounds` measured steps of the full group.
Stored per benchmark: tokens per round, the trainer's statistics over the measured steps
(Node Zero's reduce/update seconds give its serial share), per-thread CPU seconds sampled by
`ThreadCpuSampler`, and the process peak RSS over the whole trainer lifetime. The seed
workload runs once more in a process of its own for the RSS target (`test_seed_workload_memory`).
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import pytest

from harness.bench.seed_memory import measure_in_own_process
from harness.bench.summary import stats_delta
from harness.measure.process import peak_rss_bytes, release_free_memory, reset_peak_rss
from harness.measure.sampler import ThreadCpuSampler
from plumbing.cores import usable_cores

pytestmark = pytest.mark.bench


def measure_fast(benchmark, settings, make_group, threads: int, group: int, kind: str) -> None:
    from fast.trainer import FastTrainer

    cfg = settings.config(group_size=group)
    tokens, targets = make_group(cfg, group)
    b = cfg.train.batch_size
    release_free_memory()  # earlier benchmarks' freed memory must not count here
    window = reset_peak_rss()  # peak RSS of this trainer's life, not of earlier benchmarks
    built = time.perf_counter()
    trainer = FastTrainer(cfg, threads)
    try:
        build_seconds = time.perf_counter() - built
        trainer.step(tokens[:b], targets[:b])  # warm-up step on a one-batch group
        before = trainer.stats()
        with ThreadCpuSampler(interval=0.25) as sampler:
            result = benchmark.pedantic(trainer.step, args=(tokens, targets),
                                        rounds=settings.rounds, iterations=1)
        after = trainer.stats()
    finally:
        trainer.close()
    assert np.isfinite(result.loss) and result.n_targets == tokens.size
    profile = sampler.summary()
    per_thread = profile["thread_cpu_seconds"]
    benchmark.extra_info.update(
        kind=kind, engine="fast", threads=threads, group=group, rounds=settings.rounds,
        tokens_per_round=int(tokens.size), build_seconds=build_seconds,
        trainer_stats=stats_delta(before, after),
        thread_cpu_seconds=per_thread, cpu_use=profile["cpu_use"],
        sampled_wall_seconds=profile["wall_seconds"],
        peak_rss_bytes=(peak_rss_bytes() if window else None) or profile["peak_rss_bytes"],
        peak_rss_source="VmHWM" if window else "sampled",
        rss_times=profile["rss_times"], rss_bytes=profile["rss_bytes"],
    )


def test_fast_scaling(benchmark, bench_settings, make_group, scaling_threads, no_thread_leak):
    """The same group (G = --ks-scaling-group batches) at each swept thread count."""
    measure_fast(benchmark, bench_settings, make_group, scaling_threads,
                 bench_settings.scaling_group, kind="scaling")


def test_seed_workload(benchmark, bench_settings, make_group, no_thread_leak):
    """The seed's run: one full group (63 batches of 32x128 tokens) with 63 workers."""
    measure_fast(benchmark, bench_settings, make_group, bench_settings.seed_threads,
                 bench_settings.seed_group_size, kind="seed_workload")


def test_seed_workload_at_core_count(benchmark, bench_settings, make_group, no_thread_leak):
    """The same seed group with one worker per core: the yardstick of oversubscription (63
    workers on 2 cores should lose nothing against 2)."""
    measure_fast(benchmark, bench_settings, make_group, usable_cores(),
                 bench_settings.seed_group_size, kind="seed_at_cores")


def test_seed_workload_memory(benchmark, bench_settings):
    """The seed workload's peak RSS in a process that runs only it (the RSS target): the rows
    above read this process, which already holds torch and earlier benchmarks' memory."""
    run = benchmark.pedantic(measure_in_own_process,
                             args=(bench_settings.preset, bench_settings.seed_threads,
                                   bench_settings.seed_group_size), rounds=1, iterations=1)
    assert run.peak_rss_bytes > 0 and run.step_seconds > 0
    benchmark.extra_info.update(kind="seed_memory", peak_rss_source="own process (VmHWM)",
                                **asdict(run))
