"""Every bounded wait of the fast engine: an idle deadline and one wait on a condition under it.

Barrier waits, position tickets and the workspace pool all wait on a `threading.Condition` for
another thread, re-checking their abort flag every `poll` seconds, and give up when no thread
made progress for `timeout` seconds. `IdleDeadline.wait` is that one bounded wait, so the three
loops differ only in what they wait for and what they raise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class IdleDeadline:
    """A deadline that moves forward whenever `ticks()` (the total tick count) changes; with
    `ticks` None, a fixed deadline."""

    def __init__(self, timeout: float | None, ticks: Callable[[], int] | None = None) -> None:
        self.timeout = timeout
        self._ticks = ticks
        self._last = ticks() if ticks is not None else None
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (<= 0: expired); None when there is no timeout."""
        if self._deadline is None:
            return None
        now = time.monotonic()
        if self._ticks is not None:
            current = self._ticks()
            if current != self._last:
                self._last = current
                self._deadline = now + self.timeout
        return self._deadline - now

    def wait(self, cond: threading.Condition, poll: float) -> bool:
        """One wait on `cond` (the caller holds it): at most `poll` seconds, never past the
        deadline. False, without waiting, once the deadline has passed: the caller raises."""
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            return False
        cond.wait(poll if remaining is None else min(poll, remaining))
        return True

