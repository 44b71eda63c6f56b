"""The fast engine's forward-only path: one batch's held-out loss SUM, on a worker thread.

It runs `fast.kernels.model_forward_loss`, the forward half of the training kernel over the
same kernels and workspace, so it needs no gradient memory and no position tickets: each batch
writes only its own loss slot, and Node Zero adds the slots in batch order (bitwise the same
for any thread count).
"""

from __future__ import annotations

import numpy as np

from fast import kernels as K
from fast.model import _WARMUP_MODEL, FastModel, Workspace


def batch_forward_loss(model: FastModel, params_flat: np.ndarray, tokens: np.ndarray,
                       targets: np.ndarray, workspace: Workspace, ticks: np.ndarray,
                       slot: int) -> tuple[float, int]:
    """(loss SUM over non-pad targets, their count) of one batch (B, T) int64, T <= S.

    The caller (FastTrainer) has checked ids and shapes for the whole held-out set."""
    m = model.m
    dims = np.array([m.vocab_size, m.seq_len, m.d_model, m.n_layers, m.n_heads, m.d_ff,
                     model.micro_batch], dtype=np.int64)
    loss, n = K.model_forward_loss(params_flat, model.param_offsets,
                                   np.ascontiguousarray(tokens, dtype=np.int64),
                                   np.ascontiguousarray(targets, dtype=np.int64),
                                   workspace.buffer, workspace.offsets, dims, ticks, int(slot))
    return float(loss), int(n)


def warmup(dtype) -> None:
    """Compile (or load from Numba's cache) the forward-only kernel before threads start."""
    from reference.params import init_params

    model = FastModel(_WARMUP_MODEL, dtype, micro_batch=1)
    flat = model.flatten(init_params(_WARMUP_MODEL, 0))
    tokens = np.array([[1, 2, 3, 4], [5, 6, 0, 0]], dtype=np.int64)
    batch_forward_loss(model, flat, tokens, tokens, model.new_workspace(),
                       np.zeros(1, np.int64), 0)
