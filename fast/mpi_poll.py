"""How a rank completes a non-blocking MPI request: polling, under a deadline, without
starving the transfer or burning a core (no mpi4py here, so it is testable without MPI).

MPICH advances a non-blocking collective only inside MPI calls, a few KB per Test: polled with
sleeps of up to 1 ms, a 60 MB Ialltoallv (the seed's slices at R = 2) took 8.7 s; polled back
to back, 29 ms (2 ranks on loopback, Intel Xeon, MPICH 4). A wait therefore polls back to back
while its payload could still be in flight, then sleeps between polls; a large payload keeps
polling in bursts as long as each sleep, so a late partner's data still moves while the
waiting rank uses at most about half a core.
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_MAX_SECONDS = 0.001  # a Test loop sleeps at most this long between polls (latency floor)
SPIN_SECONDS = 0.002  # every wait's first polls: a small message's round trip
SPIN_BYTES_PER_SECOND = 200e6  # a floor well below loopback's 2 GB/s (measured 2.6 GB/s)
BURST_BYTES = 1 << 20  # from this payload on, polls go on in bursts between sleeps


def spin_seconds(nbytes: int) -> float:
    """How long a wait for a request moving `nbytes` (sent + received) polls back to back."""
    return SPIN_SECONDS + nbytes / SPIN_BYTES_PER_SECOND


def complete(test: Callable[[], bool], seconds: float, nbytes: int) -> float:
    """Calls `test` (a request's Test) until it returns True; returns the seconds taken.

    Raises TimeoutError once `seconds` have passed without completion.
    """
    start = time.monotonic()
    deadline = start + seconds
    spin_until = start + spin_seconds(nbytes)
    pause = 0.0
    while not test():
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"not complete after {seconds:.1f} s")
        if now < spin_until:
            continue
        time.sleep(pause)
        pause = min(POLL_MAX_SECONDS, pause + 0.0001)
        if nbytes >= BURST_BYTES:
            spin_until = time.monotonic() + pause
    return time.monotonic() - start
