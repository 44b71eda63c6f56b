"""Write a file so that no reader, and no crash, ever sees half of it.

The content goes to a temp file in the same folder, is flushed and fsynced, then renamed over
the target (atomic on POSIX); the folder is fsynced so the rename itself survives a crash. On
any failure the temp file is removed and the previous file, if any, is left intact.
The temp name carries the writer's pid, so the next write to the folder removes the temp files
of writers that were killed (their pid is gone). The file gets the mode the umask allows
(0666 & ~umask), like any file the user creates, not mkstemp's private 0600.
Only a regular file is ever replaced: an existing device, FIFO, socket or folder at `path` is
refused with an InputError (exit 2) before anything is written (as root, a rename over
/dev/full would replace the device with a file). Every OSError names the target, never the
temp file.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from plumbing.errors import InputError


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(fh)` on a temp file, then rename it to `path`; returns `path`."""
    path = Path(path)
    refuse_non_regular(path)
    clean_stale_temps(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                   dir=path.parent)
    except OSError as exc:  # a read-only or missing folder: name the file we were writing
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # name the target: a write to a file object carries no path
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None or str(exc.filename) == tmp:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def refuse_non_regular(path: Path) -> None:
    """InputError (exit 2) when `path` exists and is not a regular file (nor a link to one)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError:
        return  # the write itself will report it, naming the path
    if not stat.S_ISREG(mode):
        raise InputError(f"{path} exists and is {kind_of(mode)}, not a regular file; spheres "
                         "replaces only regular files: choose another path")


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words ("a folder", "a character device", ...)."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode()))


_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")  # .<name>.<pid>.<random>.tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove temp files left by killed writers (their pid no longer runs); returns them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def current_umask() -> int:
    """The process umask (Linux: read without changing it; elsewhere set and restored)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
