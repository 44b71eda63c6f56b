"""The error families every engine and the command line agree on, with their exit codes.

SPEC section 6: 0 ok, 1 a verification failed, 2 bad input or usage, 3 stall or deadlock,
4 a worker or Node Zero fault. The CLI maps an exception to its code by class alone.
"""

from __future__ import annotations


class SpheresError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code = 1


class InputError(SpheresError):
    """Bad input or usage: a missing file, a malformed corpus, an impossible size."""

    exit_code = 2


class DataError(InputError):
    """A data source that cannot be read or holds nothing to train on (exit code 2)."""


class FaultError(SpheresError):
    """A worker or Node Zero failed: an exception or a non-finite gradient (exit 4)."""

    exit_code = 4


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

    exit_code = 3

    def __init__(self, message: str, diagnosis: dict | None = None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis or {}
