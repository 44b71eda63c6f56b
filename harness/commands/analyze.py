"""`spheres analyze`, the main job: its options, the plan they make, and the exit code.

The phases and the report are harness/analysis/ (pipeline.py runs them); this module turns
the command line into an analysis `Plan` and the finished checks into one line and a code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands import options as o
from harness.commands.preflight import Outputs, check_writable
from plumbing.errors import ExitCode, InputError
from reference.config import PRESETS

DESCRIPTION = ("Build, train, verify, drill the watchdog, profile and write "
               "reports/<date>-<preset>/analysis.md with plots.")
OUTPUTS: Outputs = (("--out", "out", "report"), ("--trace", "trace", "file"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="seed", choices=sorted(PRESETS),
                   help="model preset (default: seed)")
    p.add_argument("--data", default=None, help="corpus (default: synthetic at the seed's scale)")
    p.add_argument("--threads", type=o.positive_int, default=None,
                   help="training threads (default: cores)")
    p.add_argument("--steps", type=o.positive_int, default=None,
                   help="training steps (default: 3 at seed, more at smaller presets)")
    p.add_argument("--out", type=Path, default=None,
                   help="report folder (default: reports/<date>-<preset>)")
    p.add_argument("--quick", action="store_true",
                   help="tiny preset and a small sweep: finishes in about a minute")
    p.add_argument("--ranks", type=o.ranks_count, default=None,
                   help="add a Scale-out section measured with mpiexec -n RANKS (1..144)")
    p.add_argument("--seed", type=o.int_in_range(0, o.MAX_SEED), default=0,
                   help="initialisation and corpus seed")
    o.add_progress(p)
    o.add_trace(p)  # analyze always writes trace.json into the report; --trace: a copy there too
    p.add_argument("--engine", action="append", default=None, metavar="ENGINE",
                   help="also put this engine in the side-by-side section (repeatable; every "
                        "installed engine and the example exec engine are always there)")
    o.add_faults(p)


def run(args: argparse.Namespace) -> int:
    from harness.analysis.pipeline import analyze_into
    from harness.analysis.plan import default_out, make_plan, say

    plan = make_plan(preset=args.preset, quick=args.quick, threads=args.threads,
                     steps=args.steps, data=args.data, seed=args.seed,
                     stall_timeout=args.stall_timeout, inject=args.inject, engines=args.engine)
    if plan.data is not None and not Path(plan.data).exists():
        raise InputError(f"--data {plan.data}: no such file or folder")
    _check_resources(plan)
    out = args.out or default_out(plan)
    if args.trace is not None:
        check_writable(args.trace)
    from harness.run.stop import Stopped, deferred

    try:
        with deferred("the current step of this phase"):
            results = analyze_into(plan, out, ranks=args.ranks, trace=args.trace,
                                   quiet=args.quiet, progress_seconds=args.progress_seconds)
    except Stopped as exc:  # the partial build is removed: nothing that reads as finished
        say(f"analyze: INTERRUPTED by {exc.name}: no report written to {out} (incomplete, "
            "not a pass)")
        raise
    failed = [c for c in results.checks if not c.passed]
    say(f"analyze: {results.verdict}: {len(results.checks) - len(failed)} of "
        f"{len(results.checks)} checks passed in {results.meta.seconds:.0f}s; "
        f"report: {out / 'analysis.md'}")
    for c in failed:
        say(f"  FAIL {c.title}: {c.figure}")
    code = results.training.exit_code
    if code:
        return code
    return ExitCode.OK if not failed else ExitCode.VERIFY_FAILED


def _check_resources(plan) -> None:
    """The training phase's memory and threads, refused up front (exit 2) past their bounds;
    the throughput phase's largest thread count too (its engines are built one at a time)."""
    from harness.commands.preflight import check_resources, data_bytes, estimate_resources
    from reference.config import preset

    cfg = preset(plan.preset, seed=plan.seed)
    for threads in sorted({plan.threads, max(plan.throughput_threads, default=1)}):
        need = estimate_resources(cfg, threads=threads, dtype="float32", engine="fast",
                                  synthetic_tokens=None if plan.data else plan.synthetic_tokens,
                                  text_bytes=data_bytes(plan.data))
        check_resources(need, fix="use a smaller --preset, --quick or fewer --threads")
