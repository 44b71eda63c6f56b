"""The report's PNGs, drawn from the finished typed results (never from live objects).
"""

from __future__ import annotations

from pathlib import Path

from harness.figures import plots
from harness.figures.results import AnalysisResults
from harness.figures.thresholds import GRAD_TOL, SEED_PEAK_BYTES


def make_plots(results: AnalysisResults, out_dir: Path) -> dict[str, str]:
    paths: dict[str, str] = {}
    tr, perf = results.training, results.performance
    if tr.losses:
        held = tr.eval_losses
        plots.plot_loss(list(range(1, len(tr.losses) + 1)), tr.losses, out_dir / "loss.png",
                        eval_steps=[s for s, _ in held], eval_losses=[v for _, v in held])
        paths["loss_curve"] = "loss.png"
    if perf.throughput:
        plots.plot_throughput([p.threads for p in perf.throughput],
                              [p.tokens_per_s for p in perf.throughput],
                              out_dir / "throughput.png", cores=perf.cores)
        paths["throughput"] = "throughput.png"
    cpu = {w.name: w.cpu_seconds for w in results.threads.all_threads}
    if cpu:
        plots.plot_thread_cpu(cpu, out_dir / "cpu_per_thread.png",
                              wall_seconds=perf.wall_seconds)
        paths["cpu_per_thread"] = "cpu_per_thread.png"
    if perf.utilisation:
        plots.plot_utilisation(perf.utilisation_times, perf.utilisation,
                               out_dir / "cpu_over_time.png")
        paths["cpu_over_time"] = "cpu_over_time.png"
    mem = results.memory
    if mem.rss_times:
        plots.plot_memory(mem.rss_times, mem.rss_bytes, out_dir / "memory.png",
                          limit_bytes=SEED_PEAK_BYTES)
        paths["memory"] = "memory.png"
    by_t: dict[int, float] = {}
    for r in results.equivalence.records:
        if r.preset == "tiny" and r.dtype == "float32":
            by_t[r.threads] = max(r.grad_error, r.loss_error)
    if by_t:
        ts = sorted(by_t)
        plots.plot_equivalence(ts, [by_t[t] for t in ts], out_dir / "equivalence.png",
                               tolerance=GRAD_TOL["float32"],
                               label="float32 max relative error (tiny)")
        paths["equivalence"] = "equivalence.png"
    return paths
