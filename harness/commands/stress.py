"""`spheres stress`: a seeded chaos run of perturbed schedules, faults and invariants.

Its live progress (harness/run/progress.py) counts the cases done, their rate, the faults fired
and failures so far, and the time left of `--seconds` (the run's length is its time budget, so
its ETA is exact); `--quiet` hides it."""

from __future__ import annotations

import argparse
import time

from harness.commands import options as o
from harness.commands.preflight import Outputs
from plumbing.errors import ExitCode

DESCRIPTION = ("Hypothesis-drawn cases (threads, group sizes, short groups, fault combinations) "
               "under perturbed timing at every synchronisation point; exit 1 on any failed "
               "invariant.")
OUTPUTS: Outputs = ()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=o.finite_number(0, 7 * 86400.0), default=60.0,
                   help="how long to run (default: 60)")
    p.add_argument("--seed", type=o.int_in_range(0, o.MAX_SEED), default=0,
                   help="seed of the whole run (default: 0)")
    p.add_argument("--replay", type=o.int_in_range(0, 2**32 - 1), default=None,
                   help="rerun the one batch of cases a failure named")
    o.add_progress(p)


def run(args: argparse.Namespace) -> int:
    from harness.run.stop import Stopped
    from harness.verify.stress import StressTotals, stress

    t0 = time.monotonic()
    totals = StressTotals()
    try:
        with stress_progress(totals, None if args.replay is not None else args.seconds,
                             quiet=getattr(args, "quiet", False),
                             seconds=getattr(args, "progress_seconds", None)):
            stress(args.seconds, args.seed, args.replay, totals=totals)
    except Stopped as exc:  # the cases done, said as such: incomplete, not a pass
        print(f"stress: INTERRUPTED by {exc.name} after {totals.cases} cases in "
              f"{time.monotonic() - t0:.0f} s, {len(totals.failures)} failures before it; "
              "incomplete, not a pass", flush=True)
        for failure in totals.failures:
            print(f"  FAILED: {failure}", flush=True)
        raise
    print(f"stress: {totals.cases} cases in {time.monotonic() - t0:.0f} s, "
          f"{totals.faults_fired} faults fired ({totals.faults_unfired} never due), "
          f"{totals.invariants} invariants checked, {totals.sync_points:,} perturbed sync "
          f"points, {len(totals.failures)} failures", flush=True)
    for failure in totals.failures:
        print(f"  FAILED: {failure}", flush=True)
    return ExitCode.VERIFY_FAILED if totals.failures else ExitCode.OK


def stress_progress(totals, budget: float | None, *, quiet: bool = False,
                    seconds: float | None = None, clock=time.monotonic):
    """The live progress of a stress run: cases done, cases/s, faults, failures and the time
    left of its budget (None: a replay, which runs one batch of cases)."""
    from harness.run.progress import format_seconds, open_progress

    live = open_progress("stress", 1, quiet=quiet, seconds=seconds, unit_name="run",
                         clock=clock)
    start = clock()

    def detail() -> list[str]:
        elapsed = clock() - start
        parts = [f"case {totals.cases}"]
        if elapsed > 0 and totals.cases:
            parts.append(f"{totals.cases / elapsed:.1f} cases/s")
        parts.append(f"{totals.faults_fired} faults fired, {len(totals.failures)} failures")
        if budget is not None and elapsed > budget:  # the last batch runs to its end
            parts.append(f"{format_seconds(elapsed)}, past the {format_seconds(budget)} "
                         "budget: finishing the last batch of cases")
        elif budget is not None:
            parts.append(f"{format_seconds(elapsed)} of {format_seconds(budget)}, "
                         f"run ETA {format_seconds(max(0.0, budget - elapsed))}")
        else:
            parts.append(f"running {format_seconds(elapsed)}")
        return parts

    live.detail = detail
    live.begin(1, label="")
    return live
