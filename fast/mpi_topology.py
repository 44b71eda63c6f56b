"""Ranks as level-1 spheres (SPEC 10): which rank owns which symmetry positions and batches.

Pure functions, no mpi4py: the single-process path and the CLI's launch checks import this
module freely. The rule is fixed and contiguous: position p belongs to rank p * R // 12, so rank
0 owns positions 0..ceil(12/R)-1 and never fewer batches than any other rank (position p holds
batches p, p+12, ...; lower positions hold at least as many). A rank's batches are exactly the
ones of its positions, so every position segment is folded by one process, in batch order, with
the same bits as in the single-process engine.
"""

from __future__ import annotations

import os

from fast.spheres import POSITIONS

MAX_RANKS = POSITIONS  # one rank per level-1 sphere at most: a 13th would own no position

# Environment variables an MPI launcher sets in every process it starts (MPICH's Hydra: PMI_*,
# MPI_LOCALNRANKS; Open MPI: OMPI_COMM_WORLD_*; Slurm's PMI2/PMIx: PMIX_RANK).
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def rank_of_position(position: int, ranks: int) -> int:
    """The rank that owns symmetry position `position` (0..11) with `ranks` ranks."""
    _check(ranks)
    if not 0 <= position < POSITIONS:
        raise ValueError(f"position must be in 0..{POSITIONS - 1}, got {position}")
    return position * ranks // POSITIONS


def positions_of(rank: int, ranks: int) -> range:
    """The contiguous block of positions rank `rank` owns."""
    _check(ranks)
    if not 0 <= rank < ranks:
        raise ValueError(f"rank {rank} does not exist with {ranks} ranks")
    owned = [p for p in range(POSITIONS) if rank_of_position(p, ranks) == rank]
    return range(owned[0], owned[-1] + 1)


def batches_of(rank: int, ranks: int, group: int) -> tuple[int, ...]:
    """Batch indices of a `group`-batch group that `rank` computes, in increasing order."""
    owned = positions_of(rank, ranks)
    return tuple(b for b in range(group) if b % POSITIONS in owned)


def launcher_world() -> tuple[int, int] | None:
    """(rank, size) when an MPI launcher started this process, read from its environment.

    Read before mpi4py is imported, so `spheres train` started by mpiexec without `--mpi` can
    refuse with a clear message instead of R processes each training alone.
    """
    size = next((os.environ[v] for v in _SIZE_VARS if os.environ.get(v)), None)
    if size is None:
        return None
    rank = next((os.environ[v] for v in _RANK_VARS if os.environ.get(v)), "0")
    try:
        return int(rank), int(size)
    except ValueError:
        return None


def _check(ranks: int) -> None:
    if not 1 <= ranks <= MAX_RANKS:
        raise ValueError(f"ranks must be in 1..{MAX_RANKS}, got {ranks}")
