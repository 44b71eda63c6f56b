"""`spheres`: argument parsing, dispatch, and the exit codes of SPEC section 6.

0 ok, 1 a verification failed, 2 bad input or usage, 3 stall or deadlock, 4 a worker or Node
Zero fault. Each command lives in its own module; this file only parses and maps errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from reference.config import PRESETS
from reference.errors import InputError, SpheresError, StallError

EXIT_OK, EXIT_VERIFY, EXIT_USAGE, EXIT_STALL, EXIT_FAULT = 0, 1, 2, 3, 4


def parse_threads(text: str) -> list[int]:
    """`1-63`, `1,2,4`, `1-4,8,16-18` -> sorted unique thread counts (each >= 1)."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                out.update(range(lo, hi + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise InputError(
            f"--threads {text!r}: expected counts like 1-63 or 1,2,4 or 1-4,8") from None
    if not out or min(out) < 1:
        raise InputError(f"--threads {text!r}: thread counts must be >= 1")
    return sorted(out)


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
    p.add_argument("--seed", type=int, default=0,
                   help="initialisation and synthetic-corpus seed (default: 0)")
    p.add_argument("--data", default=None,
                   help="text file, folder of text files, or SQuAD JSON "
                        "(default: the built-in synthetic corpus)")
    p.add_argument("--group-size", type=_positive_int, default=None,
                   help="batches per step G (default: the preset's); independent of --threads")


def _add_engine(p: argparse.ArgumentParser, *, default_engine: str) -> None:
    from harness.plugins import engine_names

    p.add_argument("--engine", default=default_engine, metavar="ENGINE",
                   help=f"{', '.join(engine_names())} (see `spheres engines`), exec:COMMAND or "
                        f"module:factory (docs/ENGINES.md) (default: {default_engine})")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="worker threads for the fast engine (default: number of cores)")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"],
                   help="fast-engine precision (default: float32; the reference is float64)")


def _add_faults(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stall-timeout", type=_positive_float, default=60.0,
                   help="seconds without progress before a thread is declared stuck (default: 60)")
    p.add_argument("--inject", action="append", default=[], metavar="KIND:target=T,step=N",
                   help="fault drill, repeatable: KIND is hang|raise|nan|slow, target worker=I or "
                        "node-zero, e.g. hang:target=worker=1,step=2 or "
                        "slow:target=node-zero,step=0,seconds=3")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spheres",
        description="Kissing Spheres: a verified multithreaded transformer trainer "
                    "(Node Zero + 12-fold kissing-sphere reduction) and its test harness.",
        epilog="Exit codes: 0 ok, 1 verification failed, 2 bad input or usage, "
               "3 stall or deadlock, 4 worker or Node Zero fault.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train on a corpus with live progress and checkpoints",
                       description="Train with Node Zero and T workers; prints one progress line "
                                   "per step (loss, tokens/s) and writes checkpoints.")
    _add_common(p)
    _add_engine(p, default_engine="fast")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps to run (this run)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="epochs to run instead of --steps (default: 1 epoch)")
    p.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate")
    p.add_argument("--total-steps", type=_positive_int, default=None,
                   help="cosine schedule horizon (default: the config's, 1000)")
    p.add_argument("--synthetic-tokens", type=_positive_int, default=None,
                   help="size of the synthetic corpus in tokens (default: 4 groups' worth)")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="where checkpoints go")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="also checkpoint every N steps (default: only at the end)")
    p.add_argument("--resume", default=None,
                   help="checkpoint file (or folder: its newest) to continue from bitwise")
    p.add_argument("--json", type=Path, default=None,
                   help="write a summary: steps, tokens, seconds, tokens_per_s, ...")
    _add_faults(p)

    p = sub.add_parser("grads", help="one step's loss and gradients as .npz",
                       description="Compute one batch group's mean loss and gradient and write "
                                   "tokens, targets, loss, param/<name>, grad/<name>, config.")
    _add_common(p)
    _add_engine(p, default_engine="reference")
    p.add_argument("--out", type=Path, required=True, help="output .npz file")

    p = sub.add_parser("verify", help="equivalence gates over thread counts (exit 1 on failure)",
                       description="Fast vs reference within tolerance, bitwise identity across "
                                   "thread counts, a multi-step trajectory, per-thread work.")
    p.add_argument("--threads", default="1-63", help="thread counts: 1-63, 1,2,4 or 1-4,8")
    p.add_argument("--presets", default="tiny,small", help="comma-separated presets")
    p.add_argument("--dtypes", default="float64,float32", help="comma-separated dtypes")
    p.add_argument("--seed", type=int, default=0, help="initialisation and corpus seed")
    p.add_argument("--trajectory-steps", type=_positive_int, default=3,
                   help="steps of the trajectory check (default: 3)")
    p.add_argument("--json", type=Path, default=None, help="write every result as JSON")
    p.add_argument("--markdown", type=Path, default=None, help="write a markdown summary")
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
    p.add_argument("--seed", type=int, default=0, help="initialisation and corpus seed")
    p.add_argument("--engine", action="append", default=None, metavar="ENGINE",
                   help="also put this engine in the side-by-side section (repeatable; every "
                        "installed engine and the example exec engine are always there)")
    _add_faults(p)
    return parser


def _report_stall(exc: StallError, out_dir: Path | None) -> None:
    """Print the diagnosis, save it as JSON, and add a native stack dump where py-spy can."""
    print(f"spheres: STALL: {exc}", file=sys.stderr, flush=True)
    diagnosis = dict(exc.diagnosis)
    try:
        from harness.profiling import pyspy_dump

        diagnosis["native_stacks"] = pyspy_dump(os.getpid())
    except Exception as err:  # the diagnosis must still be written
        diagnosis["native_stacks"] = f"unavailable: {err}"
    folder = out_dir or Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"stall-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(diagnosis, indent=2, default=str))
        print(f"spheres: stall diagnosis written to {path}", file=sys.stderr, flush=True)
    except OSError as err:
        print(f"spheres: could not write the stall diagnosis: {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("default")
    try:
        if args.command == "train":
            from harness.commands import cmd_train

            return cmd_train(args)
        if args.command == "grads":
            from harness.commands import cmd_grads

            return cmd_grads(args)
        if args.command == "verify":
            from harness.verify import cmd_verify

            return cmd_verify(args)
        if args.command == "engines":
            from harness.engine_compare import cmd_engines

            return cmd_engines(args)
        if args.command == "analyze":
            from harness.analyze import cmd_analyze

            return cmd_analyze(args)
    except StallError as exc:
        _report_stall(exc, getattr(args, "checkpoint_dir", None) or getattr(args, "out", None))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STALL)  # a thread stuck inside a nogil kernel cannot be joined
    except SpheresError as exc:
        print(f"spheres: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("spheres: interrupted", file=sys.stderr, flush=True)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
