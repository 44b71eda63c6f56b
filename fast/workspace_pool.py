"""A pool of activation workspaces shared by the workers: min(T, cores) of them, not T.

With more workers than cores (the seed runs 63 threads on 2 cores) at most `cores` batches
can make progress at once; a private workspace per worker would only cost memory (and cache)
without buying speed. A worker takes a workspace AFTER its batch's gradient buffer
(fast/grad_pool.py) and gives it back as soon as that batch's compute is done, so a holder
never waits for anything else: no deadlock. The lowest batches go first (`acquire`), and
the pool also keeps the number of batches computing at once down to the
number of cores, so oversubscribed threads do not time-slice against each other inside BLAS.
A workspace's contents never reach the gradient (every region is written before it is read;
tests/test_fast_engine.py checks a reused workspace gives the same bits), so which workspace a
batch gets changes no bit of the result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fast.deadline import IdleDeadline
from fast.grad_pool import BatchOrder
from fast.model import FastModel, Workspace
from fast.reduction import TicketsAborted
from plumbing.cores import usable_cores

POOL_POLL_SECONDS = 0.2  # a waiter re-checks abort and its idle deadline this often


def pool_size(threads: int, cores: int | None = None) -> int:
    """Workspaces worth having: one per thread that can run at the same time."""
    return max(1, min(int(threads), usable_cores() if cores is None else int(cores)))


class WorkspacePool:
    """`size` workspaces of one model, created on first use and reused for every batch."""

    def __init__(self, model: FastModel, size: int, abort: threading.Event,
                 timeout: float | None = None, ticks: Callable[[], int] | None = None,
                 ordered: bool = True) -> None:
        """`ordered=False` when every thread can hold one at once (size >= T): nobody ever
        waits then, and keeping workspaces back would only make one worker wait for another
        (a slow batch would hold up the other workers' later batches)."""
        self.ordered = bool(ordered)
        if size < 1:
            raise ValueError(f"a workspace pool needs at least 1 workspace, got {size}")
        self.model = model
        self.size = int(size)
        self._abort = abort
        self._timeout = timeout
        self._ticks = ticks
        # guards _free, _created and _order; acquire() sleeps on it until it may take one
        self._cond = threading.Condition(threading.Lock())
        self._free: list[Workspace] = []
        self._created = 0
        self._order = BatchOrder()  # this step's batches and which were given a workspace

    @property
    def created(self) -> int:
        """Workspaces allocated so far (never more than `size`)."""
        return self._created

    def begin(self, batches) -> None:
        """Start of a step (no worker is running): these batches will ask for a workspace."""
        with self._cond:
            self._order.begin(batches)

    def acquire(self, batch: int | None = None) -> Workspace:
        """A free workspace (allocating one while fewer than `size` exist), once more are free
        than this step's batches below `batch` still waiting for theirs; blocks until then, the
        trainer aborts, or no thread made progress for the timeout.

        So the batches computing at once are the lowest ones not yet started, whatever order
        their threads arrive in: a batch's fold (after its position's previous batch) rarely
        waits, and its gradient buffer comes back soon (fast/grad_pool.py). Holders never wait
        and a batch above the lowest waiting one never takes the last free workspace, so the
        lowest always gets one: no deadlock (the proof in fast/grad_pool.py). A batch the step
        did not announce (`begin`), or None, waits for any free one.
        """
        deadline = IdleDeadline(self._timeout, self._ticks)
        order = self._order
        with self._cond:
            ordered = (self.ordered and batch is not None and order.knows(batch)
                       and not order.served(batch))
            while True:
                if self._abort.is_set():
                    raise TicketsAborted("workspace wait aborted")
                free = len(self._free) + self.size - self._created
                if free > (order.kept_back(batch) if ordered else 0):
                    if ordered:
                        order.serve(batch)
                        self._cond.notify_all()  # who one is kept back for may have changed
                    if self._free:
                        return self._free.pop()
                    self._created += 1
                    break
                if not deadline.wait(self._cond, POOL_POLL_SECONDS):
                    raise TicketsAborted(f"waited {deadline.timeout:g} s without progress for "
                                         f"one of {self.size} workspaces to be released")
        try:  # allocate outside the lock: mapping tens of MB must not block the releasers
            return self.model.new_workspace()
        except BaseException:
            with self._cond:
                self._created -= 1
                self._cond.notify_all()
            raise

    def release(self, workspace: Workspace) -> None:
        with self._cond:
            self._free.append(workspace)
            self._cond.notify_all()  # the lowest waiter must wake, whichever it is

    def close(self) -> None:
        """Drops the free workspaces (their memory goes back to the OS)."""
        with self._cond:
            self._free.clear()
