"""This process: its CPU use, its resident memory, its threads.

CPU use is always CPU seconds / wall seconds / cores (`cpu_use`, cores = `usable_cores()`, the
CPU affinity); the seed divided wrongly. Memory: current and peak RSS (Linux VmHWM), a peak
reset, free heap pages handed back. Threads: each trainer thread's CPU clock, and the project's
threads still alive.
"""

from __future__ import annotations

import ctypes
import gc
import re
import threading

import psutil

from plumbing.cores import usable_cores


def cpu_use(cpu_seconds: float, wall_seconds: float, cores: int | None = None) -> float:
    """Fraction of the machine busy: CPU seconds / wall seconds / cores (1.0 = every core).

    `cores` defaults to the cores this process may run on.
    """
    cores = cores or usable_cores()
    if wall_seconds <= 0:
        raise ValueError(f"wall_seconds={wall_seconds!r} must be positive to compute CPU use")
    if cores <= 0:
        raise ValueError(f"cores={cores!r} must be positive")
    return cpu_seconds / wall_seconds / cores


def release_free_memory() -> None:
    """Collect garbage and hand free heap pages back to the OS (glibc malloc_trim, all arenas).

    Call before `reset_peak_rss()` so a window's peak is not inflated or hidden by memory an
    earlier measurement freed but the allocator kept.
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def reset_peak_rss() -> bool:
    """Reset this process's kernel high-water mark (VmHWM) so the next read covers a window.

    Linux only (writing 5 to /proc/self/clear_refs); returns False where unsupported.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int:
    """This process's resident set size now (psutil)."""
    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int | None:
    """This process's peak RSS since start or the last `reset_peak_rss()` (None if unknown)."""
    try:
        with open("/proc/self/status") as fh:
            match = re.search(r"VmHWM:\s+(\d+)\s+kB", fh.read())
        return int(match.group(1)) * 1024 if match else None
    except OSError:
        return None


def cpu_by_thread(engine) -> dict[str, float]:
    """CPU seconds so far of Node Zero and each worker, by thread name (heartbeat clocks)."""
    stats = engine.stats()
    return {t["name"]: t["cpu_seconds"] for t in [stats["node_zero"], *stats["workers"]]}


def live_ks_threads() -> set[threading.Thread]:
    """The project's threads (named ks-*) still alive: after close() there must be none."""
    return {t for t in threading.enumerate() if t.name.startswith("ks-") and t.is_alive()}
