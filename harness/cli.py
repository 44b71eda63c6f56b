"""`spheres`: argument parsing, dispatch, and the exit codes of SPEC sections 6 and 12.

0 ok, 1 a verification failed, 2 bad input, usage or environment (a path that cannot be read
or written, disk full, a bad checkpoint), 3 stall or deadlock, 4 a worker or Node Zero fault,
5 an internal error (one line; the traceback goes to a file whose path is printed), 130 on
SIGINT, 143 on SIGTERM. Each command lives in its own module; this file only parses and maps
errors (harness/commands/failures.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from harness.commands.failures import report_stall, run_guarded
from harness.commands.preflight import MAX_SEED, check_outputs, finite_number, int_in_range
from harness.commands.resume_conflicts import explicit_dests
from harness.run.stop import GracefulStop
from harness.run.thread_counts import parse_threads  # noqa: F401  (its home; re-exported here)
from plumbing.errors import StallError
from reference.config import PRESETS

EXIT_OK, EXIT_VERIFY, EXIT_USAGE, EXIT_STALL, EXIT_FAULT = 0, 1, 2, 3, 4
MAX_STEPS = 10**9  # bounds for counts typed on the command line: far above any real run
MAX_LR = 10.0  # AdamW steps of size ~lr: above 10 every weight is destroyed in one step
MAX_STALL_TIMEOUT = 7 * 86400.0  # a week; beyond that a stall would never be reported


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="model and batch sizes (SPEC 1): tiny, small or seed (default: tiny)")
    p.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=0,
                   help="initialisation and synthetic-corpus seed (default: 0)")
    p.add_argument("--data", default=None,
                   help="text file, folder of text files, or SQuAD JSON "
                        "(default: the built-in synthetic corpus)")
    p.add_argument("--group-size", type=_positive_int, default=None,
                   help="batches per step G (default: the preset's); independent of --threads")


def _add_engine(p: argparse.ArgumentParser, *, default_engine: str) -> None:
    from harness.run.plugins import engine_names

    p.add_argument("--engine", default=default_engine, metavar="ENGINE",
                   help=f"{', '.join(engine_names())} (see `spheres engines`), exec:COMMAND or "
                        f"module:factory (docs/ENGINES.md) (default: {default_engine})")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="worker threads for the fast engine (default: number of cores)")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"],
                   help="fast-engine precision (default: float32; the reference is float64)")


def _add_faults(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stall-timeout", type=finite_number(0, MAX_STALL_TIMEOUT), default=60.0,
                   help="seconds without progress before a thread is declared stuck (default: 60)")
    p.add_argument("--inject", action="append", default=[], metavar="KIND:target=T,step=N",
                   help="fault drill, repeatable: KIND is hang|raise|nan|slow, target worker=I or "
                        "node-zero, e.g. hang:target=worker=1,step=2 or "
                        "slow:target=node-zero,step=0,seconds=3")


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true",
                   help="no live progress (bar on a terminal, plain lines otherwise)")
    p.add_argument("--progress-seconds", type=_positive_float, default=None,
                   help="seconds between plain progress lines when stderr is not a terminal "
                        "(default: 5)")


def _add_trace(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", type=Path, default=None, metavar="FILE.json",
                   help="write the threads' timeline as a Chrome trace (open in Perfetto or "
                        "chrome://tracing)")


def _ranks(text: str) -> int:
    value = _positive_int(text)
    if value > 12:
        raise argparse.ArgumentTypeError(f"the 12 symmetry positions allow 1 to 12 ranks, "
                                         f"got {value}")
    return value


def _add_mpi(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mpi", action="store_true",
                   help="run across MPI ranks: mpiexec -n R spheres ... --mpi (R = 1..12; "
                        "needs the [mpi] extra)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spheres",
        description="Kissing Spheres: a verified multithreaded transformer trainer "
                    "(Node Zero + 12-fold kissing-sphere reduction) and its test harness.",
        epilog="Exit codes: 0 ok, 1 verification failed, 2 bad input, usage or environment, "
               "3 stall or deadlock, 4 worker or Node Zero fault, 5 internal error, "
               "130 SIGINT, 143 SIGTERM.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train on a corpus with live progress and checkpoints",
                       description="Train with Node Zero and T workers; prints one progress line "
                                   "per step (loss, tokens/s) and writes checkpoints.")
    _add_common(p)
    _add_engine(p, default_engine="fast")
    p.add_argument("--steps", type=int_in_range(0, MAX_STEPS), default=None,
                   help="optimiser steps to run (this run)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="epochs to run instead of --steps (default: 1 epoch)")
    p.add_argument("--lr", type=finite_number(0, MAX_LR), default=None,
                   help="peak learning rate")
    p.add_argument("--total-steps", type=_positive_int, default=None,
                   help="cosine schedule horizon (default: the planned run, --steps or "
                        "--epochs x groups per epoch; kept by --resume)")
    p.add_argument("--last-group", default="merge", choices=["keep", "merge", "drop"],
                   help="the epoch's short last group: merge a tail below half a group into "
                        "the group before it, drop it, or keep it (default: merge)")
    p.add_argument("--no-shuffle", action="store_true",
                   help="visit the groups in corpus order (default: shuffled per epoch from "
                        "--seed and the epoch number)")
    p.add_argument("--synthetic-tokens", type=_positive_int, default=None,
                   help="size of the synthetic corpus in tokens, exact (default: 4 groups' "
                        "worth, G*B*S*4 + 1)")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="where checkpoints go")
    p.add_argument("--checkpoint-every", type=int_in_range(0, MAX_STEPS), default=0,
                   help="also checkpoint every N steps (default: only at the end)")
    p.add_argument("--keep-checkpoints", type=int_in_range(0, MAX_STEPS), default=3,
                   help="keep only the N newest step-*.npz files, 0 keeps all (default: 3)")
    p.add_argument("--resume", default=None,
                   help="checkpoint file (or folder: its newest) to continue from bitwise")
    p.add_argument("--json", type=Path, default=None,
                   help="write a summary: steps, tokens, seconds, tokens_per_s, ...")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="held-out loss every N steps and at the end (default: 0, never)")
    p.add_argument("--eval-fraction", type=float, default=None, metavar="F",
                   help="hold out the last F of the token stream, never trained on "
                        "(default: 0.1 with --eval-every)")
    _add_progress(p)
    _add_trace(p)
    p.add_argument("--verbose", action="store_true",
                   help="list every --data entry skipped (default: a few lines of counts)")
    _add_faults(p)
    _add_mpi(p)

    p = sub.add_parser("grads", help="one step's loss and gradients as .npz",
                       description="Compute one batch group's mean loss and gradient and write "
                                   "tokens, targets, loss, param/<name>, grad/<name>, config.")
    _add_common(p)
    _add_engine(p, default_engine="reference")
    p.add_argument("--out", type=Path, required=True, help="output .npz file")
    _add_mpi(p)

    p = sub.add_parser("verify", help="equivalence gates over thread counts (exit 1 on failure)",
                       description="Fast vs reference within tolerance, bitwise identity across "
                                   "thread counts, a multi-step trajectory, per-thread work.")
    p.add_argument("--threads", default="1-63", help="thread counts: 1-63, 1,2,4 or 1-4,8")
    p.add_argument("--presets", default="tiny,small", help="comma-separated presets")
    p.add_argument("--dtypes", default="float64,float32", help="comma-separated dtypes")
    p.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=0,
                   help="initialisation and corpus seed")
    p.add_argument("--trajectory-steps", type=_positive_int, default=3,
                   help="steps of the trajectory check (default: 3)")
    p.add_argument("--json", type=Path, default=None, help="write every result as JSON")
    p.add_argument("--markdown", type=Path, default=None, help="write a markdown summary")
    p.add_argument("--junit", type=Path, default=None,
                   help="write JUnit XML for CI: one test case per preset, dtype and threads")
    _add_progress(p)
    _add_trace(p)
    p.add_argument("--ranks", default=None,
                   help="also gate across MPI ranks, e.g. 1,2,3,5,12: one mpiexec launch per R "
                        "(needs the [mpi] extra)")
    p.add_argument("--engine", default="fast", metavar="ENGINE",
                   help="engine under test: a name from `spheres engines`, exec:COMMAND or "
                        "module:factory (default: fast)")
    p.add_argument("--require-bitwise", action=argparse.BooleanOptionalAction, default=None,
                   help="fail when thread counts differ in any bit (default: on for fast; "
                        "measured and reported for every engine)")
    _add_faults(p)

    p = sub.add_parser("engines", help="list the installed engines and where they come from",
                       description="Every engine of the entry-point group "
                                   "kissing_spheres.engines: name, factory, distribution, and "
                                   "whether it loads here.")
    p.add_argument("--measure", action="store_true",
                   help="also measure every available engine side by side on one workload: "
                        "tokens/s, share of the sgemm limit, error vs reference, bitwise, memory")
    p.add_argument("--engine", action="append", default=None, metavar="ENGINE",
                   help="with --measure: only these engines (repeatable; default: all available "
                        "plus the example exec engine)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="with --measure: workload preset (default: tiny)")
    p.add_argument("--group-size", type=_positive_int, default=None,
                   help="with --measure: batches per step (default: min(G, 2))")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="with --measure: threads (default: cores); bitwise compares 1 vs this")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="with --measure: precision of the engines under test (default: float32)")
    p.add_argument("--rounds", type=_positive_int, default=3,
                   help="with --measure: timed steps per engine, best counts (default: 3)")
    p.add_argument("--json", type=Path, default=None, help="with --measure: write the figures")
    p.add_argument("--markdown", type=Path, default=None, help="with --measure: write a table")
    p.add_argument("--stall-timeout", type=_positive_float, default=600.0,
                   help="seconds an engine may take to answer one request (default: 600)")

    p = sub.add_parser("analyze", help="the main job: train, verify, drill, profile, report",
                       description="Build, train, verify, drill the watchdog, profile and write "
                                   "reports/<date>-<preset>/analysis.md with plots.")
    p.add_argument("--preset", default="seed", choices=sorted(PRESETS),
                   help="model preset (default: seed)")
    p.add_argument("--data", default=None, help="corpus (default: synthetic at the seed's scale)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="training threads (default: cores)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="training steps (default: 3 at seed, more at smaller presets)")
    p.add_argument("--out", type=Path, default=None,
                   help="report folder (default: reports/<date>-<preset>)")
    p.add_argument("--quick", action="store_true",
                   help="tiny preset and a small sweep: finishes in about a minute")
    p.add_argument("--ranks", type=_ranks, default=None,
                   help="add a Scale-out section measured with mpiexec -n RANKS (1..12)")
    p.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=0,
                   help="initialisation and corpus seed")
    _add_progress(p)
    _add_trace(p)  # analyze always writes trace.json into the report; --trace: a copy there too
    p.add_argument("--engine", action="append", default=None, metavar="ENGINE",
                   help="also put this engine in the side-by-side section (repeatable; every "
                        "installed engine and the example exec engine are always there)")
    _add_faults(p)

    p = sub.add_parser("compare", help="markdown table of what changed between two runs",
                       description="Compare two results.json (analyze), two bench summary.json "
                                   "or two pytest-benchmark JSON files; prints every figure and "
                                   "verdict that changed; exit 1 if a verdict got worse or a "
                                   "benchmark regressed beyond its noise.")
    p.add_argument("a", type=Path, help="the earlier run")
    p.add_argument("b", type=Path, help="the later run")

    p = sub.add_parser("stress", help="seeded chaos run: perturbed schedules, faults, invariants",
                       description="Hypothesis-drawn cases (threads, group sizes, short groups, "
                                   "fault combinations) under perturbed timing at every "
                                   "synchronisation point; exit 1 on any failed invariant.")
    p.add_argument("--seconds", type=finite_number(0, 7 * 86400.0), default=60.0,
                   help="how long to run (default: 60)")
    p.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=0,
                   help="seed of the whole run (default: 0)")
    p.add_argument("--replay", type=int_in_range(0, 2**32 - 1), default=None,
                   help="rerun the one batch of cases a failure named")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("default")
    with GracefulStop():
        return run_guarded(lambda: _dispatch(parser, args, argv))


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace,
              argv: list[str] | None) -> int:
    args.explicit = explicit_dests(parser, argv)  # for --resume conflicts
    check_outputs(args)
    try:
        from harness.commands.mpi_launch import mpi_entry  # no mpi4py unless --mpi

        code = mpi_entry(args)
        if code is not None:
            return code
        if args.command == "train":
            from harness.commands.train_grads import cmd_train

            return cmd_train(args)
        if args.command == "grads":
            from harness.commands.train_grads import cmd_grads

            return cmd_grads(args)
        if args.command == "verify":
            from harness.commands.verify import cmd_verify

            return cmd_verify(args)
        if args.command == "compare":
            from harness.bench.compare import cmd_compare

            return cmd_compare(args)
        if args.command == "engines":
            from harness.bench.engine_compare import cmd_engines

            return cmd_engines(args)
        if args.command == "analyze":
            from harness.analysis.pipeline import cmd_analyze

            return cmd_analyze(args)
        if args.command == "stress":
            from harness.verify.stress import cmd_stress

            return cmd_stress(args)
    except StallError as exc:
        report_stall(exc, getattr(args, "checkpoint_dir", None) or getattr(args, "out", None))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STALL)  # a thread stuck inside a nogil kernel cannot be joined
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
