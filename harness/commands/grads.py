"""`spheres grads`: one step's loss and gradients written as the `.npz` of SPEC section 6."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from harness.commands import options as o
from harness.commands.preflight import Outputs, check_writable
from harness.run.corpus import load_corpus, one_group_tokens
from harness.run.engines import make_engine
from plumbing.cores import usable_cores
from plumbing.errors import ExitCode, InputError
from plumbing.outputs import write_output
from reference.config import Config
from reference.engine import StepResult
from reference.params import param_specs

DESCRIPTION = ("Compute one batch group's mean loss and gradient and write tokens, targets, "
               "loss, param/<name>, grad/<name>, config.")
OUTPUTS: Outputs = (("--out", "out", "file"),)


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_common(p)
    o.add_engine(p, default_engine="reference")
    p.add_argument("--out", type=Path, required=True, help="output .npz file")
    o.add_stall_timeout(p)
    o.add_mpi(p)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if args.engine == "reference" and args.dtype not in (None, "float64"):
        raise InputError(f"--dtype {args.dtype}: the reference engine computes in float64 only; "
                         "drop --dtype or use --engine fast")
    check_writable(out, "--out")
    cfg = o.config_from_args(args)
    corpus = load_corpus(cfg, args.data, synthetic_tokens=one_group_tokens(cfg, 1))
    group = corpus.groups(cfg).group(0)
    dtype = args.dtype or ("float64" if args.engine == "reference" else "float32")
    engine = make_engine(args.engine, cfg, threads=args.threads or usable_cores(), dtype=dtype,
                         stall_timeout=args.stall_timeout)
    try:
        result = engine.group_grads(group.tokens, group.targets)
        params = engine.state().params
    finally:
        engine.close()
    write_grads_npz(out, cfg, group.tokens, group.targets, params, result)
    print(f"loss {result.loss:.6f} over {result.n_targets} targets; gradients written to {out}",
          flush=True)
    return ExitCode.OK


def write_grads_npz(path: Path, cfg: Config, tokens: np.ndarray, targets: np.ndarray,
                    params: dict[str, np.ndarray], result: StepResult) -> None:
    """Atomically write tokens, targets, loss, param/<name>, grad/<name> and config."""
    assert result.grads is not None
    arrays: dict[str, np.ndarray] = {
        "tokens": np.asarray(tokens, dtype=np.int64),
        "targets": np.asarray(targets, dtype=np.int64),
        "loss": np.float64(result.loss),
        "config": np.array(cfg.to_json()),
    }
    for spec in param_specs(cfg.model):
        arrays[f"param/{spec.name}"] = np.asarray(params[spec.name])
        arrays[f"grad/{spec.name}"] = np.asarray(result.grads[spec.name], dtype=np.float64)
    write_output(path, lambda fh: np.savez(fh, **arrays), "--out")
