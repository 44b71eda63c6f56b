"""The fast engine's batch gradient against the float64 reference, tensor by tensor.

`batch_forward_backward` must reproduce `reference.model.batch_loss_and_grads` for every
parameter (float64 1e-10, float32 1e-4 relative L2; loss 1e-5), ADD into the gradient segment,
be bitwise repeatable (twice in a row, and from two threads at once), and advance the
watchdog's tick counter from inside the Numba code.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fast.model import FastModel, Workspace, batch_forward_backward, warmup
from plumbing.errors import InputError
from reference.config import ConfigError, ModelConfig
from reference.model import batch_loss_and_grads
from reference.params import init_params, param_specs

# d, f, V and the head size are not multiples of 8, so every lane loop runs its tail too.
M = ModelConfig(vocab_size=29, seq_len=9, d_model=12, n_layers=2, n_heads=3, d_ff=20)
B = 3
GRAD_TOL = {np.float64: 1e-10, np.float32: 1e-4}
LOSS_TOL = {np.float64: 1e-10, np.float32: 1e-5}


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """Compile (or load from cache) once, so timings below are not compile times."""
    assert warmup() >= 0.0


def make_batch(seed: int, T: int, rows: int = B, m: ModelConfig = M, pad: bool = True):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, m.vocab_size, (rows, T))
    targets = rng.integers(1, m.vocab_size, (rows, T))
    if pad:
        targets[-1, T // 2:] = 0  # a padded tail, as in the last batch of an epoch
        targets[0, min(1, T - 1)] = 0
    return tokens, targets


def params_for(m: ModelConfig = M, seed: int = 3) -> dict[str, np.ndarray]:
    """Initial parameters with the zero/one tensors perturbed, so every gradient path matters."""
    rng = np.random.default_rng(seed + 100)
    params = init_params(m, seed)
    for spec in param_specs(m):
        if spec.init != "normal":
            params[spec.name] = params[spec.name] + 0.1 * rng.standard_normal(spec.shape)
    return params


def run_fast(m, params, tokens, targets, dtype, micro_batch, prefill=None):
    model = FastModel(m, dtype, micro_batch)
    flat = model.flatten(params)
    seg = np.zeros_like(flat) if prefill is None else prefill.astype(dtype)
    ticks = np.zeros(3, np.int64)
    loss, n = batch_forward_backward(model, flat, seg, tokens, targets, model.new_workspace(),
                                     ticks, 1)
    return loss, n, model.unflatten(seg), ticks


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("micro_batch", [1, 2, 3])
@pytest.mark.parametrize("T", [M.seq_len, 5, 1], ids=["T=S", "T<S", "T=1"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_matches_reference_and_adds_into_the_segment(dtype, T, micro_batch):
    params = params_for()
    tokens, targets = make_batch(7, T)
    loss_ref, n_ref, grads_ref = batch_loss_and_grads(params, M, tokens, targets)
    model = FastModel(M, dtype, micro_batch)
    prefill = np.random.default_rng(11).standard_normal(model.n_params) * 0.01
    loss, n, grads, _ = run_fast(M, params, tokens, targets, dtype, micro_batch, prefill)
    assert n == n_ref == int((targets != 0).sum())
    assert abs(loss - loss_ref) <= LOSS_TOL[dtype] * abs(loss_ref)
    pre = model.unflatten(prefill.astype(dtype).astype(np.float64))
    for spec in param_specs(M):
        added = grads[spec.name].astype(np.float64) - pre[spec.name]
        err = rel(added, grads_ref[spec.name])
        assert err <= GRAD_TOL[dtype], f"{spec.name}: relative error {err:.3e}"
    if T < M.seq_len:  # positions never used get no gradient
        wpe_added = grads["wpe"].astype(np.float64) - pre["wpe"]
        assert np.all(wpe_added[T:] == 0.0)


def test_micro_batch_size_changes_only_rounding():
    params = params_for()
    tokens, targets = make_batch(8, M.seq_len, rows=4)
    one = run_fast(M, params, tokens, targets, np.float64, 1)
    whole = run_fast(M, params, tokens, targets, np.float64, 4)
    assert abs(one[0] - whole[0]) <= 1e-12 * abs(whole[0]) and one[1] == whole[1]
    for spec in param_specs(M):
        assert rel(one[2][spec.name], whole[2][spec.name]) <= 1e-12, spec.name


def test_all_pad_targets_give_zero_loss_and_leave_the_segment_unchanged():
    params = params_for()
    tokens, _ = make_batch(9, 6)
    targets = np.zeros_like(tokens)
    model = FastModel(M, np.float32, 2)
    prefill = np.arange(model.n_params, dtype=np.float32)
    loss, n, grads, _ = run_fast(M, params, tokens, targets, np.float32, 2, prefill)
    assert (loss, n) == (0.0, 0)
    assert np.array_equal(np.concatenate([g.ravel() for g in grads.values()]), prefill)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_bitwise_repeatable_with_fresh_or_reused_workspace(dtype):
    params = params_for()
    tokens, targets = make_batch(10, M.seq_len)
    model = FastModel(M, dtype, 2)
    flat = model.flatten(params)
    ws = model.new_workspace()
    outs = []
    for workspace in (ws, ws, model.new_workspace()):
        seg = np.zeros_like(flat)
        loss, n = batch_forward_backward(model, flat, seg, tokens, targets, workspace,
                                         np.zeros(1, np.int64), 0)
        outs.append((loss, n, seg.tobytes()))
    assert outs[0] == outs[1] == outs[2]


def test_two_threads_at_once_give_the_same_bits_as_one(no_thread_leak):
    """Concurrent workers with their own workspaces and segments: same bits as a lone run."""
    m = ModelConfig(vocab_size=97, seq_len=64, d_model=128, n_layers=2, n_heads=4, d_ff=256)
    params = params_for(m)
    batches = [make_batch(20 + i, m.seq_len, rows=4, m=m) for i in range(2)]
    model = FastModel(m, np.float32, 2)
    flat = model.flatten(params)
    ticks = np.zeros(2, np.int64)

    def one_batch(i, seg, ws, out):
        for _ in range(20):  # several rounds so the two threads overlap in time
            seg[:] = 0.0
            out[i] = batch_forward_backward(model, flat, seg, *batches[i], ws, ticks, i)

    with threadpool_limits(1):
        alone, alone_out = [], [None, None]
        for i in range(2):
            seg = np.zeros_like(flat)
            one_batch(i, seg, model.new_workspace(), alone_out)
            alone.append(seg)
        segs, out = [np.zeros_like(flat) for _ in range(2)], [None, None]
        threads = [threading.Thread(target=one_batch, name=f"test-fast-{i}",
                                    args=(i, segs[i], model.new_workspace(), out))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    for i in range(2):
        assert out[i] == alone_out[i]
        assert segs[i].tobytes() == alone[i].tobytes()


def test_tick_counter_advances_per_layer_in_forward_and_backward():
    params = params_for()
    tokens, targets = make_batch(12, M.seq_len, rows=3)
    _, _, _, ticks = run_fast(M, params, tokens, targets, np.float32, 1)
    micro_batches = 3
    assert ticks[0] == 0 and ticks[2] == 0  # only the caller's slot moves
    assert ticks[1] >= 2 * M.n_layers * micro_batches


def test_input_errors_are_clear():
    params = params_for()
    model = FastModel(M, np.float32, 1)
    flat = model.flatten(params)
    seg, ws, prog = np.zeros_like(flat), model.new_workspace(), np.zeros(1, np.int64)
    tokens, targets = make_batch(13, M.seq_len)
    with pytest.raises(ConfigError, match="seq_len"):
        long = np.zeros((1, M.seq_len + 1), np.int64)
        batch_forward_backward(model, flat, seg, long, long, ws, prog, 0)
    bad = tokens.copy()
    bad[0, 0] = M.vocab_size
    with pytest.raises(InputError, match="vocab_size"):
        batch_forward_backward(model, flat, seg, bad, targets, ws, prog, 0)
    with pytest.raises(ValueError, match="grad_segment"):
        batch_forward_backward(model, flat, seg.astype(np.float64), tokens, targets, ws, prog, 0)
    other = FastModel(M, np.float32, 2).new_workspace()
    with pytest.raises(ValueError, match="workspace"):
        batch_forward_backward(model, flat, seg, tokens, targets, other, prog, 0)
    with pytest.raises(ConfigError, match="float32 or float64"):
        FastModel(M, np.float16)


def test_flat_layout_round_trip_and_workspace_size():
    params = params_for()
    model = FastModel(M, np.float64, 2)
    assert model.n_params == sum(s.size for s in param_specs(M))
    flat = model.flatten(params)
    views = model.unflatten(flat)
    for name, value in params.items():
        assert np.array_equal(views[name], value)
        assert np.shares_memory(views[name], flat)
    ws = model.new_workspace()
    assert isinstance(ws, Workspace)
    assert ws.nbytes == model.workspace_nbytes()
    assert ws.buffer.ctypes.data % 64 == 0
    # x, qkv, att, u, g dominate: the size must at least hold those for 2 rows of S tokens
    N = 2 * M.seq_len
    floor = ((M.n_layers + 1) * N * M.d_model + M.n_layers * N * (3 * M.d_model + 2 * M.d_ff)
             + M.n_layers * 2 * M.n_heads * M.seq_len ** 2) * 8
    assert floor < ws.nbytes < 4 * floor


_BLAS_PROBE = """
import os, time
import numpy as np
from threadpoolctl import threadpool_limits
from fast.model import FastModel, batch_forward_backward
from reference.config import ModelConfig
from reference.params import init_params
m = ModelConfig(vocab_size=300, seq_len=64, d_model=256, n_layers=2, n_heads=4, d_ff=1024)
model = FastModel(m, np.float32, 4)
flat = model.flatten(init_params(m, 0))
rng = np.random.default_rng(0)
tokens, targets = rng.integers(1, 300, (8, 64)), rng.integers(1, 300, (8, 64))
ws, seg, prog = model.new_workspace(), np.zeros_like(flat), np.zeros(1, np.int64)
with threadpool_limits(1):  # entered BEFORE the first matrix product of the process
    batch_forward_backward(model, flat, seg, tokens, targets, ws, prog, 0)
    proc0, thread0 = os.times(), time.thread_time()
    for _ in range(6):
        batch_forward_backward(model, flat, seg, tokens, targets, ws, prog, 0)
    thread_cpu = time.thread_time() - thread0
    proc1 = os.times()
print((proc1.user - proc0.user) + (proc1.system - proc0.system), thread_cpu)
"""


def test_threadpool_limit_covers_the_blas_the_kernels_use():
    """threadpool_limits(1) entered right after importing the engine must bind Numba's BLAS:
    the process may burn no more CPU than its one computing thread. (Numba loads scipy's
    OpenBLAS lazily at the first product; loaded after the limit, it kept a second BLAS thread
    behind every worker.) A fresh interpreter, so no earlier test has loaded it already."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _BLAS_PROBE], cwd=root, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    proc_cpu, thread_cpu = map(float, done.stdout.split())
    assert proc_cpu <= 1.25 * thread_cpu + 0.05, (proc_cpu, thread_cpu)
