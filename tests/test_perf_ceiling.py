"""`harness/bench/ceiling.py` (make bench-ceiling): the GEMM ceiling times exactly the model's
products. And the stand-alone scripts in benchmarks/ still start against this tree's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bench import ceiling as bench_ceiling
from harness.bench.summary import flops_per_token
from reference.config import preset


@pytest.mark.parametrize("name,micro", [("tiny", 1), ("small", 3), ("seed", 4)])
def test_the_shapes_are_the_model_flops(name, micro):
    """Every weight product of one micro-batch is listed once (forward, dx, dw), and the
    attention blocks are the causal blocks the kernels compute: the listed FLOPs add up to the
    counted model FLOPs less the attention work the causal blocks skip."""
    m = preset(name).model
    shapes = bench_ceiling.gemm_shapes(m, micro)
    tokens = micro * m.seq_len
    weights = sum(2 * M * N * K * calls for g, M, N, K, _, _, calls in shapes
                  if not g.startswith("attention"))
    attention = sum(2 * M * N * K * calls for g, M, N, K, _, _, calls in shapes
                    if g.startswith("attention"))
    d, f, L, V, S = m.d_model, m.d_ff, m.n_layers, m.vocab_size, m.seq_len
    assert weights == 6 * (L * (4 * d * d + 2 * d * f) + V * d) * tokens
    full = 12 * L * S * d * tokens  # attention as counted: every key of every query
    block = 64
    computed = sum(min(block, S - i0) * min(S, i0 + block) for i0 in range(0, S, block))
    assert attention * S * S == full * computed
    assert weights + full == flops_per_token(m) * tokens


def test_ceiling_and_table_run_on_the_tiny_preset(tmp_path, no_thread_leak):
    ceiling = bench_ceiling.gemm_ceiling(preset("tiny").model, 1, rounds=2, square=128)
    assert ceiling["peak_gflops"] > 0 and 0 < ceiling["ceiling"]
    assert len(ceiling["shapes"]) == len(bench_ceiling.gemm_shapes(preset("tiny").model, 1))
    table = bench_ceiling.micro_table("tiny", [1, 2], [1, 3], group=2, rounds=1)
    assert [(r["micro_batch"], r["threads"]) for r in table] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    assert all(r["tokens_per_s"] > 0 for r in table)
    text = bench_ceiling.render("tiny", ceiling, table, ["blas x"])
    assert "| 2 | 3 |" in text and f"{ceiling['ceiling']:.3f}" in text


def test_bad_arguments_exit_2(capsys):
    assert bench_ceiling.main(["--micro", "x"]) == 2
    assert "harness.bench.ceiling:" in capsys.readouterr().err
    assert bench_ceiling.main(["--preset", "nope"]) == 2


@pytest.mark.parametrize("script", ["ab_trainer.py", "training_quality.py"])
def test_the_benchmark_scripts_start(script):
    """Their imports resolve and their options parse (`--help`): a module they import moving
    elsewhere fails here, not months later when someone reruns a report's numbers."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, str(root / "benchmarks" / script), "--help"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
