"""`spheres`: the table of commands, and the exit codes of SPEC sections 6 and 12.

0 ok, 1 a verification failed, 2 bad input, usage or environment (a path that cannot be read
or written, disk full, a bad checkpoint), 3 stall or deadlock, 4 a worker or Node Zero fault,
5 an internal error (one line; the traceback goes to a file whose path is printed), 130 on
SIGINT, 143 on SIGTERM, 129 on SIGHUP (`plumbing.errors.ExitCode`). Each command is one module,
harness/commands/<command>.py, that owns its options (`add_arguments`) and its body (`run`);
this file lists them, imports only the one named on the command line, and maps errors to exit
codes (harness/commands/failures.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from harness.commands.failures import report_stall, run_guarded
from harness.commands.options import explicit_dests
from harness.commands.preflight import check_outputs, lock_outputs
from harness.run.stop import GracefulStop
from plumbing.errors import ExitCode, StallError


@dataclass(frozen=True)
class Command:
    module: str  # DESCRIPTION, OUTPUTS, add_arguments(parser) and run(args) -> exit code
    summary: str  # its line in `spheres --help`


COMMANDS: dict[str, Command] = {
    "train": Command("harness.commands.train",
                     "train on a corpus with live progress and checkpoints"),
    "grads": Command("harness.commands.grads", "one step's loss and gradients as .npz"),
    "verify": Command("harness.commands.verify",
                      "equivalence gates over thread counts (exit 1 on failure)"),
    "engines": Command("harness.commands.engines",
                       "list the installed engines and where they come from"),
    "analyze": Command("harness.commands.analyze",
                       "the main job: train, verify, drill, profile, report"),
    "check": Command("harness.commands.check",
                     "re-check a report folder: manifest, verdicts, findings (exit 1 on any)"),
    "compare": Command("harness.commands.compare",
                       "markdown table of what changed between two runs"),
    "ab": Command("harness.commands.ab",
                  "A/B timing of two revisions or folders, interleaved, with statistics"),
    "stress": Command("harness.commands.stress",
                      "seeded chaos run: perturbed schedules, faults, invariants"),
    "simulate": Command("harness.commands.simulate",
                        "the real protocol on N simulated cores with stand-in batches"),
}


def load(name: str) -> ModuleType:
    """The module of command `name` (imported on first use)."""
    return importlib.import_module(COMMANDS[name].module)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """Every command by its summary; the options of `chosen` alone (its module is imported)."""
    parser = argparse.ArgumentParser(
        prog="spheres",
        description="Kissing Spheres: a verified multithreaded transformer trainer "
                    "(Node Zero + 12-fold kissing-sphere reduction) and its test harness.",
        epilog="Exit codes: 0 ok, 1 verification failed, 2 bad input, usage or environment, "
               "3 stall or deadlock, 4 worker or Node Zero fault, 5 internal error, "
               "130 SIGINT, 143 SIGTERM, 129 SIGHUP.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        if name != chosen:
            sub.add_parser(name, help=command.summary)
            continue
        module = load(name)
        module.add_arguments(sub.add_parser(name, help=command.summary,
                                            description=module.DESCRIPTION))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    warnings.simplefilter("default")
    with GracefulStop():
        return run_guarded(lambda: _dispatch(parser, args, argv))


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace,
              argv: list[str]) -> int:
    command = load(args.command)
    args.explicit = explicit_dests(parser, argv)  # for --resume conflicts
    check_outputs(args, command.OUTPUTS)
    with lock_outputs(args, command.OUTPUTS) as locks:
        try:
            from harness.commands.mpi_launch import mpi_entry  # no mpi4py unless --mpi

            code = mpi_entry(args)
            if code is not None:
                return code
            return command.run(args)
        except StallError as exc:
            report_stall(exc, _stall_folder(args, command.OUTPUTS))
            sys.stdout.flush()
            sys.stderr.flush()
            locks.close()  # os._exit skips the with block's release
            os._exit(ExitCode.STALL)  # a thread stuck inside a nogil kernel cannot be joined


def _stall_folder(args: argparse.Namespace, outputs) -> Path | None:
    """Where a stall's diagnosis goes: the run's output folder (--checkpoint-dir, a report's
    --out), else the folder holding its --out file (never a folder made at the file's path)."""
    for kind in ("folder", "report"):
        for _, dest, k in outputs:
            if k == kind and getattr(args, dest, None) is not None:
                return Path(getattr(args, dest))
    for option, dest, k in outputs:
        if option == "--out" and k == "file" and getattr(args, dest, None) is not None:
            return Path(getattr(args, dest)).resolve().parent
    return None


if __name__ == "__main__":
    sys.exit(main())
