"""Cores: the one definition of "the cores this process may use"."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPUs this process may run on: the size of its CPU affinity mask, the one definition of
    "cores" for thread counts, the workspace pool, CPU use and every report.

    Affinity, not `os.cpu_count()`: a process pinned by taskset, a cgroup cpuset or a batch
    scheduler runs on fewer CPUs than the machine has, and dividing CPU time by the machine's
    count (or starting a thread per machine CPU) would be wrong for it.
    """
    return len(os.sched_getaffinity(0))
