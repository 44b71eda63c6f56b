"""The order in which an epoch visits its batch groups: corpus order, or shuffled per epoch.

A shuffled order is a pure function of (seed, epoch, number of groups): the same on every
thread count, on every MPI rank and after `--resume` in the middle of an epoch, because
nothing else (no global RNG, no clock, no thread or rank id) goes into it. Shuffling whole
groups keeps each group's batches and their reduction order intact, so the engines and the
gates see exactly the groups they would see unshuffled.
"""

from __future__ import annotations

import numpy as np

# Mixed into the seed sequence so the data order never shares a random stream with the
# parameter initialisation or the synthetic corpus, which use the same run seed.
_ORDER_STREAM = 0x5EED_0F_E90C


def group_order(n_groups: int, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    """Group indices (int64) in the order epoch `epoch` trains them: a permutation of n_groups."""
    if n_groups < 1 or epoch < 0:
        raise ValueError(f"need n_groups >= 1 and epoch >= 0, got {n_groups} and {epoch}")
    if not shuffle:
        return np.arange(n_groups, dtype=np.int64)
    entropy = [_ORDER_STREAM, int(seed) % 2**64, int(epoch)]  # seeds may be negative
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    return rng.permutation(n_groups).astype(np.int64)


class EpochOrder:
    """Step -> (epoch, position in the epoch, group index), caching one epoch's order."""

    def __init__(self, n_groups: int, seed: int, shuffle: bool) -> None:
        self.n_groups, self.seed, self.shuffle = int(n_groups), int(seed), bool(shuffle)
        self._epoch = -1
        self._order = np.zeros(0, dtype=np.int64)

    def at(self, step: int) -> tuple[int, int, int]:
        """(epoch, position, group index) of global step `step` (0-based)."""
        epoch, position = divmod(int(step), self.n_groups)
        if epoch != self._epoch:
            self._order = group_order(self.n_groups, epoch, self.seed, self.shuffle)
            self._epoch = epoch
        return epoch, position, int(self._order[position])
