"""`spheres simulate`: the real protocol on a machine we do not have (issue #18 item 4).

The real Node Zero, workers, tickets, gradient and workspace pools, barriers and folds, with a
stand-in kernel that sleeps a batch's compute time (fast/standin.py) and pools sized for
`--cores` (harness/run/simulate.py). Prints the step time against the ideal
ceil(G / min(T, N)) x c + fold and update, the cores busy, the peak of batches computing at once
and the critical path, all read from the run record; `--sweep` runs T = 1 .. 256.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands import options as o
from harness.commands.preflight import Outputs
from plumbing.errors import ExitCode, InputError
from reference.config import PRESETS, preset

DESCRIPTION = ("Run the real threaded protocol with stand-in batches that sleep their compute "
               "time, on N simulated cores: step time against the ideal, cores busy, batches "
               "in flight, critical path; --sweep over threads up to 256 with a plot.")
OUTPUTS: Outputs = (("--plot", "plot", "file"), ("--json", "json", "file"),
                    ("--trace", "trace", "file"), ("--gantt", "gantt", "file"))
MAX_SIM_CORES = 4096  # far above any node; 4096 sleeping threads still fit one process
MAX_COMPUTE_SECONDS = 600.0  # a stand-in batch longer than 10 minutes is a typo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cores", type=o.int_in_range(1, MAX_SIM_CORES), required=True,
                   help="simulated core count N (the core count the engine's pools are sized for)")
    p.add_argument("--threads", type=o.int_in_range(1, MAX_SIM_CORES), default=None,
                   help="worker threads T (default: N - 1, at least 1, as the seed's 63 on 64)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="model sizes for the real folds, reduction and update (default: tiny)")
    p.add_argument("--group-size", type=o.positive_int, default=None,
                   help="batches per step G (default: the preset's)")
    p.add_argument("--compute-seconds", type=o.finite_number(0, MAX_COMPUTE_SECONDS),
                   default=None, help="seconds per batch c (default: one batch of the preset "
                                      "measured here on one core)")
    p.add_argument("--steps", type=o.int_in_range(1, 100), default=2,
                   help="measured steps after a warm-up step (default: 2)")
    p.add_argument("--sweep", action="store_true",
                   help="run T = 1, 2, 4, ... 256 instead of one --threads")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                   help="with --sweep: the step time against T with the ideal")
    p.add_argument("--gantt", type=Path, default=None, metavar="FILE.png",
                   help="without --sweep: the last step's Gantt chart from the run record")
    p.add_argument("--trace", type=Path, default=None, metavar="FILE.json",
                   help="without --sweep: the run's Chrome trace (batches in flight counter)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE.json",
                   help="every result as JSON")
    o.add_progress(p)


def check_args(args: argparse.Namespace) -> None:
    """Refuse option mixes that would silently write nothing (exit 2, before any work)."""
    if args.plot is not None and not args.sweep:
        raise InputError("--plot draws the --sweep curve; add --sweep, or use --gantt for one run")
    if args.sweep and (args.gantt is not None or args.trace is not None):
        raise InputError("--gantt and --trace show one run; drop --sweep, or drop them")
    if args.sweep and args.threads is not None:
        raise InputError("--sweep runs T = 1 .. 256 itself; drop --threads, or drop --sweep")


def run(args: argparse.Namespace) -> int:
    from harness.run.simulate import measure_compute_seconds, simulate

    check_args(args)
    cfg = preset(args.preset, **({"group_size": args.group_size} if args.group_size else {}))
    group = cfg.train.group_size
    c = args.compute_seconds
    how = "given"
    if c is None:
        c, how = measure_compute_seconds(cfg), "measured here, one batch on one core"
    print(f"simulate: {cfg.preset} preset, {args.cores} simulated cores, G={group} batches, "
          f"c={c:.4f} s per batch ({how})", flush=True)
    if args.sweep:
        results = run_sweep(args, cfg, group, c)
        if args.plot is not None:
            from harness.figures.plots import plot_simulated_scaling

            plot_simulated_scaling([r.threads for r in results],
                                   [r.step_seconds for r in results],
                                   [r.ideal_seconds for r in results], args.plot,
                                   cores=args.cores)
            print(f"plot: {args.plot}", flush=True)
    else:
        threads = args.threads or max(1, args.cores - 1)
        result, rec = simulate(cfg, args.cores, threads, group, c, args.steps)
        results = [result]
        print(describe(result), flush=True)
        write_views(args, rec, result)
    if args.json is not None:
        from plumbing.outputs import write_json

        write_json(args.json, [r.to_dict() for r in results], "simulate results")
    return ExitCode.OK


def run_sweep(args: argparse.Namespace, cfg, group: int, c: float) -> list:
    """The sweep with its live progress: run i/N (T=...), elapsed, and the run ETA from the
    runs' sizes (`run_size`) at the measured rate; each row printed above it."""
    from harness.run.progress import SizedRuns, open_progress
    from harness.run.simulate import SWEEP_THREADS, run_size, sweep

    steps = 1
    with open_progress("simulate", len(SWEEP_THREADS), quiet=args.quiet,
                       seconds=args.progress_seconds, unit_name="run") as live:
        runs = SizedRuns(live, [run_size(args.cores, t, group, c, steps) for t in SWEEP_THREADS],
                         [f"T={t}" for t in SWEEP_THREADS])
        return sweep(cfg, args.cores, group, c, SWEEP_THREADS, steps,
                     on_result=lambda r: live.write_out(row(r)), live=runs)


def write_views(args: argparse.Namespace, rec, result) -> None:
    """The one run's Gantt and trace, when asked."""
    if args.gantt is not None:
        from harness.measure.timeline import plot_gantt

        step = max(rec.steps())
        plot_gantt(rec, step, args.gantt)
        print(f"gantt: {args.gantt} (step {step}, peak {result.peak_in_flight} batches "
              "computing at once)", flush=True)
    if args.trace is not None:
        from harness.measure.trace import write_trace

        write_trace(rec, args.trace)
        print(f"trace: {args.trace}", flush=True)


def row(r) -> str:
    """One sweep line: T, step, ideal, ratio, cores busy, peak in flight."""
    return (f"  T={r.threads:4d}  step {r.step_seconds:8.3f} s  ideal {r.ideal_seconds:8.3f} s "
            f"({r.rounds} x c + {r.fold_seconds + r.tail_seconds:.3f} s)  ratio "
            f"{r.ratio:5.2f}  cores busy {100 * r.cores_busy:5.1f}%  peak in flight "
            f"{r.peak_in_flight}")


def describe(r) -> str:
    """One run: the step against the ideal, cores busy, peak in flight, critical path."""
    steps = ", ".join(f"{s:.3f}" for s in r.steps)
    lines = [
        f"  T={r.threads} workers: step {r.step_seconds:.3f} s (median of {len(r.steps)}: "
        f"{steps})",
        f"  ideal {r.ideal_seconds:.3f} s = ceil({r.group}/min({r.threads},{r.cores}))="
        f"{r.rounds} x {r.compute_seconds:.3f} s + fold {r.fold_seconds * 1e3:.2f} ms + "
        f"dispatch, reduce, decide, update {r.tail_seconds * 1e3:.1f} ms; ratio {r.ratio:.3f}",
        f"  cores busy {100 * r.cores_busy:.1f}% of {r.cores}; peak {r.peak_in_flight} batches "
        "computing at once (read from the run record)",
        "  critical path: " + " -> ".join(f"{what} {sec * 1e3:.1f} ms"
                                          for what, sec in r.critical_path),
    ]
    return "\n".join(lines)
