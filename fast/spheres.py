"""The 12-fold symmetry and the kissing-sphere tree: which position and sphere a batch belongs to.

Level 0 is Node Zero, level 1 the 12 symmetry positions, level 2 up to 12 x 12 = 144 spheres
(1 + 12 + 144 = 157). The tree is the REDUCTION tree: batch b belongs to position b % 12 and to
sphere b // 12 inside that position by its index alone, never by the worker that ran it, so the
summed gradient has the same bits for every thread count (DESIGN.md "Fast engine memory and
determinism"). Which worker runs a batch is a separate, static choice (`assign`).
"""

from __future__ import annotations

POSITIONS = 12  # level 1: the 12 spheres that kiss the central one (Node Zero)
SPHERES_PER_POSITION = 12  # level 2: 12 spheres around each position sphere
LEVEL2_SPHERES = POSITIONS * SPHERES_PER_POSITION  # 144
TOTAL_SPHERES = 1 + POSITIONS + LEVEL2_SPHERES  # 157


def position_of(batch: int) -> int:
    """Symmetry position (0..11) whose gradient segment batch `batch` is folded into."""
    _check_index(batch, "batch")
    return batch % POSITIONS


def sphere_of(batch: int) -> int:
    """Order of `batch` inside its position: its turn in the position's fold (0, 1, 2, ...)."""
    _check_index(batch, "batch")
    return batch // POSITIONS


def level2_index(batch: int) -> int | None:
    """Index (0..143) of the level-2 sphere holding `batch`; None past the 144 of the tree.

    Groups larger than 144 batches still reduce correctly (the position fold just gets longer);
    they simply have no sphere of their own to draw in a report.
    """
    sphere = sphere_of(batch)
    if sphere >= SPHERES_PER_POSITION:
        return None
    return position_of(batch) * SPHERES_PER_POSITION + sphere


def worker_position(worker: int) -> int:
    """Symmetry position a worker sits at (workers 12 apart share a position)."""
    _check_index(worker, "worker")
    return worker % POSITIONS


def worker_batches(worker: int, group: int, threads: int) -> range:
    """Batches of a `group`-batch group run by `worker` out of `threads`: worker, worker+T, ...

    Increasing order, which is what makes the per-position tickets deadlock-free: batch b only
    waits for b - 12, and every batch below b depends only on smaller indices.
    """
    _check_index(worker, "worker")
    if threads < 1 or worker >= threads:
        raise ValueError(f"worker {worker} does not exist with threads={threads}")
    if group < 0:
        raise ValueError(f"group size must be >= 0, got {group}")
    return range(worker, group, threads)


def assign(group: int, threads: int) -> list[list[int]]:
    """Batch indices per worker: batch b -> worker b % T (static round robin).

    With G >= T every worker gets at least one batch (the original C system left 59 of 63 idle);
    with T > G the workers G..T-1 get empty lists, never an invalid range.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return [list(worker_batches(w, group, threads)) for w in range(threads)]


def describe(group: int, threads: int) -> dict:
    """The structure for reports: levels, counts, occupied positions and spheres for G and T."""
    occupied_positions = sorted({position_of(b) for b in range(group)})
    spheres_per_position = {p: [sphere_of(b) for b in range(p, group, POSITIONS)]
                            for p in occupied_positions}
    per_worker = [len(batches) for batches in assign(group, threads)]
    return {
        "levels": [
            {"level": 0, "name": "Node Zero", "count": 1},
            {"level": 1, "name": "symmetry positions", "count": POSITIONS},
            {"level": 2, "name": "spheres", "count": LEVEL2_SPHERES},
        ],
        "total_spheres": TOTAL_SPHERES,
        "group_size": group,
        "threads": threads,
        "occupied_positions": occupied_positions,
        "occupied_level2_spheres": sum(1 for b in range(group) if level2_index(b) is not None),
        "batches_beyond_tree": sum(1 for b in range(group) if level2_index(b) is None),
        "spheres_per_position": spheres_per_position,
        "workers_per_position": {p: [w for w in range(threads) if worker_position(w) == p]
                                 for p in range(POSITIONS)},
        "batches_per_worker": per_worker,
        "busy_workers": sum(1 for n in per_worker if n),
        "idle_workers": sum(1 for n in per_worker if not n),
    }


def _check_index(value: int, what: str) -> None:
    if value < 0:
        raise ValueError(f"{what} index must be >= 0, got {value}")
