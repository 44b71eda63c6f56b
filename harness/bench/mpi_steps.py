"""Step time and bytes across MPI ranks, for `make bench` and docs/SCALE.md.

`mpiexec -n R python -m harness.bench.mpi_steps --preset seed --group 24 --threads 1` times `rounds`
full steps after a one-batch warm-up step, on rank 0's clock, and prints one JSON line: best
step seconds, tokens per second, and per rank its bytes sent and received in the last step and
its compute / waiting / communication seconds. `--single` times the single-process engine with
the very same loop (no MPI imported), the yardstick of the R x T comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from harness.figures.bench_metrics import MpiBytesRow, MpiRankTimes, MpiStepBench
from harness.figures.serial import to_json
from harness.run.corpus import load_corpus, one_group_tokens
from reference.config import preset
from reference.params import param_count


def time_steps(engine, tokens: np.ndarray, targets: np.ndarray, rounds: int,
               batch: int) -> list[float]:
    """One warm-up step on one batch, then `rounds` timed steps of the whole group."""
    engine.step(tokens[:batch], targets[:batch])
    seconds = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        engine.step(tokens, targets)
        seconds.append(time.perf_counter() - t0)
    return seconds


def loopback(mb: float, rounds: int) -> int:
    """Best-of-`rounds` seconds of the step's two big collectives at one segment per rank."""
    from fast.mpi_comm import Channel

    ch = Channel()
    n = int(mb * 1e6 / 4)
    data = np.ones((ch.size, n), dtype=np.float32)
    rows = [range(r, r + 1) for r in range(ch.size)]
    gather, bcast = [], []
    for _ in range(rounds + 1):  # the first round warms up the connections
        t0 = time.perf_counter()
        ch.gather_rows(data, rows, 600.0, "segments")
        gather.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ch.bcast(data[0], 600.0, "weights")
        bcast.append(time.perf_counter() - t0)
    if ch.rank == 0:
        g, b = min(gather[1:]), min(bcast[1:])
        into_root = (ch.size - 1) * n * 4
        row = MpiBytesRow(ranks=ch.size, segment_bytes=n * 4, gather_s=g, bcast_s=b,
                          gather_s_per_byte_into_root=g / max(1, into_root),
                          bcast_s_per_byte=b / (n * 4))
        print(json.dumps(to_json(row)), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench.mpi_steps")
    p.add_argument("--preset", default="seed")
    p.add_argument("--group", type=int, default=24, help="batches per step G")
    p.add_argument("--threads", type=int, default=1, help="worker threads per rank")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--single", action="store_true", help="the single-process engine, no MPI")
    p.add_argument("--loopback-mb", type=float, default=0.0,
                   help="instead: time a gather of one MB-sized segment per rank and a broadcast "
                        "of the same size (seconds per byte on this machine's loopback)")
    args = p.parse_args(argv)
    if args.loopback_mb:
        return loopback(args.loopback_mb, args.rounds)
    cfg = preset(args.preset, group_size=args.group)
    dtype = np.dtype(args.dtype).type
    B = cfg.train.batch_size
    if args.single:
        from fast.trainer import FastTrainer

        rank, ranks, engine = 0, 0, FastTrainer(cfg, args.threads, dtype=dtype)
    else:
        from fast.mpi_comm import Channel
        from fast.mpi_engine import MpiEngine, follow

        channel = Channel()
        rank, ranks = channel.rank, channel.size
        if rank != 0:
            return follow(channel, cfg, args.threads, dtype, 120.0)
        engine = MpiEngine(channel, cfg, args.threads, dtype, 120.0)
    corpus = load_corpus(cfg, None, synthetic_tokens=one_group_tokens(cfg, 1))
    group = corpus.groups(cfg).group(0)
    try:
        seconds = time_steps(engine, group.tokens, group.targets, args.rounds, B)
    finally:
        engine.close()
    n_targets = int(np.count_nonzero(group.targets))
    best = min(seconds)
    out = MpiStepBench(preset=args.preset, group=args.group, ranks=ranks, threads=args.threads,
                       dtype=args.dtype, params=param_count(cfg.model), step_seconds=seconds,
                       best_step_s=best, tokens=n_targets, tokens_per_s=n_targets / best)
    if ranks:
        out.per_rank = [MpiRankTimes(rank=r["rank"], **{k: r["times"][k] for k in (
            "last_sent_bytes", "last_received_bytes", "compute_s", "wait_s", "comm_s",
            "reduce_s", "steps")}) for r in engine.reports]
    print(json.dumps(to_json(out)), flush=True)
    return 0


if __name__ == "__main__":
    from harness.run.mpi_world import run_or_abort

    sys.exit(run_or_abort(main))
