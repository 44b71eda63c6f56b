"""The token stream cut into batches and batch groups, and an epoch that ENDS (SPEC 2, 8.1).

Batch b holds rows r = 0..B-1, the windows w = b*B + r of S tokens; its targets are the same
windows shifted by one. Past the end of the stream both are padded with <pad> (0), whose
targets the loss ignores. An epoch is exactly ceil((N-1)/(B*S)) batches, never zero: the
original counted groups past the end of the data and trained on nothing when the corpus was
smaller than one batch.

The epoch's last group may be short. Its policy (SPEC 2, `--last-group`): `keep` it as it is,
`merge` a tail holding fewer than MIN_TAIL_FRACTION of a full group's targets into the group
before it, or `drop` such a tail and count its targets. With merge or drop no group of a
multi-group epoch holds fewer than MIN_TAIL_FRACTION * G*B*S targets, so no optimiser step is
taken on a few tokens' gradient (a one-target tail spiked the gradient norm every epoch).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from plumbing.errors import DataError
from reference.data import PAD

LAST_GROUP_POLICIES = ("keep", "merge", "drop")  # what happens to an epoch's short last group
# A tail group below half a full group's targets is merged or dropped: half keeps every step's
# gradient within a factor of two of a full group's token count (merged groups hold at most
# 1.5 full groups), while a tail of half a group or more is enough tokens for a step of its own.
MIN_TAIL_FRACTION = 0.5


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value <= 0:
            raise DataError(f"{name}={value!r} must be a positive integer")


def n_batches(n_tokens: int, B: int, S: int) -> int:
    """Batches per epoch: ceil((N-1)/(B*S)); every target position 1..N-1 is in one batch."""
    _check_sizes(B=B, S=S)
    if n_tokens < 2:
        raise DataError(f"the corpus has {n_tokens} tokens and needs at least 2 (one input and "
                        "its target); give more text with --data or a larger synthetic corpus")
    return -(-(n_tokens - 1) // (B * S))


def _windows(stream: np.ndarray, first_batch: int, n: int, B: int, S: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of batches first_batch .. first_batch+n-1, stacked: (n*B, S) each."""
    rows = n * B
    start = first_batch * B * S
    buf = np.full(rows * S + 1, PAD, dtype=np.int64)  # (n*B*S + 1,): one extra for the shift
    piece = stream[start:start + rows * S + 1]
    buf[:len(piece)] = piece
    inputs = buf[:-1].reshape(rows, S)  # (n*B, S): stream[w*S : w*S+S]
    targets = buf[1:].reshape(rows, S)  # (n*B, S): stream[w*S+1 : w*S+S+1]
    return inputs.copy(), targets.copy()


def get_batch(stream: np.ndarray, b: int, B: int, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch b as (inputs, targets), each (B, S) int64, padded with 0 past the end."""
    nb = n_batches(len(stream), B, S)
    if not 0 <= b < nb:
        raise IndexError(f"batch {b} is outside the epoch's {nb} batches (0..{nb - 1})")
    return _windows(stream, b, 1, B, S)


@dataclass(frozen=True)
class Group:
    """G consecutive batches (the last group may hold fewer, or more when merged), in order."""

    index: int  # group number within the epoch
    first_batch: int  # epoch batch index of the group's first batch
    tokens: np.ndarray  # (g*B, S) int64 inputs
    targets: np.ndarray  # (g*B, S) int64 targets, 0 = padding (ignored by the loss)
    n_batches: int  # g: G; the epoch's last group: fewer (keep), up to G + ceil(G/2) (merge)


class BatchGroups:
    """One epoch of batch groups: iterates exactly len(self) groups, then stops.

    Groups hold G consecutive batches; the last one is shaped by `last_group` (module doc):
    `keep` leaves ceil(n_batches / G) groups, `merge` and `drop` one fewer when the tail is
    below MIN_TAIL_FRACTION of a full group and another group precedes it.
    """

    def __init__(self, stream: np.ndarray, B: int, S: int, G: int,
                 last_group: str = "keep") -> None:
        _check_sizes(B=B, S=S, G=G)
        if last_group not in LAST_GROUP_POLICIES:
            raise DataError(f"last_group={last_group!r} is not a policy; choose one of "
                            f"{', '.join(LAST_GROUP_POLICIES)}")
        self.stream = np.asarray(stream)  # kept in its (small) type; batches are int64 copies
        if not np.issubdtype(self.stream.dtype, np.integer):
            self.stream = self.stream.astype(np.int64)
        if self.stream.ndim != 1:
            raise DataError(f"the token stream must be 1-D, got shape {self.stream.shape}")
        self.B, self.S, self.G = int(B), int(S), int(G)
        self.last_group = last_group
        self.n_batches = n_batches(len(self.stream), self.B, self.S)

    def _plan(self) -> tuple[int, bool, int]:
        """(groups in the epoch, tail merged?, targets dropped), from n_batches and the policy."""
        n_kept = -(-self.n_batches // self.G)
        tail_targets = len(self.stream) - 1 - (n_kept - 1) * self.full_group_targets
        short = n_kept > 1 and tail_targets < MIN_TAIL_FRACTION * self.full_group_targets
        if not short or self.last_group == "keep":
            return n_kept, False, 0
        if self.last_group == "merge":
            return n_kept - 1, True, 0
        return n_kept - 1, False, tail_targets

    @property
    def merged(self) -> bool:
        """Whether the epoch's last group also holds a short tail (policy merge)."""
        return self._plan()[1]

    @property
    def dropped_targets(self) -> int:
        """Targets of a short tail the epoch leaves out (policy drop), else 0."""
        return self._plan()[2]

    @property
    def full_group_targets(self) -> int:
        """Targets in a full group of G unpadded batches: G*B*S."""
        return self.G * self.B * self.S

    def __len__(self) -> int:
        return self._plan()[0]

    def group(self, i: int) -> Group:
        """Group i (0-based) by random access, e.g. to resume at a step."""
        if not 0 <= i < len(self):
            raise IndexError(f"group {i} is outside the epoch's {len(self)} groups "
                             f"(0..{len(self) - 1})")
        first = i * self.G
        n_groups, _, dropped = self._plan()
        end = n_groups * self.G if dropped else self.n_batches  # a dropped tail: left out
        g = end - first if i == n_groups - 1 else self.G
        tokens, targets = _windows(self.stream, first, g, self.B, self.S)
        return Group(index=i, first_batch=first, tokens=tokens, targets=targets, n_batches=g)

    def __iter__(self) -> Iterator[Group]:
        for i in range(len(self)):
            yield self.group(i)
