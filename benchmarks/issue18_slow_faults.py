"""Issue #18's measurement, for any checkout: 63 workers on 64 "cores", G = 63, tiny preset,
every batch of step 1 a 1 s `slow` fault (which sleeps without using a core).

Usage: PYTHONPATH=TREE python benchmarks/issue18_slow_faults.py
The core count reported to the engine is raised to 64: `FastTrainer(cores=64)` where the tree
has it (issue #18's engine), else by replacing `fast.workspace_pool.usable_cores` (the older
engine, which sized its workspace pool from it: how the issue measured 6.04 s).
"""

import inspect
import time

import numpy as np

import fast.workspace_pool as wp
from fast.trainer import FastTrainer
from reference.config import preset

G = T = 63
cfg = preset("tiny")
B, S, V = cfg.train.batch_size, cfg.model.seq_len, cfg.model.vocab_size
rng = np.random.default_rng(0)
tok, tgt = rng.integers(1, V, size=(G * B, S)), rng.integers(1, V, size=(G * B, S))
faults = [f"slow:target=worker={i},step=1,seconds=1" for i in range(T)]
kw = {}
if "cores" in inspect.signature(FastTrainer).parameters:
    kw["cores"] = 64
else:
    wp.usable_cores = lambda: 64
with FastTrainer(cfg, T, faults=faults, **kw) as tr:
    tr.step(tok, tgt)  # step 0: warm-up, no fault
    t0 = time.perf_counter()
    tr.step(tok, tgt)
    dt = time.perf_counter() - t0
print(f"step with 63 x 1 s slow batches, 63 workers, 64 cores: {dt:.2f} s")
