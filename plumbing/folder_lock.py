"""An output folder belongs to one run at a time: an advisory lock file naming its owner.

`FolderLock(path, what)` takes `fcntl.flock(LOCK_EX | LOCK_NB)` on an open lock file and writes
the owner's PID and host into it. A second run finds the lock held and is refused with an
InputError (exit 2) naming the owner. The kernel drops the lock when its process dies, so a
lock file left by a killed run is free: it is taken over with a message naming the dead owner.
On release the file is removed while still locked; a run that opened the old file meanwhile
sees that the path no longer names the file it locked, and tries again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from plumbing.errors import InputError

LOCK_NAME = ".spheres-lock"


def _owner(text: str) -> str:
    try:
        data = json.loads(text)
        return f"pid {int(data['pid'])} on host {data['host']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


class FolderLock:
    """Hold `path` (the lock file) for the life of the `with` block."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what  # e.g. "--checkpoint-dir runs/a", for the messages
        self.fd: int | None = None

    def acquire(self) -> None:
        for _ in range(10):  # only a release racing with us makes this loop
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(os.pread(fd, 4096, 0).decode(errors="replace"))
                os.close(fd)
                raise InputError(f"{self.what} is in use by another spheres run ({owner}; lock "
                                 f"file {self.path}); wait for it to finish or choose another "
                                 "path") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and removed between our open and our flock
                os.close(fd)
                continue
            self._claim(fd)
            return
        raise InputError(f"{self.what}: could not take the lock file {self.path}; try again")

    def _claim(self, fd: int) -> None:
        stale = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if stale:
            print(f"spheres: note: {self.what}: took over the lock left by {_owner(stale)}, "
                  "which no longer holds it (the run ended without releasing it)",
                  file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(),
                  0)
        self.fd = fd

    def release(self) -> None:
        """Drop the lock and remove its file. A file that cannot be removed (the folder became
        read-only) is left: the flock is what locks, so the next run takes the file over; and
        it never replaces the error that ended the run (a checkpoint that could not be
        written was once reported as "rock/.spheres-lock: Operation not permitted")."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            print(f"spheres: note: {self.what}: could not remove the lock file {self.path} "
                  f"({exc.strerror or exc}); it is free, the next run takes it over",
                  file=sys.stderr, flush=True)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def lock_folder(folder: Path, what: str) -> FolderLock:
    """The lock inside `folder` (created, with its parents, when missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return FolderLock(folder / LOCK_NAME, what)


def lock_beside(folder: Path, what: str) -> FolderLock:
    """The lock of a folder that is replaced whole (a report) or of an output file: a sibling
    `.NAME.spheres-lock`."""
    folder = Path(folder).resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    return FolderLock(folder.parent / f".{folder.name}{LOCK_NAME}", what)
