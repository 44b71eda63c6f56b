"""The training loop behind `spheres train`: steps over batch groups, progress, checkpoints.

Step s trains position `s % groups_per_epoch` of epoch `s // groups_per_epoch`; the group at
that position is given by reference/epoch_order.py (corpus order, or shuffled from the seed and
the epoch). A checkpoint holds parameters, both Adam moments, s and the config (horizon,
last-group policy, shuffle), so `--resume` continues bitwise, also in the middle of an epoch.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fast.record import CHECKPOINT
from harness.measure.process import current_rss_bytes, peak_rss_bytes
from harness.run.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from harness.run.corpus import Corpus
from harness.run.heldout import HeldOut, evaluate
from harness.run.progress import LiveProgress
from harness.run.run_plan import planned_steps
from harness.run.stop import Stopped
from plumbing.errors import InputError
from reference.config import Config
from reference.engine import Engine
from reference.epoch_order import EpochOrder


@dataclass
class TrainSummary:
    steps: int  # optimiser steps taken by this run
    tokens: int  # non-pad targets trained on by this run
    seconds: float  # wall seconds inside training steps (compile and start-up excluded)
    tokens_per_s: float
    compile_seconds: float  # engine start-up: Numba compilation and thread creation
    peak_rss_bytes: int
    final_loss: float
    mean_loss: float = float("nan")  # token-weighted over the run: sum(loss*n) / sum(n)
    start_step: int = 0
    end_step: int = 0
    epochs_completed: int = 0
    losses: list[float] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    # held-out loss (--eval-every): [global step, mean loss over the held-out tail]
    eval_losses: list[list[float]] = field(default_factory=list)
    final_eval_loss: float | None = None
    groups: list[int] = field(default_factory=list)  # corpus-order group index of each step
    lrs: list[float] = field(default_factory=list)  # learning rate each step's update used
    grad_norms: list[float] = field(default_factory=list)  # each step's norm before clipping
    step_targets: list[int] = field(default_factory=list)  # each step's non-pad targets
    last_group: str = "keep"  # the tail-group policy the epochs were cut with
    groups_per_epoch: int = 0
    dropped_targets_per_epoch: int = 0  # targets of a tail left out by --last-group drop
    horizon: int = 0  # cosine horizon (total_steps) of the learning-rate schedule
    warmup_steps: int = 0  # warm-up steps used (configured, capped at half the horizon)
    shuffle: bool = False
    shuffle_seed: int | None = None  # the seed of the epoch order, None when not shuffled

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


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


def load_resume(path: str | Path):
    """The checkpoint to continue from (state, config, vocabulary)."""
    return load_checkpoint(resolve_resume(path))


ProgressFn = Callable[[str], None]


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_training(engine: Engine, corpus: Corpus, cfg: Config, *, steps: int | None = None,
                 epochs: int | None = None, start_step: int = 0,
                 checkpoint_dir: Path | None = None, checkpoint_every: int = 0,
                 compile_seconds: float = 0.0,
                 progress: ProgressFn = stderr_progress,
                 heldout: HeldOut | None = None, eval_every: int = 0,
                 live: LiveProgress | None = None,
                 should_stop: Callable[[], int | None] | None = None,
                 keep_checkpoints: int = 0) -> TrainSummary:
    """Train `steps` more steps (or `epochs` more epochs) from global step `start_step`.

    `should_stop()` is polled between steps: a signal number ends the run there by raising
    `Stopped` (the caller checkpoints, harness/run/rescue.py). `keep_checkpoints` > 0 keeps only
    that many newest step-*.npz files.
    """
    groups = corpus.groups(cfg)
    per_epoch = len(groups)
    steps = planned_steps(steps, epochs, per_epoch)
    t = cfg.train
    order = EpochOrder(per_epoch, t.seed, t.shuffle)
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    summary = TrainSummary(steps=0, tokens=0, seconds=0.0, tokens_per_s=0.0,
                           compile_seconds=compile_seconds, peak_rss_bytes=0,
                           final_loss=float("nan"), start_step=start_step, end_step=start_step,
                           last_group=t.last_group, groups_per_epoch=per_epoch,
                           dropped_targets_per_epoch=groups.dropped_targets,
                           horizon=t.total_steps, warmup_steps=t.warmup_steps,
                           shuffle=t.shuffle, shuffle_seed=t.seed if t.shuffle else None)
    progress(f"training {steps} steps from step {start_step}: {per_epoch} groups per epoch, "
             f"G={cfg.train.group_size} batches of {cfg.train.batch_size}x{cfg.model.seq_len}")
    progress(f"last group: {_describe_tail(groups)}; order: "
             f"{f'shuffled per epoch (seed {t.seed})' if t.shuffle else 'corpus order'}; "
             f"lr horizon {t.total_steps} steps, warm-up {summary.warmup_steps}")
    if start_step + steps > t.total_steps:
        progress(f"note: steps {t.total_steps + 1}..{start_step + steps} lie past the lr horizon "
                 f"({t.total_steps}) and run at the floor lr; to plan a longer run, give its "
                 "first part --total-steps")
    token_counts: list[int] = []  # each step's non-pad targets: the loss weights
    if live is not None:
        live.set_units(steps)
    if heldout is not None:
        progress(f"held out: the last {heldout.n_tokens:,} tokens of the stream (from token "
                 f"{heldout.start:,}), {heldout.n_batches} batches, never trained on")
    for s in range(start_step, start_step + steps):
        if should_stop is not None and (signum := should_stop()) is not None:
            raise Stopped(signum, f"{signal.Signals(signum).name}: stopped after step {s}",
                          consistent=True)
        epoch, position, gi = order.at(s)
        group = groups.group(gi)
        t0 = time.perf_counter()
        if live is not None:
            live.begin_step(s + 1 - start_step, group.n_batches)
        result = engine.step(group.tokens, group.targets)
        dt = time.perf_counter() - t0
        if live is not None:
            live.end_step(result.n_targets, result.loss)
        summary.steps += 1
        summary.seconds += dt
        summary.tokens += result.n_targets
        summary.losses.append(result.loss)
        summary.groups.append(gi)
        summary.lrs.append(result.lr)
        summary.grad_norms.append(result.grad_norm)
        token_counts.append(result.n_targets)
        summary.final_loss = result.loss
        summary.end_step = s + 1
        rate = summary.tokens / summary.seconds if summary.seconds > 0 else 0.0
        record = getattr(engine, "record", None)  # the fast engine's run record (fast.record)
        if record is not None:
            record.counter("tokens/s", result.n_targets / dt)
            record.counter("RSS MB", current_rss_bytes() / 1e6)
        progress(f"[step {s + 1 - start_step}/{steps}] epoch {epoch} step {position + 1}/"
                 f"{per_epoch} (group {gi + 1}) loss {result.loss:.4f} | norm "
                 f"{result.grad_norm:.3f} | lr {result.lr:.2e} | {rate:,.0f} tok/s over the run "
                 f"({result.n_targets:,} tokens this step) | {dt:.2f}s")
        last = s + 1 == start_step + steps
        if heldout is not None and (last or (eval_every and (s + 1) % eval_every == 0)):
            ev = evaluate(engine, heldout)
            summary.eval_losses.append([s + 1, ev.loss])
            summary.final_eval_loss = ev.loss
            if live is not None:
                live.set_eval(ev.loss)
            progress(f"  eval loss {ev.loss:.4f} over {ev.n_targets:,} held-out targets "
                     f"({ev.batches} batches)")
        if checkpoint_dir is not None and (last or (checkpoint_every and
                                                    (s + 1) % checkpoint_every == 0)):
            path = checkpoint_path(checkpoint_dir, s + 1)
            t_ckpt = record.now() if record is not None else 0.0
            save_checkpoint(path, engine.state(), cfg, corpus.vocab,
                            extra={"data": corpus.source, "epoch": epoch,
                                   "epoch_position": position + 1,
                                   "groups_per_epoch": per_epoch,
                                   **({"eval_loss": summary.final_eval_loss,
                                       "eval_step": summary.eval_losses[-1][0]}
                                      if summary.eval_losses else {})})
            if record is not None:
                record.here().span(CHECKPOINT, -1, t_ckpt, record.now())
            summary.checkpoints.append(str(path))
            progress(f"  checkpoint written: {path}")
            if keep_checkpoints:
                prune_checkpoints(checkpoint_dir, keep_checkpoints)
    if should_stop is not None and (signum := should_stop()) is not None:
        raise Stopped(signum, f"{signal.Signals(signum).name}: stopped after the last step "
                              f"{start_step + steps}", consistent=True)
    summary.step_targets = token_counts
    loss_sum = sum(loss * n for loss, n in zip(summary.losses, token_counts, strict=True))
    summary.mean_loss = loss_sum / summary.tokens if summary.tokens else float("nan")
    summary.epochs_completed = summary.end_step // per_epoch
    summary.tokens_per_s = summary.tokens / summary.seconds if summary.seconds > 0 else 0.0
    summary.peak_rss_bytes = peak_rss_bytes() or 0
    return summary


def _describe_tail(groups) -> str:
    """One phrase on what the last-group policy did to this corpus."""
    if groups.merged:
        return "a short tail merged into the epoch's last group (--last-group merge)"
    if groups.dropped_targets:
        return f"{groups.dropped_targets:,} tail targets dropped per epoch (--last-group drop)"
    return f"no group below half a full group (--last-group {groups.last_group})" \
        if groups.last_group != "keep" else "kept as it is (--last-group keep)"
