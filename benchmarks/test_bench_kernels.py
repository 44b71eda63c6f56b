"""Where a batch's time goes: CPU cycles per kernel group, measured inside the compiled batch.

`batch_forward_backward(..., timing=counters)` adds the cycle counter's advance over each
kernel group (fast.kernels.TIMING_GROUPS: each GEMM group, attention, LayerNorm, GELU,
cross-entropy, embedding) to one counter per group. One worker thread, BLAS on 1 thread, the
preset's batch and micro-batch: exactly what a worker runs. `harness.bench.summary` combines the
shares with the workers' phase times of the 2-thread run (reduction, AdamW, barrier waits)
into the per-kernel table of the summary. Each product group (every GEMM group and attention)
also gets its GFLOP/s in place (its cycles over the rounds) beside the same calls alone
(`harness.bench.groups`: one micro-batch, one layer, random operands, best round).
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from fast import kernels as K
from fast.model import FastModel, batch_forward_backward, warmup
from harness.bench.groups import cycles_per_second, group_flops_per_token, groups_alone
from reference.params import init_params

pytestmark = pytest.mark.bench


def test_kernel_table(benchmark, bench_settings, make_group):
    cfg = bench_settings.config(group_size=1)
    tokens, targets = make_group(cfg, 1)
    model = FastModel(cfg.model, np.float32, cfg.train.micro_batch)
    flat = model.flatten(init_params(cfg.model, cfg.train.seed))
    workspace, progress = model.new_workspace(), np.zeros(1, np.int64)
    timing = np.zeros(len(K.TIMING_GROUPS), np.int64)

    def one_batch() -> tuple[float, int]:
        grads = np.zeros_like(flat)
        return batch_forward_backward(model, flat, grads, tokens, targets, workspace, progress,
                                      0, timing)

    with threadpool_limits(1):
        warmup(np.float32)
        one_batch()  # first touch of the workspace
        timing[:] = 0
        loss, n = benchmark.pedantic(one_batch, rounds=bench_settings.rounds, iterations=1)
        blas = [{k: p.get(k) for k in ("internal_api", "architecture", "version")}
                for p in threadpool_info() if p.get("user_api") == "blas"]
        alone = groups_alone(cfg.model, model.micro_batch, max(5, bench_settings.rounds))
    rate = cycles_per_second()
    assert np.isfinite(loss) and n == tokens.size
    assert timing.min() >= 0 and timing.sum() > 0
    benchmark.extra_info.update(kind="kernel_table", threads=1, micro_batch=model.micro_batch,
                                tokens_per_round=int(tokens.size),
                                groups=list(K.TIMING_GROUPS), cycles=[int(c) for c in timing],
                                blas=blas, rounds=bench_settings.rounds, cycles_per_second=rate,
                                group_flops_per_token=group_flops_per_token(cfg.model),
                                gflops_alone=alone)
