"""SIGINT and SIGTERM during training: stop at the next safe point, then exit 130 or 143.

`GracefulStop` is installed by the CLI for every command. Outside a deferring block a signal
stops at once (raises `Stopped`: nothing is in flight that could be saved). Inside
`deferred()` (the training loop) the first signal only sets a flag: the loop finishes the step
in flight (the weights are then consistent), the caller checkpoints them when it has a
--checkpoint-dir, and `Stopped` ends the run. A second signal stops at once, without a
checkpoint. So a stop takes at most one step plus the checkpoint write, and nothing written is
ever half a step.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from plumbing.errors import ExitCode, SpheresError

SIGNAL_EXIT = {signal.SIGINT: ExitCode.SIGINT, signal.SIGTERM: ExitCode.SIGTERM}  # 128 + N


class Stopped(SpheresError):
    """The run was stopped by a signal; exit 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, signum: int, message: str, *, consistent: bool) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = SIGNAL_EXIT.get(signal.Signals(signum), 128 + signum)
        self.consistent = consistent  # True: stopped between steps, the weights are whole


class GracefulStop:
    """Installs the two handlers for the duration of a `with` block (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._deferring = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        global _active
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNAL_EXIT:
                self._previous[sig] = signal.signal(sig, self._handle)
            _active = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _active
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        if self._previous:
            _active = None
        self._previous.clear()

    @contextmanager
    def deferred(self) -> Iterator[GracefulStop]:
        """Within this block the first signal waits for the next safe point (`requested`)."""
        self._deferring = True
        try:
            yield self
        finally:
            self._deferring = False

    def requested(self) -> int | None:
        """The signal received, or None: polled by the training loop between steps."""
        return self.signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self._deferring:
            raise Stopped(signum, f"{name} received: stopped", consistent=False)
        if self.signum is not None:
            raise Stopped(signum, f"{name} received twice: stopped at once, mid-step; "
                                  "no checkpoint written", consistent=False)
        self.signum = signum
        print(f"spheres: {name} received: stopping after the current step "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)


_active: GracefulStop | None = None


def active() -> GracefulStop | None:
    """The handler the CLI installed, if any (None in library use and in worker threads)."""
    return _active
