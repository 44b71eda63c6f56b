"""Each trainer thread's CPU clock, and the project's threads still alive."""

from __future__ import annotations

import threading


def cpu_by_thread(engine) -> dict[str, float]:
    """CPU seconds so far of Node Zero and each worker, by thread name (heartbeat clocks)."""
    stats = engine.stats()
    return {t["name"]: t["cpu_seconds"] for t in [stats["node_zero"], *stats["workers"]]}


def live_ks_threads() -> set[threading.Thread]:
    """The project's threads (named ks-*) still alive: after close() there must be none."""
    return {t for t in threading.enumerate() if t.name.startswith("ks-") and t.is_alive()}
