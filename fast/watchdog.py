"""Stall detection: tell slow work (counters advance) from a stall (nothing advances).

The `ks-watchdog` thread samples every heartbeat a few times a second. Two rules, both measured
against `stall_timeout` (SPEC 5, 8.13):
1. a thread in a working phase (computing, reducing, updating, ...) whose own counter has not
   moved is STUCK;
2. while a step is in flight, if no counter of any thread has moved, the system is STALLED;
   the culprits are the parties missing from the barrier that has waited longest (a barrier
   with one party too many has a missing party that is no thread at all).
On a stall it builds a diagnosis (stuck threads with role, id, phase, step and batch; every
barrier; every thread's Python stack), logs it and hands a StallError to `on_stall`, which
aborts the barriers so healthy threads stop. It fires at most once.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

from fast.barrier import Barrier
from fast.heartbeat import WORKING_PHASES, HeartbeatBoard, Phase
from plumbing.errors import StallError

log = logging.getLogger("fast.watchdog")

SAMPLE_SECONDS = 0.1  # how often the counters are read (well below any sensible stall timeout)


class Watchdog:
    """Samples heartbeats in thread `ks-watchdog`; calls `on_stall(StallError)` once on a stall."""

    def __init__(self, board: HeartbeatBoard, barriers: Sequence[Barrier],
                 party_names: dict[int, str], stall_timeout: float,
                 in_flight_since: Callable[[], float | None],
                 on_stall: Callable[[StallError], None],
                 sample_seconds: float = SAMPLE_SECONDS) -> None:
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be positive, got {stall_timeout}")
        self.board = board
        self.barriers = list(barriers)
        self.party_names = dict(party_names)
        self.stall_timeout = stall_timeout
        self.in_flight_since = in_flight_since
        self.on_stall = on_stall
        self.sample_seconds = min(sample_seconds, stall_timeout / 4)
        self.diagnosis: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ks-watchdog", daemon=True)
        self._last_value = [int(v) for v in board.ticks]
        now = time.monotonic()
        self._last_change = [now] * len(self._last_value)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop and join; True when the thread has ended."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.sample_seconds):
                error = self.check(time.monotonic())
                if error is not None:
                    self.on_stall(error)
                    return
        except BaseException as exc:  # the watchdog must never die silently
            log.exception("watchdog failed: %s", exc)

    def check(self, now: float) -> StallError | None:
        """One sample: update per-thread change times, return a StallError if stalled."""
        ticks = self.board.ticks
        for slot in range(len(self._last_value)):
            value = int(ticks[slot])
            if value != self._last_value[slot]:
                self._last_value[slot] = value
                self._last_change[slot] = now
        records = self.board.records
        stuck = []
        for r in records:
            phase, since = r.entered  # one read: a phase with its own start time
            quiet = now - max(self._last_change[r.slot], since)
            if phase in WORKING_PHASES and quiet >= self.stall_timeout:
                stuck.append(r)
        reason = None
        barrier_culprits: list[dict] = []
        if stuck:
            reason = "no progress in a working phase"
        else:
            since = self.in_flight_since()
            if since is not None:
                system_quiet = now - max([since, *self._last_change])
                busy = [r for r in records if r.phase not in (Phase.IDLE, Phase.STOPPED)]
                if busy and system_quiet >= self.stall_timeout:
                    reason = "no thread made progress"
                    barrier_culprits = self._barrier_culprits()
                    named = {c["name"] for c in barrier_culprits}
                    stuck = [r for r in records if r.name in named] or busy
        if reason is None:
            return None
        return self._stall(now, reason, stuck, barrier_culprits)

    # -- diagnosis ----------------------------------------------------------------------------

    def _barrier_culprits(self) -> list[dict]:
        """Missing parties of the barrier that has waited longest (the first wait of the jam)."""
        waiting = [b.describe() for b in self.barriers]
        waiting = [d for d in waiting if d["waiting"] and d["first_arrival"] is not None]
        if not waiting:
            return []
        oldest = min(waiting, key=lambda d: d["first_arrival"])
        return [{"barrier": oldest["name"], "party": p,
                 "name": self.party_names.get(p, f"party {p} (no such thread: the barrier "
                                                 f"has more parties than threads)")}
                for p in oldest["missing"]]

    def _stall(self, now: float, reason: str, stuck: list, barrier_culprits: list[dict]
               ) -> StallError:
        stuck_info = []
        for r in stuck:
            info = r.snapshot()
            info["quiet_seconds"] = round(now - max(self._last_change[r.slot], r.phase_since), 3)
            stuck_info.append(info)
        phantom = [c for c in barrier_culprits if c["name"] not in {r.name for r in stuck}]
        diagnosis = {
            "time": time.time(),
            "reason": reason,
            "stall_timeout": self.stall_timeout,
            "stuck": stuck_info,
            "missing_at_barrier": barrier_culprits,
            "threads": self.board.snapshot(),
            "barriers": [b.describe() for b in self.barriers],
            "stacks": thread_stacks(),
        }
        parts = [_thread_line(r) for r in stuck_info]
        parts += [f"{c['name']} never arrived at barrier {c['barrier']!r}" for c in phantom]
        where = ""
        if barrier_culprits:
            where = (f"; barrier {barrier_culprits[0]['barrier']!r} is missing "
                     + ", ".join(c["name"] for c in barrier_culprits))
        message = (f"stall: {reason} for {self.stall_timeout:g} s (stall timeout): "
                   + "; ".join(parts) + where
                   + ". Thread stacks are in the diagnosis; rerun with a larger "
                     "--stall-timeout if this work is legitimately slow without progress.")
        self.diagnosis = diagnosis
        log.error("%s", message)
        return StallError(message, diagnosis)


def _thread_line(r: dict) -> str:
    who = r["role"] if r["id"] is None else f"{r['role']} {r['id']}"
    at = f"step {r['step']}" + (f" batch {r['batch']}" if r["batch"] is not None else "")
    return (f"{r['name']} ({who}, {r['phase']} at {at}, "
            f"no progress for {r['quiet_seconds']:.1f} s)")


def thread_stacks() -> dict[str, str]:
    """Every live thread's Python stack, by thread name (sys._current_frames)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    stacks = {}
    for ident, frame in sys._current_frames().items():
        name = names.get(ident, f"thread-{ident}")
        stacks[name] = "".join(traceback.format_stack(frame))
    return stacks
