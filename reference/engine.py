"""The one small interface through which the harness drives either engine.

Both `reference.engine.ReferenceEngine` and `fast.trainer.FastTrainer` implement `Engine`; the
harness (verify, train, analyze, bench) only ever calls these methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from reference.config import Config


@dataclass
class StepResult:
    """What one batch group produced."""

    loss: float  # token-weighted mean cross-entropy over the group's non-pad targets
    n_targets: int  # non-pad targets in the group (the loss/gradient denominator)
    grad_norm: float = float("nan")  # global L2 norm of the mean gradient, before clipping
    lr: float = float("nan")  # learning rate used by the update (nan when no update)
    grads: dict[str, np.ndarray] | None = None  # mean gradient, float64 copies, when asked
    stats: dict = field(default_factory=dict)  # engine-specific timings and counters


@dataclass
class TrainState:
    """Everything a checkpoint needs to continue bitwise-identically."""

    params: dict[str, np.ndarray]  # in the engine's dtype
    adam_m: dict[str, np.ndarray]
    adam_v: dict[str, np.ndarray]
    step: int  # optimiser updates applied so far


class Engine(Protocol):
    config: Config

    def group_grads(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        """Loss and mean gradient of one group (tokens/targets: (g*B, S) int64); no update."""

    def step(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        """One optimiser step on one group: gradient, clip, AdamW update."""

    def state(self) -> TrainState:
        """Copies of parameters, optimiser moments and the step counter."""

    def load_state(self, state: TrainState) -> None:
        """Replace parameters, moments and step (for --resume)."""

    def close(self) -> None:
        """Release threads and buffers; safe to call twice."""
