"""Checks made before any work starts: output paths writable, numbers finite and in range.

SPEC 12: a run must not train for an hour and then fail to write its result. Each check raises
InputError (exit 2) with a one-line message naming the path or option and the fix.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from plumbing.errors import InputError

MAX_SEED = 2**63 - 1  # numpy's SeedSequence takes any non-negative int; int64 keeps JSON exact


def check_output_file(path: Path, option: str) -> None:
    """`path` can be created or replaced as a regular file (its folder exists and is writable)."""
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory; give a file name such as "
                         f"{path / 'out.json'}")
    if path.exists() and not path.is_file():
        raise InputError(f"{option} {path} exists and is not a regular file; choose another name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: folder {folder} does not exist (or is not a "
                         "folder); create it or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: folder {folder} is not writable; choose another path")


def check_output_dir(path: Path, option: str) -> None:
    """`path` is, or can be created as, a writable folder: nothing of it is created here."""
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise InputError(f"{option} {path}: {probe} is a dangling symbolic link; remove it "
                             "or choose another folder")
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is" if probe == path else f"is under {probe}, which is"
        raise InputError(f"{option} {path} {what} a file, not a folder; choose another folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: {probe} is not writable; choose a folder you can "
                         "write to")


def finite_number(low: float, high: float = math.inf, *, low_inclusive: bool = False
                  ) -> Callable[[str], float]:
    """argparse type: a finite float in (low, high] (or [low, high] with low_inclusive)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        above = value >= low if low_inclusive else value > low
        if not above:
            what = ("positive" if low == 0 and not low_inclusive
                    else f"{'at least' if low_inclusive else 'greater than'} {low:g}")
            raise argparse.ArgumentTypeError(f"must be {what}, got {value:g}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {value:g}")
        return value
    return parse


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must lie in [{low}, {high}], got {value}")
        return value
    return parse


# Output options per command: (option, argparse dest, is a folder). Checked before any work.
OUTPUTS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "train": (("--json", "json", False), ("--checkpoint-dir", "checkpoint_dir", True)),
    "grads": (("--out", "out", False),),
    "verify": (("--json", "json", False), ("--markdown", "markdown", False)),
    "analyze": (("--out", "out", True),),
}


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path the command will write is writable now (SPEC 12), else exit 2."""
    for option, dest, is_dir in OUTPUTS.get(getattr(args, "command", ""), ()):
        value = getattr(args, dest, None)
        if value is None:
            continue
        path = Path(value)
        if is_dir:
            check_output_dir(path, option)
        else:
            check_output_file(path, option)
