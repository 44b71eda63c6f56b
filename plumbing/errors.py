"""The error families every engine and the command line agree on, with their exit codes.

SPEC sections 6 and 12: 0 ok, 1 a verification failed, 2 bad input or usage, 3 stall or
deadlock, 4 a worker or Node Zero fault, 5 an internal error, 128 + N after signal N. The CLI
maps an exception to its code by class alone. `ExitCode` is the one definition of the codes.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit code `spheres` returns (SPEC 6 and 12)."""

    OK = 0
    VERIFY_FAILED = 1  # a verification, check or benchmark target failed
    USAGE = 2  # bad input, usage or environment (a path, a full disk, a bad checkpoint)
    STALL = 3  # stall or deadlock: the watchdog saw no progress
    FAULT = 4  # a worker or Node Zero fault
    INTERNAL = 5  # a bug: one line, the traceback in a file
    SIGHUP = 129  # 128 + the signal number, as POSIX shells report it
    SIGINT = 130
    SIGTERM = 143


class SpheresError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code: int = ExitCode.VERIFY_FAILED


class InputError(SpheresError):
    """Bad input or usage: a missing file, a malformed corpus, an impossible size."""

    exit_code = ExitCode.USAGE


class DataError(InputError):
    """A data source that cannot be read or holds nothing to train on (exit code 2)."""


class FaultError(SpheresError):
    """A worker or Node Zero failed: an exception or a non-finite gradient (exit 4)."""

    exit_code = ExitCode.FAULT


class NonFiniteGradientError(FaultError):
    """A gradient held NaN or Inf; names the parameter (and batch, where known)."""

    def __init__(self, parameter: str, batch: int | None = None, step: int | None = None,
                 thread: str | None = None) -> None:
        self.parameter = parameter
        self.batch = batch
        self.step = step
        self.thread = thread
        where = []
        if thread is not None:
            where.append(f"thread {thread}")
        if step is not None:
            where.append(f"step {step}")
        if batch is not None:
            where.append(f"batch {batch}")
        at = f" ({', '.join(where)})" if where else ""
        super().__init__(
            f"non-finite gradient in parameter {parameter!r}{at}; the step was not applied"
        )


class StallError(SpheresError):
    """The watchdog saw no progress for the stall timeout; carries the diagnosis (exit 3)."""

    exit_code = ExitCode.STALL

    def __init__(self, message: str, diagnosis: dict | None = None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis or {}
