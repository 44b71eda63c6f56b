"""Numba kernels of every layer, forward and backward, for float32 and float64 arrays.

Names match `reference/layers.py` so the tests pair them by name. Unlike the reference, these
write into caller-owned buffers (no allocation in the hot path) and work on 2-D (N, C) row
blocks, N = R*T tokens of R rows. Rules that make them fast and deterministic:
- matrix products go through BLAS (`np.dot` with an `out` buffer on contiguous 2-D operands or
  their transposes, which BLAS reads without a copy); a weight gradient is ONE GEMM over all N
  tokens that accumulates (`+=`, beta = 1) straight into the gradient; attention reads each
  head's q, k, v straight out of qkv as strided blocks and skips the keys a causal block of
  queries cannot see;
- element-wise work (LayerNorm, GELU, causal softmax, cross-entropy) is fused into one loop nest
  per row; row reductions accumulate in float64 even for float32 arrays;
- `nogil=True` so worker threads run in parallel; no `fastmath`, no `parallel` (results must not
  depend on scheduling). `error_model="numpy"` drops Python's zero-division check (a branch
  per division that stops LLVM from vectorising); it changes no rounding;
- float32 exp and tanh are vectorisable polynomial forms (a few ulp; libm's are scalar calls
  and cost more than the GEMMs around them); float64 keeps libm for 1e-10 agreement;
- row sums (softmax, LayerNorm, cross-entropy) run in 8 fixed float64 lanes: a fixed order,
  so the same inputs give the same bits, and several times faster than one serial chain.
"""

from __future__ import annotations

import math

import numpy as np

# Numba's np.dot calls scipy's OpenBLAS, which Numba loads lazily at the first matrix product.
# Importing it with this module makes a `threadpoolctl.threadpool_limits(1)` entered after
# importing the engine cover it; otherwise that BLAS keeps its default thread pool and every
# "single-threaded" worker silently runs two BLAS threads (measured: 2 workers ran at 0.5x).
import scipy.linalg.cython_blas  # noqa: F401
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

LN_EPS = 1e-5  # SPEC 1, the same as reference.layers.LN_EPS
PAD_ID = 0  # targets equal to it are ignored (SPEC 2)
kernel = njit(nogil=True, cache=True, error_model="numpy")  # every kernel's compile options
GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715

# Eigen/XLA's float32 tanh: odd 13/6 rational minimax, a few ulp, clamped where tanh == +-1.
_TANH_CLAMP = 7.90531110763549805
_TANH_ALPHA = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
               5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
               -2.76076847742355e-16)
_TANH_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
              1.19825839466702e-06)


# ---------------------------------------------------------------- scalar helpers by dtype


def cast_like(arr, value):  # pragma: no cover - replaced by the overload inside njit code
    """`value` converted to the dtype of `arr`, so float32 loops stay float32 (full SIMD)."""
    raise NotImplementedError("cast_like is only callable from Numba-compiled code")


@overload(cast_like, inline="always")
def _cast_like_impl(arr, value):
    if arr.dtype == types.float32:
        return lambda arr, value: np.float32(value)
    return lambda arr, value: np.float64(value)


@intrinsic
def _bits_to_float32(typingctx, bits):
    """The float32 whose IEEE bits are the int32 `bits` (builds 2**n for exp)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


def exp_scalar(x):  # pragma: no cover - replaced by the overload inside njit code
    """exp(x); float32: Cephes' expf polynomial (<= 2 ulp, vectorisable), float64: libm."""
    raise NotImplementedError("exp_scalar is only callable from Numba-compiled code")


@overload(exp_scalar, inline="always")
def _exp_scalar_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        f = np.float32
        lo, hi, log2e, c1, c2 = f(-87.0), f(88.0), f(1.44269504088896341), f(0.693359375), \
            f(-2.12194440e-4)
        p0, p1, p2, p3, p4, p5 = (f(1.9875691500e-4), f(1.3981999507e-3), f(8.3334519073e-3),
                                  f(4.1665795894e-2), f(1.6666665459e-1), f(5.0000001201e-1))
        half, one = f(0.5), f(1.0)

        def impl32(x):
            x = min(max(x, lo), hi)  # exp(-87) ~ 1.6e-38: the smallest normal scale 2**-126
            n = np.floor(x * log2e + half)
            r = x - n * c1 - n * c2  # Cody-Waite: x = n ln2 + r, |r| <= ln2/2
            p = p0 * r + p1
            p = p * r + p2
            p = p * r + p3
            p = p * r + p4
            p = p * r + p5
            y = p * r * r + r + one
            return y * _bits_to_float32((np.int32(n) + np.int32(127)) << np.int32(23))
        return impl32
    return lambda x: math.exp(x)


def gelu_scalar(u):  # pragma: no cover - replaced by the overload inside njit code
    """(gelu(u), dgelu/du) for one value; the dtype of u picks the implementation."""
    raise NotImplementedError("gelu_scalar is only callable from Numba-compiled code")


@overload(gelu_scalar, inline="always")
def _gelu_scalar_impl(u):
    if isinstance(u, types.Float) and u.bitwidth == 32:
        f = np.float32
        a1, a3, a5, a7, a9, a11, a13 = (f(c) for c in _TANH_ALPHA)
        b0, b2, b4, b6 = (f(c) for c in _TANH_BETA)
        clamp, c, a, half, one, three_a = (f(_TANH_CLAMP), f(GELU_C), f(GELU_A), f(0.5),
                                           f(1.0), f(3.0 * GELU_A))

        def impl32(u):
            z = c * (u + a * u * u * u)
            z = min(max(z, -clamp), clamp)
            z2 = z * z
            p = z2 * a13 + a11
            p = p * z2 + a9
            p = p * z2 + a7
            p = p * z2 + a5
            p = p * z2 + a3
            p = p * z2 + a1
            q = z2 * b6 + b4
            q = q * z2 + b2
            q = q * z2 + b0
            th = z * p / q
            y = half * u * (one + th)
            dy = half * (one + th) + half * u * (one - th * th) * c * (one + three_a * u * u)
            return y, dy
        return impl32

    def impl64(u):
        th = math.tanh(GELU_C * (u + GELU_A * u * u * u))
        y = 0.5 * u * (1.0 + th)
        dy = 0.5 * (1.0 + th) + 0.5 * u * (1.0 - th * th) * GELU_C * (1.0 + 3.0 * GELU_A * u * u)
        return y, dy
    return impl64


# Row reductions: fixed lanes as LLVM vectors. Written as 8 scalar accumulators, LLVM keeps
# them scalar (measured 0.40-0.64 ns per element); one <8 x double> accumulator holds exactly
# the same 8 partial sums, each in the same element order, so the bits are unchanged and the
# chain is 8 elements per add (0.22-0.34 ns). Rows must be 1-D C-contiguous float arrays.
SUM_LANES = 8  # float64 lanes of every row sum: part of the result's definition (its order)
MAX_LANES = 16  # lanes of row_max: max is exact, so any lane count gives the same value


def _check_row(arr, what):
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"
                and isinstance(arr.dtype, types.Float)):
        raise TypingError(f"{what} needs a 1-D C-contiguous float array, got {arr}")


def _load_vector(context, builder, aryty, ary_val, j, width):
    """The `width` elements of a 1-D array from index j on, as one LLVM vector."""
    ary = context.make_array(aryty)(context, builder, ary_val)
    elem = context.get_value_type(aryty.dtype)
    ptr = builder.bitcast(builder.gep(ary.data, [j]), ir.VectorType(elem, width).as_pointer())
    return builder.load(ptr, align=aryty.dtype.bitwidth // 8)


def _splat(builder, value, width):
    v = ir.Constant(ir.VectorType(value.type, width), None)
    for k in range(width):
        v = builder.insert_element(v, value, ir.Constant(ir.IntType(32), k))
    return v


def _lane_sums(kind):
    """An intrinsic (a, b, n8) -> the SUM_LANES float64 partial sums over j < n8 (a multiple
    of SUM_LANES), lane k adding the terms j = k mod 8 in increasing j; the term is a[j]
    ("sum"), a[j] * b[j] in the arrays' dtype ("dot"), or float64(a[j] - b)^2 with the
    difference in a's dtype ("sqdev", b a scalar): exactly the scalar loops' terms."""
    def typer(typingctx, a, b, n8):
        _check_row(a, f"row {kind}")
        if kind == "dot":
            _check_row(b, "row dot")
        if b != a and (b.dtype if kind == "dot" else b) != a.dtype:
            raise TypingError(f"row {kind}: {b} does not match the row's dtype {a.dtype}")
        sig = types.UniTuple(types.float64, SUM_LANES)(a, b, n8)

        def codegen(context, builder, signature, args):
            aty, bty = signature.args[0], signature.args[1]
            vd = ir.VectorType(ir.DoubleType(), SUM_LANES)
            acc = cgutils.alloca_once_value(builder, ir.Constant(vd, None))  # zeros
            if kind == "sqdev":
                mu = _splat(builder, context.cast(builder, args[1], bty, aty.dtype), SUM_LANES)
            step = ir.Constant(args[2].type, SUM_LANES)
            with cgutils.for_range_slice(builder, ir.Constant(args[2].type, 0), args[2],
                                         step) as (j, _):
                x = _load_vector(context, builder, aty, args[0], j, SUM_LANES)
                if kind == "dot":
                    x = builder.fmul(x, _load_vector(context, builder, bty, args[1], j,
                                                     SUM_LANES))
                elif kind == "sqdev":
                    x = builder.fsub(x, mu)
                if x.type != vd:
                    x = builder.fpext(x, vd)
                if kind == "sqdev":
                    x = builder.fmul(x, x)
                builder.store(builder.fadd(builder.load(acc), x), acc)
            v = builder.load(acc)
            return context.make_tuple(builder, signature.return_type, [
                builder.extract_element(v, ir.Constant(ir.IntType(32), k))
                for k in range(SUM_LANES)])
        return sig, codegen
    return intrinsic(typer)


_sum_lanes, _dot_lanes, _sqdev_lanes = (_lane_sums(k) for k in ("sum", "dot", "sqdev"))


@intrinsic
def _max_lanes(typingctx, a, n16):
    """max(a[0], a[0:n16]) (n16 a multiple of MAX_LANES) in MAX_LANES vector lanes, each
    step `x if x > m else m` like Python's max, then halved pairwise."""
    _check_row(a, "row max")

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        first = builder.load(context.make_array(aty)(context, builder, args[0]).data)
        acc = cgutils.alloca_once_value(builder, _splat(builder, first, MAX_LANES))
        step = ir.Constant(args[1].type, MAX_LANES)
        with cgutils.for_range_slice(builder, ir.Constant(args[1].type, 0), args[1],
                                     step) as (j, _):
            x = _load_vector(context, builder, aty, args[0], j, MAX_LANES)
            m = builder.load(acc)
            builder.store(builder.select(builder.fcmp_ordered(">", x, m), x, m), acc)
        v, width = builder.load(acc), MAX_LANES
        while width > 1:
            width //= 2
            lo, hi = (builder.shuffle_vector(v, v, ir.Constant(
                ir.VectorType(ir.IntType(32), width), list(range(o, o + width))))
                for o in (0, width))
            v = builder.select(builder.fcmp_ordered(">", hi, lo), hi, lo)
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))
    return a.dtype(a, n16), codegen


@kernel
def _fold_lanes(s0, s):
    """The lanes' one combination order: ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)),
    lane 0 being `s0` (the vector lane plus the tail)."""
    return ((s0 + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


@kernel
def row_sum(a, n):
    """float64 sum of a[0:n] in 8 fixed lanes (deterministic, pipelined)."""
    n8 = n - n % SUM_LANES
    s = _sum_lanes(a, a, n8)
    s0 = s[0]
    for j in range(n8, n):
        s0 += a[j]
    return _fold_lanes(s0, s)


@kernel
def row_dot(a, b, n):
    """float64 sum of a[j] * b[j], j < n, in 8 fixed lanes."""
    n8 = n - n % SUM_LANES
    s = _dot_lanes(a, b, n8)
    s0 = s[0]
    for j in range(n8, n):
        s0 += a[j] * b[j]
    return _fold_lanes(s0, s)


@kernel
def row_sq_dev(a, mu, n):
    """float64 sum of (a[j] - mu)^2, j < n, in 8 fixed lanes (LayerNorm's variance)."""
    n8 = n - n % SUM_LANES
    s = _sqdev_lanes(a, mu, n8)
    s0 = s[0]
    for j in range(n8, n):
        dj = np.float64(a[j] - mu)
        s0 += dj * dj
    return _fold_lanes(s0, s)


@kernel
def row_max(a, n):
    """max of a[0:n] (n >= 1); max is exact, so any order gives the same bits."""
    n16 = n - n % MAX_LANES
    m = _max_lanes(a, n16)
    for j in range(n16, n):
        m = max(m, a[j])
    return m


@intrinsic
def _read_cycles(typingctx):
    """The CPU's cycle counter (x86 TSC: constant rate, so proportional to wall time)."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@kernel
def read_cycles():
    """The cycle counter `timing` counts in, for callers that convert cycles to seconds."""
    return _read_cycles()


# Kernel groups of the per-kernel timing table (`model_forward_backward(..., timing)`):
# cycles spent in each are added to timing[group] when timing is not empty. A GEMM group is
# one linear layer's forward and backward products with its bias (and residual) work;
# "attention" is the causal attention core (its small GEMMs and the softmax).
TIMING_GROUPS = ("embedding", "layernorm", "gemm qkv", "gemm attn-out", "gemm fc", "gemm proj",
                 "gemm logits", "attention", "gelu", "crossentropy")
T_EMB, T_LN, T_QKV, T_O, T_FC, T_PROJ, T_LOGITS, T_ATT, T_GELU, T_CE = range(len(TIMING_GROUPS))


@kernel
def _lap(timing, group, since):
    """Adds the cycles since `since` to timing[group] (if timing is not empty); returns now."""
    now = _read_cycles()
    if timing.shape[0] > 0:
        timing[group] += now - since
    return now


def _gemm_signature(dt):
    return types.intc(types.char, types.char, types.char, types.intp, types.intp, types.intp,
                      types.CPointer(dt), types.CPointer(dt), types.intp, types.CPointer(dt),
                      types.intp, types.CPointer(dt), types.CPointer(dt), types.intp)


# Numba's own BLAS entry (the one np.dot uses, backed by scipy's cython_blas); called directly
# for beta = 1, i.e. GEMM that accumulates into its output.
_XXGEMM = {types.float32: types.ExternalFunction("numba_xxgemm", _gemm_signature(types.float32)),
           types.float64: types.ExternalFunction("numba_xxgemm", _gemm_signature(types.float64))}


def gemm_rm(trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc,
            accumulate):  # pragma: no cover - replaced by the overload inside njit code
    """Row-major C (m, n) [+]= op(A) (m, k) @ op(B) (k, n) on blocks of flat arrays.

    A block starts at a[a_off] with row stride lda (likewise B, C); op is a transpose when
    trans_* is True. Strided blocks let attention read each head's q, k, v straight out of qkv
    and compute only the causal (lower) part of the scores. Only callable from Numba code.
    """
    raise NotImplementedError("gemm_rm is only callable from Numba-compiled code")


@overload(gemm_rm)
def _gemm_rm_impl(trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc,
                  accumulate):
    fn = _XXGEMM[a.dtype]
    kind = ord("s") if a.dtype == types.float32 else ord("d")
    np_dt = np.float32 if a.dtype == types.float32 else np.float64
    notrans, trans = ord("n"), ord("t")

    def impl(trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc,
             accumulate):
        alpha_beta = np.ones(2, np_dt)
        if not accumulate:
            alpha_beta[1] = 0.0
        # Column-major view: C^T (n, m) = op(B)^T (n, k) @ op(A)^T (k, m).
        status = fn(kind, trans if trans_b else notrans, trans if trans_a else notrans,
                    n, m, k, alpha_beta[0:].ctypes, b[b_off:].ctypes, ldb, a[a_off:].ctypes,
                    lda, alpha_beta[1:].ctypes, c[c_off:].ctypes, ldc)
        if status != 0:
            raise RuntimeError("BLAS gemm failed")
    return impl


@kernel
def gemm_tn_acc(a, b, c):
    """c (i, o) += a (N, i)^T @ b (N, o), all C-contiguous, in one BLAS call (beta = 1)."""
    N, i = a.shape
    o = b.shape[1]
    if b.shape[0] != N or c.shape[0] != i or c.shape[1] != o:
        raise ValueError("gemm_tn_acc: shapes do not match")
    gemm_rm(True, False, i, o, N, a, 0, i, b, 0, o, c, 0, o, True)


@kernel
def gemm_nn_acc(a, b, c):
    """c (N, o) += a (N, i) @ b (i, o), all C-contiguous, in one BLAS call (beta = 1)."""
    N, i = a.shape
    o = b.shape[1]
    if b.shape[0] != i or c.shape[0] != N or c.shape[1] != o:
        raise ValueError("gemm_nn_acc: shapes do not match")
    gemm_rm(False, False, N, o, i, a, 0, i, b, 0, o, c, 0, o, True)


# ---------------------------------------------------------------- embedding


@kernel
def embedding_forward(tokens, wte, wpe, out):
    """out (R*T, d) = wte[tokens] + wpe[0:T]; tokens (R, T) int64, wte (V, d), wpe (S, d)."""
    R, T = tokens.shape
    d = wte.shape[1]
    for r in range(R):
        for t in range(T):
            n = r * T + t
            tok = tokens[r, t]
            for j in range(d):
                out[n, j] = wte[tok, j] + wpe[t, j]


@kernel
def embedding_backward(dout, tokens, dwte, dwpe):
    """Differentiates `out = wte[tokens] + wpe[0:T]`: dwte (V, d) +=, dwpe (S, d) +=.

    dout (R*T, d); tokens in row order, so a repeated token accumulates in a fixed order.
    """
    R, T = tokens.shape
    d = dout.shape[1]
    for r in range(R):
        for t in range(T):
            n = r * T + t
            tok = tokens[r, t]
            for j in range(d):
                dwte[tok, j] += dout[n, j]
                dwpe[t, j] += dout[n, j]


# ---------------------------------------------------------------- layernorm


@kernel
def layernorm_forward(x, g, b, out, mean, rstd):
    """out (N, d) = (x - mean) * rstd * g + b over the last axis; saves mean, rstd (N,)."""
    N, d = x.shape
    for i in range(N):
        xi = x[i]
        mu = row_sum(xi, d) / d  # float64
        mu_c = cast_like(x, mu)
        rs = cast_like(x, 1.0 / math.sqrt(row_sq_dev(xi, mu_c, d) / d + LN_EPS))
        oi = out[i]
        for j in range(d):
            oi[j] = (xi[j] - mu_c) * rs * g[j] + b[j]
        mean[i] = mu_c
        rstd[i] = rs


@kernel
def layernorm_backward(dout, x, mean, rstd, g, dx, dg, db):
    """Differentiates `out = (x - mean) * rstd * g + b`: dx (N, d) +=, dg (d,) +=, db (d,) +=.

    dx is ADDED to because LayerNorm sits on a residual branch: the caller passes the residual
    gradient and receives residual + branch.
    """
    N, d = x.shape
    dg_acc = np.zeros(d, np.float64)
    db_acc = np.zeros(d, np.float64)
    xhat = np.empty(d, x.dtype)
    dxhat = np.empty(d, x.dtype)
    for i in range(N):
        mu = mean[i]
        rs = rstd[i]
        xi = x[i]
        di = dout[i]
        for j in range(d):
            xhat[j] = (xi[j] - mu) * rs
            dxhat[j] = di[j] * g[j]
        # float64 accumulators get loops of their own: mixed into the loop above they stop
        # LLVM from vectorising it (measured 10x slower); the sums and their order are the same
        for j in range(d):
            dg_acc[j] += di[j] * xhat[j]
            db_acc[j] += di[j]
        m1 = cast_like(x, row_sum(dxhat, d) / d)
        m2 = cast_like(x, row_dot(dxhat, xhat, d) / d)
        dxi = dx[i]
        for j in range(d):
            dxi[j] += rs * (dxhat[j] - m1 - xhat[j] * m2)
    for j in range(d):
        dg[j] += dg_acc[j]
        db[j] += db_acc[j]


# ---------------------------------------------------------------- linear


@kernel
def linear_forward(x, w, b, out):
    """out (N, o) = x (N, i) @ w (i, o) + b (o,).

    The bias is written first and the GEMM accumulates onto it (beta = 1): BLAS reads C once
    instead of zeroing it, and no second pass over the output adds the bias.
    """
    N, o = out.shape
    for n in range(N):
        for j in range(o):
            out[n, j] = b[j]
    gemm_nn_acc(x, w, out)


@kernel
def linear_residual_forward(x, w, b, res, out):
    """out (N, o) = res (N, o) + (x (N, i) @ w (i, o) + b (o,)): a linear on a residual branch.

    res + b is written in one pass and the GEMM accumulates onto it (beta = 1), so the residual
    add and the bias cost no pass of their own.
    """
    N, o = out.shape
    for n in range(N):
        for j in range(o):
            out[n, j] = res[n, j] + b[j]
    gemm_nn_acc(x, w, out)


@kernel
def bias_grad_add(dout, db):
    """db (o,) += column sums of dout (N, o), accumulated in float64 in row order."""
    N, o = dout.shape
    acc = np.zeros(o, np.float64)
    for n in range(N):
        for j in range(o):
            acc[j] += dout[n, j]
    for j in range(o):
        db[j] += acc[j]


@kernel
def linear_backward(dout, x, w, dx, dw, db):
    """Differentiates `out = x @ w + b`: dx (N, i) =, dw (i, o) +=, db (o,) +=.

    dw is one GEMM over all N tokens that accumulates straight into the gradient (beta = 1).
    """
    linear_backward_products(dout, x, w, dx, dw)
    bias_grad_add(dout, db)


@kernel
def linear_backward_products(dout, x, w, dx, dw):
    """The two GEMMs of `linear_backward` (dx =, dw +=), for callers that already summed the
    bias gradient while writing dout (`gelu_slope_backward_bias`). w.T is a transposed view: BLAS
    reads it with its transpose flag, no copy."""
    np.dot(dout, w.T, dx)
    gemm_tn_acc(x, dout, dw)


# ---------------------------------------------------------------- attention


ATTENTION_BLOCK = 64  # query rows per causal block: keys past the block's last row are skipped


def attention_scratch_size(T: int, head_dim: int) -> int:
    """Elements of scratch `attention_backward` needs for T positions (one (T, T) block)."""
    return T * T


@kernel
def _softmax_row(ai, i, sc):
    """In place on one score row ai (T,): softmax(ai[0:i+1] * sc), zeros after position i."""
    m = row_max(ai, i + 1)
    for j in range(i + 1):
        ai[j] = exp_scalar((ai[j] - m) * sc)
    inv = cast_like(ai, 1.0 / row_sum(ai, i + 1))
    for j in range(i + 1):
        ai[j] = ai[j] * inv
    for j in range(i + 1, ai.shape[0]):
        ai[j] = 0.0


@kernel
def attention_forward(qkv, n_heads, out, att):
    """Causal multi-head attention core: BLAS on strided head blocks, causal blocks only.

    qkv (R*T, 3d) holds q, k, v in that order; att (R, H, T, T) receives the probabilities
    (zero above the diagonal, saved for backward); out (R*T, d) the merged heads.
    """
    R, H, T = att.shape[0], att.shape[1], att.shape[2]
    d = qkv.shape[1] // 3
    dh = d // n_heads
    sc = cast_like(att, 1.0 / math.sqrt(dh))
    qf = qkv.reshape(qkv.size)
    of = out.reshape(out.size)
    af = att.reshape(att.size)
    for r in range(R):
        for h in range(H):
            q0 = r * T * 3 * d + h * dh  # q[r, t, head h] at q0 + t * 3d; k at +d, v at +2d
            a0 = (r * H + h) * T * T
            for i0 in range(0, T, ATTENTION_BLOCK):
                i1 = min(T, i0 + ATTENTION_BLOCK)  # rows i0..i1-1 see keys 0..i1-1 at most
                # scores S[i0:i1, :i1] = q[i0:i1] @ k[:i1]^T
                gemm_rm(False, True, i1 - i0, i1, dh, qf, q0 + i0 * 3 * d, 3 * d,
                        qf, q0 + d, 3 * d, af, a0 + i0 * T, T, False)
                for i in range(i0, i1):
                    _softmax_row(att[r, h, i], i, sc)
                # out[i0:i1, head] = P[i0:i1, :i1] @ v[:i1]
                gemm_rm(False, False, i1 - i0, dh, i1, af, a0 + i0 * T, T,
                        qf, q0 + 2 * d, 3 * d, of, (r * T + i0) * d + h * dh, d, False)


@kernel
def attention_backward(dout, qkv, att, n_heads, dqkv, scratch):
    """Differentiates `out = merge(softmax(q k^T * scale, causal) @ v)`: dqkv (R*T, 3d) =.

    dout (R*T, d); qkv and att as saved by `attention_forward`; scratch >= T*T elements.
    """
    R, H, T = att.shape[0], att.shape[1], att.shape[2]
    d = qkv.shape[1] // 3
    dh = d // n_heads
    sc = cast_like(att, 1.0 / math.sqrt(dh))
    qf = qkv.reshape(qkv.size)
    gf = dqkv.reshape(dqkv.size)
    yf = dout.reshape(dout.size)
    af = att.reshape(att.size)
    dA = scratch[:T * T].reshape((T, T))
    n_blocks = (T + ATTENTION_BLOCK - 1) // ATTENTION_BLOCK
    for r in range(R):
        for h in range(H):
            q0 = r * T * 3 * d + h * dh
            y0 = r * T * d + h * dh
            a0 = (r * H + h) * T * T
            # Last block first: it covers every key, so its dk, dv products initialise them
            # (accumulate=False) and the earlier, shorter blocks add to them.
            for blk in range(n_blocks - 1, -1, -1):
                i0 = blk * ATTENTION_BLOCK
                i1 = min(T, i0 + ATTENTION_BLOCK)
                first = blk < n_blocks - 1
                # dP[i0:i1, :i1] = dy[i0:i1] @ v[:i1]^T          from  out = P @ v
                gemm_rm(False, True, i1 - i0, i1, dh, yf, y0 + i0 * d, d,
                        qf, q0 + 2 * d, 3 * d, scratch, i0 * T, T, False)
                # dv[:i1] (+)= P[i0:i1, :i1]^T @ dy[i0:i1]
                gemm_rm(True, False, i1, dh, i1 - i0, af, a0 + i0 * T, T,
                        yf, y0 + i0 * d, d, gf, q0 + 2 * d, 3 * d, first)
                for i in range(i0, i1):  # dS = P * (dP - sum_j P dP) * scale, j <= i
                    pi = att[r, h, i]
                    di = dA[i]
                    s = cast_like(dA, row_dot(pi, di, i + 1))
                    for j in range(i + 1):
                        di[j] = pi[j] * (di[j] - s) * sc
                    for j in range(i + 1, i1):
                        di[j] = 0.0
                # dq[i0:i1] = dS[i0:i1, :i1] @ k[:i1]             from  S = q @ k^T * scale
                gemm_rm(False, False, i1 - i0, dh, i1, scratch, i0 * T, T,
                        qf, q0 + d, 3 * d, gf, q0 + i0 * 3 * d, 3 * d, False)
                # dk[:i1] (+)= dS[i0:i1, :i1]^T @ q[i0:i1]
                gemm_rm(True, False, i1, dh, i1 - i0, scratch, i0 * T, T,
                        qf, q0 + i0 * 3 * d, 3 * d, gf, q0 + d, 3 * d, first)


# ---------------------------------------------------------------- gelu


@kernel
def gelu_forward(u, out):
    """out (N, f) = 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3)))."""
    uf = u.reshape(u.size)
    of = out.reshape(out.size)
    for i in range(uf.size):
        y, _ = gelu_scalar(uf[i])
        of[i] = y


@kernel
def gelu_backward(dout, u):
    """Differentiates `out = gelu(u)`: dout (N, f) is overwritten IN PLACE by du = dout gelu'(u).

    In place on purpose: one array read and written at the same index vectorises, while two
    arrays that happen to alias make LLVM's overlap check fall back to scalar code.
    """
    uf = u.reshape(u.size)
    df = dout.reshape(dout.size)
    for i in range(uf.size):
        _, dy = gelu_scalar(uf[i])
        df[i] = df[i] * dy


@kernel
def gelu_forward_slope(u, out):
    """out (N, f) = gelu(u), and u is overwritten IN PLACE by the slope gelu'(u).

    Backward needs only the slope, and computing it here, while u is already in registers,
    saves the backward pass its own tanh per element.
    The slope has the bits `gelu_backward` would compute from u, so gradients are unchanged.
    """
    uf = u.reshape(u.size)
    of = out.reshape(out.size)
    for i in range(uf.size):
        y, dy = gelu_scalar(uf[i])
        of[i] = y
        uf[i] = dy


@kernel
def gelu_slope_backward_bias(dout, slope, db):
    """Differentiates `out = gelu(u)` from the slope `gelu_forward_slope` saved, fused with the
    next linear's bias gradient: dout (N, f) becomes du = dout * slope in place, and db (f,) +=
    column sums of du, in float64 in row order (bias_grad_add's order): du is read once."""
    N, f = slope.shape
    acc = np.zeros(f, np.float64)
    for n in range(N):
        sn = slope[n]
        dn = dout[n]
        for j in range(f):
            dn[j] = dn[j] * sn[j]
        for j in range(f):  # its own loop, or the float64 sum stops vectorisation (10x)
            acc[j] += dn[j]
    for j in range(f):
        db[j] += acc[j]


# ---------------------------------------------------------------- tied output logits


@kernel
def logits_forward(x, wte, out):
    """out (N, V) = x (N, d) @ wte (V, d)^T: the tied output layer on the final-LN output."""
    np.dot(x, wte.T, out)


@kernel
def logits_backward(dlogits, x, wte, dx, dwte):
    """Differentiates `out = x @ wte^T`: dx (N, d) =, dwte (V, d) += dlogits^T @ x."""
    np.dot(dlogits, wte, dx)
    gemm_tn_acc(dlogits, x, dwte)


# ---------------------------------------------------------------- cross-entropy


@kernel
def crossentropy_forward(logits, targets):
    """(SUM of -log softmax(logits)[target] over non-pad targets, their count).

    logits (N, V) are overwritten IN PLACE by the softmax on non-pad rows (pad rows are left
    as they are); targets (N,) int64, PAD_ID rows ignored.
    """
    N, V = logits.shape
    loss = 0.0
    count = 0
    for n in range(N):
        tgt = targets[n]
        if tgt == PAD_ID:
            continue
        li = logits[n]
        m = row_max(li, V)
        z_t = np.float64(li[tgt] - m)
        for j in range(V):
            li[j] = exp_scalar(li[j] - m)
        tot = row_sum(li, V)
        loss += math.log(tot) - z_t
        count += 1
        inv = cast_like(logits, 1.0 / tot)
        for j in range(V):
            li[j] = li[j] * inv
    return loss, count


@kernel
def crossentropy_backward(probs, targets, dloss):
    """Differentiates the loss SUM: probs (N, V) are overwritten IN PLACE by
    dlogits = dloss (softmax - onehot(target)), and by 0 on pad rows."""
    N, V = probs.shape
    dl = cast_like(probs, dloss)
    for n in range(N):
        tgt = targets[n]
        pn = probs[n]
        if tgt == PAD_ID:
            for j in range(V):
                pn[j] = 0.0
            continue
        for j in range(V):
            pn[j] = pn[j] * dl
        pn[tgt] -= dl


KERNEL_NAMES = ("embedding", "layernorm", "linear", "attention", "gelu", "logits",
                "crossentropy")


# ---------------------------------------------------------------- workspace layout

# Parameter index inside one layer's block of 12 registry entries (reference.params order).
LN1_G, LN1_B, W_QKV, B_QKV, W_O, B_O, LN2_G, LN2_B, W_FC, B_FC, W_PROJ, B_PROJ = range(12)
_PER_LAYER = 12
_WTE, _WPE, _FIRST_LAYER = 0, 1, 2

# Workspace regions, in buffer order (index into Workspace.offsets).
(R_X, R_LN1, R_LN1_MEAN, R_LN1_RSTD, R_QKV, R_ATT, R_Y, R_XMID, R_LN2, R_LN2_MEAN, R_LN2_RSTD,
 R_U, R_G, R_LNF, R_LNF_MEAN, R_LNF_RSTD, R_LOGITS, R_DRES, R_DLN, R_DF, R_DQKV,
 R_ASCRATCH) = range(22)
REGION_NAMES = ("x", "ln1", "ln1_mean", "ln1_rstd", "qkv", "att", "y", "xmid", "ln2",
                "ln2_mean", "ln2_rstd", "u", "g", "lnf", "lnf_mean", "lnf_rstd", "logits",
                "dres", "dln", "dff", "dqkv", "ascratch")


def workspace_region_sizes(V: int, S: int, d: int, L: int, H: int, f: int,
                           micro_batch: int) -> list[int]:
    """Elements of each region for `micro_batch` rows of S tokens (order of REGION_NAMES)."""
    N = micro_batch * S
    return [
        (L + 1) * N * d,  # x: residual stream entering each layer, and the final one
        L * N * d, L * N, L * N,  # ln1 output, mean, rstd
        L * N * 3 * d,  # qkv
        L * micro_batch * H * S * S,  # attention probabilities
        L * N * d,  # y: merged heads before w_o
        L * N * d,  # xmid: residual after attention
        L * N * d, L * N, L * N,  # ln2 output, mean, rstd
        L * N * f, L * N * f,  # u = pre-GELU, then its slope gelu'(u); g = GELU(u)
        N * d, N, N,  # final LayerNorm
        N * V,  # logits, then probabilities, then dlogits (in place)
        N * d,  # dres: gradient of the residual stream
        N * d,  # dln: gradient entering a linear's input (LN output or merged heads)
        N * f,  # dff: gradient of g, then of u (in place)
        N * 3 * d,  # dqkv
        attention_scratch_size(S, d // H),
    ]


# ---------------------------------------------------------------- the whole model, one batch


@kernel
def _vec(flat, offs, i):
    """Parameter/gradient tensor i of the registry as a 1-D view."""
    return flat[offs[i]:offs[i + 1]]


@kernel
def _mat(flat, offs, i, rows, cols):
    """Parameter/gradient tensor i of the registry as a (rows, cols) view."""
    return flat[offs[i]:offs[i] + rows * cols].reshape((rows, cols))


@kernel
def _reg(buf, woffs, region, layer, per_layer, rows, cols):
    """(rows, cols) view of one layer's slot in a workspace region; slots are per_layer long."""
    a = woffs[region] + layer * per_layer
    return buf[a:a + rows * cols].reshape((rows, cols))


@kernel
def _reg1(buf, woffs, region, layer, per_layer, n):
    a = woffs[region] + layer * per_layer
    return buf[a:a + n]


@kernel
def _layer_cache(buf, woffs, layer, micro, R, T, S, d, f, H):
    """One layer's activations in the workspace, for R rows of T tokens (forward and backward
    read the same views): x, ln1 (+ mean, rstd), qkv, att (R,H,T,T), y, xmid, ln2 (+ mean,
    rstd), u (pre-GELU) and g (post-GELU)."""
    Nmax, N = micro * S, R * T  # slots are sized for full micro-batches of S tokens
    att_a = woffs[R_ATT] + layer * micro * H * S * S
    return (_reg(buf, woffs, R_X, layer, Nmax * d, N, d),
            _reg(buf, woffs, R_LN1, layer, Nmax * d, N, d),
            _reg1(buf, woffs, R_LN1_MEAN, layer, Nmax, N),
            _reg1(buf, woffs, R_LN1_RSTD, layer, Nmax, N),
            _reg(buf, woffs, R_QKV, layer, Nmax * 3 * d, N, 3 * d),
            buf[att_a:att_a + R * H * T * T].reshape((R, H, T, T)),
            _reg(buf, woffs, R_Y, layer, Nmax * d, N, d),
            _reg(buf, woffs, R_XMID, layer, Nmax * d, N, d),
            _reg(buf, woffs, R_LN2, layer, Nmax * d, N, d),
            _reg1(buf, woffs, R_LN2_MEAN, layer, Nmax, N),
            _reg1(buf, woffs, R_LN2_RSTD, layer, Nmax, N),
            _reg(buf, woffs, R_U, layer, Nmax * f, N, f),
            _reg(buf, woffs, R_G, layer, Nmax * f, N, f))


@kernel
def micro_forward(params, poffs, tok, buf, woffs, dims, R, T, ticks, slot, timing, t):
    """Forward of one micro-batch of R rows x T tokens into the workspace, up to the logits.

    The one forward both the training step (`model_forward_backward`) and the held-out loss
    (`model_forward_loss`) run, so an evaluated batch has the bits training would compute.
    Returns (logits view (R*T, V), cycle counter after the last kernel).
    """
    V, S, d, L, H, f, micro = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6]
    Nmax = micro * S  # region slots are sized for full micro-batches of S tokens
    N = R * T
    wte = _mat(params, poffs, _WTE, V, d)
    wpe = _mat(params, poffs, _WPE, S, d)
    nf = _FIRST_LAYER + _PER_LAYER * L
    lnf_g, lnf_b = _vec(params, poffs, nf), _vec(params, poffs, nf + 1)
    x0 = _reg(buf, woffs, R_X, 0, Nmax * d, N, d)
    embedding_forward(tok, wte, wpe, x0)
    t = _lap(timing, T_EMB, t)
    ticks[slot] += 1
    for layer in range(L):
        p = _FIRST_LAYER + _PER_LAYER * layer
        x, ln1, mu1, rs1, qkv, att, y, xmid, ln2, mu2, rs2, u, g = _layer_cache(
            buf, woffs, layer, micro, R, T, S, d, f, H)
        xout = _reg(buf, woffs, R_X, layer + 1, Nmax * d, N, d)

        layernorm_forward(x, _vec(params, poffs, p + LN1_G), _vec(params, poffs, p + LN1_B),
                          ln1, mu1, rs1)
        t = _lap(timing, T_LN, t)
        linear_forward(ln1, _mat(params, poffs, p + W_QKV, d, 3 * d),
                       _vec(params, poffs, p + B_QKV), qkv)
        t = _lap(timing, T_QKV, t)
        attention_forward(qkv, H, y, att)
        t = _lap(timing, T_ATT, t)
        # xmid = x + (y @ w_o + b_o)
        linear_residual_forward(y, _mat(params, poffs, p + W_O, d, d),
                                _vec(params, poffs, p + B_O), x, xmid)
        t = _lap(timing, T_O, t)
        layernorm_forward(xmid, _vec(params, poffs, p + LN2_G),
                          _vec(params, poffs, p + LN2_B), ln2, mu2, rs2)
        t = _lap(timing, T_LN, t)
        linear_forward(ln2, _mat(params, poffs, p + W_FC, d, f),
                       _vec(params, poffs, p + B_FC), u)
        t = _lap(timing, T_FC, t)
        gelu_forward_slope(u, g)  # u now holds gelu'(u), all backward needs of it
        t = _lap(timing, T_GELU, t)
        # x_next = xmid + (g @ w_proj + b_proj)
        linear_residual_forward(g, _mat(params, poffs, p + W_PROJ, f, d),
                                _vec(params, poffs, p + B_PROJ), xmid, xout)
        t = _lap(timing, T_PROJ, t)
        ticks[slot] += 1
    xL = _reg(buf, woffs, R_X, L, Nmax * d, N, d)
    lnf = _reg(buf, woffs, R_LNF, 0, 0, N, d)
    muf = _reg1(buf, woffs, R_LNF_MEAN, 0, 0, N)
    rsf = _reg1(buf, woffs, R_LNF_RSTD, 0, 0, N)
    logits = _reg(buf, woffs, R_LOGITS, 0, 0, N, V)
    layernorm_forward(xL, lnf_g, lnf_b, lnf, muf, rsf)
    t = _lap(timing, T_LN, t)
    logits_forward(lnf, wte, logits)
    t = _lap(timing, T_LOGITS, t)
    return logits, t


@kernel
def layer_backward(params, grads, poffs, buf, woffs, dims, layer, R, T, dres, dff, dln, dqkv,
                   timing, t):
    """Backward of one transformer layer of one micro-batch (R rows x T tokens); grads +=.

    dres holds d x_next on entry and d x (this layer's input) on return; dff, dln, dqkv are
    scratch regions of N = R * T rows. Returns the cycle counter after the last group.
    """
    S, d, H, f, micro = dims[1], dims[2], dims[4], dims[5], dims[6]
    p = _FIRST_LAYER + _PER_LAYER * layer
    ascr = buf[woffs[R_ASCRATCH]:woffs[R_ASCRATCH + 1]]
    x, ln1, mu1, rs1, qkv, att, y, xmid, ln2, mu2, rs2, u, g = _layer_cache(
        buf, woffs, layer, micro, R, T, S, d, f, H)
    # x_next = xmid + g @ w_proj + b_proj   (dres holds d x_next)
    linear_backward(dres, g, _mat(params, poffs, p + W_PROJ, f, d), dff,
                    _mat(grads, poffs, p + W_PROJ, f, d),
                    _vec(grads, poffs, p + B_PROJ))
    t = _lap(timing, T_PROJ, t)
    # g = gelu(u); dff becomes du in place, and d b_fc += column sums of du
    gelu_slope_backward_bias(dff, u, _vec(grads, poffs, p + B_FC))
    t = _lap(timing, T_GELU, t)
    linear_backward_products(dff, ln2, _mat(params, poffs, p + W_FC, d, f), dln,
                             _mat(grads, poffs, p + W_FC, d, f))
    t = _lap(timing, T_FC, t)
    layernorm_backward(dln, xmid, mu2, rs2, _vec(params, poffs, p + LN2_G), dres,
                       _vec(grads, poffs, p + LN2_G), _vec(grads, poffs, p + LN2_B))
    t = _lap(timing, T_LN, t)
    # xmid = x + y @ w_o + b_o   (dres now holds d xmid)
    linear_backward(dres, y, _mat(params, poffs, p + W_O, d, d), dln,
                    _mat(grads, poffs, p + W_O, d, d),
                    _vec(grads, poffs, p + B_O))
    t = _lap(timing, T_O, t)
    attention_backward(dln, qkv, att, H, dqkv, ascr)
    t = _lap(timing, T_ATT, t)
    linear_backward(dqkv, ln1, _mat(params, poffs, p + W_QKV, d, 3 * d), dln,
                    _mat(grads, poffs, p + W_QKV, d, 3 * d),
                    _vec(grads, poffs, p + B_QKV))
    t = _lap(timing, T_QKV, t)
    layernorm_backward(dln, x, mu1, rs1, _vec(params, poffs, p + LN1_G), dres,
                       _vec(grads, poffs, p + LN1_G), _vec(grads, poffs, p + LN1_B))
    return _lap(timing, T_LN, t)


@kernel
def micro_backward(params, grads, poffs, tok, tgt, logits, buf, woffs, dims, R, T, ticks, slot,
                   timing, t):
    """Backward of one micro-batch (d loss_sum = 1) after `micro_forward` and the loss; grads +=.

    `logits` holds the softmax probabilities (`crossentropy_forward` wrote them in place);
    ticks[slot] += 1 after the head and after every layer and the embedding. Returns the
    cycle counter after the last group.
    """
    V, S, d, L, f, micro = dims[0], dims[1], dims[2], dims[3], dims[5], dims[6]
    N = R * T
    Nmax = micro * S  # region slots are sized for full micro-batches of S tokens
    nf = _FIRST_LAYER + _PER_LAYER * L
    crossentropy_backward(logits, tgt, 1.0)  # probs -> dlogits in place
    t = _lap(timing, T_CE, t)
    dres = _reg(buf, woffs, R_DRES, 0, 0, N, d)
    dln = _reg(buf, woffs, R_DLN, 0, 0, N, d)
    dff = _reg(buf, woffs, R_DF, 0, 0, N, f)
    dqkv = _reg(buf, woffs, R_DQKV, 0, 0, N, 3 * d)
    xL = _reg(buf, woffs, R_X, L, Nmax * d, N, d)
    lnf = _reg(buf, woffs, R_LNF, 0, 0, N, d)
    muf = _reg1(buf, woffs, R_LNF_MEAN, 0, 0, N)
    rsf = _reg1(buf, woffs, R_LNF_RSTD, 0, 0, N)
    dwte = _mat(grads, poffs, _WTE, V, d)
    logits_backward(logits, lnf, _mat(params, poffs, _WTE, V, d), dln, dwte)
    t = _lap(timing, T_LOGITS, t)
    dres[:, :] = 0.0
    layernorm_backward(dln, xL, muf, rsf, _vec(params, poffs, nf), dres,
                       _vec(grads, poffs, nf), _vec(grads, poffs, nf + 1))
    t = _lap(timing, T_LN, t)
    ticks[slot] += 1
    for layer in range(L - 1, -1, -1):
        t = layer_backward(params, grads, poffs, buf, woffs, dims, layer, R, T, dres, dff, dln,
                           dqkv, timing, t)
        ticks[slot] += 1
    embedding_backward(dres, tok, dwte, _mat(grads, poffs, _WPE, S, d))  # dres holds d x0
    t = _lap(timing, T_EMB, t)
    ticks[slot] += 1
    return t


@kernel
def model_forward_backward(params, grads, poffs, tokens, targets, buf, woffs, dims, ticks, slot,
                           timing, marks):
    """Forward, loss SUM and backward of every micro-batch of one batch; grads +=.

    params, grads: flat vectors in registry order, tensor i at poffs[i]:poffs[i+1]; tokens,
    targets (B, T) int64; buf: a workspace laid out by `workspace_region_sizes`, region r at
    woffs[r]; dims = (V, S, d, L, H, f, micro_batch); ticks[slot] += 1 after every layer;
    timing: empty, or int64 (len(TIMING_GROUPS),) to which each kernel group's CPU cycles are
    added (a GEMM group counts its linear's forward, backward and bias work).
    marks: empty, or int64 (2 * micro-batches + 1,): the cycle counter at the start, after each
    micro-batch's forward (and loss), and after its backward (the trace's forward/backward spans).
    Returns (loss_sum float64, n_targets int64). It lives here, beside the kernels it calls,
    because Numba's on-disk cache only notices edits to the caller's own file.
    """
    micro = dims[6]
    B, T = tokens.shape
    loss_total = 0.0
    n_total = 0
    t = _read_cycles()
    mark = marks.shape[0] > 0
    if mark:
        marks[0] = t
    m = 0  # micro-batch index
    for r0 in range(0, B, micro):
        R = min(micro, B - r0)
        tok = tokens[r0:r0 + R]
        tgt = targets[r0:r0 + R].copy().reshape(R * T)  # (N,) small
        logits, t = micro_forward(params, poffs, tok, buf, woffs, dims, R, T, ticks, slot,
                                  timing, t)
        loss, count = crossentropy_forward(logits, tgt)  # logits -> probs in place
        loss_total += loss
        n_total += count
        ticks[slot] += 1
        if mark:
            marks[2 * m + 1] = _read_cycles()
        t = micro_backward(params, grads, poffs, tok, tgt, logits, buf, woffs, dims, R, T, ticks,
                           slot, timing, t)
        if mark:
            marks[2 * m + 2] = _read_cycles()
        m += 1
    return loss_total, n_total


@kernel
def model_forward_loss(params, poffs, tokens, targets, buf, woffs, dims, ticks, slot):
    """Forward and loss SUM of every micro-batch of one batch, no backward (held-out loss).

    The same `micro_forward` as `model_forward_backward`, over the same workspace regions, so
    a batch's loss here has the bits the training step would compute.
    Arguments as there, without grads. Returns (loss_sum float64, n_targets int64).
    """
    micro = dims[6]
    B, T = tokens.shape
    no_timing = np.zeros(0, dtype=np.int64)
    loss_total = 0.0
    n_total = 0
    for r0 in range(0, B, micro):
        R = min(micro, B - r0)
        tgt = targets[r0:r0 + R].copy().reshape(R * T)  # (N,)
        logits, _ = micro_forward(params, poffs, tokens[r0:r0 + R], buf, woffs, dims, R, T,
                                  ticks, slot, no_timing, 0)
        loss, count = crossentropy_forward(logits, tgt)
        loss_total += loss
        n_total += count
        ticks[slot] += 1
    return loss_total, n_total
