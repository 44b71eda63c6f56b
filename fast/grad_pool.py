"""Gradient buffers of batches in flight: a bounded pool granted in batch order (issue #18).

A batch computes its gradient into a zeroed buffer of its own, so its compute never waits for
another batch; only its fold (one ordered P-length add into its position segment, under the
position's ticket) is ordered. The first batch of a position in a step needs no buffer: it
computes straight into the position's zeroed segment (a fold into zero is exact, so the
association is the same). Every later batch takes a buffer here before it computes.

Why it cannot deadlock, for any T, G, pool size >= 1 and schedule: buffers are granted
strictly in batch order (the order `begin` is given), and a worker takes its buffer BEFORE its
workspace and holds at most one. Let b be the lowest unfolded batch. Every buffer batch below b
has folded and given its buffer back, and no batch above b was granted before b, so if b needs
a buffer it gets one; it then needs a workspace (workspace holders wait for nothing, see
fast/workspace_pool.py) and the fold turn of the batch before it in its position, which is
below b and so already folded. So b folds, and by induction every batch does. Every wait has
the trainer's idle deadline and re-checks the abort flag (fast.deadline).

The fold also zeroes the buffer as it reads it (`fold_into`): a released buffer is zero, so no
separate pass clears it before the next batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numba
import numpy as np

from fast.deadline import IdleDeadline
from fast.perturb import at_sync_point
from fast.reduction import TicketsAborted
from fast.spheres import POSITIONS

GRANT_POLL_SECONDS = 0.2  # a waiter re-checks abort and its idle deadline this often


def grad_pool_size(threads: int, cores: int, needers: int | None = None) -> int:
    """Buffers worth having: 2 x min(T, cores), at most one per batch that needs one, >= 1.

    min(T, cores) batches compute at once; each may finish before the batch its fold follows
    (b - 12, still computing), and then holds its buffer until that fold is done. A second
    min(T, cores) lets that many finished batches wait for their turn while as many new ones
    compute, so no core idles for want of a buffer when batch times vary. Batch-order grants
    make any size >= 1 deadlock-free; the size only buys concurrency.
    """
    size = 2 * max(1, min(int(threads), int(cores)))
    if needers is not None:
        size = min(size, int(needers))
    return max(1, size)


def split_first(batches: Sequence[int]) -> tuple[list[int], list[int]]:
    """(first batch of each position, the rest in batch order) of the batches run here.

    The first of a position computes into its zeroed segment; the rest need a buffer. Fixed by
    batch indices alone: which thread runs a batch never changes which list it is in.
    """
    seen: set[int] = set()
    first, rest = [], []
    for b in sorted(batches):
        p = b % POSITIONS
        if p in seen:
            rest.append(b)
        else:
            seen.add(p)
            first.append(b)
    return first, rest


class GradPool:
    """`size` zeroed gradient buffers of P elements, granted to batches in batch order."""

    def __init__(self, n_params: int, dtype, size: int, abort: threading.Event,
                 timeout: float | None = None, ticks: Callable[[], int] | None = None) -> None:
        if size < 1:
            raise ValueError(f"a gradient pool needs at least 1 buffer, got {size}")
        self.n_params = int(n_params)
        self.dtype = np.dtype(dtype)
        self.size = int(size)
        self._abort = abort
        self._timeout = timeout
        self._ticks = ticks
        # guards _free, _created, _order and _turn; acquire() sleeps on it for its grant
        self._cond = threading.Condition(threading.Lock())
        self._free: list[np.ndarray] = []
        self._created = 0
        self._order: list[int] = []  # this step's buffer batches, in grant order
        self._turn = 0  # index into _order of the next batch to be granted
        self.in_use_peak = 0  # most buffers held at once (the run record's memory figure)

    @property
    def created(self) -> int:
        """Buffers allocated so far (never more than `size`)."""
        return self._created

    def begin(self, order: Sequence[int]) -> None:
        """Start of a step (no worker is running): grants go to `order`, in that order."""
        with self._cond:
            self._order = sorted(int(b) for b in order)
            self._turn = 0

    def acquire(self, batch: int) -> np.ndarray:
        """Batch `batch`'s zeroed buffer, once every batch before it in the order was granted
        and a buffer is free; raises TicketsAborted on abort or when no thread made progress
        for the timeout."""
        deadline = IdleDeadline(self._timeout, self._ticks)
        with self._cond:
            while True:
                if self._abort.is_set():
                    raise TicketsAborted(f"gradient buffer wait for batch {batch} aborted")
                if self._turn >= len(self._order) or self._order[self._turn] > batch:
                    raise RuntimeError(f"batch {batch} asked for a gradient buffer it was not "
                                       "given in this step's order")
                mine = self._order[self._turn] == batch
                if mine and (self._free or self._created < self.size):
                    at_sync_point(threading.current_thread().name, "granted", None)
                    self._turn += 1
                    self._cond.notify_all()  # the next batch in the order may be granted
                    held = self._created - len(self._free) + 1
                    self.in_use_peak = max(self.in_use_peak, held)
                    if self._free:
                        return self._free.pop()
                    self._created += 1
                    break
                if not deadline.wait(self._cond, GRANT_POLL_SECONDS):
                    raise TicketsAborted(
                        f"batch {batch} waited {deadline.timeout:g} s without progress for a "
                        f"gradient buffer (next grant: batch {self._order[self._turn]}, "
                        f"{self.size} buffers)")
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
