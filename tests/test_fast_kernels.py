"""Every fast kernel pair against the reference layer of the same name (llm.c style).

The layer names come from `reference.layers` itself, so a reference layer without a fast
kernel (or without a case here) fails. Inputs are small random tensors; float64 must agree to
1e-10 and float32 (inputs rounded to float32, reference in float64) to 1e-4, relative L2.
Backward kernels that accumulate are pre-filled with a known tensor to prove they ADD.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from fast import kernels as K
from reference import layers as ref

TOL = {np.float64: 1e-10, np.float32: 1e-4}
R, T, S, d, H, f, V = 2, 5, 7, 12, 3, 20, 11  # d, f, V not multiples of 8: lane tails run too
N = R * T


def rel_err(got, want) -> float:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = np.linalg.norm(want)
    assert scale > 0, "a comparison against an all-zero tensor proves nothing"
    return float(np.linalg.norm(got - want) / scale)


def reference_layer_names() -> list[str]:
    return sorted(name[:-len("_forward")] for name, fn in inspect.getmembers(ref)
                  if name.endswith("_forward") and inspect.isfunction(fn))


def as_dtype(rng, shape, dtype, scale=1.0, shift=0.0):
    """Random normal values already rounded to dtype, and their float64 copy for the reference."""
    a = (rng.standard_normal(shape) * scale + shift).astype(dtype)
    return a, a.astype(np.float64)


def _prefilled(rng, shape, dtype):
    """A gradient buffer holding a known tensor, to check the kernel adds into it."""
    return (rng.standard_normal(shape) * 0.1).astype(dtype)


# Each case returns {quantity: (fast value, reference value)}.


def case_embedding(rng, dt):
    tokens = rng.integers(0, V, (R, T))
    tokens[1, :2] = tokens[0, 0]  # repeated ids must accumulate
    wte, wte64 = as_dtype(rng, (V, d), dt)
    wpe, wpe64 = as_dtype(rng, (S, d), dt)
    dout, dout64 = as_dtype(rng, (N, d), dt)
    x_ref, cache = ref.embedding_forward(wte64, wpe64, tokens)
    dwte_ref, dwpe_ref = ref.embedding_backward(dout64.reshape(R, T, d), cache)
    out = np.empty((N, d), dt)
    K.embedding_forward(tokens, wte, wpe, out)
    pre_wte, pre_wpe = _prefilled(rng, (V, d), dt), _prefilled(rng, (S, d), dt)
    dwte, dwpe = pre_wte.copy(), pre_wpe.copy()
    K.embedding_backward(dout, tokens, dwte, dwpe)
    return {"x": (out, x_ref.reshape(N, d)),
            "dwte": (dwte.astype(np.float64) - pre_wte, dwte_ref),
            "dwpe": (dwpe.astype(np.float64) - pre_wpe, dwpe_ref)}


def case_layernorm(rng, dt):
    x, x64 = as_dtype(rng, (N, d), dt, scale=2.0, shift=0.7)
    g, g64 = as_dtype(rng, (d,), dt, shift=1.0)
    b, b64 = as_dtype(rng, (d,), dt)
    dout, dout64 = as_dtype(rng, (N, d), dt)
    y_ref, cache = ref.layernorm_forward(x64, g64, b64)
    dx_ref, dg_ref, db_ref = ref.layernorm_backward(dout64, cache)
    y, mean, rstd = np.empty((N, d), dt), np.empty(N, dt), np.empty(N, dt)
    K.layernorm_forward(x, g, b, y, mean, rstd)
    pre_dx, pre_dg, pre_db = (_prefilled(rng, s, dt) for s in ((N, d), (d,), (d,)))
    dx, dg, db = pre_dx.copy(), pre_dg.copy(), pre_db.copy()
    K.layernorm_backward(dout, x, mean, rstd, g, dx, dg, db)
    return {"y": (y, y_ref), "dx": (dx.astype(np.float64) - pre_dx, dx_ref),
            "dg": (dg.astype(np.float64) - pre_dg, dg_ref),
            "db": (db.astype(np.float64) - pre_db, db_ref)}


def case_linear(rng, dt):
    i, o = d, f
    x, x64 = as_dtype(rng, (N, i), dt)
    w, w64 = as_dtype(rng, (i, o), dt)
    b, b64 = as_dtype(rng, (o,), dt)
    dout, dout64 = as_dtype(rng, (N, o), dt)
    y_ref, cache = ref.linear_forward(x64, w64, b64)
    dx_ref, dw_ref, db_ref = ref.linear_backward(dout64, cache)
    y = np.empty((N, o), dt)
    K.linear_forward(x, w, b, y)
    pre_dw, pre_db = _prefilled(rng, (i, o), dt), _prefilled(rng, (o,), dt)
    dx, dw, db = np.empty((N, i), dt), pre_dw.copy(), pre_db.copy()
    K.linear_backward(dout, x, w, dx, dw, db)
    return {"y": (y, y_ref), "dx": (dx, dx_ref),
            "dw": (dw.astype(np.float64) - pre_dw, dw_ref),
            "db": (db.astype(np.float64) - pre_db, db_ref)}


def case_attention(rng, dt):
    qkv, qkv64 = as_dtype(rng, (N, 3 * d), dt, scale=1.5)
    dout, dout64 = as_dtype(rng, (N, d), dt)
    y_ref, cache = ref.attention_forward(qkv64.reshape(R, T, 3 * d), H)
    dqkv_ref = ref.attention_backward(dout64.reshape(R, T, d), cache)
    att_ref = cache[3]  # (R,H,T,T) probabilities
    scratch = np.empty(K.attention_scratch_size(T, d // H), dt)
    y, att = np.empty((N, d), dt), np.empty((R, H, T, T), dt)
    K.attention_forward(qkv, H, y, att)
    dqkv = np.empty((N, 3 * d), dt)
    K.attention_backward(dout, qkv, att, H, dqkv, scratch)
    return {"y": (y, y_ref.reshape(N, d)), "att": (att, att_ref),
            "dqkv": (dqkv, dqkv_ref.reshape(N, 3 * d))}


def case_gelu(rng, dt):
    u, u64 = as_dtype(rng, (N, f), dt, scale=3.0)
    u[0, :4] = [-12.0, -6.0, 6.0, 12.0]  # the clamped tails of the float32 tanh
    u64 = u.astype(np.float64)
    dout, dout64 = as_dtype(rng, (N, f), dt)
    y_ref, cache = ref.gelu_forward(u64)
    du_ref = ref.gelu_backward(dout64, cache)
    y = np.empty((N, f), dt)
    K.gelu_forward(u, y)
    du = dout.copy()
    K.gelu_backward(du, u)  # in place
    return {"y": (y, y_ref), "du": (du, du_ref)}


def case_logits(rng, dt):
    x, x64 = as_dtype(rng, (N, d), dt)
    wte, wte64 = as_dtype(rng, (V, d), dt)
    dl, dl64 = as_dtype(rng, (N, V), dt)
    y_ref, cache = ref.logits_forward(x64, wte64)
    dx_ref, dwte_ref = ref.logits_backward(dl64, cache)
    y = np.empty((N, V), dt)
    K.logits_forward(x, wte, y)
    pre = _prefilled(rng, (V, d), dt)
    dx, dwte = np.empty((N, d), dt), pre.copy()
    K.logits_backward(dl, x, wte, dx, dwte)
    return {"y": (y, y_ref), "dx": (dx, dx_ref), "dwte": (dwte.astype(np.float64) - pre, dwte_ref)}


def case_crossentropy(rng, dt):
    logits, logits64 = as_dtype(rng, (N, V), dt, scale=3.0)
    targets = rng.integers(1, V, N)
    targets[[1, 4, 7]] = 0  # pad targets are ignored
    dloss = 0.75
    (loss_ref, n_ref), cache = ref.crossentropy_forward(logits64.reshape(R, T, V),
                                                        targets.reshape(R, T))
    dl_ref = ref.crossentropy_backward(dloss, cache).reshape(N, V)
    probs = logits.copy()
    loss, n = K.crossentropy_forward(probs, targets)  # in place: logits -> probabilities
    assert n == n_ref == N - 3
    keep = targets != 0
    softmax_ref = np.exp(cache[0]).reshape(N, V)[keep]
    dl = probs.copy()
    K.crossentropy_backward(dl, targets, dloss)  # in place: probabilities -> dlogits
    return {"loss": (np.array([loss]), np.array([loss_ref])),
            "probs": (probs[keep], softmax_ref), "dlogits": (dl, dl_ref)}


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def test_every_reference_layer_has_a_fast_pair_and_a_case():
    names = reference_layer_names()
    assert set(names) == set(K.KERNEL_NAMES), "fast.kernels.KERNEL_NAMES is out of date"
    for name in names:
        assert callable(getattr(K, name + "_forward", None)), f"fast kernel {name}_forward missing"
        assert callable(getattr(K, name + "_backward", None)), f"fast {name}_backward missing"
        assert name in CASES, f"no comparison case for layer {name!r}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", reference_layer_names())
def test_kernel_matches_reference(name, dtype):
    assert name in CASES, f"no comparison case for layer {name!r}"
    rng = np.random.default_rng(sum(map(ord, name)))
    results = CASES[name](rng, dtype)
    for quantity, (got, want) in results.items():
        err = rel_err(got, want)
        assert err <= TOL[dtype], f"{name} {quantity}: relative error {err:.3e}"


def test_float32_kernels_are_not_silently_float64():
    """A float32 kernel that rounded to float32 only at the end would hide in the tolerances;
    check the float32 GELU really differs from libm's float64 at float32 precision."""
    rng = np.random.default_rng(1)
    u = (rng.standard_normal(4096) * 3).astype(np.float32)
    y32 = np.empty_like(u)
    K.gelu_forward(u.reshape(64, 64), y32.reshape(64, 64))
    y_ref, _ = ref.gelu_forward(u.astype(np.float64))
    err = np.abs(y32 - y_ref) / np.maximum(np.abs(y_ref), 1.0)
    assert err.max() < 1e-6  # a few float32 ulp of max(|y|, 1): 1 + tanh cancels near -1
    assert err.max() > 0  # float32 arithmetic, not float64


def test_row_sum_lanes_match_exact_sum():
    """The 8-lane float64 sums cover every element, including tails (n not a multiple of 8)."""
    rng = np.random.default_rng(2)
    for n in (1, 7, 8, 9, 31, 64, 100):
        a = rng.standard_normal(n)
        b = rng.standard_normal(n)
        assert abs(K.row_sum(a, n) - np.sum(a)) <= 1e-12 * np.abs(a).sum()
        assert abs(K.row_dot(a, b, n) - a @ b) <= 1e-12 * np.abs(a * b).sum()
        assert K.row_max(a, n) == a.max()


def _lanes_reference(terms) -> float:
    """The row sums' definition in plain Python floats: 8 lanes, lane j % 8 for j < n8, the
    tail into lane 0, then ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))."""
    n = len(terms)
    n8 = n - n % 8
    lanes = [0.0] * 8
    for j in range(n8):
        lanes[j % 8] += float(terms[j])
    for j in range(n8, n):
        lanes[0] += float(terms[j])
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + \
        ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_row_reductions_are_bitwise_their_lane_definition(dt):
    """The vector-lane kernels give exactly the bits of the scalar 8-lane sums (the order
    every gradient relies on), for every tail length, both dtypes, signed zeros and NaN."""
    rng = np.random.default_rng(5)
    for n in [*range(1, 41), 63, 64, 65, 127, 128, 129, 255, 256, 788]:
        a = (rng.standard_normal(n + 2) * 10.0 ** rng.uniform(-4, 4)).astype(dt)
        b = rng.standard_normal(n + 2).astype(dt)
        mu = dt(rng.standard_normal())
        assert K.row_sum(a, n) == _lanes_reference(a[:n])
        assert K.row_dot(a, b, n) == _lanes_reference(a[:n] * b[:n])  # product in dt
        assert K.row_sq_dev(a, mu, n) == _lanes_reference(
            (a[:n] - mu).astype(np.float64) ** 2)
        assert K.row_max(a, n) == a[:n].max()
    zeros = np.zeros(40, dt)
    zeros[1::3] = -0.0
    assert np.signbit(K.row_max(zeros, 40)) == np.signbit(zeros[0])  # first max wins
    nan_late = rng.standard_normal(40).astype(dt)
    nan_late[20] = np.nan
    assert K.row_max(nan_late, 40) == np.nanmax(nan_late)  # like Python's max: x > m
    nan_late[0] = np.nan
    assert np.isnan(K.row_max(nan_late, 40))


def test_row_reductions_refuse_mismatched_rows():
    from numba.core.errors import TypingError

    with pytest.raises(TypingError, match="does not match"):
        K.row_dot(np.ones(8, np.float32), np.ones(8, np.float64), 8)
    with pytest.raises(TypingError, match="1-D C-contiguous"):
        K.row_sum(np.ones((4, 4), np.float32)[:, 0], 4)


def test_float32_softmax_exp_is_accurate_over_a_wide_range():
    """The float32 exp polynomial, seen through the cross-entropy softmax of one long row."""
    x = np.linspace(-80.0, 80.0, 20001)
    probs = x.astype(np.float32).reshape(1, -1)
    loss, n = K.crossentropy_forward(probs, np.array([1]))
    z32 = x.astype(np.float32)
    z = z32.astype(np.float64)
    e = np.exp((z32 - z32.max()).astype(np.float64))  # the float32 shift is exact arithmetic
    want = e / e.sum()
    big = want > 1e-30
    assert np.max(np.abs(probs[0][big] - want[big]) / want[big]) < 1e-6
    assert n == 1
    assert abs(loss - (np.log(e.sum()) - (z[1] - z.max()))) <= 1e-5 * abs(loss)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_attention_with_several_causal_blocks(dtype):
    """T spans 2 full query blocks and a partial one, so the skipped key ranges and the
    accumulated dk, dv of earlier blocks are exercised."""
    rows, heads, width = 2, 2, 8
    length = 2 * K.ATTENTION_BLOCK + 5
    n = rows * length
    rng = np.random.default_rng(5)
    qkv, qkv64 = as_dtype(rng, (n, 3 * width), dtype, scale=1.5)
    dout, dout64 = as_dtype(rng, (n, width), dtype)
    y_ref, cache = ref.attention_forward(qkv64.reshape(rows, length, 3 * width), heads)
    dqkv_ref = ref.attention_backward(dout64.reshape(rows, length, width), cache)
    y, att = np.empty((n, width), dtype), np.full((rows, heads, length, length), np.nan, dtype)
    K.attention_forward(qkv, heads, y, att)
    dqkv = np.full((n, 3 * width), np.nan, dtype)
    K.attention_backward(dout, qkv, att, heads, dqkv,
                         np.full(K.attention_scratch_size(length, width // heads), np.nan, dtype))
    for got, want in ((y, y_ref.reshape(n, width)), (att, cache[3]),
                      (dqkv, dqkv_ref.reshape(n, 3 * width))):
        assert rel_err(got, want) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_fused_kernels_give_the_bits_of_their_parts(dtype):
    """The fused kernels the model runs are bitwise the tested kernels they replace:
    gelu_forward_slope + gelu_slope_backward_bias = gelu_forward, gelu_backward + bias_grad_add;
    linear_residual_forward = residual + linear_forward (up to the order of the two additions,
    checked against the reference)."""
    rng = np.random.default_rng(5)
    u = rng.standard_normal((13, 21)).astype(dtype)
    dout = rng.standard_normal((13, 21)).astype(dtype)
    db0 = rng.standard_normal(21).astype(dtype)
    slope, y_fused = u.copy(), np.empty_like(u)
    K.gelu_forward_slope(slope, y_fused)
    fused, db_fused = dout.copy(), db0.copy()
    K.gelu_slope_backward_bias(fused, slope, db_fused)
    y_parts, parts, db_parts = np.empty_like(u), dout.copy(), db0.copy()
    K.gelu_forward(u, y_parts)
    K.gelu_backward(parts, u)
    K.bias_grad_add(parts, db_parts)
    assert y_fused.tobytes() == y_parts.tobytes()
    assert fused.tobytes() == parts.tobytes() and db_fused.tobytes() == db_parts.tobytes()
    x, w = rng.standard_normal((13, 6)).astype(dtype), rng.standard_normal((6, 21)).astype(dtype)
    b = rng.standard_normal(21).astype(dtype)
    out = np.empty((13, 21), dtype)
    K.linear_residual_forward(x, w, b, u, out)
    want = u.astype(np.float64) + x.astype(np.float64) @ w.astype(np.float64) + b
    assert rel_err(out, want) <= TOL[dtype]
