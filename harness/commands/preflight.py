"""Checks made before any work starts: every output path the command will write is writable.

SPEC 12: a run must not train for an hour and then fail to write its result. Each check raises
InputError (exit 2) with a one-line message naming the path or option and the fix.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from plumbing.errors import InputError


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


def check_writable(path: Path) -> None:
    """Fail before any work when the output cannot be written (exit 2, nothing half-written)."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(
            f"output folder {folder} does not exist; create it or choose another --out")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {folder} is not writable; choose another --out")


# A command's output options: (option, argparse dest, is a folder). Checked before any work.
Outputs = tuple[tuple[str, str, bool], ...]


def check_outputs(args: argparse.Namespace, outputs: Outputs) -> None:
    """Every output path the command will write is writable now (SPEC 12), else exit 2."""
    for option, dest, is_dir in outputs:
        value = getattr(args, dest, None)
        if value is None:
            continue
        path = Path(value)
        if is_dir:
            check_output_dir(path, option)
        else:
            check_output_file(path, option)
