"""The one small interface through which the harness drives either engine.

Both `reference.engine.ReferenceEngine` and `fast.trainer.FastTrainer` implement `Engine`; the
harness (verify, train, analyze, bench) only ever calls these methods. What only some engines
can do is declared beside it as small protocols (`Recorded`, `Evaluates`, `CountsBatches`,
`InjectsFaults`, `ReportsChildMemory`): the harness asks `isinstance(engine, Evaluates)`, never
probes for a method by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from plumbing.errors import InputError, NonFiniteGradientError
from reference.config import Config, ModelConfig
from reference.evaluate import EvalResult, eval_loss
from reference.model import batch_loss_and_grads, group_loss_and_grads
from reference.optim import AdamW, check_finite, global_norm
from reference.params import init_params, param_specs


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


# -- optional capabilities: an engine has them or not, the harness checks with isinstance ------

@runtime_checkable
class Recorded(Protocol):
    """Keeps a run record of every thread's spans and counters (fast.record.Record)."""

    record: Any


@runtime_checkable
class Evaluates(Protocol):
    """Measures the held-out loss (forward only) without changing the parameters."""

    def eval_loss(self, tokens: np.ndarray, targets: np.ndarray) -> EvalResult:
        """Mean loss over the non-pad targets of (n*B, S) tokens/targets."""


@runtime_checkable
class CountsBatches(Protocol):
    """Reports how far the group in flight is, for the live progress display."""

    def batches_done(self) -> tuple[int, int] | None:
        """(batches finished, batches) of the group in flight, None between calls."""


@runtime_checkable
class InjectsFaults(Protocol):
    """Takes `--inject` fault drills, and says which of them never fired."""

    def unfired_faults(self) -> list:
        """The injected faults whose step never came."""


@runtime_checkable
class ReportsChildMemory(Protocol):
    """Runs in a child process (exec engines) whose peak memory the harness cannot see."""

    def child_peak_rss_bytes(self) -> int | None:
        """The child's peak resident set size, None when unknown."""


class ReferenceEngine:
    """The executable specification behind `Engine`: float64 NumPy, one thread, no tricks.

    Every other engine is judged against this one: `group_grads` is `group_loss_and_grads`,
    `step` is that gradient plus the finite check, the clip and AdamW of reference/optim.py.
    """

    def __init__(self, config: Config, params: dict[str, np.ndarray] | None = None) -> None:
        self.config = config.validate()
        m = config.model
        source = params if params is not None else init_params(m, config.train.seed)
        self.params = _copy_checked(source, m, "params")
        self.optimizer = AdamW(self.params, config.train)
        self.step_count = 0  # optimiser updates applied so far

    def group_grads(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        """Loss and mean gradient of one group (g*B rows); parameters are not changed."""
        loss, n, grads = group_loss_and_grads(self.params, self.config.model, tokens, targets,
                                              self.config.train.batch_size)
        return StepResult(loss=loss, n_targets=n, grad_norm=global_norm(grads), grads=grads)

    def step(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        """Gradient of the group, finite check, clip, AdamW; nothing is applied on error."""
        result = self.group_grads(tokens, targets)
        try:
            check_finite(result.grads, step=self.step_count, names=self.params.keys())
        except NonFiniteGradientError as exc:
            bad_batch = self._first_bad_batch(tokens, targets)
            raise NonFiniteGradientError(exc.parameter, batch=bad_batch,
                                         step=self.step_count) from None
        result.lr, result.grad_norm = self.optimizer.update(self.params, result.grads,
                                                            self.step_count)
        self.step_count += 1
        return result

    def eval_loss(self, tokens: np.ndarray, targets: np.ndarray) -> EvalResult:
        """Held-out loss in float64 (forward only); parameters are not changed."""
        return eval_loss(self.params, self.config.model, tokens, targets,
                         self.config.train.batch_size)

    def _first_bad_batch(self, tokens: np.ndarray, targets: np.ndarray) -> int | None:
        """Index within the group of the first batch whose own gradient is not finite."""
        B = self.config.train.batch_size
        for b, start in enumerate(range(0, len(tokens), B)):
            loss, _, grads = batch_loss_and_grads(self.params, self.config.model,
                                                  tokens[start:start + B], targets[start:start + B])
            if not np.isfinite(loss) or not all(np.all(np.isfinite(g)) for g in grads.values()):
                return b
        return None

    def state(self) -> TrainState:
        return TrainState(params={k: v.copy() for k, v in self.params.items()},
                          adam_m={k: v.copy() for k, v in self.optimizer.m.items()},
                          adam_v={k: v.copy() for k, v in self.optimizer.v.items()},
                          step=self.step_count)

    def load_state(self, state: TrainState) -> None:
        m = self.config.model
        params = _copy_checked(state.params, m, "checkpoint params")
        adam_m = _copy_checked(state.adam_m, m, "checkpoint adam_m")
        adam_v = _copy_checked(state.adam_v, m, "checkpoint adam_v")
        for name in self.params:  # in place: callers may hold references to these arrays
            self.params[name][...] = params[name]
        self.optimizer.m, self.optimizer.v = adam_m, adam_v
        self.step_count = int(state.step)

    def close(self) -> None:
        """Nothing to release: the reference owns no threads."""

    def __enter__(self) -> ReferenceEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _copy_checked(tensors: dict[str, np.ndarray], m: ModelConfig, what: str
                  ) -> dict[str, np.ndarray]:
    """float64 copies in registry order, or InputError naming the first missing/misshapen one."""
    out = {}
    for spec in param_specs(m):
        if spec.name not in tensors:
            raise InputError(f"{what} lack parameter {spec.name!r}; they were made for another "
                             "model config: use the config saved with them")
        a = np.array(tensors[spec.name], dtype=np.float64)  # a copy
        if a.shape != spec.shape:
            raise InputError(f"{what}: {spec.name!r} has shape {a.shape}, the config needs "
                             f"{spec.shape}; use the config saved with them")
        out[spec.name] = a
    return out
