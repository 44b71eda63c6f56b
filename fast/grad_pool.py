"""Gradient buffers of batches in flight: a bounded pool granted in batch order (issue #18).

A batch computes its gradient into a zeroed buffer of its own, so its compute never waits for
another batch; only its fold (one ordered P-length add into its position segment, under the
position's ticket) is ordered. The first batch of a position in a step needs no buffer: it
computes straight into the position's zeroed segment (a fold into zero is exact, so the
association is the same). Every later batch takes a buffer here before it computes.

Why it cannot deadlock, for any T, G, pool size >= 1 and schedule: batch b is granted a buffer
only while more are free than there are batches below b not yet granted (one is kept back for
each of them), and a worker takes its buffer BEFORE its workspace and holds at most one. Let g
be the lowest ungranted batch. Every batch below g holds its buffer only until it folds, and it
does fold: its fold waits only for lower batches, all granted, and compute waits for nothing
but a workspace, whose holders wait for nothing (fast/workspace_pool.py). Every batch above g
was granted while g was ungranted below it, so it left at least one buffer free: a buffer is
free for g, or one held below g comes back, and no batch above g can take the last one. g's
worker reaches g, since it runs its batches in ascending order and those below g finish. So g
is granted, and by induction every batch folds. With one buffer this is strict batch order;
with more, a worker may run ahead of a slower one by as many buffers as are spare, yet a high
batch never takes the buffers the lower ones need (so grants follow batch order closely and
the folds rarely wait). A pool with one item for every thread (size >= T) skips the rule
(`ordered=False`): each thread holds at most one, so a requester never waits, and no worker
waits for another's batch. Every wait has the trainer's idle deadline and re-checks the abort
flag (fast.deadline).

The fold also zeroes the buffer as it reads it (`fold_into`): a released buffer is zero, so no
separate pass clears it before the next batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence, Set

import numba
import numpy as np

from fast.deadline import IdleDeadline
from fast.perturb import at_sync_point
from fast.reduction import TicketsAborted
from fast.spheres import POSITIONS

GRANT_POLL_SECONDS = 0.2  # a waiter re-checks abort and its idle deadline this often


def grad_pool_size(threads: int, cores: int, needers: int | None = None) -> int:
    """Buffers worth having: min(T, cores) + 1, at most one per batch that needs one, >= 1.

    min(T, cores) batches compute at once, each in its own buffer. The fold order needs one
    more: a batch that finished before the batch its fold follows (its position's previous
    batch, still computing) holds its buffer while it waits, and the spare one lets the next
    batch start meanwhile. More would buy little (grants follow batch order, so such waits are
    short and rare) and cost P values each: at the seed preset 20 MB per buffer, against the
    seed workload's 1.0 GB peak RSS bound (thresholds.SEED_WORKLOAD_PEAK_BYTES). Any size >= 1
    is deadlock-free; the size only buys concurrency.
    """
    size = max(1, min(int(threads), int(cores))) + 1
    if needers is not None:
        size = min(size, int(needers))
    return max(1, size)


def split_first(batches: Sequence[int], continued: Set[int] = frozenset()
                ) -> tuple[list[int], list[int]]:
    """(first batch of each position, the rest in batch order) of the batches run here.

    The first of a position computes into its zeroed segment; the rest need a buffer. Fixed by
    batch indices alone: which thread runs a batch never changes which list it is in. A
    `continued` position's segment already holds the partial sum of earlier batches (an MPI
    rank continuing another rank's chain): none of its batches is first, all fold onto it.
    """
    seen: set[int] = set(continued)
    first, rest = [], []
    for b in sorted(batches):
        p = b % POSITIONS
        if p in seen:
            rest.append(b)
        else:
            seen.add(p)
            first.append(b)
    return first, rest


class BatchOrder:
    """Which of this step's batches were served, and how many below a batch were not.

    The one rule of both pools (gradient buffers here, workspaces in fast/workspace_pool.py):
    batch b may take one of `free` items only while free > kept_back(b), the batches below b
    of this step's order not yet served. The caller holds its pool's lock.
    """

    def __init__(self) -> None:
        self._order: list[int] = []  # this step's batches, ascending
        self._index: dict[int, int] = {}  # batch -> its index in _order
        self._served: list[bool] = []
        self._low = 0  # index into _order of the lowest batch not yet served

    def begin(self, order) -> None:
        self._order = sorted(int(b) for b in order)
        self._index = {b: i for i, b in enumerate(self._order)}
        self._served = [False] * len(self._order)
        self._low = 0

    def knows(self, batch: int) -> bool:
        return batch in self._index

    def served(self, batch: int) -> bool:
        return self._served[self._index[batch]]

    def kept_back(self, batch: int) -> int:
        """Batches below `batch` not yet served (one item is kept back for each)."""
        return self._served[self._low:self._index[batch]].count(False)

    def serve(self, batch: int) -> None:
        self._served[self._index[batch]] = True
        while self._low < len(self._order) and self._served[self._low]:
            self._low += 1

    def lowest(self) -> int | None:
        """The lowest batch not yet served (None once all are)."""
        return self._order[self._low] if self._low < len(self._order) else None


class GradPool:
    """`size` zeroed gradient buffers of P elements, granted to batches in batch order."""

    def __init__(self, n_params: int, dtype, size: int, abort: threading.Event,
                 timeout: float | None = None, ticks: Callable[[], int] | None = None,
                 ordered: bool = True) -> None:
        """`ordered=False` when every thread can hold one at once (size >= T): nobody ever
        waits then, and keeping buffers back would only make one worker wait for another."""
        if size < 1:
            raise ValueError(f"a gradient pool needs at least 1 buffer, got {size}")
        self.ordered = bool(ordered)
        self.n_params = int(n_params)
        self.dtype = np.dtype(dtype)
        self.size = int(size)
        self._abort = abort
        self._timeout = timeout
        self._ticks = ticks
        # guards _free, _created and _order; acquire() sleeps on it until it may take one
        self._cond = threading.Condition(threading.Lock())
        self._free: list[np.ndarray] = []
        self._created = 0
        self._order = BatchOrder()  # this step's buffer batches and which were granted
        self.in_use_peak = 0  # most buffers held at once (the run record's memory figure)

    @property
    def created(self) -> int:
        """Buffers allocated so far (never more than `size`)."""
        return self._created

    def begin(self, order: Sequence[int]) -> None:
        """Start of a step (no worker is running): these batches will ask for a buffer."""
        with self._cond:
            self._order.begin(order)

    def lowest_ungranted(self) -> int | None:
        """The lowest batch not yet granted (None once all are)."""
        with self._cond:
            return self._order.lowest()

    def acquire(self, batch: int) -> np.ndarray:
        """Batch `batch`'s zeroed buffer, once more are free than batches below it wait for a
        grant; raises TicketsAborted on abort or when no thread made progress for the
        timeout."""
        deadline = IdleDeadline(self._timeout, self._ticks)
        order = self._order
        with self._cond:
            if not order.knows(batch) or order.served(batch):
                raise RuntimeError(f"batch {batch} asked for a gradient buffer it was not "
                                   "given in this step's order, or asked twice")
            while True:
                if self._abort.is_set():
                    raise TicketsAborted(f"gradient buffer wait for batch {batch} aborted")
                free = len(self._free) + self.size - self._created
                if free > (order.kept_back(batch) if self.ordered else 0):
                    at_sync_point(threading.current_thread().name, "granted", None)
                    order.serve(batch)
                    self.in_use_peak = max(self.in_use_peak, self.size - free + 1)
                    self._cond.notify_all()  # who an item is kept back for may have changed
                    if self._free:
                        return self._free.pop()
                    self._created += 1
                    break
                if not deadline.wait(self._cond, GRANT_POLL_SECONDS):
                    raise TicketsAborted(
                        f"batch {batch} waited {deadline.timeout:g} s without progress for a "
                        f"gradient buffer ({order.kept_back(batch)} kept back for lower "
                        f"batches from batch {order.lowest()}; {self.size} buffers)")
        return np.zeros(self.n_params, dtype=self.dtype)  # fresh pages: zero, outside the lock

    def release(self, buffer: np.ndarray) -> None:
        """Give back a buffer that `fold_into` has zeroed."""
        at_sync_point(threading.current_thread().name, "releasing", None)
        with self._cond:
            self._free.append(buffer)
            self._cond.notify_all()

    def close(self) -> None:
        """Drops the free buffers (their memory goes back to the OS)."""
        with self._cond:
            self._free.clear()


@numba.njit(nogil=True, cache=True)
def fold_into(segment, buffer):  # pragma: no cover
    """segment[i] = segment[i] + buffer[i] in the engine dtype, then buffer[i] = 0: one
    elementwise pass in index order (the position's left fold), leaving the buffer reusable.
    Returns the index of the first non-finite sum, or -1 (the finiteness check rides along)."""
    bad = -1
    for i in range(segment.shape[0]):
        x = segment[i] + buffer[i]
        segment[i] = x
        buffer[i] = 0
        if bad < 0 and not np.isfinite(x):
            bad = i
    return bad


def warmup(dtype) -> None:
    """Compile `fold_into` for `dtype` before any thread starts."""
    a = np.zeros(4, dtype=dtype)
    fold_into(a, np.ones(4, dtype=dtype))
