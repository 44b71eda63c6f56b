"""AdamW on one parameter chunk: the formulas of DESIGN.md "Optimiser", elementwise and nogil.

Node Zero computes the per-step scalars once (learning rate, clip scale, bias corrections) with
`step_scalars`; the workers then run `adamw_chunk` on disjoint chunks in parallel. Each element
is computed in float64 and stored in the engine dtype, so the result does not depend on which
thread ran which chunk. Decoupled weight decay applies to 2-D parameters only, through a
per-element mask built from the parameter registry (`decay_mask`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from reference.config import ModelConfig, TrainConfig
from reference.optim import clip_scale, lr_at
from reference.params import flat_offsets, param_specs


@dataclass(frozen=True)
class StepScalars:
    """Everything the chunk update needs that is the same for every element of one step."""

    lr: float  # lr_t of the schedule for this update
    scale: float  # global-norm clip factor, min(1, clip / (norm + 1e-6))
    bias1: float  # 1 - beta1**t
    bias2: float  # 1 - beta2**t


def step_scalars(step: int, norm: float, cfg: TrainConfig) -> StepScalars:
    """Node Zero's once-per-step part: schedule, clip and bias corrections (t = step + 1)."""
    t = step + 1
    return StepScalars(lr=lr_at(step, cfg), scale=clip_scale(norm, cfg.clip_norm),
                       bias1=1.0 - cfg.beta1**t, bias2=1.0 - cfg.beta2**t)


def decay_mask(m: ModelConfig) -> np.ndarray:
    """uint8 per flat parameter: 1 where weight decay applies (2-D matrices), else 0."""
    offsets = flat_offsets(m)
    mask = np.zeros(max(stop for _, stop in offsets.values()), dtype=np.uint8)
    for spec in param_specs(m):
        if spec.decays:
            start, stop = offsets[spec.name]
            mask[start:stop] = 1
    return mask


@numba.njit(nogil=True, cache=True)
def adamw_chunk(params, grads, adam_m, adam_v, mask, start, stop, lr, scale, beta1, beta2,
                eps, weight_decay, bias1, bias2):  # pragma: no cover
    """One AdamW update of params[start:stop] in place (all flat vectors of the same length).

    g = g * scale
    m = beta1 m + (1 - beta1) g
    v = beta2 v + (1 - beta2) g**2
    m_hat = m / (1 - beta1**t);  v_hat = v / (1 - beta2**t)
    p = p - lr_t * (m_hat / (sqrt(v_hat) + eps) + (weight_decay * p if p is 2-D else 0))
    """
    for i in range(start, stop):
        g = np.float64(grads[i]) * scale
        m = beta1 * np.float64(adam_m[i]) + (1.0 - beta1) * g
        v = beta2 * np.float64(adam_v[i]) + (1.0 - beta2) * g * g
        adam_m[i] = m
        adam_v[i] = v
        m_hat = m / bias1
        v_hat = v / bias2
        p = np.float64(params[i])
        direction = m_hat / (math.sqrt(v_hat) + eps)
        if mask[i]:
            direction += weight_decay * p
        params[i] = p - lr * direction


def apply_chunk(params: np.ndarray, grads: np.ndarray, adam_m: np.ndarray, adam_v: np.ndarray,
                mask: np.ndarray, start: int, stop: int, s: StepScalars,
                cfg: TrainConfig) -> None:
    """Run `adamw_chunk` on [start, stop) with this step's scalars and the config's constants."""
    adamw_chunk(params, grads, adam_m, adam_v, mask, start, stop, s.lr, s.scale, cfg.beta1,
                cfg.beta2, cfg.eps, cfg.weight_decay, s.bias1, s.bias2)


def warmup(dtype) -> None:
    """Compile the update kernel for `dtype` before any thread starts."""
    p = np.zeros(4, dtype=dtype)
    mask = np.ones(4, dtype=np.uint8)
    adamw_chunk(p, p.copy(), p.copy(), p.copy(), mask, 0, 4, 1e-3, 1.0, 0.9, 0.999, 1e-8,
                0.01, 0.1, 0.001)
