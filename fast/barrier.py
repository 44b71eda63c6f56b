"""A barrier in the manner of CPython's `threading.Barrier`, with diagnosis built in.

Same shape as CPython's: a default timeout, a timeout BREAKS the barrier for every waiter,
`abort()` for the control and watchdog threads, states as an Enum. Two additions the seed's
deadlock needed: every arrival is recorded by party id, so a diagnosis can say WHO never arrived
(the original waited forever for a thread that did not exist), and the timeout can be an IDLE
timeout: given a `ticks` callable (the total of the heartbeat tick counters), the clock
restarts whenever the system made progress, so a slow but healthy run never breaks a barrier
while a real stall does.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

from fast.deadline import IdleDeadline

POLL_SECONDS = 0.2  # how often a waiter re-checks the idle deadline and abort flags


class BarrierState(enum.Enum):
    FILLING = "filling"  # parties are arriving
    DRAINING = "draining"  # everyone arrived; waiters are leaving
    RESETTING = "resetting"  # reset() called while threads were waiting
    BROKEN = "broken"  # timed out or aborted: every wait raises until reset()


class BarrierBroken(threading.BrokenBarrierError):
    """A wait on a broken barrier; the message names the barrier, why, and who was missing."""

    def __init__(self, name: str, reason: str, missing: list[int] | None = None,
                 timed_out: bool = False) -> None:
        self.name = name
        self.reason = reason
        self.missing = list(missing or [])
        self.timed_out = timed_out
        who = f"; parties that never arrived: {self.missing}" if self.missing else ""
        super().__init__(f"barrier {name!r} is broken: {reason}{who}")


class Barrier:
    """`parties` threads meet here; `wait(party)` returns when all have arrived.

    Party ids are the caller's: workers 0..T-1 and Node Zero T in the trainer. The count must
    equal the threads that wait (SPEC 8.4); if it does not, the watchdog or the timeout finds
    it and `describe()` names the missing ids.
    """

    def __init__(self, parties: int, name: str, timeout: float | None = None,
                 ticks: Callable[[], int] | None = None) -> None:
        if parties < 1:
            raise ValueError(f"barrier {name!r} needs at least 1 party, got {parties}")
        # guards every field below (state, count, arrivals, generation); waiters sleep on it
        self._cond = threading.Condition(threading.Lock())
        self._parties = parties
        self.name = name
        self._timeout = timeout
        self._ticks = ticks
        self._state = BarrierState.FILLING
        self._count = 0  # threads inside wait() (arrived and not yet left)
        self._arrived: dict[int, float] = {}  # party id -> arrival time, this generation
        self._anonymous = 0  # arrivals without a party id, this generation
        self._first_arrival: float | None = None
        self._generation = 0  # completed rounds
        self._broken: BarrierBroken | None = None

    # -- public -------------------------------------------------------------------------------

    def wait(self, party: int | None = None, timeout: float | None = None) -> int:
        """Arrive as `party` and block until every party arrived; returns the arrival index.

        Raises BarrierBroken if the barrier is or becomes broken (timeout or abort).
        """
        deadline = IdleDeadline(self._timeout if timeout is None else timeout, self._ticks)
        with self._cond:
            self._enter(deadline)
            index = self._count
            self._count += 1
            self._record_arrival(party)
            try:
                if index + 1 == self._parties:
                    self._release()
                else:
                    self._wait_for_release(deadline)
                return index
            finally:
                self._count -= 1
                self._exit()

    def abort(self, reason: str = "aborted") -> None:
        """Break the barrier: every current and future waiter raises BarrierBroken."""
        with self._cond:
            self._break(reason, timed_out=False)

    def reset(self) -> None:
        """Back to an empty FILLING state; current waiters raise BarrierBroken."""
        with self._cond:
            if self._count > 0:
                if self._state is BarrierState.FILLING:
                    self._state = BarrierState.RESETTING
                elif self._state is BarrierState.BROKEN:
                    self._state = BarrierState.RESETTING
            else:
                self._state = BarrierState.FILLING
            self._broken = None
            self._new_generation()
            self._cond.notify_all()

    @property
    def parties(self) -> int:
        return self._parties

    @property
    def n_waiting(self) -> int:
        return self._count if self._state is BarrierState.FILLING else 0

    @property
    def state(self) -> BarrierState:
        return self._state

    @property
    def broken(self) -> bool:
        return self._state is BarrierState.BROKEN

    def missing(self) -> list[int]:
        """Party ids (0..parties-1) that have not arrived in the current round."""
        with self._cond:
            return self._missing()

    def describe(self) -> dict:
        """A snapshot for diagnoses: who arrived, who is missing, for how long."""
        with self._cond:
            now = time.monotonic()
            waiting = self._count if self._state is BarrierState.FILLING else 0
            return {
                "name": self.name,
                "parties": self._parties,
                "state": self._state.name,
                "generation": self._generation,
                "waiting": waiting,
                "arrived": sorted(self._arrived),
                "missing": self._missing() if waiting else [],
                "waiting_seconds": (now - self._first_arrival
                                    if waiting and self._first_arrival is not None else 0.0),
                "first_arrival": self._first_arrival if waiting else None,
                "broken_reason": self._broken.reason if self._broken else None,
            }

    # -- private steps, as in CPython's Barrier ----------------------------------------------

    def _enter(self, deadline: IdleDeadline) -> None:
        """Block while the previous round drains or a reset is in progress."""
        while self._state in (BarrierState.DRAINING, BarrierState.RESETTING):
            self._timed_wait(deadline)
        if self._state is BarrierState.BROKEN:
            raise self._broken_error()

    def _record_arrival(self, party: int | None) -> None:
        if self._first_arrival is None:
            self._first_arrival = time.monotonic()
        if party is None:
            self._anonymous += 1
        else:
            self._arrived[party] = time.monotonic()

    def _release(self) -> None:
        self._state = BarrierState.DRAINING
        self._generation += 1
        self._new_generation()
        self._cond.notify_all()

    def _wait_for_release(self, deadline: IdleDeadline) -> None:
        while self._state is BarrierState.FILLING:
            self._timed_wait(deadline)
        if self._state in (BarrierState.BROKEN, BarrierState.RESETTING):
            raise self._broken_error()

    def _timed_wait(self, deadline: IdleDeadline) -> None:
        """One bounded wait; breaks the barrier for everyone when the deadline has passed."""
        if not deadline.wait(self._cond, POLL_SECONDS):
            self._break(f"timed out after {deadline.timeout:g} s without progress "
                        f"({len(self._arrived) + self._anonymous} of {self._parties} arrived)",
                        timed_out=True)
            raise self._broken_error()

    def _exit(self) -> None:
        if self._count == 0 and self._state in (BarrierState.DRAINING, BarrierState.RESETTING):
            self._state = BarrierState.FILLING
            self._cond.notify_all()

    def _break(self, reason: str, timed_out: bool) -> None:
        if self._state is not BarrierState.BROKEN:
            self._broken = BarrierBroken(self.name, reason, self._missing(), timed_out)
            self._state = BarrierState.BROKEN
        self._cond.notify_all()

    def _broken_error(self) -> BarrierBroken:
        b = self._broken
        if b is None:  # RESETTING
            return BarrierBroken(self.name, "reset while waiting")
        return BarrierBroken(b.name, b.reason, b.missing, b.timed_out)

    def _missing(self) -> list[int]:
        if self._anonymous:
            return []  # cannot tell who is missing when arrivals carry no id
        return [p for p in range(self._parties) if p not in self._arrived]

    def _new_generation(self) -> None:
        self._arrived = {}
        self._anonymous = 0
        self._first_arrival = None
