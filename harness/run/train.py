"""The training loop behind `spheres train`: a `TrainPlan` run step by step, with checkpoints.

Step s trains position `s % groups_per_epoch` of epoch `s // groups_per_epoch`; the group at
that position is given by reference/epoch_order.py (corpus order, or shuffled from the seed and
the epoch). A checkpoint holds parameters, both Adam moments, s and the config (horizon,
last-group policy, shuffle), so `--resume` continues bitwise, also in the middle of an epoch.
A --checkpoint-dir belongs to one run at a time: `train` holds its lock file for the whole run
(plumbing/folder_lock.py), so a second run into it is refused (exit 2) naming the owner.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

from fast.record import CHECKPOINT
from harness.measure.process import current_rss_bytes, peak_rss_bytes
from harness.run.checkpoint import checkpoint_path, prune_checkpoints, save_checkpoint
from harness.run.engines import make_engine, unfired_faults
from harness.run.heldout import evaluate
from harness.run.progress import LiveProgress, train_progress
from harness.run.rescue import rescue_checkpoint
from harness.run.stop import Stopped, active
from harness.run.train_plan import TrainPlan
from plumbing.errors import FaultError, StallError
from plumbing.folder_lock import lock_folder
from plumbing.outputs import json_text
from reference.batches import BatchGroups
from reference.engine import Engine, Recorded, StepResult
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
        return json_text(asdict(self), indent=2, sort_keys=True)  # NaN (no step) as null


Say = Callable[[str], None]  # prints one line of the run's log
StopPoll = Callable[[], "int | None"]  # the signal a graceful stop received, or None


def stderr_say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train(plan: TrainPlan) -> TrainSummary:
    """The one call behind `spheres train`: build the plan's engine, train, close it.

    A fault, a stall or a graceful stop first checkpoints the last consistent state when the
    plan has a --checkpoint-dir (SPEC 12, harness/run/rescue.py), then propagates.
    """
    if plan.checkpoint_dir is None:
        return _train(plan)
    with lock_folder(plan.checkpoint_dir, f"--checkpoint-dir {plan.checkpoint_dir}"):
        return _train(plan)


def _train(plan: TrainPlan) -> TrainSummary:
    t0 = time.perf_counter()
    engine = make_engine(plan.engine, plan.cfg, threads=plan.threads, dtype=plan.dtype,
                         stall_timeout=plan.stall_timeout, faults=plan.faults)
    try:
        compile_seconds = time.perf_counter() - t0
        if plan.resume_state is not None:
            engine.load_state(plan.resume_state)
        stop = active()
        live = train_progress(engine, plan.cfg, quiet=plan.quiet, seconds=plan.progress_seconds)
        try:
            with live, stop.deferred() if stop is not None else nullcontext():
                summary = run_training(plan, engine, say=live.write, live=live,
                                       should_stop=stop.requested if stop else None,
                                       compile_seconds=compile_seconds)
        except (FaultError, StallError, Stopped) as exc:  # SPEC 12: save what is consistent
            if plan.checkpoint_dir is not None:
                rescue_checkpoint(engine, plan, exc)
            raise
        warn_unfired(engine)
    finally:
        engine.close()
        if plan.trace is not None:  # also after a failure: see where it stopped
            from harness.measure.trace import write_trace

            write_trace(engine.record.snapshot(), plan.trace)
            print(f"trace written: {plan.trace}", file=sys.stderr, flush=True)
    return summary


def warn_unfired(engine: Engine) -> None:
    """A drill that never fired is reported, never silently dropped (SPEC 5)."""
    for fault in unfired_faults(engine):
        print(f"spheres: warning: injected fault never fired: {fault}", file=sys.stderr,
              flush=True)


def run_training(plan: TrainPlan, engine: Engine, *, say: Say = stderr_say,
                 live: LiveProgress | None = None, should_stop: StopPoll | None = None,
                 compile_seconds: float = 0.0) -> TrainSummary:
    """Train `plan.steps` more steps from global step `plan.start_step`.

    `should_stop()` is polled between steps: a signal number ends the run there by raising
    `Stopped` (the caller checkpoints, harness/run/rescue.py). `plan.keep_checkpoints` > 0
    keeps only that many newest step-*.npz files. Steps are shown by their global number, as
    the checkpoints name them: a run resumed from step 40 for 20 more shows step 41/60.
    """
    cfg, start, steps = plan.cfg, plan.start_step, plan.steps
    groups = plan.corpus.groups(cfg)
    per_epoch = len(groups)
    t = cfg.train
    order = EpochOrder(per_epoch, t.seed, t.shuffle)
    if plan.checkpoint_dir is not None:
        plan.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    summary = _new_summary(plan, groups, compile_seconds)
    _announce(plan, groups, summary, say)
    token_counts: list[int] = []  # each step's non-pad targets: the loss weights
    if live is not None:  # counted as the checkpoints count: a resumed run goes on from start
        live.set_units(steps, offset=start)
    if plan.heldout is not None:
        h = plan.heldout
        say(f"held out: the last {h.n_tokens:,} tokens of the stream (from token "
            f"{h.start:,}), {h.n_batches} batches, never trained on")
    record = engine.record if isinstance(engine, Recorded) else None
    for s in range(start, start + steps):
        _stop_if_asked(should_stop, f"stopped after step {s}")
        epoch, position, gi = order.at(s)
        group = groups.group(gi)
        t0 = time.perf_counter()
        if live is not None:
            live.begin_step(s + 1 - start, group.n_batches)
        result = engine.step(group.tokens, group.targets)
        dt = time.perf_counter() - t0
        if live is not None:
            live.end_step(result.n_targets, result.loss)
        _count_step(summary, result, dt, gi, s)
        token_counts.append(result.n_targets)
        rate = summary.tokens / summary.seconds if summary.seconds > 0 else 0.0
        if record is not None:  # the fast engine's run record (fast.record)
            record.counter("tokens/s", result.n_targets / dt)
            record.counter("RSS MB", current_rss_bytes() / 1e6)
        say(f"[step {s + 1}/{start + steps}] epoch {epoch} step {position + 1}/"
            f"{per_epoch} (group {gi + 1}) loss {result.loss:.4f} | norm "
            f"{result.grad_norm:.3f} | lr {result.lr:.2e} | {rate:,.0f} tok/s over the run "
            f"({result.n_targets:,} tokens this step) | {dt:.2f}s")
        last = s + 1 == start + steps
        if plan.heldout is not None and (last or (plan.eval_every and
                                                  (s + 1) % plan.eval_every == 0)):
            _evaluate(plan, engine, summary, live, say)
        if plan.checkpoint_dir is not None and (last or (plan.checkpoint_every and
                                                         (s + 1) % plan.checkpoint_every == 0)):
            _checkpoint(plan, engine, summary, record, (s + 1, epoch, position + 1), say)
    _stop_if_asked(should_stop, f"stopped after the last step {start + steps}")
    return _finish(summary, token_counts, per_epoch)


def _new_summary(plan: TrainPlan, groups: BatchGroups, compile_seconds: float) -> TrainSummary:
    t = plan.cfg.train
    return TrainSummary(steps=0, tokens=0, seconds=0.0, tokens_per_s=0.0,
                        compile_seconds=compile_seconds, peak_rss_bytes=0,
                        final_loss=float("nan"), start_step=plan.start_step,
                        end_step=plan.start_step, last_group=t.last_group,
                        groups_per_epoch=len(groups),
                        dropped_targets_per_epoch=groups.dropped_targets,
                        horizon=t.total_steps, warmup_steps=t.warmup_steps,
                        shuffle=t.shuffle, shuffle_seed=t.seed if t.shuffle else None)


def _announce(plan: TrainPlan, groups: BatchGroups, summary: TrainSummary, say: Say) -> None:
    """The run's first lines: its length, its groups, its order and its lr horizon."""
    cfg, start, steps = plan.cfg, plan.start_step, plan.steps
    t = cfg.train
    say(f"training {steps} steps from step {start}: {len(groups)} groups per epoch, "
        f"G={cfg.train.group_size} batches of {cfg.train.batch_size}x{cfg.model.seq_len}")
    say(f"last group: {_describe_tail(groups)}; order: "
        f"{f'shuffled per epoch (seed {t.seed})' if t.shuffle else 'corpus order'}; "
        f"lr horizon {t.total_steps} steps, warm-up {summary.warmup_steps}")
    if start + steps > t.total_steps:
        say(f"note: steps {t.total_steps + 1}..{start + steps} lie past the lr horizon "
            f"({t.total_steps}) and run at the floor lr; to plan a longer run, give its "
            "first part --total-steps")


def _stop_if_asked(should_stop: StopPoll | None, where: str) -> None:
    """Raise `Stopped` (between steps: the weights are whole) when a signal asked for it."""
    if should_stop is not None and (signum := should_stop()) is not None:
        raise Stopped(signum, f"{signal.Signals(signum).name}: {where}", consistent=True)


def _count_step(summary: TrainSummary, result: StepResult, dt: float, gi: int, s: int) -> None:
    summary.steps += 1
    summary.seconds += dt
    summary.tokens += result.n_targets
    summary.losses.append(result.loss)
    summary.groups.append(gi)
    summary.lrs.append(result.lr)
    summary.grad_norms.append(result.grad_norm)
    summary.final_loss = result.loss
    summary.end_step = s + 1


def _evaluate(plan: TrainPlan, engine: Engine, summary: TrainSummary,
              live: LiveProgress | None, say: Say) -> None:
    assert plan.heldout is not None
    ev = evaluate(engine, plan.heldout)
    summary.eval_losses.append([summary.end_step, ev.loss])
    summary.final_eval_loss = ev.loss
    if live is not None:
        live.set_eval(ev.loss)
    say(f"  eval loss {ev.loss:.4f} over {ev.n_targets:,} held-out targets "
        f"({ev.batches} batches)")


def _checkpoint(plan: TrainPlan, engine: Engine, summary: TrainSummary, record,
                where: tuple[int, int, int], say: Say) -> None:
    """step-N.npz after global step N (`where`: N, epoch, position in the epoch)."""
    assert plan.checkpoint_dir is not None
    step, epoch, position = where
    path = checkpoint_path(plan.checkpoint_dir, step)
    t_ckpt = record.now() if record is not None else 0.0
    save_checkpoint(path, engine.state(), plan.cfg, plan.corpus.vocab,
                    extra={"data": plan.corpus.source, "epoch": epoch,
                           "epoch_position": position,
                           "groups_per_epoch": summary.groups_per_epoch,
                           **({"eval_loss": summary.final_eval_loss,
                               "eval_step": summary.eval_losses[-1][0]}
                              if summary.eval_losses else {})})
    if record is not None:
        record.here().span(CHECKPOINT, -1, t_ckpt, record.now())
    summary.checkpoints.append(str(path))
    say(f"  checkpoint written: {path}")
    if plan.keep_checkpoints:
        prune_checkpoints(plan.checkpoint_dir, plan.keep_checkpoints)


def _finish(summary: TrainSummary, token_counts: list[int], per_epoch: int) -> TrainSummary:
    summary.step_targets = token_counts
    loss_sum = sum(loss * n for loss, n in zip(summary.losses, token_counts, strict=True))
    summary.mean_loss = loss_sum / summary.tokens if summary.tokens else float("nan")
    summary.epochs_completed = summary.end_step // per_epoch
    summary.tokens_per_s = summary.tokens / summary.seconds if summary.seconds > 0 else 0.0
    summary.peak_rss_bytes = peak_rss_bytes() or 0
    return summary


def _describe_tail(groups: BatchGroups) -> str:
    """One phrase on what the last-group policy did to this corpus."""
    if groups.merged:
        return "a short tail merged into the epoch's last group (--last-group merge)"
    if groups.dropped_targets:
        return f"{groups.dropped_targets:,} tail targets dropped per epoch (--last-group drop)"
    return f"no group below half a full group (--last-group {groups.last_group})" \
        if groups.last_group != "keep" else "kept as it is (--last-group keep)"
