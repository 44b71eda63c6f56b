"""Resident memory of this process: current, peak (Linux VmHWM), reset, free pages back."""

from __future__ import annotations

import ctypes
import gc
import re

import psutil


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
