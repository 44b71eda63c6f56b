"""A stand-in batch kernel for `spheres simulate`: it sleeps for a batch's compute time.

Injected through `FastTrainer(kernel=...)`: everything else is the real engine (Node Zero, the
workers, the tickets, the gradient and workspace pools, the barriers, the folds, the reduction
and the update). A sleeping thread uses no core, so on this 2-core machine the protocol can run
as if it had N cores: the workspace pool, sized min(T, N) by `FastTrainer(cores=N)`, is what lets
at most N batches "compute" at once, as N real cores would.

The stand-in writes a small gradient fixed by the batch's tokens (so folds, norms and updates
carry real, deterministic numbers) and returns the batch's real target count with a loss sum of
one per target. It ticks its heartbeat while it sleeps: slow work is not a stall.
"""

from __future__ import annotations

import time

import numpy as np

TICK_SECONDS = 0.05  # a stand-in sleeps in steps this long, ticking its heartbeat between them


class SleepKernel:
    """Has `fast.model.batch_forward_backward`'s signature; sleeps `seconds` per batch."""

    def __init__(self, seconds: float) -> None:
        if not seconds >= 0 or seconds == float("inf"):
            raise ValueError(f"a stand-in batch time must be finite and >= 0, got {seconds!r}")
        self.seconds = float(seconds)

    def __call__(self, model, params_flat: np.ndarray, grad: np.ndarray, tokens: np.ndarray,
                 targets: np.ndarray, workspace, ticks: np.ndarray, slot: int,
                 timing: np.ndarray | None = None,
                 marks: np.ndarray | None = None) -> tuple[float, int]:
        end = time.monotonic() + self.seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(TICK_SECONDS, left))
            ticks[slot] += 1
        n = int(np.count_nonzero(targets))
        where = int(np.asarray(tokens, dtype=np.int64).sum()) % grad.shape[0]
        grad[where] += grad.dtype.type(1e-3 * n)  # += from zero, as the real kernel
        return float(n), n
