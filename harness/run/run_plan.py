"""How long a `spheres train` run is, and the learning-rate horizon that follows from it.

The cosine schedule must end where the run ends: with a fixed horizon of 1000 steps, a run of
15 steps never left the warm-up and flat top, so `--epochs N` never decayed the learning rate.
The horizon is fixed when a run starts and is stored in its checkpoints' config, so `--resume`
continues on the same curve.
"""

from __future__ import annotations

from reference.config import Config
from reference.errors import InputError


def planned_steps(steps: int | None, epochs: int | None, groups_per_epoch: int) -> int:
    """Steps this invocation runs: --steps, or --epochs (default 1) x groups per epoch."""
    if steps is None:
        steps = (epochs if epochs is not None else 1) * groups_per_epoch
    if steps < 0:
        raise InputError(f"--steps must be >= 0, got {steps}")
    return steps


def with_horizon(cfg: Config, *, start_step: int, steps: int, total_steps: int | None) -> Config:
    """The config whose cosine horizon is `total_steps` if given, else the planned run's end.

    A horizon is at least 1 step (a 0-step run still needs a valid config).
    """
    horizon = total_steps if total_steps is not None else max(1, start_step + steps)
    return cfg.replace(total_steps=horizon)
