"""FastTrainer: same bits for every thread count, the reference's numbers, a clean lifecycle.

The reference engine (float64 NumPy) is the independent oracle for gradients, loss and the
optimiser trajectory; thread-count independence is checked bitwise by hashing bytes.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from support import digest, rel

from fast.trainer import FastTrainer
from fast.update import adamw_chunk, decay_mask, step_scalars
from plumbing.errors import InputError
from reference.batches import BatchGroups
from reference.config import preset
from reference.engine import ReferenceEngine
from reference.optim import AdamW, global_norm
from reference.params import flatten, init_params, param_specs

CFG = preset("tiny")  # V=64 S=16 d=32 L=2 H=4 f=128, B=4, G=8
B, S = CFG.train.batch_size, CFG.model.seq_len
SMALL_CHUNK = 4096  # ~28k parameters -> 7 chunks, so reduction and update really are shared


def _stream(n_tokens: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, CFG.model.vocab_size, n_tokens)


def _groups(cfg, n_batches_full: int, tail_tokens: int, seed: int = 0) -> BatchGroups:
    """A stream of n_batches_full full batches plus `tail_tokens` more (a padded last batch)."""
    n = n_batches_full * cfg.train.batch_size * S + tail_tokens + 1
    return BatchGroups(_stream(n, seed), cfg.train.batch_size, S, cfg.train.group_size)


# -- bitwise thread-count independence ---------------------------------------------------------

THREAD_COUNTS = [1, 2, 3, 5, 7, 11, 12, 13, 24, 63]


def test_every_thread_count_gives_identical_bits(no_thread_leak):
    """G=26: positions fold 2-3 batches each; 7 chunks shared by the workers."""
    cfg = CFG.replace(group_size=26)
    groups = _groups(cfg, 26 + 13, 37)  # group 1 is short (14 batches) and its last is padded
    g0, g1 = groups.group(0), groups.group(1)
    assert (g0.n_batches, g1.n_batches) == (26, 14) and not g1.targets[-1].all()
    digests = {}
    for T in THREAD_COUNTS:
        with FastTrainer(cfg, T, chunk_size=SMALL_CHUNK) as tr:
            r = tr.group_grads(g0.tokens, g0.targets)
            s0 = tr.step(g0.tokens, g0.targets)
            s1 = tr.step(g1.tokens, g1.targets)
            st = tr.state()
            digests[T] = (digest(r.grads), r.loss, r.grad_norm, s0.loss, s1.loss,
                          s1.grad_norm, digest(st.params), digest(st.adam_v))
            stats = tr.stats()
            per_worker = [w["batches"] for w in stats["workers"]]
            assert sum(per_worker) == 2 * 26 + 14  # group_grads + two steps
            assert stats["node_zero"]["batches"] == 0  # Node Zero never computes a batch
            if T <= 14:  # G >= T in every call: every worker computed (SPEC 8.11)
                assert min(per_worker) >= 1
    assert len(set(digests.values())) == 1, {T: d[0][:12] for T, d in digests.items()}


def test_float64_bits_match_across_thread_counts(no_thread_leak):
    groups = _groups(CFG, 8, 0)
    g = groups.group(0)
    seen = set()
    for T in (1, 4, 13):
        with FastTrainer(CFG, T, dtype=np.float64, chunk_size=SMALL_CHUNK) as tr:
            tr.step(g.tokens, g.targets)
            seen.add(digest(tr.state().params))
    assert len(seen) == 1


# -- against the reference ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype, grad_tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_gradients_and_loss_match_the_reference(dtype, grad_tol, no_thread_leak):
    g = _groups(CFG, 8, 0).group(0)
    ref = ReferenceEngine(CFG).group_grads(g.tokens, g.targets)
    with FastTrainer(CFG, 3, dtype=dtype) as tr:
        r = tr.group_grads(g.tokens, g.targets)
    assert r.n_targets == ref.n_targets == np.count_nonzero(g.targets)
    assert abs(r.loss - ref.loss) <= 1e-5 * abs(ref.loss)
    assert abs(r.grad_norm - ref.grad_norm) <= grad_tol * ref.grad_norm
    for spec in param_specs(CFG.model):
        assert r.grads[spec.name].dtype == np.float64
        assert r.grads[spec.name].shape == spec.shape
        err = rel(r.grads[spec.name], ref.grads[spec.name])
        assert err <= grad_tol, f"{spec.name}: relative L2 error {err:.2e}"


def test_short_padded_last_group_matches_reference_without_stale_gradients(no_thread_leak):
    """SPEC 8.7: a full group first leaves 12 dirty segments; the short group must not see them."""
    groups = _groups(CFG, 8 + 2, 23)  # group 1: 3 batches, the last one mostly <pad>
    full, short = groups.group(0), groups.group(1)
    assert short.n_batches == 3 and np.count_nonzero(short.targets[-B:]) == 23
    ref = ReferenceEngine(CFG).group_grads(short.tokens, short.targets)
    with FastTrainer(CFG, 5, dtype=np.float64) as tr:
        tr.group_grads(full.tokens, full.targets)
        after_full = tr.group_grads(short.tokens, short.targets)
    with FastTrainer(CFG, 5, dtype=np.float64) as fresh:
        alone = fresh.group_grads(short.tokens, short.targets)
    assert digest(after_full.grads) == digest(alone.grads)
    assert after_full.n_targets == ref.n_targets  # the denominator counts only real targets
    assert abs(after_full.loss - ref.loss) <= 1e-12 * ref.loss
    for name, value in ref.grads.items():
        assert rel(after_full.grads[name], value) <= 1e-10, name


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_five_steps_follow_the_reference_trajectory(dtype, tol, no_thread_leak):
    cfg = CFG.replace(warmup_steps=2, total_steps=5)  # warm-up and cosine both exercised
    groups = _groups(cfg, 8 * 4 + 3, 41)  # 5 groups, the last short and padded
    ref = ReferenceEngine(cfg)
    with FastTrainer(cfg, 4, dtype=dtype, chunk_size=SMALL_CHUNK) as tr:
        for g in groups:
            a, b = tr.step(g.tokens, g.targets), ref.step(g.tokens, g.targets)
            assert abs(a.lr - b.lr) <= 1e-15 and abs(a.loss - b.loss) <= 1e-5 * b.loss
        state = tr.state()
    assert state.step == ref.state().step == 5
    for name, value in ref.state().params.items():
        assert state.params[name].dtype == dtype
        err = rel(state.params[name], value)
        assert err <= tol, f"{name}: relative L2 error {err:.2e} after 5 steps"


def test_adamw_chunk_matches_reference_adamw():
    """The update kernel alone, in float64, against reference.optim.AdamW over 3 updates."""
    m = CFG.model
    train = CFG.train
    rng = np.random.default_rng(7)
    params = init_params(m, 3)
    opt = AdamW(params, train)
    flat_p = flatten(m, params)
    flat_m, flat_v = np.zeros_like(flat_p), np.zeros_like(flat_p)
    mask = decay_mask(m)
    for step in range(3):
        grads = {s.name: rng.standard_normal(s.shape) * 0.5 for s in param_specs(m)}
        flat_g = flatten(m, grads)
        sc = step_scalars(step, global_norm(grads), train)
        for lo in range(0, flat_p.size, 1000):  # chunked, as the workers do it
            hi = min(lo + 1000, flat_p.size)
            adamw_chunk(flat_p, flat_g, flat_m, flat_v, mask, lo, hi, sc.lr, sc.scale,
                        train.beta1, train.beta2, train.eps, train.weight_decay, sc.bias1,
                        sc.bias2)
        opt.update(params, grads, step)
    expected = flatten(m, params)
    np.testing.assert_allclose(flat_p, expected, rtol=1e-13, atol=1e-16)
    assert mask.sum() == sum(s.size for s in param_specs(m) if len(s.shape) == 2)


# -- more threads than batches, statistics ------------------------------------------------------

def test_more_threads_than_batches(no_thread_leak):
    """SPEC 8.10: T=63 with G=5 leaves 58 workers idle and still gives the T=1 bits."""
    cfg = CFG.replace(group_size=5)
    g = _groups(cfg, 5, 0).group(0)
    with FastTrainer(cfg, 1) as one:
        expected = digest(one.group_grads(g.tokens, g.targets).grads)
    with FastTrainer(cfg, 63) as tr:
        r = tr.group_grads(g.tokens, g.targets)
        stats = tr.stats()
    assert digest(r.grads) == expected
    per_worker = [w["batches"] for w in stats["workers"]]
    assert per_worker == [1] * 5 + [0] * 58
    assert stats["node_zero"]["batches"] == 0
    assert r.stats["batch_worker"] == [0, 1, 2, 3, 4]


def test_stats_report_time_per_phase(no_thread_leak):
    g = _groups(CFG, 8, 0).group(0)
    with FastTrainer(CFG, 2) as tr:
        for _ in range(3):
            tr.step(g.tokens, g.targets)
        stats = tr.stats()
    for w in stats["workers"]:
        assert w["batches"] == 12 and w["compute_seconds"] > 0 and w["cpu_seconds"] > 0
        assert w["update_seconds"] > 0 and w["reduce_seconds"] > 0
    assert stats["node_zero"]["wait_a_seconds"] > 0 and stats["steps"] == 3


# -- lifecycle ----------------------------------------------------------------------------------

def test_two_epochs_reuse_the_same_threads(no_thread_leak):
    """SPEC 8.5/8.9: the thread system is built once; epoch 2 runs on the same threads."""
    groups = _groups(CFG, 8 + 3, 10)
    with FastTrainer(CFG, 3) as tr:
        idents = sorted(t.ident for t in threading.enumerate() if t.name.startswith("ks-"))
        losses = []
        for _epoch in range(2):
            losses.append([tr.step(g.tokens, g.targets).loss for g in groups])
        assert sorted(t.ident for t in threading.enumerate()
                      if t.name.startswith("ks-")) == idents
        assert tr.state().step == 2 * len(groups)
    assert all(np.isfinite(x) for epoch in losses for x in epoch)
    assert losses[1][0] < losses[0][0]  # the second epoch sees trained weights


def test_create_and_close_100_times_leaks_no_threads(no_thread_leak):
    g = _groups(CFG, 1, 0).group(0)
    before = len(threading.enumerate())
    start = time.monotonic()
    for i in range(100):
        tr = FastTrainer(CFG, 2)
        if i % 25 == 0:
            tr.group_grads(g.tokens[:B], g.targets[:B])
        tr.close()
        tr.close()  # idempotent
    assert len(threading.enumerate()) == before
    assert time.monotonic() - start < 60


def test_state_round_trip_continues_bitwise(no_thread_leak):
    groups = _groups(CFG, 16, 0)
    g0, g1 = groups.group(0), groups.group(1)
    with FastTrainer(CFG, 2) as a:
        a.step(g0.tokens, g0.targets)
        saved = a.state()
        a.step(g1.tokens, g1.targets)
        expected = digest(a.state().params)
    with FastTrainer(CFG, 5) as b:
        b.load_state(saved)
        b.step(g1.tokens, g1.targets)
        assert digest(b.state().params) == expected and b.state().step == 2


def test_bad_groups_raise_input_errors_and_leave_the_trainer_usable(no_thread_leak):
    g = _groups(CFG, 8, 0).group(0)
    with FastTrainer(CFG, 2) as tr:
        with pytest.raises(InputError, match="multiple of the batch size"):
            tr.step(g.tokens[:5], g.targets[:5])
        with pytest.raises(InputError, match="no non-pad targets"):
            tr.step(g.tokens[:B], np.zeros_like(g.targets[:B]))
        bad = g.tokens.copy()
        bad[0, 0] = CFG.model.vocab_size
        with pytest.raises(InputError, match="vocabulary"):
            tr.step(bad, g.targets)
        assert np.isfinite(tr.step(g.tokens, g.targets).loss)
    with pytest.raises(InputError, match="closed"):
        tr.step(g.tokens, g.targets)
    with pytest.raises(InputError):
        FastTrainer(CFG, 0)
