"""A seam for chaos testing: a hook called at every synchronisation point of the fast engine.

Every phase change of every thread (dispatching, waiting for a ticket, at Point A, reducing,
deciding, updating, at Point B, ...) goes through `Heartbeat.set`, which calls `at_sync_point`
first; the gradient pool (fast/grad_pool.py) adds two more: a buffer just granted (inside the
grant, so a delay there holds up the next grant in batch order) and a buffer about to be given
back after its fold. With no hook installed that is one global read. `spheres stress`
(harness/verify/stress.py) installs a hook that sleeps or yields per thread and phase, so
seeded schedules shake the interleavings that the bitwise-determinism and fault-handling
invariants must survive.
The engine never imports harness: the harness hands its hook to this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

SyncHook = Callable[[str, str, "int | None"], None]  # (thread name, phase name, step)

_hook: SyncHook | None = None


def at_sync_point(thread: str, phase: str, step: int | None) -> None:
    """Called by the engine's threads as they reach a synchronisation point."""
    hook = _hook
    if hook is not None:
        hook(thread, phase, step)


@contextmanager
def installed(hook: SyncHook) -> Iterator[None]:
    """Install `hook` for the duration of the block (one hook at a time, process-wide)."""
    global _hook
    if _hook is not None:
        raise RuntimeError("a synchronisation-point hook is already installed")
    _hook = hook
    try:
        yield
    finally:
        _hook = None
