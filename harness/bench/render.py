"""A bench summary as markdown, as printed lines and as plots (renders, computes nothing).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.figures.plots import plot_throughput
from harness.figures.thresholds import GB, MB
from harness.profiling.machine import blas_line


def kernel_table_lines(summary: dict[str, Any]) -> list[str]:
    rows = summary.get("kernel_table") or []
    if not rows:
        return ["(no per-kernel measurement in this run)"]
    lines = ["| where | share of step time |", "|---|---|"]
    lines += [f"| {r['name']} | {r['share']:.1%} |" for r in rows]
    gemm = sum(r["share"] for r in rows if r["kind"] == "gemm")
    lines.append(f"| (all GEMM groups) | {gemm:.1%} |")
    return lines


def _fmt(value: Any, spec: str = ".3g", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value / scale, spec)


def engine_table(summary: dict[str, Any]) -> list[str]:
    """Markdown rows: one per engine benchmark."""
    lines = ["| benchmark | engine | threads | G | seconds | tokens/s | speedup | efficiency "
             "| GFLOP/s | of peak | Node Zero share | CPU use | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["engines"]:
        lines.append(
            f"| {r['name']} | {r['engine']} | {r['threads']} | {r['group'] or '-'} "
            f"| {_fmt(r['seconds'])} | {_fmt(r['tokens_per_s'], '.0f')} "
            f"| {_fmt(r.get('speedup'), '.2f')} | {_fmt(r.get('efficiency'), '.0%')} "
            f"| {_fmt(r['model_flops_per_s'], '.1f', 1e9)} | {_fmt(r.get('peak_fraction'), '.0%')} "
            f"| {_fmt(r['node_zero_share'], '.2%')} | {_fmt(r['cpu_use'], '.0%')} "
            f"| {_fmt(r['peak_rss_bytes'], '.0f', MB)} |")
    return lines


def target_table(summary: dict[str, Any]) -> list[str]:
    lines = ["| target | required | result | verdict |", "|---|---|---|---|"]
    for v in summary["targets"]:
        lines.append(f"| {v['name']} | {v['required']} | {v['message']} | "
                     f"{v['status'].upper()} |")
    return lines


def render_markdown(summary: dict[str, Any]) -> str:
    m, mach = summary["metrics"], summary["machine"]
    git = mach.get("git") or {}
    tok = summary.get("tokenize") or {}
    src = summary.get("kernel_table_source") or {}
    lines = [
        "# Benchmark summary",
        "",
        f"Created {summary['created']} on {mach.get('cpu_model', '?')} "
        f"({mach.get('cores', '?')} cores, {_fmt(mach.get('memory_total_bytes'), '.1f', GB)} GB),"
        f" Python {mach.get('python', '?')}, NumPy {mach.get('numpy', '?')}, "
        f"Numba {mach.get('numba', '?')}, commit {git.get('commit', 'unknown')[:12]}"
        f"{' (uncommitted changes)' if git.get('dirty') else ''}.",
        f"Preset `{summary['settings'].get('preset', '?')}`, settings "
        f"`{json.dumps(summary['settings'], sort_keys=True)}`.",
        "",
        (blas_line(mach["blas"]) + "." if isinstance(mach.get("blas"), dict)
         else "BLAS: not recorded."),
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
        "FLOP/s target uses the fastest fast-engine row.",
        "",
        *[f"![{k}]({Path(v).name})" for k, v in summary.get("plots", {}).items()],
        "",
        *[f"Warning: {w}." for w in summary.get("warnings", [])],
        "",
        "## Where the step time goes (per-kernel table)",
        "",
        *kernel_table_lines(summary),
        "",
        f"Kernel shares: {src.get('kernels')}; scaled by the compute share of the "
        f"{src.get('phases')}. BLAS that ran the kernels: {_blas_text(src.get('blas'))}.",
        "",
        f"Float32 matmul peak: {_fmt(m.get('matmul_peak_flops_all_cores'), '.1f', 1e9)} "
        f"GFLOP/s on all "
        f"cores, {_fmt(m.get('matmul_peak_flops_one_core'), '.1f', 1e9)} GFLOP/s on one core.",
        f"Model FLOPs per token: {summary['flops_per_token']:,} = {summary['flops_formula']}",
        "",
        f"Tokenisation (vocabulary + encoding of the 24 MB corpus): "
        f"{_fmt(tok.get('seconds'))} s, peak {_fmt(tok.get('peak_bytes'), '.0f', MB)} MB.",
        "",
        *mpi_bytes_table(summary.get("mpi_bytes") or []),
    ]
    return "\n".join(lines)


def mpi_bytes_table(runs: list[dict[str, Any]]) -> list[str]:
    """Bytes per rank in one step across MPI ranks, beside a ring all-reduce's 2P elements."""
    if not runs:
        return []
    lines = ["## Bytes per rank per step across MPI ranks", "",
             "| preset | P | R | rank 0 sent + received | largest other rank | ring 2P "
             "| step s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(runs, key=lambda r: (r["params"], r["ranks"])):
        per = {x["rank"]: x["last_sent_bytes"] + x["last_received_bytes"] for x in r["per_rank"]}
        others = max((v for k, v in per.items() if k), default=0)
        ring = 2 * r["params"] * 4  # float32 elements
        lines.append(f"| {r['preset']} | {r['params']:,} | {r['ranks']} | {per[0]:,} | "
                     f"{others:,} | {ring:,} | {r['best_step_s']:.3g} |")
    return lines + ["", "Counted by each rank around its own MPI calls (payload bytes; a root's "
                    "broadcast counts once per receiving rank). Ring all-reduce: each rank sends "
                    "and receives 2(R-1)/R x P elements, shown as 2P float32 bytes.", ""]


def _blas_text(blas: list[dict[str, Any]] | None) -> str:
    if not blas:
        return "unknown"
    return ", ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')} "
                     "kernel)" for b in blas)


def print_summary(summary: dict[str, Any]) -> None:
    print()
    print("\n".join(engine_table(summary)))
    print()
    print("\n".join(kernel_table_lines(summary)))
    print()
    for w in summary.get("warnings", []):
        print(f"  warning: {w}")
    for v in summary["targets"]:
        print(f"  [{v['status'].upper():7}] {v['name']}: {v['message']}")
    print()


def write_plots(summary: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Throughput against threads (sweep + seed workload) when the fast engine was measured."""
    fast = sorted((r for r in summary["engines"] if r["engine"] == "fast"),
                  key=lambda r: r["threads"])
    if not fast:
        return {}
    path = plot_throughput([r["threads"] for r in fast], [r["tokens_per_s"] for r in fast],
                           out_dir / "throughput.png", cores=summary["machine"].get("cores"))
    return {"throughput": str(path)}
