"""The last consistent state, saved when a training run ends early (SPEC 12).

A fault or stall raises before Node Zero applies the step (SPEC 5: nothing half-applied) and a
graceful stop happens between steps, so the engine's state is then exactly the weights after
the last completed step. This module writes it as the ordinary `step-N.npz`, which `--resume`
continues bitwise, and says so. A failure to write it is reported, never hides the cause.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.run.checkpoint import checkpoint_path, prune_checkpoints, save_checkpoint
from harness.run.stop import Stopped
from harness.run.train_plan import TrainPlan
from plumbing.errors import SpheresError
from reference.engine import Engine


def _say(line: str) -> None:
    print(f"spheres: {line}", file=sys.stderr, flush=True)


def rescue_checkpoint(engine: Engine, plan: TrainPlan, cause: BaseException) -> Path | None:
    """Checkpoint the weights after the last completed step of `plan` (into its
    --checkpoint-dir); the path, or None if none."""
    assert plan.checkpoint_dir is not None
    cfg, corpus, checkpoint_dir = plan.cfg, plan.corpus, plan.checkpoint_dir
    start_step, keep_checkpoints = plan.start_step, plan.keep_checkpoints
    if isinstance(cause, Stopped) and not cause.consistent:
        _say("stopped mid-step: no checkpoint written (the newest one on disk is intact)")
        return None
    try:
        state = engine.state()
        if state.step <= start_step:
            _say(f"no step completed in this run: nothing new to checkpoint (step {state.step})")
            return None
        path = checkpoint_path(checkpoint_dir, state.step)
        if path.exists():
            _say(f"the last completed step {state.step} is already checkpointed: {path}")
            return path
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        epoch = state.step // max(1, len(corpus.groups(cfg)))
        save_checkpoint(path, state, cfg, corpus.vocab,
                        extra={"data": corpus.source, "epoch": epoch})
        if keep_checkpoints:
            prune_checkpoints(checkpoint_dir, keep_checkpoints)
    except (OSError, SpheresError) as exc:
        _say(f"could not checkpoint the last completed step: {exc}")
        return None
    _say(f"checkpointed the last completed step {state.step} before exiting: {path} "
         f"(continue with --resume {checkpoint_dir})")
    return path
