"""Gradient memory and its reduction: 12 position segments, per-position tickets, chunked sums.

Lock-free by construction (SPEC 4): batch b computes its gradient into a buffer of its own
(fast/grad_pool.py; the first batch of a position straight into its zeroed segment) and folds
it into the segment of position b % 12 only when that position's ticket says it is b's turn
(the position's previous batch has folded). So a position's partial sum is the left fold of its
batches in batch order, each batch's gradient computed from zero. No lock ever guards gradient
memory; the ticket's Condition is used only to sleep until the turn comes. After
Point A the 12 segments are summed elementwise in position order 0..11, split into fixed
parameter chunks that threads take in parallel; each chunk's squared norm is a float64 loop and
Node Zero adds the chunk norms in chunk order. Chunks depend on the config only (CHUNK_ELEMENTS),
never on T, so every thread count produces the same bits.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from fast.deadline import IdleDeadline
from fast.spheres import POSITIONS

CHUNK_ELEMENTS = 65536  # 64Ki parameters per reduction/update chunk: 256 KB of float32, cache-sized
TICKET_POLL_SECONDS = 0.2  # a ticket waiter re-checks abort and its idle deadline this often
END_OF_STEP = 1 << 62  # a position's ticket once its last batch of the step has folded


class PositionSegments:
    """Twelve flat gradient vectors (one per symmetry position) in the engine dtype."""

    def __init__(self, n_params: int, dtype=np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self.n_params = n_params
        self.data = np.zeros((POSITIONS, n_params), dtype=self.dtype)  # (12, n_params)

    def segment(self, position: int) -> np.ndarray:
        """The contiguous flat vector of one position (a view)."""
        return self.data[position]

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


class TicketsAborted(RuntimeError):
    """A ticket wait ended because the trainer was aborted (a secondary error, never the cause)."""


class PositionTickets:
    """Per position, the next batch allowed to fold into its segment (monotonic per step).

    A position can also be HELD: its next fold waits until `release(p)`, whatever batch it is.
    An MPI chain rank holds each position it continues until the upstream rank's partial sum
    has arrived in the segment (fast.mpi_engine), so its batches compute at once and only the
    first fold onto the received partial waits for it.
    """

    def __init__(self, timeout: float | None = None, ticks=None) -> None:
        # guards _queues, _at, _next and _aborted; waiters sleep on it until their batch's turn
        self._cond = threading.Condition(threading.Lock())
        self._queues: list[list[int]] = [[] for _ in range(POSITIONS)]  # empty: unbounded
        self._at = [0] * POSITIONS  # position p: index in _queues[p] of the batch whose turn it is
        self._next = list(range(POSITIONS))  # position p: batch p folds first
        self._held: set[int] = set()  # positions whose next fold waits for release()
        self._aborted: str | None = None
        self._timeout = timeout
        self._ticks = ticks

    def reset(self, batches=None) -> None:
        """Start of a step (no worker is running): each position's batches fold in batch order.

        `batches`: the batches this process runs (an MPI rank runs some), None for 0, 1, 2, ...
        without end (position p: p, p+12, p+24, ...). Holds are left alone: the caller sets
        them for the step about to start (`hold` before the job is posted) and releases them.
        """
        with self._cond:
            if batches is None:
                self._queues = [[] for _ in range(POSITIONS)]
            else:
                self._queues = [[] for _ in range(POSITIONS)]
                for b in sorted(batches):
                    self._queues[b % POSITIONS].append(int(b))
            self._at = [0] * POSITIONS
            self._next = [self._batch_at(p) for p in range(POSITIONS)]

    def _batch_at(self, position: int) -> int:
        queue, at = self._queues[position], self._at[position]
        if not queue:  # no list: every batch of the position, in order
            return position + POSITIONS * at
        return queue[at] if at < len(queue) else END_OF_STEP

    def wait_turn(self, batch: int) -> None:
        """Block until `batch` may fold into its position's segment."""
        position = batch % POSITIONS
        deadline = IdleDeadline(self._timeout, self._ticks)
        with self._cond:
            while self._next[position] != batch or position in self._held:
                if self._aborted is not None:
                    raise TicketsAborted(f"ticket wait for batch {batch} aborted: {self._aborted}")
                if self._next[position] > batch:
                    raise RuntimeError(f"batch {batch} asked for its turn twice in one step")
                if not deadline.wait(self._cond, TICKET_POLL_SECONDS):
                    what = (f"the release of held position {position}"
                            if self._next[position] == batch else
                            f"batch {self._next[position]} of position {position} to fold")
                    raise TicketsAborted(
                        f"batch {batch} waited {deadline.timeout:g} s without progress for "
                        f"{what}")

    def hold(self, positions) -> None:
        """The next fold at each of `positions` waits until `release` (an upstream partial)."""
        with self._cond:
            self._held.update(int(p) for p in positions)

    def release(self, position: int) -> None:
        """`position`'s segment is ready: its next batch may fold (when it is its turn)."""
        with self._cond:
            self._held.discard(int(position))
            self._cond.notify_all()

    def held(self) -> list[int]:
        with self._cond:
            return sorted(self._held)

    def advance(self, batch: int) -> None:
        """`batch` has folded: the next batch of its position may fold."""
        position = batch % POSITIONS
        with self._cond:
            queue = self._queues[position]
            self._at[position] = (queue.index(batch) if batch in queue
                                  else batch // POSITIONS) + 1
            self._next[position] = self._batch_at(position)
            self._cond.notify_all()

    def next_batches(self) -> list[int]:
        with self._cond:
            return list(self._next)

    def abort(self, reason: str) -> None:
        with self._cond:
            self._aborted = reason
            self._cond.notify_all()


def chunk_bounds(n_params: int, chunk: int = CHUNK_ELEMENTS) -> list[tuple[int, int]]:
    """Fixed [start, stop) parameter chunks covering 0..n_params (depends on sizes only)."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk}")
    return [(lo, min(lo + chunk, n_params)) for lo in range(0, n_params, chunk)]


@numba.njit(nogil=True, cache=True)
def reduce_chunk(segments, n_positions, total, start, stop, n_targets):  # pragma: no cover
    """total[i] = (seg[0,i] + seg[1,i] + ... + seg[n_positions-1,i]) / n_targets, i in chunk.

    segments (12, P), total (P,). Summed in position order in float64, divided once, stored in
    the engine dtype: elementwise, so the bits do not depend on how chunks are shared out.
    """
    inv = np.float64(n_targets)
    for i in range(start, stop):
        acc = np.float64(segments[0, i])
        for p in range(1, n_positions):
            acc += np.float64(segments[p, i])
        total[i] = acc / inv


@numba.njit(nogil=True, cache=True)
def chunk_sq_norm(total, start, stop):  # pragma: no cover
    """sum(total[start:stop]**2) accumulated in float64 in index order (deterministic)."""
    acc = 0.0
    for i in range(start, stop):
        x = np.float64(total[i])
        acc += x * x
    return acc


@numba.njit(nogil=True, cache=True)
def zero_segment(segment):  # pragma: no cover
    """segment[:] = 0 without holding the GIL (first batch of a position in a step)."""
    for i in range(segment.shape[0]):
        segment[i] = 0


@numba.njit(nogil=True, cache=True)
def first_nonfinite(x, start, stop):  # pragma: no cover
    """Index of the first NaN/Inf in x[start:stop], or -1 (early exit: cheap when clean)."""
    for i in range(start, stop):
        if not np.isfinite(x[i]):
            return i
    return -1


def sum_chunk_norms(chunk_norms: np.ndarray) -> float:
    """Node Zero's part: the chunk norms added in chunk order (a plain loop, no pairwise sum)."""
    acc = 0.0
    for value in chunk_norms.tolist():
        acc += value
    return acc


def warmup(dtype) -> None:
    """Compile the reduction kernels for `dtype` before any thread starts."""
    seg = np.zeros((POSITIONS, 4), dtype=dtype)
    total = np.zeros(4, dtype=dtype)
    reduce_chunk(seg, POSITIONS, total, 0, 4, 1)
    chunk_sq_norm(total, 0, 4)
    zero_segment(seg[0])
    first_nonfinite(total, 0, 4)
