"""What one `spheres train` run does, decided before any work: the frozen `TrainPlan`.

`harness/commands/train.py` builds the plan once from the command line (config, corpus,
held-out tail, planned steps, engine settings, outputs); `harness/run/train.py` runs it.

The cosine schedule must end where the run ends: with a fixed horizon of 1000 steps, a run of
15 steps never left the warm-up and flat top, so `--epochs N` never decayed the learning rate.
The horizon is fixed when a run starts and is stored in its checkpoints' config, so `--resume`
continues on the same curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.run.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint
from harness.run.corpus import Corpus
from harness.run.heldout import HeldOut
from plumbing.errors import InputError
from reference.config import Config
from reference.engine import TrainState

# Warm-up takes at most half the horizon: a run shorter than twice the configured warm-up
# would otherwise never leave it (10 warm-up steps, an 8-step run: the lr only rises), while
# half leaves every run as many decay steps as warm-up steps, ending at the floor. Applied to
# the config itself, so every engine (each computes lr from the config) follows one curve.
MAX_WARMUP_FRACTION = 0.5


@dataclass(frozen=True, eq=False)
class TrainPlan:
    """One training run: what it trains on, how long, with which engine, and what it writes."""

    cfg: Config  # the run's config, its lr horizon already set (a resumed run keeps its own)
    corpus: Corpus  # the training part of the token stream (the held-out tail cut off)
    steps: int  # optimiser steps this run takes (--steps, or --epochs x groups per epoch)
    start_step: int = 0  # global step the run starts from (the checkpoint's, with --resume)
    resume_state: TrainState | None = None  # the checkpoint's weights and moments to load
    heldout: HeldOut | None = None  # evaluated every `eval_every` steps and at the end
    eval_every: int = 0
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0  # also checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 0  # keep only the N newest step-*.npz files (0: all)
    engine: str = "fast"  # the --engine spelling (harness/run/engines.py make_engine)
    threads: int = 1
    dtype: str = "float32"
    stall_timeout: float = 60.0
    faults: list | None = None  # parsed --inject drills (fast.faults), None for none
    summary_json: Path | None = None  # --json: the TrainSummary
    trace: Path | None = None  # --trace: the threads' timeline as a Chrome trace
    quiet: bool = False  # --quiet: no live progress
    progress_seconds: float | None = None  # --progress-seconds


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


def resolve_resume(path: str | Path) -> Path:
    """A checkpoint file, or the newest checkpoint inside a folder."""
    p = Path(path)
    if p.is_dir():
        found = latest_checkpoint(p)
        if found is None:
            raise InputError(f"--resume {p}: the folder holds no checkpoint (step-*.npz)")
        return found
    if not p.exists():
        raise InputError(f"--resume {p}: no such checkpoint file")
    return p


def load_resume(path: str | Path) -> Checkpoint:
    """The checkpoint to continue from (state, config, vocabulary)."""
    return load_checkpoint(resolve_resume(path))
