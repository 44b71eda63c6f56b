"""The run record: what every thread did, written while it happened (SPEC 11).

Every verdict about the threaded system reads this record, never the plan (`fast.spheres`) or
the configuration: which thread ran each batch and when, which position segment and sphere each
gradient was folded into and as which fold of that position, every barrier arrival and how long
its thread waited, Node Zero's time per phase under the name of what it really did (dispatching,
deciding, waiting while the workers reduce or update), and the caller's checkpoint writes.

Cheap by construction: each thread appends tuples to its OWN lists (no lock on the hot path;
`list.append` is atomic under the GIL and nobody else writes them), timestamps are
`time.perf_counter()` seconds since the recorder was made. Readers look only after a step's
`done` event (happens-before), or after `close()`. The fold counter of a position is written
only by the batch that holds the position's ticket, so it needs no lock either.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from fast.spheres import POSITIONS

# span kinds (the trace and the Gantt colour by these)
BATCH = "batch"  # forward + backward of one batch, into its own gradient buffer
FORWARD = "forward"  # inside a batch: one micro-batch's forward and loss (nested in BATCH)
BACKWARD = "backward"  # inside a batch: one micro-batch's backward (nested in BATCH)
NESTED = (FORWARD, BACKWARD)  # kinds that lie inside a BATCH span of the same thread
TICKET = "ticket wait"  # a computed batch waits for its fold turn (its position's previous batch)
GRANT = "buffer wait"  # a batch waits for a gradient buffer (granted in batch order)
WORKSPACE = "workspace wait"  # a batch waits for an activation workspace (min(T, cores) exist)
FOLDING = "folding"  # a batch adds its buffer into its position segment (one P-length add)
DISPATCH = "dispatching"  # Node Zero hands out the group (its batch field holds g)
REDUCE = "reducing"  # a worker sums the 12 position segments over its chunks
DECIDE = "deciding"  # Node Zero: loss, global norm, finiteness, clip scale, learning rate
UPDATE = "updating"  # a worker applies AdamW over its chunks
CHECKPOINT = "checkpoint write"  # the caller writes a checkpoint
STEP = "step"  # Node Zero: from handing out the group to leaving Point B
IN_FLIGHT = "batches in flight"  # derived from BATCH spans (`in_flight`): the trace's counter
WAIT = "wait "  # prefix: "wait point-A", "wait reduced", "wait decided", "wait point-B"


# fold-digest stages, in the order a step runs them (FoldDigests keys: (step, stage, index))
FOLD = "fold"  # index = batch: its position segment right after the batch was folded in
SUM = "sum"  # index = chunk: the 12 position segments summed over that chunk, at `reduced`
UPDATE_CHUNK = "update"  # index = chunk: the weights of that chunk after AdamW, at Point B
STAGES = (FOLD, SUM, UPDATE_CHUNK)


def digest64(values: np.ndarray) -> int:
    """A 64-bit BLAKE2b digest of an array's bytes (equal digests: equal bits, in practice)."""
    return int.from_bytes(hashlib.blake2b(np.ascontiguousarray(values).view(np.uint8),
                                          digest_size=8).digest(), "little")


class FoldDigests:
    """A digest of every partial sum of the reduction tree, kept only when asked (`--locate`).

    Keys are (step, stage, index): every fold of a batch into its position segment (written by
    the batch holding the position's ticket), every chunk of the 12-segment sum and of the
    updated weights (written by Node Zero once the stage's barrier has passed). One writer per
    key, so a dict store is enough (atomic under the GIL, distinct keys). Keys in `capture`
    also keep a copy of the values (with their flat offset), for the located report's tensor,
    index, both values and ULPs. Digests only read the arrays: recording never changes a bit,
    and a trainer without it pays one `is None` per batch and per step.
    """

    def __init__(self, capture=()) -> None:
        self.digests: dict[tuple[int, str, int], int] = {}
        self.where: dict[tuple[int, str, int], tuple[int, int]] = {}  # fold: (position, sphere)
        self.capture = frozenset(capture)
        self.captured: dict[tuple[int, str, int], tuple[int, np.ndarray]] = {}

    def note(self, key: tuple[int, str, int], values: np.ndarray, offset: int = 0,
             where: tuple[int, int] | None = None) -> None:
        self.digests[key] = digest64(values)
        if where is not None:
            self.where[key] = where
        if key in self.capture:
            self.captured[key] = (offset, np.array(values, copy=True))

    def note_chunks(self, step: int, stage: str, flat: np.ndarray, chunks) -> None:
        """Every reduction/update chunk of `flat` (Node Zero, after the barrier that ends the
        stage: what the next stage reads, whoever wrote it)."""
        for c, (lo, hi) in enumerate(chunks):
            self.note((step, stage, c), flat[lo:hi], lo)

    def ordered(self) -> list[tuple[int, str, int]]:
        """Every key in the order the tree computes them: step, then stage, then index."""
        return sorted(self.digests, key=lambda k: (k[0], STAGES.index(k[1]), k[2]))


def wait_kind(barrier_name: str) -> str:
    """Span kind of a wait at barrier `barrier_name` (e.g. 'wait point-A')."""
    return WAIT + barrier_name


@dataclass
class ThreadLog:
    """One thread's record; appended to only by that thread."""

    name: str  # thread name, e.g. ks-worker-7
    role: str  # "worker", "node-zero" or "caller"
    ident: int | None = None  # worker index; None otherwise
    position: int | None = None  # the symmetry position the worker says it sits at
    # (kind, step, start s, end s, batch or -1)
    spans: list[tuple[str, int, float, float, int]] = field(default_factory=list)
    # (step, batch, position segment written, fold index within that position this step)
    folds: list[tuple[int, int, int, int]] = field(default_factory=list)

    def span(self, kind: str, step: int, start: float, end: float, batch: int = -1) -> None:
        self.spans.append((kind, step, start, end, batch))

    def micro_spans(self, step: int, batch: int, marks, start: float, end: float) -> None:
        """Forward and backward spans of each micro-batch from the kernel's cycle marks
        (`fast.model.batch_forward_backward(marks=)`), placed on this clock by mapping the
        first mark to `start` and the last to `end` (the call's own boundaries) linearly: the
        cycle counter is constant-rate, so the boundaries inside fall where they happened."""
        c0, c1 = int(marks[0]), int(marks[-1])
        if c1 <= c0:
            return
        scale = (end - start) / (c1 - c0)
        at, last = [], start
        for c in marks:  # a VM's per-core counters may disagree a little if the thread moved:
            last = min(max(start + (int(c) - c0) * scale, last), end)  # keep order and bounds
            at.append(last)
        for m in range((len(at) - 1) // 2):
            self.spans.append((FORWARD, step, at[2 * m], at[2 * m + 1], batch))
            self.spans.append((BACKWARD, step, at[2 * m + 1], at[2 * m + 2], batch))

    def fold(self, step: int, batch: int, position: int, order: int) -> None:
        self.folds.append((step, batch, position, order))


@dataclass(frozen=True)
class Retention:
    """Which steps a long run keeps in memory: every step of the first `first`, then every
    `every`-th (steps are 1-based job numbers). Bounds the record (and so the trace) on long
    runs; the checks of short runs (analyze, verify) see every step."""

    first: int = 20
    every: int = 10

    def keeps(self, step: int) -> bool:
        return step <= self.first or (step - 1 - self.first) % self.every == 0


class Recorder:
    """The record of one trainer: a ThreadLog per thread, counters, and per-position fold counts."""

    def __init__(self, retention: Retention | None = Retention()) -> None:
        self.retention = retention  # None: keep every step
        self.origin = time.perf_counter()
        self.logs: list[ThreadLog] = []
        self._by_thread: dict[int, ThreadLog] = {}
        self._lock = threading.Lock()  # guards registering threads (never the hot path)
        self.fold_counts = [0] * POSITIONS  # position p: folds so far this step (ticket-guarded)
        self.counters: list[tuple[str, float, float]] = []  # (name, time s, value), caller only
        self.dropped_steps = 0  # steps left out by the retention policy (Node Zero only)
        self.digests: FoldDigests | None = None  # fold digests, only when asked (--locate)

    def now(self) -> float:
        """Seconds since the recorder was made (perf_counter: monotonic, sub-microsecond)."""
        return time.perf_counter() - self.origin

    def register(self, name: str, role: str, ident: int | None = None,
                 position: int | None = None) -> ThreadLog:
        """A log for a thread about to start (its thread attaches to it with `attach`)."""
        log = ThreadLog(name, role, ident, position)
        with self._lock:
            self.logs.append(log)
        return log

    def attach(self, log: ThreadLog) -> None:
        """Called first thing in the owning thread: `here()` finds this log from now on."""
        with self._lock:
            self._by_thread[threading.get_ident()] = log

    def here(self) -> ThreadLog:
        """The calling thread's log (a caller thread not registered gets one on first use)."""
        log = self._by_thread.get(threading.get_ident())
        if log is None:
            log = self.register(threading.current_thread().name, "caller")
            self.attach(log)
        return log

    def new_step(self, step: int | None = None) -> None:
        """Start of a step, before any batch runs: every position's fold count restarts, and
        step - 2 is dropped unless retained (every thread appended its last entry of step - 2
        before it could reach step - 1's Point A, so nobody writes there any more)."""
        self.fold_counts = [0] * POSITIONS
        if step is not None and self.retention is not None and step > 2:
            old = step - 2
            if not self.retention.keeps(old):
                self.dropped_steps += 1
                for log in self.logs:
                    if log.role != "caller":
                        _drop_step(log.spans, 1, old)
                        _drop_step(log.folds, 0, old)

    def next_fold(self, position: int) -> int:
        """Fold index of the batch now writing `position` (call only while holding its ticket)."""
        order = self.fold_counts[position]
        self.fold_counts[position] = order + 1
        return order

    def counter(self, name: str, value: float) -> None:
        """A sampled figure (RSS, tokens/s) at this moment, for the trace's counter tracks."""
        self.counters.append((name, self.now(), float(value)))

    def snapshot(self) -> RecordSnapshot:
        """A copy of the record so far. Complete once the trainer is closed (threads joined);
        between steps the workers' leaving of the last step's Point B may still be in flight."""
        with self._lock:
            logs = [ThreadLog(lg.name, lg.role, lg.ident, lg.position, list(lg.spans),
                              list(lg.folds)) for lg in self.logs]
        return RecordSnapshot(logs, list(self.counters), self.dropped_steps)


def _drop_step(entries: list, key: int, step: int) -> None:
    """Delete the entries of `step` (a contiguous run near the end: each thread appends in step
    order). One `del` of a slice is atomic under the GIL, so the owner may append meanwhile."""
    end = len(entries)
    i = end
    while i > 0 and entries[i - 1][key] > step:
        i -= 1
    j = i
    while j > 0 and entries[j - 1][key] == step:
        j -= 1
    if j < i:
        del entries[j:i]


@dataclass
class RecordSnapshot:
    """A snapshot of the record: what harness checks, reports and traces read."""

    threads: list[ThreadLog]
    counters: list[tuple[str, float, float]] = field(default_factory=list)
    dropped_steps: int = 0  # steps the retention policy left out of memory (long runs)

    def by_role(self, role: str) -> list[ThreadLog]:
        return [t for t in self.threads if t.role == role]

    def steps(self) -> list[int]:
        """Steps that ran at least one span, in order."""
        return sorted({s[1] for t in self.threads for s in t.spans if s[1] >= 0})

    def batches_by_thread(self) -> dict[str, int]:
        """Batches each thread computed over the whole record (every thread, Node Zero too)."""
        return {t.name: sum(1 for s in t.spans if s[0] == BATCH) for t in self.threads}

    def seconds_by_kind(self, log: ThreadLog) -> dict[str, float]:
        """Seconds per span kind of one thread."""
        out: dict[str, float] = {}
        for kind, _, start, end, _ in log.spans:
            out[kind] = out.get(kind, 0.0) + (end - start)
        return out


def in_flight(rec: RecordSnapshot, step: int | None = None,
              kind: str = BATCH) -> list[tuple[float, int]]:
    """Batches computing at once over time, from the record's `kind` spans (of `step`, or all):
    (time s, count from then on) at every start and end, in time order. An end and a start at
    the same instant count the end first, so touching spans are never "at once"."""
    events = []
    for t in rec.threads:
        for k, s, start, end, _ in t.spans:
            if k == kind and (step is None or s == step):
                events.append((start, 1))
                events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    out, n = [], 0
    for at, delta in events:
        n += delta
        out.append((at, n))
    return out


def peak_in_flight(rec: RecordSnapshot, step: int | None = None) -> int:
    """Most batches computing at the same moment (read from the record, never assumed)."""
    return max((n for _, n in in_flight(rec, step)), default=0)
