"""Learning-rate schedule, global-norm clipping, the finite check and AdamW (SPEC 3).

Exactly the formulas of docs/DESIGN.md "Optimiser", written out one line per formula in float64:
the fast engine (fast/update.py) implements the same lines in float32 and is compared to these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from plumbing.errors import NonFiniteGradientError
from reference.config import TrainConfig


def lr_at(step: int, train_cfg: TrainConfig) -> float:
    """Learning rate of the update applied at `step` (0-based): linear warm-up, cosine decay.

    The cosine reaches lr * min_lr_ratio at the horizon's last step (t = total_steps) and stays
    there. A run's config caps the warm-up at half its horizon (harness/run/train_plan.py), so
    every engine, which computes this same formula from the config, decays to the floor.
    """
    t = step + 1  # 1-based count of the update being applied
    lr, W, Tt = train_cfg.lr, train_cfg.warmup_steps, train_cfg.total_steps
    lr_min = lr * train_cfg.min_lr_ratio
    if W > 0 and t <= W:
        return lr * t / W
    progress = min(1.0, (t - W) / max(1, Tt - W))
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * progress))


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """sqrt(sum over every parameter of sum(g**2)), accumulated in float64."""
    total = 0.0
    for g in grads.values():
        g64 = np.asarray(g, dtype=np.float64)
        total += float(np.sum(g64 * g64))
    return math.sqrt(total)


def clip_scale(norm: float, clip: float) -> float:
    """Factor applied to every gradient so the global norm is at most `clip`."""
    return min(1.0, clip / (norm + 1e-6))


def check_finite(grads: dict[str, np.ndarray], batch: int | None = None,
                 step: int | None = None, names: Iterable[str] | None = None) -> None:
    """Raise NonFiniteGradientError naming the first parameter (in `names` order, default the
    dict's, which is registry order) whose gradient holds NaN or Inf."""
    for name in (names if names is not None else grads):
        if not np.all(np.isfinite(grads[name])):
            raise NonFiniteGradientError(name, batch=batch, step=step)


class AdamW:
    """AdamW with decoupled weight decay on 2-D matrices; moments are float64 by name."""

    def __init__(self, params: dict[str, np.ndarray], train_cfg: TrainConfig) -> None:
        self.cfg = train_cfg
        self.m = {name: np.zeros(np.shape(p), dtype=np.float64) for name, p in params.items()}
        self.v = {name: np.zeros(np.shape(p), dtype=np.float64) for name, p in params.items()}

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
               step: int) -> tuple[float, float]:
        """Clip and apply one update in place; returns (lr used, gradient norm before clipping).

        Every gradient is checked finite first, so on error nothing is applied.
        """
        c = self.cfg
        check_finite(grads, step=step, names=params.keys())
        t = step + 1
        lr_t = lr_at(step, c)
        norm = global_norm(grads)
        scale = clip_scale(norm, c.clip_norm)
        for name, p in params.items():
            g = np.asarray(grads[name], dtype=np.float64) * scale
            m = self.m[name] = c.beta1 * self.m[name] + (1 - c.beta1) * g
            v = self.v[name] = c.beta2 * self.v[name] + (1 - c.beta2) * g**2
            m_hat = m / (1 - c.beta1**t)
            v_hat = v / (1 - c.beta2**t)
            decay = c.weight_decay * p if p.ndim == 2 else 0.0
            p[...] = p - lr_t * (m_hat / (np.sqrt(v_hat) + c.eps) + decay)
        return lr_t, norm
