"""Checks made before any work starts: every output path the command will write can take it.

SPEC 12: a run must not train for an hour and then fail to write its result. Each command
module lists every output option it has in `OUTPUTS` (tests/test_outputs.py checks that none is
missing); `check_outputs` runs before the command's body and raises InputError (exit 2) with a
one-line message naming the option and the fix: a missing or read-only folder, a folder where
a file is expected, a device or FIFO, a report folder holding files spheres did not write
(plumbing/report_folder.py), two outputs naming the same file, or an output naming an input.
A Path-typed option is an output (inputs such as --data and --resume are str). The engines the
command names (`--engine`) are checked too: a registered name or module:factory that loads, an
exec: command line that splits, so a typo never surfaces after the work.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from plumbing.errors import InputError
from plumbing.outputs import check_output_dir, check_output_file
from plumbing.report_folder import check_report_folder

__all__ = ["Outputs", "check_output_dir", "check_output_file", "check_outputs",
           "check_writable"]

Kind = Literal["file", "folder", "report"]  # a report folder is replaced whole (analyze --out)

# A command's output options: (option, argparse dest, kind). Checked before any work.
Outputs = tuple[tuple[str, str, Kind], ...]

INPUTS = (("--data", "data"), ("--resume", "resume"))  # never overwritten by an output


def check_writable(path: Path, option: str = "output") -> None:
    """Fail before any work when the output file cannot be written (exit 2)."""
    check_output_file(Path(path), option)


def check_outputs(args: argparse.Namespace, outputs: Outputs) -> None:
    """Every output path the command will write can take it now (SPEC 12), else exit 2."""
    seen: dict[Path, str] = {}
    files: dict[Path, str] = {}  # file outputs: never an input (a folder may be --resume's)
    reports: list[tuple[Path, str]] = []
    for option, dest, kind in outputs:
        value = getattr(args, dest, None)
        if value is None:
            continue
        path = Path(value)
        {"file": check_output_file, "folder": check_output_dir,
         "report": check_report_folder}[kind](path, option)
        _refuse_collision(path, option, seen)
        if kind == "file":
            files[path.resolve()] = option
        if kind == "report":
            reports.append((path.resolve(), option))
    for path, option in seen.items():
        for report, report_option in reports:
            if report in path.parents:
                raise _inside(option, path, report_option, report)
    for option, dest in INPUTS:
        value = getattr(args, dest, None)
        if isinstance(value, str | Path) and Path(value).resolve() in files:
            raise _input_clash(files[Path(value).resolve()], option, value)
    check_engine_specs(getattr(args, "engine", None))


BUILT_IN = ("fast", "mpi")  # built by harness/run/engines.py itself, not by a factory


def check_engine_specs(specs: str | list[str] | None) -> None:
    """Every `--engine` spec can be built: InputError (exit 2) naming the first that cannot."""
    import shlex

    from harness.run.plugins import EXEC_PREFIX, resolve_factory

    for spec in [specs] if isinstance(specs, str) else specs or []:
        if spec in BUILT_IN:
            continue
        if spec.startswith(EXEC_PREFIX):
            command = spec[len(EXEC_PREFIX):]
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise InputError(f"--engine {spec!r}: the command line cannot be split ({exc});"
                                 " check its quotes") from None
            if not argv:
                raise InputError(f"--engine {spec!r}: no command after exec:; give one, e.g. "
                                 "exec:'python my_engine.py'")
            continue
        resolve_factory(spec)


def _refuse_collision(path: Path, option: str, seen: dict[Path, str]) -> None:
    key = path.resolve()
    if key in seen:
        raise InputError(f"{seen[key]} and {option} both name {path}; give each output its "
                         "own path")
    seen[key] = option


def _inside(option: str, path: Path, report_option: str, report: Path) -> InputError:
    return InputError(f"{option} {path} lies inside {report_option} {report}, which is "
                      "replaced whole by the report; put it elsewhere")


def _input_clash(output: str, option: str, value: object) -> InputError:
    return InputError(f"{output} would overwrite the input {option} {value}; choose another "
                      "output path")
