"""The training loop behind `spheres train`: steps over batch groups, progress, checkpoints.

Step s always trains group `s % groups_per_epoch` of epoch `s // groups_per_epoch`, and a
checkpoint holds parameters, both Adam moments and s, so `--resume` continues bitwise.
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
from harness.corpus import Corpus
from harness.heldout import HeldOut, evaluate
from harness.profiling import current_rss_bytes, peak_rss_bytes
from harness.progress import LiveProgress
from harness.stop import Stopped
from reference.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from reference.config import Config
from reference.engine import Engine
from reference.errors import InputError


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
    `Stopped` (the caller checkpoints, harness/rescue.py). `keep_checkpoints` > 0 keeps only
    that many newest step-*.npz files.
    """
    groups = corpus.groups(cfg)
    per_epoch = len(groups)
    if steps is None:
        steps = (epochs if epochs is not None else 1) * per_epoch
    if steps < 0:
        raise InputError(f"--steps must be >= 0, got {steps}")
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    summary = TrainSummary(steps=0, tokens=0, seconds=0.0, tokens_per_s=0.0,
                           compile_seconds=compile_seconds, peak_rss_bytes=0,
                           final_loss=float("nan"), start_step=start_step, end_step=start_step)
    progress(f"training {steps} steps from step {start_step}: {per_epoch} groups per epoch, "
             f"G={cfg.train.group_size} batches of {cfg.train.batch_size}x{cfg.model.seq_len}")
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
        epoch, gi = divmod(s, per_epoch)
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
        token_counts.append(result.n_targets)
        summary.final_loss = result.loss
        summary.end_step = s + 1
        rate = summary.tokens / summary.seconds if summary.seconds > 0 else 0.0
        record = getattr(engine, "record", None)  # the fast engine's run record (fast.record)
        if record is not None:
            record.counter("tokens/s", result.n_targets / dt)
            record.counter("RSS MB", current_rss_bytes() / 1e6)
        progress(f"[step {s + 1 - start_step}/{steps}] epoch {epoch} group {gi + 1}/{per_epoch} "
                 f"loss {result.loss:.4f} | norm {result.grad_norm:.3f} | lr {result.lr:.2e} | "
                 f"{result.n_targets / dt:,.0f} tok/s (avg {rate:,.0f}) | {dt:.2f}s")
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
    loss_sum = sum(loss * n for loss, n in zip(summary.losses, token_counts, strict=True))
    summary.mean_loss = loss_sum / summary.tokens if summary.tokens else float("nan")
    summary.epochs_completed = summary.end_step // per_epoch
    summary.tokens_per_s = summary.tokens / summary.seconds if summary.seconds > 0 else 0.0
    summary.peak_rss_bytes = peak_rss_bytes() or 0
    return summary
