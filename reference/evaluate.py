"""Held-out loss: the forward pass only, over batches of a stream the model never trained on.

The loss is the token-weighted mean over every non-pad target: batch loss SUMS added in batch
index order (the same fixed order as the training gradient's), divided once by the count. The
fast engine computes the same quantity on its workers (fast/evaluate.py); the harness
(harness/run/heldout.py) decides which tokens are held out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plumbing.errors import InputError
from reference import layers
from reference.config import ModelConfig
from reference.model import forward


@dataclass
class EvalResult:
    """One held-out evaluation: mean loss over `n_targets` non-pad targets in `batches`."""

    loss: float
    n_targets: int
    batches: int


def check_eval_rows(tokens: np.ndarray, targets: np.ndarray, batch_size: int) -> int:
    """Rows are whole batches of the same shape; returns the number of batches."""
    if np.ndim(tokens) != 2 or np.shape(tokens) != np.shape(targets):
        raise InputError(f"held-out tokens {np.shape(tokens)} and targets {np.shape(targets)} "
                         "must be 2-D arrays of the same shape (rows, positions)")
    rows = np.shape(tokens)[0]
    if rows == 0 or rows % batch_size:
        raise InputError(f"held-out data has {rows} rows, not a positive multiple of the batch "
                         f"size {batch_size}; cut it with reference.batches (it pads)")
    if not np.count_nonzero(targets):
        raise InputError("the held-out data has no non-pad targets; raise --eval-fraction")
    return rows // batch_size


def eval_loss(params: dict, m: ModelConfig, tokens: np.ndarray, targets: np.ndarray,
              batch_size: int) -> EvalResult:
    """Mean held-out loss in float64: batch loss sums in index order / total count."""
    nb = check_eval_rows(tokens, targets, batch_size)
    loss_total, n_total = 0.0, 0
    for b in range(nb):
        rs = slice(b * batch_size, (b + 1) * batch_size)
        logits, _ = forward(params, m, tokens[rs])
        (loss_sum, n), _ = layers.crossentropy_forward(logits, np.asarray(targets[rs]))
        loss_total += loss_sum
        n_total += n
    return EvalResult(loss=loss_total / n_total, n_targets=int(n_total), batches=nb)
