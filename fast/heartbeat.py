"""Per-thread heartbeats: what each thread is doing, and a tick counter that proves it moves.

Each thread owns one `Heartbeat` (written only by that thread) and one slot of a shared int64
`ticks` array. The Numba kernels increment the slot inside long work (at least once per layer),
and every phase change increments it too, so "the counter did not move for the stall timeout"
means the thread really did nothing; a slow thread keeps moving its counter (SPEC 5).
The record also accumulates seconds per phase and the thread's CPU time: the trainer's
per-thread statistics come from here, measured by the thread itself (time.thread_time).
The phase and the moment it was entered are published together as one tuple (`entered`, a
single store): a reader that saw a new working phase with the old phase's start time would
report a false stall after a long quiet phase. Readers take `entered` once per sample.
"""

from __future__ import annotations

import enum
import time

import numpy as np

from fast.perturb import at_sync_point


class Phase(enum.Enum):
    IDLE = "idle"  # between steps, waiting for the next group (legitimately quiet)
    DISPATCHING = "dispatching"  # Node Zero: handing out a group
    WAITING_TICKET = "waiting for ticket"  # worker: batch b waits for batch b-12 of its position
    COMPUTING = "computing"  # worker: forward+backward of one batch
    WAITING_A = "waiting at Point A"  # all batches of the group done?
    REDUCING = "reducing"  # summing the 12 position segments over a parameter chunk
    WAITING_REDUCED = "waiting for reduction"  # all chunks summed?
    DECIDING = "deciding"  # Node Zero: norm, finiteness, clip scale, learning rate
    WAITING_DECISION = "waiting for decision"  # workers wait for Node Zero's decision
    UPDATING = "updating"  # AdamW over a parameter chunk
    WAITING_B = "waiting at Point B"  # new weights published?
    STOPPED = "stopped"  # the thread has ended


# Phases in which a thread must advance its own counter; quiet here for stall_timeout = stuck.
WORKING_PHASES = frozenset({Phase.DISPATCHING, Phase.COMPUTING, Phase.REDUCING, Phase.DECIDING,
                            Phase.UPDATING})
# Phases in which a thread waits for others (a stall here is blamed on whoever is missing).
WAITING_PHASES = frozenset({Phase.WAITING_TICKET, Phase.WAITING_A, Phase.WAITING_REDUCED,
                            Phase.WAITING_DECISION, Phase.WAITING_B})


class Heartbeat:
    """One thread's published state; written by its own thread, read by the watchdog."""

    def __init__(self, board: HeartbeatBoard, slot: int, role: str, ident: int | None,
                 name: str) -> None:
        self.board = board
        self.slot = slot
        self.role = role  # "worker" or "node-zero"
        self.ident = ident  # worker index; None for Node Zero
        self.name = name  # thread name, e.g. ks-worker-7
        self.entered: tuple[Phase, float] = (Phase.IDLE, time.monotonic())  # one store
        self.step: int | None = None
        self.batch: int | None = None
        self.layer: int | None = None
        self.phase_seconds = {p: 0.0 for p in Phase}
        self.batches = 0  # batches computed by this thread (always 0 for Node Zero)
        self.cpu_seconds = 0.0  # time.thread_time() of this thread, refreshed at phase changes
        self._cpu_start: float | None = None

    def start(self) -> None:
        """Called first thing in the owning thread: CPU time is counted from here."""
        self._cpu_start = time.thread_time()
        self.entered = (self.phase, time.monotonic())

    def set(self, phase: Phase, *, step: int | None = None, batch: int | None = None) -> None:
        """Enter `phase` (counts as a tick); time spent in the previous phase is recorded."""
        at_sync_point(self.name, phase.name, step if step is not None else self.step)
        now = time.monotonic()
        previous, since = self.entered
        self.phase_seconds[previous] += now - since
        if self._cpu_start is not None:
            self.cpu_seconds = time.thread_time() - self._cpu_start
        if step is not None:
            self.step = step
        self.batch = batch
        self.layer = None
        self.entered = (phase, now)  # phase and its start published together
        self.board.ticks[self.slot] += 1

    @property
    def phase(self) -> Phase:
        return self.entered[0]

    @property
    def phase_since(self) -> float:
        return self.entered[1]

    def tick(self) -> None:
        """One tick inside long Python-level work (the kernels tick the same slot themselves)."""
        self.board.ticks[self.slot] += 1

    def snapshot(self) -> dict:
        phase, since = self.entered
        return {
            "role": self.role, "id": self.ident, "name": self.name, "slot": self.slot,
            "phase": phase.name, "step": self.step, "batch": self.batch,
            # the key stays "progress": stall diagnoses (and results.json's drills) carry it
            "layer": self.layer, "progress": int(self.board.ticks[self.slot]),
            "in_phase_seconds": round(time.monotonic() - since, 3),
        }

    def stats(self) -> dict:
        """Per-thread statistics (seconds include the phase currently running)."""
        seconds = dict(self.phase_seconds)
        phase, since = self.entered
        seconds[phase] += time.monotonic() - since
        return {
            "role": self.role, "id": self.ident, "name": self.name,
            "batches": self.batches,
            "cpu_seconds": self.cpu_seconds,
            "compute_seconds": seconds[Phase.COMPUTING],
            "ticket_wait_seconds": seconds[Phase.WAITING_TICKET],
            "wait_a_seconds": seconds[Phase.WAITING_A],
            "wait_b_seconds": seconds[Phase.WAITING_B],
            "reduce_seconds": seconds[Phase.REDUCING],  # workers' share of the reduction
            "decide_seconds": seconds[Phase.DECIDING],  # Node Zero's checks and step scalars
            "update_seconds": seconds[Phase.UPDATING],
            "phase_seconds": {p.name: s for p, s in seconds.items()},
        }


class HeartbeatBoard:
    """All heartbeats of one trainer and the shared tick counters `ticks` (one slot per thread)."""

    def __init__(self) -> None:
        self.records: list[Heartbeat] = []
        self.ticks = np.zeros(0, dtype=np.int64)

    def add(self, role: str, ident: int | None, name: str) -> Heartbeat:
        """Register a thread before any thread starts (the array is not resized later)."""
        slot = len(self.records)
        self.ticks = np.concatenate([self.ticks, np.zeros(1, dtype=np.int64)])
        record = Heartbeat(self, slot, role, ident, name)
        self.records.append(record)
        return record

    def total_ticks(self) -> int:
        """Sum of every counter: changes whenever any thread did anything."""
        return int(self.ticks.sum())

    def snapshot(self) -> list[dict]:
        return [r.snapshot() for r in self.records]
