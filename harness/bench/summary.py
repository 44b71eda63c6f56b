"""From pytest-benchmark JSON to the figures the targets judge: tokens/s, scaling, FLOP/s.

Every rate uses the best (minimum) round time of its benchmark: on a shared machine the
minimum is the measurement least disturbed by other processes.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.bench.targets import TARGETS
from harness.figures.bench_metrics import (
    BenchMetrics,
    BenchRow,
    BenchSummary,
    KernelShare,
    KernelTableSource,
    MpiStepBench,
    TokenizeResult,
)
from harness.figures.facts import BlasLibrary, MachineFacts
from harness.figures.serial import from_json
from harness.figures.thresholds import BENCH_CPU_SHORTFALL, MB
from plumbing.cores import usable_cores
from reference.config import ModelConfig, preset

FLOPS_FORMULA = (
    "6 * (L * (3 d^2 + d^2 + 2 d f) + V d) + 12 * L * S * d per token: every matmul weight "
    "costs 2 FLOPs per token forward and 4 backward (input and weight gradients), the tied "
    "output projection counts V*d weights, embedding lookups are free; attention scores "
    "(q k^T) and values (att v) cost 2*S*d each per token and layer forward, x3 with backward, "
    "counted over the full S positions (the causal mask is not discounted, as in PaLM's "
    "appendix B). Biases, LayerNorm, GELU, softmax and the loss are O(d) per token (<1%) and "
    "left out."
)


def flops_per_token(m: ModelConfig) -> int:
    """Model FLOPs of one token's forward + backward; the formula is `FLOPS_FORMULA`."""
    d, f, L, V, S = m.d_model, m.d_ff, m.n_layers, m.vocab_size, m.seq_len
    matmul_weights = L * (3 * d * d + d * d + 2 * d * f) + V * d
    return 6 * matmul_weights + 12 * L * S * d


# Worker phases (fast.heartbeat.Phase names) and the table row each one's seconds go to;
# COMPUTING is split further by the kernel groups' cycle shares.
_PHASE_ROWS = {"REDUCING": "reduction (segment sum + norms)", "UPDATING": "AdamW update",
               "WAITING_TICKET": "waits: position tickets / workspace",
               "WAITING_A": "waits: barrier Point A", "WAITING_REDUCED": "waits: barrier reduced",
               "WAITING_DECISION": "waits: barrier decided", "WAITING_B": "waits: barrier Point B"}


def kernel_table(kernel_extra: dict[str, Any] | None,
                 trainer_stats: dict[str, Any] | None) -> list[KernelShare]:
    """Rows (name, share of the workers' step time) from the kernel-cycle benchmark and one
    scaling run's worker phase seconds. Without phase seconds, shares of one batch's compute."""
    rows: list[KernelShare] = []
    if not kernel_extra or not sum(kernel_extra.get("cycles", [])):
        return rows
    cycles = dict(zip(kernel_extra["groups"], kernel_extra["cycles"], strict=True))
    total_cycles = sum(cycles.values())
    workers = (trainer_stats or {}).get("workers") or []
    phases: dict[str, float] = {}
    for w in workers:
        for name, seconds in (w.get("phase_seconds") or {}).items():
            phases[name] = phases.get(name, 0.0) + max(0.0, float(seconds))
    compute = phases.get("COMPUTING", 0.0)
    step = compute + sum(phases.get(k, 0.0) for k in _PHASE_ROWS)
    compute_share = compute / step if step > 0 else 1.0
    rates = _group_rates(kernel_extra)
    for name, c in sorted(cycles.items(), key=lambda kv: -kv[1]):
        rows.append(KernelShare(name, compute_share * c / total_cycles,
                                "gemm" if name.startswith("gemm") else "kernel",
                                *rates.get(name, (None, None))))
    if step > 0:
        for phase, name in _PHASE_ROWS.items():
            rows.append(KernelShare(name, phases.get(phase, 0.0) / step,
                                    "wait" if phase.startswith("WAITING") else "step"))
    return rows


def _group_rates(kernel_extra: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """(GFLOP/s in place, GFLOP/s alone) of each product group the kernel benchmark timed:
    in place = the group's model FLOPs over the rounds / its cycles at the counter's rate."""
    rate, rounds = kernel_extra.get("cycles_per_second"), kernel_extra.get("rounds")
    per_token = kernel_extra.get("group_flops_per_token") or {}
    alone = kernel_extra.get("gflops_alone") or {}
    if not rate or not rounds:
        return {}
    cycles = dict(zip(kernel_extra["groups"], kernel_extra["cycles"], strict=True))
    out = {}
    for name, fpt in per_token.items():
        if cycles.get(name):
            seconds = cycles[name] / rate
            out[name] = (fpt * kernel_extra["tokens_per_round"] * rounds / seconds / 1e9,
                         alone.get(name))
    return out


def gemm_group_metrics(kernels: list[KernelShare], metrics: BenchMetrics) -> None:
    """The worst linear GEMM group (in place / alone) and attention's in-place rate into
    `metrics`, for the targets."""
    pairs = [r for r in kernels if r.kind == "gemm" and r.gflops and r.gflops_alone]
    if pairs:
        worst = min(pairs, key=lambda r: r.gflops / r.gflops_alone)
        metrics.gemm_worst_group = worst.name
        metrics.gemm_worst_in_place_flops = worst.gflops * 1e9
        metrics.gemm_worst_alone_flops = worst.gflops_alone * 1e9
    att = next((r for r in kernels if r.name == "attention" and r.gflops), None)
    metrics.attention_flops_per_s = att.gflops * 1e9 if att else None


def stats_delta(before: Any, after: Any) -> Any:
    """after - before for every number in (nested) trainer statistics; other values: after."""
    if isinstance(after, dict):
        return {k: stats_delta(before.get(k) if isinstance(before, dict) else None, v)
                for k, v in after.items()}
    if isinstance(after, list | tuple) and isinstance(before, list | tuple) \
            and len(before) == len(after):
        return [stats_delta(b, a) for b, a in zip(before, after, strict=True)]
    numeric = (int, float, np.integer, np.floating)
    if isinstance(after, numeric) and not isinstance(after, bool):
        base = before if isinstance(before, numeric) and not isinstance(before, bool) else 0
        return float(after) - float(base) if isinstance(after, float | np.floating) \
            else int(after) - int(base)
    return after if isinstance(after, str | bool | type(None)) else repr(after)


def node_zero_seconds(trainer_stats: Any) -> float | None:
    """Seconds of Node Zero's own serial work (dispatching + deciding) in a `FastTrainer.stats()`
    delta; None when the benchmark stored no trainer statistics. Node Zero never reduces or
    updates (the workers do), so those phases are not its work."""
    if not isinstance(trainer_stats, dict) or not isinstance(trainer_stats.get("node_zero"), dict):
        return None
    nz = trainer_stats["node_zero"]
    return float(nz["decide_seconds"]) + float(nz["phase_seconds"]["DISPATCHING"])


def _tokenize_peak(extra: dict[str, Any]) -> float | None:
    """The tokenisation benchmark's peak memory in bytes (it records `peak_mb`, 1e6 bytes)."""
    value = extra.get("peak_mb")
    return float(value) * MB if isinstance(value, int | float) else None


@dataclass
class _Parsed:
    """What `_parse_benchmarks` read from the benchmark list, before any figure is derived."""

    rows: list[BenchRow] = field(default_factory=list)
    peaks: dict[str, float] = field(default_factory=dict)
    tokenize: TokenizeResult | None = None
    mpi_bytes: list[MpiStepBench] = field(default_factory=list)
    kernel_extra: dict[str, Any] | None = None


def _parse_benchmarks(bench: dict[str, Any], metrics: BenchMetrics, fpt: int,
                      cores: int) -> _Parsed:
    """Each benchmark by its `extra_info` kind: engine rows, matmul peaks, the kernel table,
    tokenisation, MPI figures (the trace-overhead and MPI-ratio figures go into `metrics`)."""
    got = _Parsed()
    for b in bench.get("benchmarks", []):
        extra, best = b.get("extra_info", {}), b["stats"]["min"]
        kind = extra.get("kind")
        if kind == "matmul_peak":
            got.peaks[extra["cores"]] = extra["flops_per_round"] / best
        elif kind == "kernel_table":
            got.kernel_extra = extra
        elif kind in ("engine", "scaling", "seed_workload", "seed_at_cores"):
            got.rows.append(_engine_row(b["name"], extra, b["stats"], fpt, cores))
        elif kind == "seed_memory":  # the RSS target: the workload in a process of its own
            metrics.seed_peak_rss_bytes = extra["peak_rss_bytes"]
        elif kind == "trace_overhead":
            metrics.traced_tokens_per_s = extra["traced_tokens_per_s"]
            metrics.untraced_tokens_per_s = extra["untraced_tokens_per_s"]
        elif kind == "mpi_ratio":  # SPEC 10: ranks against threads on the same cores
            metrics.mpi_tokens_per_s_R2T1 = extra["mpi"]["tokens_per_s"]
            metrics.single_tokens_per_s_T2 = extra["single"]["tokens_per_s"]
        elif kind == "mpi_bytes":
            got.mpi_bytes.append(from_json(MpiStepBench,
                                           {k: v for k, v in extra.items() if k != "kind"}))
        elif "tokeni" in b.get("fullname", b["name"]):
            seconds = extra.get("seconds", best)  # its own clock around the measured work
            got.tokenize = TokenizeResult(b["name"], seconds, _tokenize_peak(extra))
    return got


def _peak_metrics(peaks: dict[str, float], metrics: BenchMetrics) -> list[str]:
    """The matmul yardstick into `metrics`; a warning when the all-core peak fell below one
    core's."""
    # The yardstick is the all-core figure; if other load pushed it below the one-core figure
    # the one-core figure is the better lower bound of what the machine can do.
    warnings = []
    if peaks.get("all") and peaks.get("one") and peaks["all"] < peaks["one"]:
        warnings.append(f"all-core matmul peak ({peaks['all'] / 1e9:.0f} GFLOP/s) measured below "
                        f"the one-core peak ({peaks['one'] / 1e9:.0f} GFLOP/s): the machine was "
                        "busy; the one-core figure is used as the yardstick")
    metrics.matmul_peak_flops = max(peaks.get("all") or 0.0, peaks.get("one") or 0.0) or None
    metrics.matmul_peak_flops_all_cores = peaks.get("all")
    metrics.matmul_peak_flops_one_core = peaks.get("one")
    return warnings


def _row_metrics(rows: list[BenchRow], metrics: BenchMetrics, cores: int) -> list[BenchRow]:
    """Speedup, efficiency and peak fraction onto the rows, each engine's figures into
    `metrics`; returns the scaling rows by thread count."""
    scaling = sorted((r for r in rows if r.kind == "scaling"), key=lambda r: r.threads)
    for r in scaling:
        metrics.fast_tokens_per_s[r.threads] = r.tokens_per_s
        metrics.model_flops_per_s_by_threads[r.threads] = r.model_flops_per_s
    base = scaling[0] if scaling else None
    for r in scaling:
        r.speedup = r.tokens_per_s / base.tokens_per_s * base.threads
        r.efficiency = r.speedup / min(r.threads, cores)
    fast_rows = [r for r in rows if r.engine == "fast"]
    if fast_rows:
        metrics.model_flops_per_s = max(fast_rows, key=lambda r: r.tokens_per_s).model_flops_per_s
    for r in rows:
        if metrics.matmul_peak_flops:
            r.peak_fraction = r.model_flops_per_s / metrics.matmul_peak_flops
        if r.engine == "torch":
            metrics.torch_tokens_per_s = r.tokens_per_s
            metrics.fast_tokens_per_s_torch_threads = metrics.fast_tokens_per_s.get(r.threads)
        if r.engine == "torch.compile":
            metrics.torch_compile_tokens_per_s = r.tokens_per_s
            metrics.fast_tokens_per_s_torch_compile_threads = metrics.fast_tokens_per_s.get(
                r.threads)
        if r.engine == "reference":
            metrics.reference_tokens_per_s = r.tokens_per_s
        if r.kind == "seed_at_cores":
            metrics.seed_at_cores_tokens_per_s = r.tokens_per_s
        if r.kind == "seed_workload":
            metrics.seed_tokens_per_s, metrics.seed_seconds = r.tokens_per_s, r.seconds
            metrics.seed_node_zero_share = r.node_zero_share
    return scaling


def _cpu_warnings(rows: list[BenchRow], cores: int) -> list[str]:
    """A warning for each row whose CPU use fell short of what its threads could use."""
    warnings = []
    for r in rows:
        expected = min(r.threads, cores) / cores  # CPU use the workers alone could reach
        if r.cpu_use is not None and r.cpu_use < BENCH_CPU_SHORTFALL * expected:
            warnings.append(f"{r.name}: CPU use {r.cpu_use:.0%} of the machine, "
                            f"below the {expected:.0%} its {r.threads} thread(s) could use: "
                            "other processes competed for the cores, its tokens/s is understated")
    return warnings


def _kernel_table_source(kernel_extra: dict[str, Any] | None,
                         t2: BenchRow | None) -> KernelTableSource:
    """Where the kernel table's rows came from: the cycle benchmark, a run's phases, BLAS."""
    return KernelTableSource(
        kernels="fast.kernels.TIMING_GROUPS cycle counters, 1 thread, one batch, "
                f"micro_batch {kernel_extra.get('micro_batch')}" if kernel_extra else None,
        phases=f"worker phase seconds of the {t2.threads}-thread scaling run"
               if t2 else None,
        blas=[_blas_library(b) for b in kernel_extra.get("blas") or []]
        if kernel_extra else None)


def summarize(bench: dict[str, Any], torch_available: bool | None = None) -> BenchSummary:
    """The figures of one pytest-benchmark JSON (with our `extra_info`) and the verdicts."""
    if torch_available is None:
        torch_available = importlib.util.find_spec("torch") is not None
    meta = bench.get("kissing_spheres", {})
    settings = meta.get("settings", {})
    cfg = preset(settings.get("preset", "seed"))
    fpt = flops_per_token(cfg.model)
    machine = from_json(MachineFacts, meta["machine"]) if meta.get("machine") else None
    cores = (machine.cores if machine else 0) or usable_cores()
    metrics = BenchMetrics(torch_available=torch_available)
    got = _parse_benchmarks(bench, metrics, fpt, cores)
    rows, tokenize, kernel_extra = got.rows, got.tokenize, got.kernel_extra
    warnings = _peak_metrics(got.peaks, metrics)
    scaling = _row_metrics(rows, metrics, cores)
    if tokenize:
        metrics.tokenize_seconds = tokenize.seconds
        metrics.tokenize_peak_bytes = tokenize.peak_bytes
    warnings += _cpu_warnings(rows, cores)
    if machine is not None and machine.blas is not None:
        warnings += machine.blas.warnings
    t2 = next((r for r in scaling if r.threads == 2), scaling[-1] if scaling else None)
    kernels = kernel_table(kernel_extra, t2.trainer_stats if t2 else None)
    gemm_group_metrics(kernels, metrics)
    verdicts = [t.check(metrics) for t in TARGETS]
    return BenchSummary(
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        machine=machine,
        settings=settings,
        config=meta.get("config", cfg.to_dict()),
        flops_per_token=fpt,
        flops_formula=FLOPS_FORMULA,
        engines=rows,
        tokenize=tokenize,
        mpi_bytes=got.mpi_bytes,
        kernel_table=kernels,
        kernel_table_source=_kernel_table_source(kernel_extra, t2),
        metrics=metrics,
        targets=verdicts,
        warnings=warnings,
        passed=all(v.status != "fail" for v in verdicts),
    )


def _blas_library(info: dict[str, Any]) -> BlasLibrary:
    """A threadpoolctl record (as the kernel-table benchmark stored it) as a BlasLibrary."""
    return BlasLibrary(library=info.get("internal_api"), version=info.get("version"),
                       kernel=info.get("architecture"), threads=info.get("num_threads"),
                       file=info.get("filepath") or "")


def _engine_row(name: str, extra: dict[str, Any], stats: dict[str, float], fpt: int,
                cores: int) -> BenchRow:
    best, mean = stats["min"], stats.get("mean", stats["min"])
    tokens_per_s = extra["tokens_per_round"] / best
    nz = node_zero_seconds(extra.get("trainer_stats"))
    rounds = extra.get("rounds", 1)
    thread_cpu = extra.get("thread_cpu_seconds", {})
    workers = [v for k, v in thread_cpu.items() if k.startswith("ks-worker-")]
    return BenchRow(
        name=name, kind=extra["kind"], engine=extra["engine"], threads=extra["threads"],
        group=extra.get("group"), tokens_per_round=extra["tokens_per_round"], seconds=best,
        tokens_per_s=tokens_per_s, model_flops_per_s=tokens_per_s * fpt, cores=cores,
        # Node Zero's own work (dispatching + deciding) over the measured steps' wall time
        node_zero_share=nz / (rounds * mean) if nz is not None else None,
        cpu_use=extra.get("cpu_use"),
        worker_cpu_seconds_min=min(workers, default=None),
        worker_cpu_seconds_max=max(workers, default=None),
        workers_busy=sum(1 for w in workers if w > 0.0),
        peak_rss_bytes=extra.get("peak_rss_bytes"),
        trainer_stats=extra.get("trainer_stats"))
