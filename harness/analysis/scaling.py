"""`spheres analyze`'s "Scaling beyond this machine": a quick simulated sweep (issue #18).

The real protocol (Node Zero, workers, tickets, gradient and workspace pools, barriers, folds,
reduction, update) on 64 simulated cores with stand-in batches of SIM_COMPUTE_SECONDS
(harness/run/simulate.py), for a few thread counts: the step each run record measured against
the ideal ceil(G / min(T, N)) x c + fold and update, and the most batches computing at once.
A few seconds in all; `spheres simulate --sweep` draws the full curve (docs/SCALE.md).
"""

from __future__ import annotations

from pathlib import Path

from harness.figures.results import AnalysisResults, SimulatedRow, SimulatedScaling

SIM_CORES = 64  # the seed's machine: 63 workers on 64 cores
SIM_GROUP = 63  # the seed workload's group
SIM_COMPUTE_SECONDS = 0.05  # short enough for a few seconds in all, far above the folds
SIM_THREADS = (4, 12, 16, 32, 63)  # below, at and past the 12 positions, up to the seed's 63
SIM_PRESET = "tiny"  # the folds, reduction and update are real: tiny keeps them ~0.1 ms


def phase_scaling(say) -> SimulatedScaling:
    """The sweep, each thread count a fresh trainer; an error is recorded, not raised."""
    from harness.run.simulate import simulate
    from reference.config import preset

    out = SimulatedScaling(preset=SIM_PRESET, cores=SIM_CORES, group=SIM_GROUP,
                           compute_seconds=SIM_COMPUTE_SECONDS)
    say(f"scaling: simulating {SIM_CORES} cores, G={SIM_GROUP}, c={SIM_COMPUTE_SECONDS} s, "
        f"T={', '.join(map(str, SIM_THREADS))}")
    cfg = preset(SIM_PRESET, group_size=SIM_GROUP)
    try:
        for t in SIM_THREADS:
            r, _ = simulate(cfg, SIM_CORES, t, SIM_GROUP, SIM_COMPUTE_SECONDS, steps=1)
            out.rows.append(SimulatedRow(threads=t, step_seconds=r.step_seconds,
                                         ideal_seconds=r.ideal_seconds, rounds=r.rounds,
                                         peak_in_flight=r.peak_in_flight,
                                         cores_busy=r.cores_busy))
    except (RuntimeError, OSError, ValueError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    return out


def scaling_plot(results: AnalysisResults, out_dir: Path) -> dict[str, str]:
    """The sweep's PNG, when it ran."""
    s = results.scaling
    if s is None or not s.rows:
        return {}
    from harness.figures.plots import plot_simulated_scaling

    plot_simulated_scaling([r.threads for r in s.rows], [r.step_seconds for r in s.rows],
                           [r.ideal_seconds for r in s.rows], out_dir / "simulated_scaling.png",
                           cores=s.cores, title=f"Simulated step time, {s.cores} cores, "
                           f"G={s.group}, c={s.compute_seconds:g} s")
    return {"simulated_scaling": "simulated_scaling.png"}


def section_lines(r: AnalysisResults) -> list[str]:
    """The section's markdown: how it was measured, the table, the figure."""
    s = r.scaling
    if s is None:  # a results.json written before this section existed
        return ["Not measured in this run.", ""]
    lines = [f"`spheres simulate`: the real protocol on {s.cores} simulated cores, stand-in "
             f"batches that sleep c = {s.compute_seconds:g} s (no core used), G = {s.group}, "
             f"{s.preset} preset for the real folds, reduction and update. Every figure is "
             "read from the run record. The old engine's 12-way fold chain could not go below "
             f"ceil(G/12) x c = {-(-s.group // 12) * s.compute_seconds:.3f} s.", ""]
    if s.error:
        return lines + [f"The simulation failed: {s.error}", ""]
    lines += ["| T | step s | ideal s | step / ideal | rounds | most batches at once | "
              "cores busy |", "|---|---|---|---|---|---|---|"]
    for row in s.rows:
        lines.append(f"| {row.threads} | {row.step_seconds:.3f} | {row.ideal_seconds:.3f} | "
                     f"{row.step_seconds / row.ideal_seconds:.2f} | {row.rounds} | "
                     f"{row.peak_in_flight} | {row.cores_busy:.0%} |")
    lines.append("")
    if "simulated_scaling" in r.plots:
        lines += [f"![simulated scaling]({r.plots['simulated_scaling']})", ""]
    return lines
