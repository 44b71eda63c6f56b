"""From an exception to an exit code and one line (SPEC 12): never a bare traceback.

The project's own errors carry their code (plumbing/errors.py). Outside them: an OSError is
the environment (a path that cannot be read or written, a full disk) -> 2 naming the path and
the reason; a signal stop -> 130/143; anything else is a bug -> 5, one line on stderr and the
traceback in a file whose path is printed, so the user can attach it to a report.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from harness.run.stop import Stopped
from plumbing.errors import ExitCode, SpheresError, StallError

_FIXES = {
    errno.ENOSPC: "the disk is full; free space or choose another folder",
    errno.EFBIG: "the file-size limit was reached (ulimit -f); raise it or write less",
    errno.EDQUOT: "the disk quota is exhausted; free space or choose another folder",
    errno.EACCES: "permission denied; choose a path you can access or fix its permissions",
    errno.EPERM: "operation not permitted; choose another path",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.ENOENT: "no such file or folder; check the path",
    errno.ENOTDIR: "a component of the path is a file, not a folder; check the path",
    errno.EISDIR: "it is a folder; give a file name",
}


def describe_os_error(exc: OSError) -> str:
    """One line: the path(s), the system's reason and what to do."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or str(exc)
    fix = _FIXES.get(exc.errno or 0, "check the path and the disk")
    return f"{where}: {reason} ({fix})" if where else f"{reason} ({fix})"


def crash_report_path() -> Path:
    return Path(tempfile.gettempdir()) / (
        f"spheres-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt")


def report_internal_error(exc: BaseException) -> int:
    """Exit 5: one line, and the traceback written to a file whose path is printed."""
    text = "".join(traceback.format_exception(exc))
    line = f"{type(exc).__name__}: {exc}".splitlines()[0][:300] if str(exc) else \
        type(exc).__name__
    try:
        path = crash_report_path()
        path.write_text(f"spheres {' '.join(sys.argv[1:])}\n\n{text}")
        where = f"the traceback is in {path}"
    except OSError:
        sys.stderr.write(text)
        where = "the traceback is above"
    print(f"spheres: internal error (a bug, please report it): {line}; {where}",
          file=sys.stderr, flush=True)
    return ExitCode.INTERNAL


def run_guarded(command: Callable[[], int]) -> int:
    """Run a command and map whatever it raises to SPEC 12's exit code and one line."""
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit must be an OSError (EFBIG), not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        return command()
    except Stopped as exc:
        print(f"spheres: stopped: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except SpheresError as exc:
        print(f"spheres: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("spheres: interrupted", file=sys.stderr, flush=True)
        return ExitCode.SIGINT
    except OSError as exc:
        print(f"spheres: error: {describe_os_error(exc)}", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    except Exception as exc:  # a bug: exit 5, never a bare traceback or exit 1
        return report_internal_error(exc)


def report_stall(exc: StallError, out_dir: Path | None) -> None:
    """Print the diagnosis, save it as JSON, and add a native stack dump where py-spy can."""
    print(f"spheres: STALL: {exc}", file=sys.stderr, flush=True)
    diagnosis = dict(exc.diagnosis)
    try:
        from harness.measure.pyspy import pyspy_dump
        diagnosis["native_stacks"] = pyspy_dump(os.getpid())
    except Exception as err:  # the diagnosis must still be written
        diagnosis["native_stacks"] = f"unavailable: {err}"
    name = f"stall-{time.strftime('%Y%m%d-%H%M%S')}.json"
    text = json.dumps(diagnosis, indent=2, default=str)
    print(f"spheres: {save_text(text, out_dir or Path('.'), name, 'stall diagnosis')}",
          file=sys.stderr, flush=True)


def save_text(text: str, folder: Path, name: str, what: str) -> str:
    """Write `folder/name`; when that folder cannot be written, the temp folder (as the crash
    file); when neither can, `text` on stderr. Returns the line that says where it went."""
    problem = None
    for where in (folder, Path(tempfile.gettempdir())):
        try:
            where.mkdir(parents=True, exist_ok=True)
            path = where / name
            path.write_text(text)
        except OSError as err:
            problem = problem or f"{where}: {err.strerror or err}"
            continue
        if problem is None:
            return f"{what} written to {path}"
        return f"{what} written to {path} (could not write it into {problem})"
    sys.stderr.write(text + "\n")
    return f"{what} printed above (could not write it into {problem} nor the temp folder)"
