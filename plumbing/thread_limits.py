"""How many more threads the OS lets this process start, and which limit decides it.

A thread needs an entry in the kernel's task table (kernel.threads-max, a cgroup's pids.max,
the user's RLIMIT_NPROC) and memory maps for its stack and guard page (vm.max_map_count, per
process). Python only says "can't start new thread"; the preflight (harness/commands/
preflight.py) and the fast trainer's start-up name the limit instead. Measured on Linux with
Python 3.11: a process with max_map_count 65530 started 22,024 threads, ~3 maps per thread.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

MAPS_PER_THREAD = 3  # stack, guard page and its share of malloc arenas (65530 maps / 22,024)


@dataclass(frozen=True)
class ThreadLimit:
    """The tightest limit on new threads: how many more may start, and its name."""

    room: int | None  # threads that may still start, None when no limit could be read
    name: str  # e.g. "vm.max_map_count=65530 (3 memory maps per thread, 812 in use)"


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return None if text == "max" else int(text) if text.isdigit() else None


def _tasks_in_use() -> int | None:
    """Threads running on the machine now (/proc/loadavg's running/total field)."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    except (OSError, IndexError, ValueError):
        return None


def _maps_in_use() -> int | None:
    try:
        with open("/proc/self/maps", "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return None


def _candidates() -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    maps, used_maps = _read_int("/proc/sys/vm/max_map_count"), _maps_in_use()
    if maps is not None and used_maps is not None:
        found.append(((maps - used_maps) // MAPS_PER_THREAD,
                      f"vm.max_map_count={maps} ({MAPS_PER_THREAD} memory maps per thread, "
                      f"{used_maps} in use)"))
    tasks = _tasks_in_use()
    for path, name in (("/proc/sys/kernel/threads-max", "kernel.threads-max"),
                       ("/sys/fs/cgroup/pids.max", "the cgroup's pids.max"),
                       ("/sys/fs/cgroup/pids/pids.max", "the cgroup's pids.max")):
        value = _read_int(path)
        if value is not None and tasks is not None:
            found.append((value - tasks, f"{name}={value} ({tasks} tasks running)"))
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY and os.geteuid() != 0 and tasks is not None:
        found.append((soft - tasks, f"ulimit -u (RLIMIT_NPROC)={soft}"))
    return found


def thread_limit() -> ThreadLimit:
    """The tightest of the limits this machine reports (no limit read: room None)."""
    found = _candidates()
    if not found:
        return ThreadLimit(None, "no thread limit readable on this system")
    room, name = min(found)
    return ThreadLimit(max(0, room), name)
