"""`spheres train`: its options, and the arguments turned once into a frozen `TrainPlan`.

The plan (harness/run/train_plan.py) holds everything the run needs: config with its lr
horizon, corpus, held-out tail, planned steps, engine settings and outputs; `train(plan)`
(harness/run/train.py) runs it. `--resume` with a setting that disagrees with the checkpoint is
refused here, naming the setting (the table `RESUME_RULES`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.commands import options as o
from harness.commands.preflight import (
    Outputs,
    check_disk,
    check_resources,
    check_writable,
    checkpoint_bytes,
    checkpoints_kept,
    data_bytes,
    estimate_resources,
    spans,
)
from harness.figures.thresholds import TRACE_BYTES_PER_SPAN
from harness.run.checkpoint import Checkpoint
from harness.run.corpus import Corpus, corpus_warnings, load_corpus, one_group_tokens
from harness.run.engines import parse_faults
from harness.run.heldout import HeldOut, plan_heldout
from harness.run.train import train
from harness.run.train_plan import TrainPlan, load_resume, planned_steps, with_horizon
from plumbing.cores import usable_cores
from plumbing.errors import ExitCode, InputError
from plumbing.outputs import write_output
from reference.config import Config

DESCRIPTION = ("Train with Node Zero and T workers; prints one progress line per step (loss, "
               "tokens/s) and writes checkpoints.")
OUTPUTS: Outputs = (("--json", "json", "file"), ("--checkpoint-dir", "checkpoint_dir", "folder"),
                    ("--trace", "trace", "file"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_common(p)
    o.add_engine(p, default_engine="fast")
    p.add_argument("--steps", type=o.int_in_range(0, o.MAX_STEPS), default=None,
                   help="optimiser steps to run (this run)")
    p.add_argument("--epochs", type=o.positive_int, default=None,
                   help="epochs to run instead of --steps (default: 1 epoch)")
    p.add_argument("--lr", type=o.finite_number(0, o.MAX_LR), default=None,
                   help="peak learning rate")
    p.add_argument("--total-steps", type=o.positive_int, default=None,
                   help="cosine schedule horizon (default: the planned run, --steps or "
                        "--epochs x groups per epoch; kept by --resume)")
    p.add_argument("--last-group", default="merge", choices=["keep", "merge", "drop"],
                   help="the epoch's short last group: merge a tail below half a group into "
                        "the group before it, drop it, or keep it (default: merge)")
    p.add_argument("--no-shuffle", action="store_true",
                   help="visit the groups in corpus order (default: shuffled per epoch from "
                        "--seed and the epoch number)")
    p.add_argument("--synthetic-tokens", type=o.positive_int, default=None,
                   help="size of the synthetic corpus in tokens, exact (default: 4 groups' "
                        "worth, G*B*S*4 + 1)")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="where checkpoints go")
    p.add_argument("--checkpoint-every", type=o.int_in_range(0, o.MAX_STEPS), default=0,
                   help="also checkpoint every N steps (default: only at the end)")
    p.add_argument("--keep-checkpoints", type=o.int_in_range(0, o.MAX_STEPS), default=3,
                   help="keep only the N newest step-*.npz files, 0 keeps all (default: 3)")
    p.add_argument("--resume", default=None,
                   help="checkpoint file (or folder: its newest) to continue from bitwise")
    p.add_argument("--json", type=Path, default=None,
                   help="write a summary: steps, tokens, seconds, tokens_per_s, ...")
    p.add_argument("--eval-every", type=o.int_in_range(0, o.MAX_STEPS), default=0, metavar="N",
                   help="held-out loss every N steps and at the end (default: 0, never)")
    p.add_argument("--eval-fraction", type=o.fraction, default=None, metavar="F",
                   help="hold out the last F of the token stream, never trained on "
                        "(default: 0.1 with --eval-every)")
    o.add_progress(p)
    o.add_trace(p)
    p.add_argument("--verbose", action="store_true",
                   help="list every --data entry skipped (default: a few lines of counts)")
    o.add_faults(p)
    o.add_mpi(p)


def run(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    if not plan.quiet:
        print(f"data: {plan.corpus.source}: {plan.corpus.stream.size:,} tokens, vocabulary "
              f"{len(plan.corpus.vocab)}; engine {plan.engine} "
              f"({'float64' if plan.engine == 'reference' else plan.dtype}), "
              f"threads {plan.threads}", file=sys.stderr, flush=True)
    summary = train(plan)
    print(f"done: {summary.steps} steps, {summary.tokens:,} tokens in {summary.seconds:.2f}s "
          f"({summary.tokens_per_s:,.0f} tok/s; start-up {summary.compile_seconds:.2f}s), "
          f"final loss {summary.final_loss:.4f}, peak RSS {summary.peak_rss_bytes / 2**20:.0f} MiB",
          flush=True)
    if plan.summary_json is not None:
        write_output(plan.summary_json, summary.to_json(), "--json")
    return ExitCode.OK


def plan_from_args(args: argparse.Namespace) -> TrainPlan:
    """The run the arguments ask for, checked before any work (outputs, --resume, data)."""
    if args.steps is not None and args.epochs is not None:
        raise InputError("give --steps or --epochs, not both")
    if args.json is not None:
        check_writable(args.json, "--json")
    if args.trace is not None:
        check_writable(args.trace, "--trace")
        if args.engine != "fast":
            raise InputError("--trace records the fast engine's threads; use --engine fast")
    faults = parse_faults(args.inject)
    resume = load_resume(args.resume) if args.resume else None
    if resume is not None:
        check_resume_conflicts(args, resume.config, getattr(args, "explicit", set()))
        cfg, start_step = resume.config, resume.state.step
        print(f"resuming from step {start_step} ({args.resume})", file=sys.stderr, flush=True)
    else:
        cfg, start_step = o.config_from_args(args, lr=args.lr, total_steps=args.total_steps,
                                             last_group=args.last_group,
                                             shuffle=not args.no_shuffle), 0
    threads = args.threads or usable_cores()
    _check_resources(args, cfg, threads)
    corpus, heldout = _corpus(args, cfg, resume)
    steps = planned_steps(args.steps, args.epochs, len(corpus.groups(cfg)))
    _check_run_length(args, cfg, threads, steps)
    if resume is None:  # a resumed run keeps its checkpoint's horizon, so the same lr curve
        cfg = with_horizon(cfg, start_step=0, steps=steps, total_steps=args.total_steps)
    return TrainPlan(
        cfg=cfg, corpus=corpus, steps=steps, start_step=start_step,
        resume_state=resume.state if resume is not None else None, heldout=heldout,
        eval_every=args.eval_every, checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        engine=args.engine, threads=threads,
        dtype=args.dtype or "float32", stall_timeout=args.stall_timeout, faults=faults,
        summary_json=args.json, trace=args.trace, quiet=args.quiet,
        progress_seconds=args.progress_seconds)


def _check_resources(args: argparse.Namespace, cfg: Config, threads: int) -> None:
    """Refuse (exit 2, with the numbers) a run this machine cannot hold, before any work."""
    synthetic = None if args.data else args.synthetic_tokens or one_group_tokens(cfg, 4)
    need = estimate_resources(cfg, threads=threads, dtype=args.dtype or "float32",
                              engine=args.engine, synthetic_tokens=synthetic,
                              text_bytes=data_bytes(args.data))
    check_resources(need, fix=("give fewer --synthetic-tokens" if synthetic else
                               "train on less --data") + ", a smaller --preset or fewer --threads")


def _check_run_length(args: argparse.Namespace, cfg: Config, threads: int, steps: int) -> None:
    """What grows with the steps, refused before the first (exit 2, with the numbers): the
    run record in memory, the checkpoints keep-N leaves on disk, the --trace file."""
    check_resources(estimate_resources(cfg, threads=threads, dtype=args.dtype or "float32",
                                       engine=args.engine, synthetic_tokens=None,
                                       steps=steps),
                    fix="run fewer --steps at a time (--resume continues bitwise)")
    if args.checkpoint_dir is not None:
        kept = checkpoints_kept(steps, args.checkpoint_every, args.keep_checkpoints)
        check_disk(args.checkpoint_dir, kept * checkpoint_bytes(cfg),
                   f"{kept:,} checkpoints of {checkpoint_bytes(cfg) / 1e6:.1f} MB")
    if args.trace is not None:
        check_disk(args.trace.parent, spans(cfg, threads, steps) * TRACE_BYTES_PER_SPAN,
                   f"--trace of {steps:,} steps", fix="trace fewer --steps")


def _corpus(args: argparse.Namespace, cfg: Config, resume: Checkpoint | None
            ) -> tuple[Corpus, HeldOut | None]:
    """The corpus to train on (a resumed run keeps its vocabulary) and its held-out tail."""
    n_synth = args.synthetic_tokens or one_group_tokens(cfg, 4)
    corpus = load_corpus(cfg, args.data, synthetic_tokens=n_synth,
                         vocab=resume.vocab if resume is not None else None)
    for line in corpus.skips.summary(verbose=args.verbose):
        print(f"data: {line}", file=sys.stderr, flush=True)
    corpus, heldout = plan_heldout(corpus, cfg, eval_every=args.eval_every,
                                   eval_fraction=args.eval_fraction)
    held = int((heldout.targets != 0).sum()) if heldout is not None else None
    for line in corpus_warnings(corpus, cfg, held):
        print(f"spheres: warning: {line}", file=sys.stderr, flush=True)
    trained_on = resume.extra.get("data") if resume is not None else None
    if trained_on is not None and trained_on != corpus.source:
        print(f"spheres: warning: the checkpoint was trained on {trained_on}, this run reads "
              f"{corpus.source}; pass the same --data (and --synthetic-tokens) to continue "
              "bitwise", file=sys.stderr, flush=True)
    return corpus, heldout


# -- --resume with a setting that disagrees with the checkpoint --------------------------------
# A resumed run continues the checkpoint's config bitwise, so an option that would change it
# (a different --lr, --seed, ...) cannot be honoured silently. The table pairs each train
# option with the config field it sets; a new option that lands in the config gets one row.
# Only options the user typed are compared (argparse defaults are not a request). Options that
# do not change the result (--threads, --stall-timeout, --checkpoint-dir, ...) are free.

@dataclass(frozen=True)
class ResumeRule:
    option: str  # as typed on the command line
    dest: str  # argparse destination
    field: Callable[[Config], Any]  # the checkpoint's value of the same setting
    name: str  # how the config calls it, for the message


RESUME_RULES: tuple[ResumeRule, ...] = (
    ResumeRule("--preset", "preset", lambda c: c.preset, "preset"),
    ResumeRule("--seed", "seed", lambda c: c.train.seed, "train.seed"),
    ResumeRule("--lr", "lr", lambda c: c.train.lr, "train.lr"),
    ResumeRule("--group-size", "group_size", lambda c: c.train.group_size, "train.group_size"),
    ResumeRule("--total-steps", "total_steps", lambda c: c.train.total_steps, "train.total_steps"),
    ResumeRule("--last-group", "last_group", lambda c: c.train.last_group, "train.last_group"),
    ResumeRule("--no-shuffle", "no_shuffle", lambda c: not c.train.shuffle, "train.shuffle"),
)


def check_resume_conflicts(args: argparse.Namespace, cfg: Config, explicit: set[str],
                           rules: tuple[ResumeRule, ...] = RESUME_RULES) -> None:
    """InputError (exit 2) naming the first typed option that differs from the checkpoint."""
    for rule in rules:
        if rule.dest not in explicit:
            continue
        given, stored = getattr(args, rule.dest), rule.field(cfg)
        if given != stored:
            shown = rule.option if isinstance(given, bool) else f"{rule.option} {given}"
            raise InputError(
                f"{shown} conflicts with the checkpoint's {rule.name}={stored}: "
                f"a resumed run continues the checkpoint's settings; drop {rule.option} (or "
                "start a new run without --resume)")
