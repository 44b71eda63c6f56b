"""Schedule, clipping, finite check and AdamW against hand values and a scalar re-derivation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plumbing.errors import FaultError, NonFiniteGradientError
from reference.config import TrainConfig
from reference.optim import AdamW, check_finite, clip_scale, global_norm, lr_at


def _cfg(**changes) -> TrainConfig:
    return TrainConfig(batch_size=1, group_size=1, **changes).validate()


# ------------------------------------------------------------------------------------- schedule


def test_warmup_then_cosine_by_hand():
    c = _cfg(lr=1.0, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    assert lr_at(0, c) == pytest.approx(0.25)  # t = 1: 1/4 of the peak
    assert lr_at(2, c) == pytest.approx(0.75)
    assert lr_at(3, c) == pytest.approx(1.0)  # t = W: the peak
    assert lr_at(8, c) == pytest.approx(0.55)  # t = 9: half way through the decay: (1 + 0.1) / 2
    assert lr_at(4, c) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 10)))
    assert lr_at(13, c) == pytest.approx(0.1)  # t = total: the floor
    assert lr_at(500, c) == pytest.approx(0.1)  # and it stays there


def test_no_warmup_starts_decaying_at_once():
    c = _cfg(lr=2.0, warmup_steps=0, total_steps=4, min_lr_ratio=0.0)
    # t = 1..4 -> progress 1/4 .. 1 -> 2 * (1 + cos(pi p)) / 2
    for step, p in enumerate((0.25, 0.5, 0.75, 1.0)):
        assert lr_at(step, c) == pytest.approx(1.0 + math.cos(math.pi * p))


def test_schedule_rises_then_never_rises():
    c = _cfg(lr=3e-4, warmup_steps=10, total_steps=100)
    lrs = [lr_at(s, c) for s in range(150)]
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10], strict=True))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert max(lrs) == pytest.approx(3e-4)


# ----------------------------------------------------------------------------- norm, clip, check


def test_global_norm_is_the_norm_of_everything_concatenated():
    rng = np.random.default_rng(0)
    grads = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5), "c": np.array(7.0)}
    flat = np.concatenate([g.ravel() for g in grads.values()])
    assert global_norm(grads) == pytest.approx(float(np.linalg.norm(flat)), rel=1e-13)


def test_global_norm_of_float32_accumulates_in_float64():
    g = np.full(4_000_001, 1.0 + 2**-20, dtype=np.float32)  # float32 summing would drift
    exact = math.sqrt(math.fsum([float(g[0]) ** 2] * len(g)))
    assert global_norm({"g": g}) == pytest.approx(exact, rel=1e-12)


def test_clip_scale():
    assert clip_scale(0.5, 1.0) == 1.0
    assert clip_scale(1.0 - 1e-3, 1.0) == 1.0
    assert clip_scale(4.0, 1.0) == pytest.approx(1.0 / (4.0 + 1e-6), rel=1e-15)
    assert 4.0 * clip_scale(4.0, 1.0) <= 1.0
    assert clip_scale(0.0, 1.0) == 1.0


def test_check_finite_names_the_first_bad_parameter_in_order():
    grads = {"wte": np.zeros(3), "h.0.ln1.g": np.array([0.0, np.inf]), "lnf.b": np.array([np.nan])}
    with pytest.raises(NonFiniteGradientError) as exc:
        check_finite(grads, batch=3, step=7)
    assert exc.value.parameter == "h.0.ln1.g" and exc.value.batch == 3 and exc.value.step == 7
    assert "'h.0.ln1.g'" in str(exc.value) and "batch 3" in str(exc.value)
    assert isinstance(exc.value, FaultError) and exc.value.exit_code == 4
    with pytest.raises(NonFiniteGradientError, match="lnf.b"):
        check_finite(grads, names=["wte", "lnf.b", "h.0.ln1.g"])
    check_finite({"a": np.ones(2)})  # finite: no error


# ---------------------------------------------------------------------------------------- AdamW


def _scalar_adamw(p, g, m, v, t, lr, c, decays):
    """One element of one AdamW update, in plain Python floats, from SPEC section 3."""
    m = c.beta1 * m + (1 - c.beta1) * g
    v = c.beta2 * v + (1 - c.beta2) * g * g
    m_hat = m / (1 - c.beta1**t)
    v_hat = v / (1 - c.beta2**t)
    p = p - lr * (m_hat / (math.sqrt(v_hat) + c.eps) + (c.weight_decay * p if decays else 0.0))
    return p, m, v


def test_adamw_matches_a_scalar_rederivation_over_steps_with_clipping():
    c = _cfg(lr=1e-2, warmup_steps=2, total_steps=6, weight_decay=0.1, clip_norm=1.0)
    rng = np.random.default_rng(1)
    params = {"w": rng.normal(size=(2, 3)), "b": rng.normal(size=3)}
    want_p = {k: v.ravel().tolist() for k, v in params.items()}
    want_m = {k: [0.0] * v.size for k, v in params.items()}
    want_v = {k: [0.0] * v.size for k, v in params.items()}
    opt = AdamW(params, c)
    for step in range(4):
        scale_up = 3.0 if step % 2 == 0 else 0.05  # alternate clipped and unclipped steps
        grads = {k: rng.normal(size=v.shape) * scale_up for k, v in params.items()}
        norm = math.sqrt(sum(x * x for g in grads.values() for x in g.ravel().tolist()))
        scale = min(1.0, 1.0 / (norm + 1e-6))
        lr_used, norm_seen = opt.update(params, grads, step)
        assert norm_seen == pytest.approx(norm, rel=1e-13)
        assert lr_used == lr_at(step, c)
        for k in params:
            for i, g in enumerate(grads[k].ravel().tolist()):
                want_p[k][i], want_m[k][i], want_v[k][i] = _scalar_adamw(
                    want_p[k][i], g * scale, want_m[k][i], want_v[k][i], step + 1, lr_used, c,
                    decays=params[k].ndim == 2)
            np.testing.assert_allclose(params[k].ravel(), want_p[k], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(opt.m[k].ravel(), want_m[k], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(opt.v[k].ravel(), want_v[k], rtol=1e-13, atol=1e-20)


def test_first_step_moves_each_weight_by_lr_against_its_gradient_sign():
    c = _cfg(lr=1e-3, warmup_steps=0, total_steps=1, min_lr_ratio=1.0, weight_decay=0.0)
    params = {"w": np.array([[1.0, -2.0], [0.5, 0.0]])}
    before = params["w"].copy()
    grads = {"w": np.array([[0.1, -0.2], [0.3, -0.05]])}  # norm < 1: no clipping
    AdamW(params, c).update(params, grads, step=0)
    # m_hat = g, v_hat = g^2 -> step = lr * g / (|g| + eps)
    np.testing.assert_allclose(params["w"], before - 1e-3 * np.sign(grads["w"]), rtol=0, atol=1e-9)


def test_weight_decay_only_shrinks_matrices():
    c = _cfg(lr=0.5, warmup_steps=0, total_steps=1, min_lr_ratio=1.0, weight_decay=0.01)
    params = {"w": np.full((2, 2), 3.0), "b": np.full(2, 3.0), "s": np.array(3.0)}
    grads = {k: np.zeros_like(v) for k, v in params.items()}  # Adam term is exactly 0
    AdamW(params, c).update(params, grads, step=0)
    np.testing.assert_array_equal(params["w"], np.full((2, 2), 3.0 - 0.5 * 0.01 * 3.0))
    np.testing.assert_array_equal(params["b"], np.full(2, 3.0))
    assert params["s"] == 3.0


def test_nan_gradient_applies_nothing():
    c = _cfg()
    rng = np.random.default_rng(2)
    params = {"a": rng.normal(size=(2, 2)), "b": rng.normal(size=2)}
    opt = AdamW(params, c)
    opt.update(params, {"a": np.ones((2, 2)), "b": np.ones(2)}, step=0)
    snapshot = {k: v.copy() for k, v in params.items()}
    m_before = {k: v.copy() for k, v in opt.m.items()}
    with pytest.raises(NonFiniteGradientError) as exc:
        opt.update(params, {"a": np.ones((2, 2)), "b": np.array([1.0, np.nan])}, step=1)
    assert exc.value.parameter == "b" and exc.value.step == 1
    for k in params:
        assert params[k].tobytes() == snapshot[k].tobytes()
        assert opt.m[k].tobytes() == m_before[k].tobytes()


def test_update_is_in_place_and_moments_are_float64():
    params = {"w": np.ones((2, 2), dtype=np.float32)}
    ref = params["w"]
    opt = AdamW(params, _cfg())
    opt.update(params, {"w": np.ones((2, 2), dtype=np.float32)}, step=0)
    assert params["w"] is ref and not np.all(ref == 1.0)
    assert opt.m["w"].dtype == opt.v["w"].dtype == np.float64
