"""`mpiexec -n R python -m harness.bench.repro_mpi`: fast under MPI for the reproducibility
table (harness/bench/repro.py). Rank 0 trains the verify trajectory for every (dtype, T) of the
launch and writes the weights to `--out/<dtype>-T<T>.npz`; the other ranks follow rank 0
(like harness/verify/digest.py, which writes only hashes)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from harness.verify.digest import trajectory_groups
from reference.config import preset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.repro_mpi")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", default="1,2,3", help="comma-separated T per rank")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--stall-timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from fast.mpi_comm import Channel
    from fast.mpi_engine import MpiEngine, follow
    from harness.bench.repro import trained_weights
    from plumbing.outputs import write_output

    channel = Channel()
    cfg = preset(args.preset, seed=args.seed)
    groups = trajectory_groups(cfg, args.steps) if channel.rank == 0 else None
    for dtype in args.dtypes.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            dt = np.dtype(dtype).type
            if channel.rank != 0:
                follow(channel, cfg, threads, dt, args.stall_timeout)
                continue
            engine = MpiEngine(channel, cfg, threads, dt, args.stall_timeout)
            try:
                params = trained_weights(engine, groups)
            finally:
                engine.close()
            write_output(args.out / f"{dtype}-T{threads}.npz",
                         lambda fh, p=params: np.savez(fh, **p), "weights")
    return 0


if __name__ == "__main__":
    from harness.run.mpi_world import run_or_abort

    sys.exit(run_or_abort(main))
