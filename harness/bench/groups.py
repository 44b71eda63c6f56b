"""Each kernel group of the per-kernel table alone: its FLOPs and its best time on its own.

The per-kernel table (`benchmarks/test_bench_kernels.py`) times every group in place, inside
the compiled batch. This module gives the same groups' figures out of place: the group's own
kernel calls (the same `fast.kernels` functions with the same shapes, one micro-batch of
`micro * S` tokens, one layer) on random operands, repeated, best round. GFLOP/s in place
against alone shows what the surroundings cost a product (operands not in cache, the order of
calls), separate from what the product itself costs. FLOPs follow the model's count
(`harness.bench.summary.FLOPS_FORMULA`: attention over the full S positions, the causal mask
not discounted), so group GFLOP/s add up to the model FLOP/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from fast import kernels as K
from harness.bench.ceiling import best_seconds
from reference.config import ModelConfig

# The groups that are products (every GEMM group and attention), and how many calls of one
# micro-batch the in-place counters cover per layer (the logits run once per micro-batch).
PRODUCT_GROUPS = ("gemm qkv", "gemm attn-out", "gemm fc", "gemm proj", "gemm logits",
                  "attention")


def group_flops_per_token(m: ModelConfig) -> dict[str, int]:
    """Model FLOPs per token of each product group, forward + backward, summed over layers."""
    d, f, L, V, S = m.d_model, m.d_ff, m.n_layers, m.vocab_size, m.seq_len
    return {"gemm qkv": 6 * L * 3 * d * d, "gemm attn-out": 6 * L * d * d,
            "gemm fc": 6 * L * d * f, "gemm proj": 6 * L * f * d, "gemm logits": 6 * V * d,
            "attention": 12 * L * S * d}


def _best(fn: Callable[[], None], rounds: int) -> float:
    fn()  # warm: the first call compiles and faults the operands in
    return best_seconds(fn, rounds)


def _linear_calls(rng, n: int, i: int, o: int, residual: bool, bias_in_backward: bool):
    """One linear group's forward and backward calls, as `micro_forward`/`layer_backward` make
    them, on fresh random operands."""
    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    x, w, b, res, dout = r(n, i), r(i, o) * 0.05, r(o), r(n, o), r(n, o)
    out, dx, dw, db = np.empty((n, o), np.float32), r(n, i), r(i, o), r(o)

    def run() -> None:
        if residual:
            K.linear_residual_forward(x, w, b, res, out)
        else:
            K.linear_forward(x, w, b, out)
        if bias_in_backward:
            K.linear_backward(dout, x, w, dx, dw, db)
        else:
            K.linear_backward_products(dout, x, w, dx, dw)
    return run


def _logits_calls(rng, n: int, d: int, V: int):
    x, wte = rng.standard_normal((n, d)).astype(np.float32), \
        (rng.standard_normal((V, d)) * 0.05).astype(np.float32)
    out, dx, dwte = np.empty((n, V), np.float32), np.empty((n, d), np.float32), \
        np.zeros((V, d), np.float32)

    def run() -> None:
        K.logits_forward(x, wte, out)
        K.logits_backward(out, x, wte, dx, dwte)
    return run


def _attention_calls(rng, rows: int, T: int, d: int, H: int):
    qkv = rng.standard_normal((rows * T, 3 * d)).astype(np.float32)
    dout = rng.standard_normal((rows * T, d)).astype(np.float32)
    y, att = np.empty((rows * T, d), np.float32), np.empty((rows, H, T, T), np.float32)
    dqkv = np.empty((rows * T, 3 * d), np.float32)
    scratch = np.empty(K.attention_scratch_size(T, d // H), np.float32)

    def run() -> None:
        K.attention_forward(qkv, H, y, att)
        K.attention_backward(dout, qkv, att, H, dqkv, scratch)
    return run


def groups_alone(m: ModelConfig, micro: int, rounds: int) -> dict[str, float]:
    """GFLOP/s of each product group alone: one micro-batch, one layer, float32, best of
    `rounds` (the caller limits BLAS and threads; the kernels use none of their own)."""
    rng = np.random.default_rng(0)
    n, d, f = micro * m.seq_len, m.d_model, m.d_ff
    calls = {"gemm qkv": _linear_calls(rng, n, d, 3 * d, False, True),
             "gemm attn-out": _linear_calls(rng, n, d, d, True, True),
             "gemm fc": _linear_calls(rng, n, d, f, False, False),
             "gemm proj": _linear_calls(rng, n, f, d, True, True),
             "gemm logits": _logits_calls(rng, n, d, m.vocab_size),
             "attention": _attention_calls(rng, micro, m.seq_len, d, m.n_heads)}
    per_token = group_flops_per_token(m)
    out = {}
    for name, run in calls.items():
        layers = 1 if name == "gemm logits" else m.n_layers
        out[name] = per_token[name] / layers * n / _best(run, rounds) / 1e9
    return out


def cycles_per_second(seconds: float = 0.2) -> float:
    """The rate of the cycle counter `fast.kernels` timing counts in (x86 TSC: constant)."""
    c0, t0 = K.read_cycles(), time.perf_counter()
    time.sleep(seconds)
    c1, t1 = K.read_cycles(), time.perf_counter()
    return (c1 - c0) / (t1 - t0)
