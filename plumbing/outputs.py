"""The one checked writer: every file a command writes is checked before any work, written
whole, and, when it is JSON, standard JSON (RFC 8259).

`output_file_problem` / `output_dir_problem` say why a path cannot take an output (its folder
is missing or read-only, it is a folder where a file is expected, a device, a FIFO, ...);
`check_output_file` / `check_output_dir` raise that as an InputError (exit 2) naming the
option, before the first unit of work. `write_output` writes bytes, text or a callback's output
through `plumbing.atomic.atomic_write` (temp file, fsync, rename; a non-regular file is never
replaced) and turns a write error (ENOSPC, EIO, EFBIG, ...) into an InputError naming the
path. `json_text` is the only JSON serialiser for files: NaN and infinities become null
(`finite_json`) and `allow_nan=False` guards the rest, so every reader, not only Python's, can
parse what we write.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from plumbing.atomic import atomic_write, kind_of
from plumbing.errors import InputError

_WRITE_FIXES = {
    errno.ENOSPC: "the disk is full; free space or choose another folder",
    errno.EFBIG: "the file-size limit was reached (ulimit -f); raise it or write less",
    errno.EDQUOT: "the disk quota is exhausted; free space or choose another folder",
    errno.EIO: "the device reported an I/O error; check the disk or choose another folder",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
}


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def output_file_problem(path: Path) -> str | None:
    """Why `path` cannot be created or replaced as a regular file, or None."""
    if path.is_dir():
        return f"is a directory; give a file name such as {path / 'out.json'}"
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        return (f"exists and is {kind_of(mode)}, not a regular file; spheres replaces only "
                "regular files: choose another path")
    folder = _folder(path)
    if not folder.is_dir():
        return (f"folder {folder} does not exist (or is not a folder); create it or choose "
                "another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable; choose another path"
    return None


def output_dir_problem(path: Path) -> str | None:
    """Why `path` cannot be, or be created as, a writable folder, or None (nothing created)."""
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            return f"{probe} is a dangling symbolic link; remove it or choose another folder"
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is" if probe == path else f"is under {probe}, which is"
        return f"{what} a file, not a folder; choose another folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable; choose a folder you can write to"
    return None


def check_output_file(path: Path, option: str) -> None:
    """InputError (exit 2) unless `path` can take a regular file now."""
    problem = output_file_problem(Path(path))
    if problem is not None:
        raise InputError(f"{option} {path} {problem}" if problem.startswith(("is ", "exists"))
                         else f"{option} {path}: {problem}")


def check_output_dir(path: Path, option: str) -> None:
    """InputError (exit 2) unless `path` is, or can be created as, a writable folder."""
    problem = output_dir_problem(Path(path))
    if problem is not None:
        raise InputError(f"{option} {path} {problem}" if problem.startswith(("is ", "exists"))
                         else f"{option} {path}: {problem}")


class OutputError(InputError, OSError):
    """A write that failed (exit 2): still an OSError, with the errno and the output's path."""

    def __init__(self, message: str, cause: OSError, path: Path) -> None:
        OSError.__init__(self, cause.errno, cause.strerror or str(cause), str(path))
        self.message = message

    def __str__(self) -> str:
        return self.message


def write_error(path: Path, exc: OSError, what: str = "") -> OutputError:
    """A write error as one line naming the file, the system's reason and the fix."""
    fix = _WRITE_FIXES.get(exc.errno or 0, "check the path and the disk")
    label = f"{what} {path}" if what else str(path)
    return OutputError(f"could not write {label}: {exc.strerror or exc} ({fix})", exc, path)


Content = bytes | str | Callable[[BinaryIO], object]


def write_output(path: str | Path, content: Content, what: str = "") -> Path:
    """Write `content` (bytes, text, or a callback given the open file) to `path` whole.

    A non-regular file at `path` is refused and never replaced; a write error is an
    InputError (exit 2) naming `path` (`what`: the option, e.g. "--trace").
    """
    path = Path(path)
    if isinstance(content, str):
        data = content.encode()
        writer: Callable[[BinaryIO], object] = lambda fh: fh.write(data)  # noqa: E731
    elif isinstance(content, bytes):
        writer = lambda fh: fh.write(content)  # noqa: E731
    else:
        writer = content
    try:
        return atomic_write(path, writer)
    except OutputError:
        raise
    except OSError as exc:
        raise write_error(path, exc, what) from exc


def finite_json(obj: Any) -> Any:
    """`obj` with every NaN and infinity (also inside lists, tuples and dicts) made None."""
    if isinstance(obj, int | str | bool) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist) and not isinstance(obj, str):
        return finite_json(obj.tolist())  # numpy scalars and arrays
    return obj


def json_text(obj: Any, **kwargs: Any) -> str:
    """Standard JSON (RFC 8259) of `obj`: non-finite numbers written as null."""
    try:  # the common case, no NaN anywhere: one pass, no copy
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


def write_json(path: str | Path, obj: Any, what: str = "", **kwargs: Any) -> Path:
    """`json_text(obj, **kwargs)` written through `write_output`."""
    return write_output(path, json_text(obj, **kwargs), what)
