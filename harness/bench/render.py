"""A bench summary as markdown, as printed lines and as plots (renders, computes nothing).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.figures.bench_metrics import BenchSummary, MpiStepBench
from harness.figures.facts import BlasLibrary, MachineFacts
from harness.figures.plots import plot_throughput
from harness.figures.thresholds import GB, MB
from harness.measure.machine import blas_line


def kernel_table_lines(summary: BenchSummary) -> list[str]:
    rows = summary.kernel_table
    if not rows:
        return ["(no per-kernel measurement in this run)"]
    lines = ["| where | share of step time | GFLOP/s in place | GFLOP/s alone | in place / alone |",
             "|---|---|---|---|---|"]
    for r in rows:
        ratio = r.gflops / r.gflops_alone if r.gflops and r.gflops_alone else None
        lines.append(f"| {r.name} | {r.share:.1%} | {_fmt(r.gflops, '.1f')} "
                     f"| {_fmt(r.gflops_alone, '.1f')} | {_fmt(ratio, '.2f')} |")
    gemm = sum(r.share for r in rows if r.kind == "gemm")
    lines.append(f"| (all GEMM groups) | {gemm:.1%} | | | |")
    return lines


def _fmt(value: Any, spec: str = ".3g", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value / scale, spec)


def engine_table(summary: BenchSummary) -> list[str]:
    """Markdown rows: one per engine benchmark."""
    lines = ["| benchmark | engine | threads | G | seconds | tokens/s | speedup | efficiency "
             "| GFLOP/s | of peak | Node Zero share | CPU use | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.engines:
        lines.append(
            f"| {r.name} | {r.engine} | {r.threads} | {r.group or '-'} "
            f"| {_fmt(r.seconds)} | {_fmt(r.tokens_per_s, '.0f')} "
            f"| {_fmt(r.speedup, '.2f')} | {_fmt(r.efficiency, '.0%')} "
            f"| {_fmt(r.model_flops_per_s, '.1f', 1e9)} | {_fmt(r.peak_fraction, '.0%')} "
            f"| {_fmt(r.node_zero_share, '.2%')} | {_fmt(r.cpu_use, '.0%')} "
            f"| {_fmt(r.peak_rss_bytes, '.0f', MB)} |")
    return lines


def target_table(summary: BenchSummary) -> list[str]:
    lines = ["| target | required | result | verdict |", "|---|---|---|---|"]
    for v in summary.targets:
        lines.append(f"| {v.name} | {v.required} | {v.message} | {v.status.upper()} |")
    return lines


def render_markdown(summary: BenchSummary) -> str:
    m, mach = summary.metrics, summary.machine or MachineFacts(cpu_model="?")
    git = mach.git
    tok = summary.tokenize
    src = summary.kernel_table_source
    lines = [
        "# Benchmark summary",
        "",
        f"Created {summary.created} on {mach.cpu_model} "
        f"({mach.cores or '?'} cores, {_fmt(mach.memory_total_bytes, '.1f', GB)} GB),"
        f" Python {mach.python or '?'}, NumPy {mach.numpy or '?'}, "
        f"Numba {mach.numba or '?'}, commit {git.commit[:12] if git else 'unknown'}"
        f"{' (uncommitted changes)' if git and git.dirty else ''}.",
        f"Preset `{summary.settings.get('preset', '?')}`, settings "
        f"`{json.dumps(summary.settings, sort_keys=True)}`.",
        "",
        (blas_line(mach.blas) + "." if mach.blas is not None else "BLAS: not recorded."),
        "",
        "## Targets",
        "",
        *target_table(summary),
        "",
        "## Engines and thread scaling",
        "",
        *engine_table(summary),
        "",
        "Rates use each benchmark's best round. Speedup is against the 1-thread sweep point, "
        "efficiency is speedup / min(threads, cores). Node Zero share = Node Zero's own seconds "
        "(dispatching and deciding; the workers reduce and update) / step wall time. The model "
        "FLOP/s target uses the fastest fast-engine row. Peak RSS of a row is the bench "
        "process's high-water mark over that benchmark, counted from what the process already "
        "held (torch and earlier benchmarks); the seed workload's RSS target reads the same "
        "workload run in a process of its own (`harness.bench.seed_memory`).",
        "",
        *[f"![{k}]({Path(v).name})" for k, v in summary.plots.items()],
        "",
        *[f"Warning: {w}." for w in summary.warnings],
        "",
        "## Where the step time goes (per-kernel table)",
        "",
        *kernel_table_lines(summary),
        "",
        f"Kernel shares: {src.kernels}; scaled by the compute share of the "
        f"{src.phases}. BLAS that ran the kernels: {_blas_text(src.blas)}.",
        "",
        f"Float32 matmul peak: {_fmt(m.matmul_peak_flops_all_cores, '.1f', 1e9)} "
        f"GFLOP/s on all "
        f"cores, {_fmt(m.matmul_peak_flops_one_core, '.1f', 1e9)} GFLOP/s on one core.",
        f"Model FLOPs per token: {summary.flops_per_token:,} = {summary.flops_formula}",
        "",
        f"Tokenisation (vocabulary + encoding of the 24 MB corpus): "
        f"{_fmt(tok.seconds if tok else None)} s, peak "
        f"{_fmt(tok.peak_bytes if tok else None, '.0f', MB)} MB.",
        "",
        *mpi_bytes_table(summary.mpi_bytes),
    ]
    return "\n".join(lines)


def mpi_bytes_table(runs: list[MpiStepBench]) -> list[str]:
    """Bytes per rank in one step across MPI ranks, beside a ring all-reduce's 2P elements."""
    if not runs:
        return []
    lines = ["## Bytes per rank per step across MPI ranks", "",
             "| preset | P | R | rank 0 sent + received | largest other rank | ring 2P "
             "| step s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(runs, key=lambda r: (r.params, r.ranks)):
        per = {x.rank: x.last_sent_bytes + x.last_received_bytes for x in r.per_rank}
        others = max((v for k, v in per.items() if k), default=0)
        ring = 2 * r.params * 4  # float32 elements
        lines.append(f"| {r.preset} | {r.params:,} | {r.ranks} | {per[0]:,} | "
                     f"{others:,} | {ring:,} | {r.best_step_s:.3g} |")
    return lines + ["", "Counted by each rank around its own MPI calls (payload bytes; a root's "
                    "broadcast counts once per receiving rank). Ring all-reduce: each rank sends "
                    "and receives 2(R-1)/R x P elements, shown as 2P float32 bytes.", ""]


def _blas_text(blas: list[BlasLibrary] | None) -> str:
    if not blas:
        return "unknown"
    return ", ".join(f"{b.library} {b.version} ({b.kernel} kernel)" for b in blas)


def print_summary(summary: BenchSummary) -> None:
    print()
    print("\n".join(engine_table(summary)))
    print()
    print("\n".join(kernel_table_lines(summary)))
    print()
    for w in summary.warnings:
        print(f"  warning: {w}")
    for v in summary.targets:
        print(f"  [{v.status.upper():7}] {v.name}: {v.message}")
    print()


def write_plots(summary: BenchSummary, out_dir: Path) -> dict[str, str]:
    """Throughput against threads (sweep + seed workload) when the fast engine was measured."""
    fast = sorted((r for r in summary.engines if r.engine == "fast"), key=lambda r: r.threads)
    if not fast:
        return {}
    path = plot_throughput([r.threads for r in fast], [r.tokens_per_s for r in fast],
                           out_dir / "throughput.png",
                           cores=summary.machine.cores if summary.machine else None)
    return {"throughput": str(path)}
