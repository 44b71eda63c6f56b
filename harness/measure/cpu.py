"""Cores and CPU use: one definition of "the cores this process may use" (its affinity).

CPU use is always CPU seconds / wall seconds / cores (`cpu_use`); the seed divided wrongly.
"""

from __future__ import annotations

from fast.deadline import usable_cores


def cpu_use(cpu_seconds: float, wall_seconds: float, cores: int | None = None) -> float:
    """Fraction of the machine busy: CPU seconds / wall seconds / cores (1.0 = every core).

    `cores` defaults to the cores this process may run on.
    """
    cores = cores or available_cores()
    if wall_seconds <= 0:
        raise ValueError(f"wall_seconds={wall_seconds!r} must be positive to compute CPU use")
    if cores <= 0:
        raise ValueError(f"cores={cores!r} must be positive")
    return cpu_seconds / wall_seconds / cores


def available_cores() -> int:
    """Cores this process may use: `fast.deadline.usable_cores` (its CPU affinity), the one
    definition every figure divides by."""
    return usable_cores()
