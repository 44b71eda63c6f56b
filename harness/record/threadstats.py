"""Per-thread statistics of a trainer, shaped for reports: one record per thread."""

from __future__ import annotations

import threading

from fast.spheres import worker_position


def thread_stats(engine) -> dict:
    """Node Zero's and each worker's record (batches, CPU, waits), plus all threads in a list."""
    stats = engine.stats()
    workers = [dict(w, position=worker_position(w["id"])) for w in stats["workers"]]
    node_zero = dict(stats["node_zero"], position="-")
    return {"node_zero": node_zero, "workers": workers, "all": [node_zero, *workers],
            "steps": stats["steps"], "segment_bytes": stats["segment_bytes"],
            "chunks": stats["chunks"]}


def live_ks_threads() -> set[threading.Thread]:
    """The project's threads (named ks-*) still alive: after close() there must be none."""
    return {t for t in threading.enumerate() if t.name.startswith("ks-") and t.is_alive()}
