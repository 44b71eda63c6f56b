"""SHA-256 fingerprints of one group's gradient, the first update and a short trajectory.

`python -m harness.verify.digest` runs under `mpiexec -n R` and fingerprints several (dtype, T)
configurations in ONE launch (MPI start-up costs about a second); `fingerprint()` computes the
same fingerprints for any in-process engine, so `spheres verify --ranks`, the tests and the
single-process engine are compared by the very same code. Rank 0 prints one JSON line per
configuration, with the rank's reference errors beside the hashes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from harness.run.corpus import load_corpus
from harness.verify.gates import _trajectory_tokens, digest, rel_l2, worst_tensor
from reference.config import Config, preset
from reference.engine import ReferenceEngine
from reference.params import param_specs


@dataclass
class Fingerprint:
    """What one engine did on the verify trajectory, as hashes (equal hashes, equal bits)."""

    ranks: int  # 0 = the single-process engine
    threads: int
    dtype: str
    loss: float
    grads_sha: str  # the first group's mean gradient
    update_sha: str  # the weights after step 1
    trajectory_sha: str  # the weights after every step (the last group is short and padded)
    loss_err: float = float("nan")  # relative error vs the reference loss
    grad_err: float = float("nan")  # worst relative L2 vs the reference gradient
    traj_err: float = float("nan")  # worst relative L2 vs the reference trajectory
    seconds: float = 0.0
    ranks_report: list | None = None  # per-rank times and bytes (MPI runs)


def trajectory_groups(cfg: Config, steps: int):
    """The verify gate's groups: `steps` groups whose last one is short with a padded batch."""
    corpus = load_corpus(cfg, None, synthetic_tokens=_trajectory_tokens(cfg, steps))
    groups = corpus.groups(cfg)
    return [groups.group(i) for i in range(steps)]


def fingerprint(engine, groups, *, ranks: int, threads: int, dtype: str,
                reference: dict | None = None) -> Fingerprint:
    """Gradient of group 0, then one step per group; hashes of the bytes in registry order."""
    cfg = engine.config
    names = [s.name for s in param_specs(cfg.model)]
    t0 = time.perf_counter()
    first = groups[0]
    result = engine.group_grads(first.tokens, first.targets)
    grads_sha = digest(result.grads, names)
    update_sha = ""
    for i, g in enumerate(groups):
        engine.step(g.tokens, g.targets)
        if i == 0:
            update_sha = digest(engine.state().params, names)
    params = engine.state().params
    fp = Fingerprint(ranks=ranks, threads=threads, dtype=dtype, loss=result.loss,
                     grads_sha=grads_sha, update_sha=update_sha,
                     trajectory_sha=digest(params, names), seconds=time.perf_counter() - t0)
    if reference is not None:
        fp.grad_err = worst_tensor(result.grads, reference["grads"], names)[0]
        fp.traj_err = worst_tensor(params, reference["params"], names)[0]
        fp.loss_err = rel_l2(np.array(result.loss), np.array(reference["loss"]))
    return fp


def reference_answers(cfg: Config, groups) -> dict:
    """The float64 reference's gradient, loss and trajectory on the same groups."""
    ref = ReferenceEngine(cfg)
    r = ref.group_grads(groups[0].tokens, groups[0].targets)
    for g in groups:
        ref.step(g.tokens, g.targets)
    return {"grads": r.grads, "loss": r.loss, "params": ref.state().params}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.verify.digest")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group-size", type=int, default=None)
    parser.add_argument("--threads", default="1,2,3", help="comma-separated T per rank")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--stall-timeout", type=float, default=60.0)
    parser.add_argument("--reference", action="store_true", help="add reference errors")
    args = parser.parse_args(argv)
    from fast.mpi_comm import Channel
    from fast.mpi_engine import MpiEngine, follow

    channel = Channel()
    changes = {"seed": args.seed}
    if args.group_size:
        changes["group_size"] = args.group_size
    cfg = preset(args.preset, **changes)
    groups = trajectory_groups(cfg, args.steps) if channel.rank == 0 else None
    reference = (reference_answers(cfg, groups) if channel.rank == 0 and args.reference
                 else None)
    for dtype in args.dtypes.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            dt = np.dtype(dtype).type
            if channel.rank != 0:
                follow(channel, cfg, threads, dt, args.stall_timeout)
                continue
            engine = MpiEngine(channel, cfg, threads, dt, args.stall_timeout)
            try:
                fp = fingerprint(engine, groups, ranks=channel.size, threads=threads,
                                 dtype=dtype, reference=reference)
            finally:
                engine.close()
            fp.ranks_report = engine.reports
            print(json.dumps(asdict(fp)), flush=True)
    return 0


if __name__ == "__main__":
    from harness.run.mpi_world import run_or_abort

    sys.exit(run_or_abort(main))
