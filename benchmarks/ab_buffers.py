"""Side-by-side A/B for issue #18: the old engine (compute into the segment under the ticket)
against gradient buffers (compute into a buffer of its own, fold under the ticket).

Usage: python benchmarks/ab_buffers.py OLD_TREE NEW_TREE [rounds] [--group G] [--threads T]
Each measurement is a fresh process with PYTHONPATH set to one tree, timing one step of G seed
batches at T threads after a one-batch warm-up step; trees alternate every round so host noise
hits both alike. Reports every round, the medians and the spreads (min..max), the ratio of the
medians, for wall tokens/s and for tokens per process CPU second (far less sensitive to other
load on a shared machine), and for the new tree the folds' share of the step read from its run
record: the fold spans' seconds / (step wall x min(T, cores)). `--rss` instead runs the seed
workload (T = 63, G = 63) once per tree and reports each process's peak RSS (VmHWM; ru_maxrss
would carry this parent's across fork and exec).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r'''
import json, sys, time, numpy as np
from fast.trainer import FastTrainer
from harness.measure.process import peak_rss_bytes
from reference.config import preset
threads, group = int(sys.argv[1]), int(sys.argv[2])
cfg = preset("seed").replace(group_size=group)
rng = np.random.default_rng(0)
shape = (group * cfg.train.batch_size, cfg.model.seq_len)
tok = rng.integers(4, cfg.model.vocab_size, shape, dtype=np.int64)
tgt = rng.integers(4, cfg.model.vocab_size, shape, dtype=np.int64)
tr = FastTrainer(cfg, threads)
try:
    tr.step(tok[:cfg.train.batch_size], tgt[:cfg.train.batch_size])
    c0, t0 = time.process_time(), time.perf_counter()
    tr.step(tok, tgt)
    sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    rec = tr.record.snapshot()
finally:
    tr.close()
last = max(rec.steps())
fold = sum(b - a for t in rec.threads for k, s, a, b, _ in t.spans
           if k == "folding" and s == last)
batch = [b - a for t in rec.threads for k, s, a, b, _ in t.spans if k == "batch" and s == last]
from plumbing.cores import usable_cores
lanes = min(threads, usable_cores())
print(json.dumps({"tokens_per_s": tok.size / sec, "step_s": sec, "fold_s": fold,
                  "tokens_per_cpu_s": tok.size / cpu, "cpu_s": cpu,
                  "fold_share": fold / (sec * lanes),
                  "batch_s": float(np.median(batch)) if batch else 0.0,
                  "peak_rss": peak_rss_bytes()}))
'''


def run(tree: str, threads: int, group: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(group)], cwd=tree,
                         env=env, capture_output=True, text=True, check=True,
                         timeout=3600).stdout
    return json.loads(out.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):,.0f} (min {min(values):,.0f}, max "
            f"{max(values):,.0f}, n={len(values)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", metavar="OLD_TREE")
    ap.add_argument("new", metavar="NEW_TREE")
    ap.add_argument("rounds", type=int, nargs="?", default=5)
    ap.add_argument("--group", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss", action="store_true", help="the seed workload's peak RSS instead")
    args = ap.parse_args()
    if args.rss:
        for name, tree in (("before", args.old), ("after", args.new)):
            res = run(tree, 63, 63)
            print(f"{name:6s} T=63 G=63: peak RSS {res['peak_rss'] / 1e6:,.0f} MB, step "
                  f"{res['step_s']:.1f} s, {res['tokens_per_s']:,.0f} tokens/s", flush=True)
        return
    rates: dict[str, list[float]] = {"before": [], "after": []}
    cpu_rates: dict[str, list[float]] = {"before": [], "after": []}
    shares: list[float] = []
    for r in range(args.rounds):
        for name, tree in (("before", args.old), ("after", args.new)):
            res = run(tree, args.threads, args.group)
            rates[name].append(res["tokens_per_s"])
            cpu_rates[name].append(res["tokens_per_cpu_s"])
            extra = ""
            if name == "after":
                shares.append(res["fold_share"])
                extra = (f", folds {res['fold_s'] * 1e3:.1f} ms = {res['fold_share']:.2%} of "
                         f"the step's core time, batch {res['batch_s']:.2f} s")
            print(f"round {r}: {name:6s} T={args.threads} G={args.group}: "
                  f"{res['tokens_per_s']:7.0f} tokens/s (step {res['step_s']:.2f} s), "
                  f"{res['tokens_per_cpu_s']:7.0f} tokens per CPU second{extra}",
                  flush=True)
    print(f"before: {spread(rates['before'])} tokens/s")
    print(f"after:  {spread(rates['after'])} tokens/s")
    ratio = statistics.median(rates["after"]) / statistics.median(rates["before"])
    per_round = [a / b for a, b in zip(rates["after"], rates["before"], strict=True)]
    print(f"after / before (medians): {ratio:.3f}; per round {min(per_round):.3f}..."
          f"{max(per_round):.3f}")
    for what, series in (("wall", rates), ("CPU", cpu_rates)):
        med = statistics.median(series["after"]) / statistics.median(series["before"])
        print(f"{what}: before {spread(series['before'])}, after {spread(series['after'])}: "
              f"after / before {med:.3f}")
    print(f"fold share of step core time: median {statistics.median(shares):.3%}, max "
          f"{max(shares):.3%}")


if __name__ == "__main__":
    main()
