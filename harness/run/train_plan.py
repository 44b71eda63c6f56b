"""How long a `spheres train` run is, and the learning-rate horizon that follows from it.

The cosine schedule must end where the run ends: with a fixed horizon of 1000 steps, a run of
15 steps never left the warm-up and flat top, so `--epochs N` never decayed the learning rate.
The horizon is fixed when a run starts and is stored in its checkpoints' config, so `--resume`
continues on the same curve.
"""

from __future__ import annotations

from plumbing.errors import InputError
from reference.config import Config

# Warm-up takes at most half the horizon: a run shorter than twice the configured warm-up
# would otherwise never leave it (10 warm-up steps, an 8-step run: the lr only rises), while
# half leaves every run as many decay steps as warm-up steps, ending at the floor. Applied to
# the config itself, so every engine (each computes lr from the config) follows one curve.
MAX_WARMUP_FRACTION = 0.5


def planned_steps(steps: int | None, epochs: int | None, groups_per_epoch: int) -> int:
    """Steps this invocation runs: --steps, or --epochs (default 1) x groups per epoch."""
    if steps is None:
        steps = (epochs if epochs is not None else 1) * groups_per_epoch
    if steps < 0:
        raise InputError(f"--steps must be >= 0, got {steps}")
    return steps


def with_horizon(cfg: Config, *, start_step: int, steps: int, total_steps: int | None) -> Config:
    """The config whose cosine horizon is `total_steps` if given, else the planned run's end,
    and whose warm-up is capped at MAX_WARMUP_FRACTION of that horizon.

    A horizon is at least 1 step (a 0-step run still needs a valid config).
    """
    horizon = total_steps if total_steps is not None else max(1, start_step + steps)
    warmup = min(cfg.train.warmup_steps, int(horizon * MAX_WARMUP_FRACTION))
    return cfg.replace(total_steps=horizon, warmup_steps=warmup)
