"""Side-by-side A/B of two checkouts' fast engines: the same trainer workload, alternating.

Usage: python benchmarks/ab_trainer.py OLD_TREE NEW_TREE [rounds] (issue 12's run of it:
reports/bench/issue-12/ab_trainer.txt). Each measurement is a fresh process with PYTHONPATH set
to one tree (its own fast/ kernels and its preset micro-batch), timing one step of G=8 seed
batches at T=1 and T=2 after a warm-up step, beside a 2048^3 sgemm on the same cores; trees
alternate every round so host noise hits both alike. Best round counts.
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r'''
import json, sys, time, numpy as np
from threadpoolctl import threadpool_limits
from fast.trainer import FastTrainer
from harness.bench.summary import flops_per_token
from reference.config import preset
threads = int(sys.argv[1])
cfg = preset("seed").replace(group_size=8)
rng = np.random.default_rng(0)
shape = (8 * cfg.train.batch_size, cfg.model.seq_len)
tok = rng.integers(4, cfg.model.vocab_size, shape, dtype=np.int64)
tgt = rng.integers(4, cfg.model.vocab_size, shape, dtype=np.int64)
a = np.ones((2048, 2048), np.float32); o = np.empty_like(a)
with threadpool_limits(threads):
    np.matmul(a, a, out=o); t0 = time.perf_counter(); np.matmul(a, a, out=o)
    peak = 2 * 2048**3 / (time.perf_counter() - t0)
tr = FastTrainer(cfg, threads)
try:
    tr.step(tok[:32], tgt[:32])
    t0 = time.perf_counter(); tr.step(tok, tgt); sec = time.perf_counter() - t0
finally:
    tr.close()
fpt = flops_per_token(cfg.model)
print(json.dumps({"micro": cfg.train.micro_batch, "tokens_per_s": tok.size / sec,
                  "peak": peak, "ratio": fpt * tok.size / sec / peak}))
'''


def run(tree: str, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads)], cwd=tree, env=env,
                         capture_output=True, text=True, check=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", metavar="OLD_TREE", help="checkout measured as 'before'")
    ap.add_argument("new", metavar="NEW_TREE", help="checkout measured as 'after'")
    ap.add_argument("rounds", type=int, nargs="?", default=3, help="alternating rounds")
    args = ap.parse_args()
    old, new, rounds = args.old, args.new, args.rounds
    best: dict[tuple[str, int], dict] = {}
    for r in range(rounds):
        for name, tree in (("before", old), ("after", new)):
            for t in (1, 2):
                res = run(tree, t)
                print(f"round {r}: {name:6s} T={t} micro {res['micro']}: "
                      f"{res['tokens_per_s']:7.0f} tokens/s, {res['ratio']:.3f} of the sgemm "
                      f"peak ({res['peak'] / 1e9:.0f} GFLOP/s)", flush=True)
                key = (name, t)
                if key not in best or res["tokens_per_s"] > best[key]["tokens_per_s"]:
                    best[key] = res
    print("\n| threads | before tokens/s | after tokens/s | after / before |")
    print("|---:|---:|---:|---:|")
    for t in (1, 2):
        b, a = best[("before", t)], best[("after", t)]
        print(f"| {t} | {b['tokens_per_s']:.0f} | {a['tokens_per_s']:.0f} | "
              f"{a['tokens_per_s'] / b['tokens_per_s']:.3f} |")


if __name__ == "__main__":
    main()
