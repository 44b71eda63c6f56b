"""Ranks as spheres of the tree (SPEC 10): who computes which batch, who owns which slice.

Pure functions, no mpi4py: the single-process path and the CLI's launch checks import this
module freely.

Batches. Position p holds batches p, p+12, p+24, ... (its level-2 spheres, in fold order).
  * R <= 12: ranks own whole positions, position p belongs to rank p * R // 12 (contiguous
    blocks; rank 0 owns the lowest positions, which never hold fewer batches).
  * 12 < R <= 144: ranks own level-2 spheres. Position p is served by the ranks
    ceil(p R / 12) .. ceil((p + 1) R / 12) - 1 (one or more each, the extra ranks on the low
    positions), and its n spheres are split into contiguous blocks among them: sphere s goes to
    the position's rank s * m // n of m. The ranks of one position form a chain: each continues
    the position's partial sum where the previous one stopped (fast.mpi_engine), so the fold is
    the single process's, batch by batch, whatever R.
Slices. Rank r owns the parameter slice [r P // R, (r + 1) P // R): it receives that slice of
every position's finished partial, sums them in position order, updates it (its own AdamW
moments) and sends it back to everyone. The association of every sum is fixed by batch indices
and the tree; R only decides who does which part.
"""

from __future__ import annotations

import os
from functools import lru_cache

from fast.spheres import LEVEL2_SPHERES, POSITIONS

MAX_RANKS = LEVEL2_SPHERES  # one rank per level-2 sphere at most (a level 3 is not built)

# Environment variables an MPI launcher sets in every process it starts (MPICH's Hydra: PMI_*,
# MPI_LOCALNRANKS; Open MPI: OMPI_COMM_WORLD_*; Slurm's PMI2/PMIx: PMIX_RANK).
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def position_ranks(position: int, ranks: int) -> range:
    """The ranks that serve symmetry position `position`, in chain (fold) order."""
    _check(ranks)
    if not 0 <= position < POSITIONS:
        raise ValueError(f"position must be in 0..{POSITIONS - 1}, got {position}")
    if ranks <= POSITIONS:
        owner = position * ranks // POSITIONS
        return range(owner, owner + 1)
    return range(-(-position * ranks // POSITIONS), -(-(position + 1) * ranks // POSITIONS))


def rank_of_position(position: int, ranks: int) -> int:
    """The first rank that serves `position` (its only one when R <= 12)."""
    return position_ranks(position, ranks).start


def positions_of(rank: int, ranks: int) -> range:
    """The contiguous block of positions rank `rank` serves (one position when R >= 12)."""
    _check(ranks)
    if not 0 <= rank < ranks:
        raise ValueError(f"rank {rank} does not exist with {ranks} ranks")
    served = [p for p in range(POSITIONS) if rank in position_ranks(p, ranks)]
    return range(served[0], served[-1] + 1)


def rank_of_batch(batch: int, ranks: int, group: int) -> int:
    """The rank that computes batch `batch` of a `group`-batch group."""
    if not 0 <= batch < group:
        raise ValueError(f"batch {batch} is not in a group of {group}")
    p, s = batch % POSITIONS, batch // POSITIONS
    served = position_ranks(p, ranks)
    n = len(range(p, group, POSITIONS))  # spheres of position p in this group
    return served.start + s * len(served) // n


@lru_cache(maxsize=4096)  # a step asks for every rank's batches several times
def batches_of(rank: int, ranks: int, group: int) -> tuple[int, ...]:
    """Batch indices of a `group`-batch group that `rank` computes, in increasing order."""
    positions_of(rank, ranks)  # checks the rank
    return tuple(b for b in range(group) if rank_of_batch(b, ranks, group) == rank)


@lru_cache(maxsize=4096)
def holders(position: int, ranks: int, group: int) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """(rank, its batches of `position`) for every rank with a batch there, in fold order.

    The first starts the position's partial from zero; each next one continues it; the last
    one finishes it and sends its slices to their owners.
    """
    out: list[tuple[int, tuple[int, ...]]] = []
    for b in range(position, group, POSITIONS):
        r = rank_of_batch(b, ranks, group)
        if out and out[-1][0] == r:
            out[-1] = (r, out[-1][1] + (b,))
        else:
            out.append((r, (b,)))
    return tuple(out)


def slice_bounds(rank: int, ranks: int, n_params: int) -> tuple[int, int]:
    """[start, stop) of the parameter slice rank `rank` owns (every rank one, in rank order)."""
    return rank * n_params // ranks, (rank + 1) * n_params // ranks


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
