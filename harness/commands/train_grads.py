"""`spheres train` and `spheres grads`: wire arguments to corpus, engine and loop."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

from harness.commands.resume_conflicts import check_resume_conflicts
from harness.run.corpus import load_corpus, one_group_tokens
from harness.run.engines import make_engine, parse_faults, unfired_faults
from harness.run.export import check_writable, write_grads_npz
from harness.run.heldout import heldout_from_args
from harness.run.progress import train_progress
from harness.run.rescue import rescue_checkpoint
from harness.run.run_plan import planned_steps, with_horizon
from harness.run.stop import Stopped, active
from harness.run.train import load_resume, run_training
from plumbing.atomic import atomic_write_text
from plumbing.cores import usable_cores
from plumbing.errors import FaultError, InputError, StallError
from reference.config import Config, preset


def config_from_args(args: argparse.Namespace) -> Config:
    """The preset with the command line's overrides applied (validated)."""
    changes = {"seed": args.seed}
    if getattr(args, "group_size", None):
        changes["group_size"] = args.group_size
    if getattr(args, "lr", None):
        changes["lr"] = args.lr
    if getattr(args, "total_steps", None):
        changes["total_steps"] = args.total_steps
    if getattr(args, "last_group", None):
        changes["last_group"] = args.last_group
    if hasattr(args, "no_shuffle"):  # `train` shuffles unless told not to
        changes["shuffle"] = not args.no_shuffle
    return preset(args.preset, **changes)


def warn_unfired(engine) -> None:
    """A drill that never fired is reported, never silently dropped (SPEC 5)."""
    for fault in unfired_faults(engine):
        print(f"spheres: warning: injected fault never fired: {fault}", file=sys.stderr,
              flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    if args.steps is not None and args.epochs is not None:
        raise InputError("give --steps or --epochs, not both")
    if args.json is not None:
        check_writable(args.json)
    if getattr(args, "trace", None) is not None:
        check_writable(args.trace)
        if args.engine != "fast":
            raise InputError("--trace records the fast engine's threads; use --engine fast")
    faults = parse_faults(args.inject)
    resume = load_resume(args.resume) if args.resume else None
    if resume is not None:
        check_resume_conflicts(args, resume.config, getattr(args, "explicit", set()))
        cfg, vocab, start_step = resume.config, resume.vocab, resume.state.step
        print(f"resuming from step {start_step} ({args.resume})", file=sys.stderr, flush=True)
    else:
        cfg, vocab, start_step = config_from_args(args), None, 0
    n_synth = args.synthetic_tokens or one_group_tokens(cfg, 4)
    corpus = load_corpus(cfg, args.data, synthetic_tokens=n_synth, vocab=vocab)
    for line in corpus.skips.summary(verbose=getattr(args, "verbose", False)):
        print(f"data: {line}", file=sys.stderr, flush=True)
    corpus, heldout = heldout_from_args(args, corpus, cfg)
    trained_on = resume.extra.get("data") if resume is not None else None
    if trained_on is not None and trained_on != corpus.source:
        print(f"spheres: warning: the checkpoint was trained on {trained_on}, this run reads "
              f"{corpus.source}; pass the same --data (and --synthetic-tokens) to continue "
              "bitwise", file=sys.stderr, flush=True)
    if resume is None:  # a resumed run keeps its checkpoint's horizon, so the same lr curve
        steps = planned_steps(args.steps, args.epochs, len(corpus.groups(cfg)))
        cfg = with_horizon(cfg, start_step=0, steps=steps, total_steps=args.total_steps)
    threads = args.threads or usable_cores()
    dtype = args.dtype or "float32"
    if not args.quiet:
        print(f"data: {corpus.source}: {corpus.stream.size:,} tokens, vocabulary "
              f"{len(corpus.vocab)}; engine {args.engine} "
              f"({'float64' if args.engine == 'reference' else dtype}), threads {threads}",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    engine = make_engine(args.engine, cfg, threads=threads, dtype=dtype,
                         stall_timeout=args.stall_timeout, faults=faults)
    try:
        compile_seconds = time.perf_counter() - t0
        if resume is not None:
            engine.load_state(resume.state)
        stop = active()
        keep = getattr(args, "keep_checkpoints", 0)
        live = train_progress(args, engine, corpus, cfg)
        try:
            with live, stop.deferred() if stop is not None else nullcontext():
                summary = run_training(engine, corpus, cfg, steps=args.steps,
                                       epochs=args.epochs, start_step=start_step,
                                       checkpoint_dir=args.checkpoint_dir,
                                       checkpoint_every=args.checkpoint_every,
                                       compile_seconds=compile_seconds, progress=live.write,
                                       heldout=heldout, eval_every=args.eval_every, live=live,
                                       should_stop=stop.requested if stop else None,
                                       keep_checkpoints=keep)
        except (FaultError, StallError, Stopped) as exc:  # SPEC 12: save what is consistent
            if args.checkpoint_dir is not None:
                rescue_checkpoint(engine, cfg, corpus, args.checkpoint_dir, exc, start_step,
                                  keep)
            raise
        warn_unfired(engine)
    finally:
        engine.close()
        if getattr(args, "trace", None) is not None:  # also after a failure: see where it stopped
            from harness.measure.trace import write_trace

            write_trace(engine.record.snapshot(), args.trace)
            print(f"trace written: {args.trace}", file=sys.stderr, flush=True)
    print(f"done: {summary.steps} steps, {summary.tokens:,} tokens in {summary.seconds:.2f}s "
          f"({summary.tokens_per_s:,.0f} tok/s; start-up {summary.compile_seconds:.2f}s), "
          f"final loss {summary.final_loss:.4f}, peak RSS {summary.peak_rss_bytes / 2**20:.0f} MiB",
          flush=True)
    if args.json is not None:
        atomic_write_text(args.json, summary.to_json())
    return 0


def cmd_grads(args: argparse.Namespace) -> int:
    out: Path = args.out
    check_writable(out)
    cfg = config_from_args(args)
    corpus = load_corpus(cfg, args.data, synthetic_tokens=one_group_tokens(cfg, 1))
    group = corpus.groups(cfg).group(0)
    dtype = args.dtype or ("float64" if args.engine == "reference" else "float32")
    if args.engine == "reference" and dtype != "float64":
        warnings.warn("the reference engine computes in float64; --dtype is ignored", stacklevel=1)
    engine = make_engine(args.engine, cfg, threads=args.threads or usable_cores(), dtype=dtype)
    try:
        result = engine.group_grads(group.tokens, group.targets)
        params = engine.state().params
    finally:
        engine.close()
    write_grads_npz(out, cfg, group.tokens, group.targets, params, result)
    print(f"loss {result.loss:.6f} over {result.n_targets} targets; gradients written to {out}",
          flush=True)
    return 0
