"""ReferenceEngine: the Engine protocol over the float64 reference model and AdamW."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import reference.engine as engine_module
import reference.model as model_module
from plumbing.errors import InputError, NonFiniteGradientError
from reference.batches import BatchGroups
from reference.config import preset
from reference.data import Vocab, encode_documents, synthetic_corpus
from reference.engine import Engine, ReferenceEngine, StepResult
from reference.model import group_loss_and_grads
from reference.optim import AdamW, lr_at
from reference.params import init_params, param_specs

CFG = preset("tiny", warmup_steps=3, lr=1e-2)


def _group(n_batches: int, seed: int = 0, low: int = 4, high: int = 64):
    """A group of full batches of next-token pairs: (n*B, S) tokens and targets."""
    B, S = CFG.train.batch_size, CFG.model.seq_len
    rows = np.random.default_rng(seed).integers(low, high, size=(n_batches * B, S + 1))
    return rows[:, :-1], rows[:, 1:]


def _same_bits(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_implements_every_engine_method_with_the_protocol_signature():
    for name in ("group_grads", "step", "state", "load_state", "close"):
        want = inspect.signature(getattr(Engine, name))
        got = inspect.signature(getattr(ReferenceEngine, name))
        assert list(got.parameters) == list(want.parameters), name
    assert ReferenceEngine(CFG).config is not None


def test_optional_capabilities_are_protocols_the_reference_has_only_eval_loss():
    from reference.engine import (
        CountsBatches,
        Evaluates,
        InjectsFaults,
        Recorded,
        ReportsChildMemory,
    )

    ref = ReferenceEngine(CFG)
    assert isinstance(ref, Evaluates)
    for capability in (CountsBatches, InjectsFaults, Recorded, ReportsChildMemory):
        assert not isinstance(ref, capability), capability.__name__


def test_default_parameters_are_the_seeded_initialisation():
    e = ReferenceEngine(CFG)
    assert _same_bits(e.state().params, init_params(CFG.model, CFG.train.seed))
    assert e.state().step == 0


def test_given_parameters_are_copied_and_checked():
    given = init_params(CFG.model, 7)
    e = ReferenceEngine(CFG, params=given)
    given["wte"][:] = 0.0
    assert np.any(e.state().params["wte"] != 0.0)
    bad = init_params(CFG.model, 7)
    bad["h.1.mlp.w_fc"] = bad["h.1.mlp.w_fc"][:, :-1]
    with pytest.raises(InputError, match="'h.1.mlp.w_fc' has shape"):
        ReferenceEngine(CFG, params=bad)
    missing = init_params(CFG.model, 7)
    del missing["lnf.b"]
    with pytest.raises(InputError, match="lack parameter 'lnf.b'"):
        ReferenceEngine(CFG, params=missing)


def test_group_grads_is_the_reference_mean_gradient_and_changes_nothing():
    e = ReferenceEngine(CFG)
    tokens, targets = _group(3)
    targets = targets.copy()
    targets[-1, 5:] = 0  # some padding: n counts only non-pad targets
    before = e.state()
    r = e.group_grads(tokens, targets)
    loss, n, grads = group_loss_and_grads(before.params, CFG.model, tokens, targets,
                                          CFG.train.batch_size)
    assert isinstance(r, StepResult)
    assert r.loss == loss and r.n_targets == n == tokens.size - 11
    assert _same_bits(r.grads, grads)
    flat = np.concatenate([g.ravel() for g in grads.values()])
    assert r.grad_norm == pytest.approx(float(np.linalg.norm(flat)), rel=1e-12)
    assert np.isnan(r.lr)
    assert _same_bits(e.state().params, before.params) and e.state().step == 0


def test_step_is_gradient_then_adamw_with_the_schedule():
    e = ReferenceEngine(CFG)
    mirror = init_params(CFG.model, CFG.train.seed)
    opt = AdamW(mirror, CFG.train)
    for step in range(4):
        tokens, targets = _group(2, seed=step)
        _, _, grads = group_loss_and_grads(mirror, CFG.model, tokens, targets,
                                           CFG.train.batch_size)
        lr, norm = opt.update(mirror, grads, step)
        r = e.step(tokens, targets)
        assert r.lr == lr == lr_at(step, CFG.train)
        assert r.grad_norm == norm
    state = e.state()
    assert state.step == 4
    assert _same_bits(state.params, mirror)
    assert _same_bits(state.adam_m, opt.m) and _same_bits(state.adam_v, opt.v)


def test_training_on_one_group_lowers_its_loss():
    e = ReferenceEngine(CFG)
    tokens, targets = _group(2, seed=3, high=12)  # a small alphabet the model can fit
    first = e.step(tokens, targets).loss
    for _ in range(25):
        last = e.step(tokens, targets).loss
    assert first == pytest.approx(np.log(CFG.model.vocab_size), abs=0.1)  # near uniform at init
    assert last < 0.8 * first


def test_same_seed_same_bytes():
    a, b = ReferenceEngine(CFG), ReferenceEngine(CFG)
    for step in range(2):
        tokens, targets = _group(2, seed=10 + step)
        assert a.step(tokens, targets).loss == b.step(tokens, targets).loss
    assert _same_bits(a.state().params, b.state().params)


def test_an_epoch_over_real_batches_counts_every_target_once():
    """Steps == groups, and the targets of all steps add up to exactly N - 1 (SPEC 8.7, 8.1)."""
    docs = [synthetic_corpus(700, seed=1), synthetic_corpus(790, seed=2)]
    vocab = Vocab.build(docs, CFG.model.vocab_size)
    stream = encode_documents(docs, vocab)  # 1492 tokens -> ceil(1491 / 64) = 24 batches
    groups = BatchGroups(stream, CFG.train.batch_size, CFG.model.seq_len, 5)  # 5, 5, 5, 5, 4
    assert len(stream) == 1492 and groups.group(4).n_batches == 4
    assert not groups.group(4).targets[-1].any()  # the last batch is padded
    e = ReferenceEngine(CFG.replace(group_size=5))
    results = [e.step(g.tokens, g.targets) for g in groups]
    assert len(results) == len(groups) == 5 and e.state().step == 5
    assert sum(r.n_targets for r in results) == len(stream) - 1
    assert all(np.isfinite(r.loss) and r.lr > 0 for r in results)


def test_non_finite_gradient_names_parameter_and_batch_and_applies_nothing(monkeypatch):
    real = model_module.batch_loss_and_grads

    def poisoned(params, m, tokens, targets):
        loss, n, grads = real(params, m, tokens, targets)
        if tokens[0, 0] == 63:  # the marked batch
            grads["h.1.attn.w_o"][0, 0] = np.nan
            grads["lnf.g"][1] = np.inf  # later in registry order: not the one named
        return loss, n, grads

    monkeypatch.setattr(model_module, "batch_loss_and_grads", poisoned)
    monkeypatch.setattr(engine_module, "batch_loss_and_grads", poisoned)
    e = ReferenceEngine(CFG)
    e.step(*_group(3, seed=1, high=60))  # one good step first
    before = e.state()
    tokens, targets = _group(3, seed=2, high=60)
    tokens = tokens.copy()
    tokens[2 * CFG.train.batch_size, 0] = 63  # batch 2 of the group
    with pytest.raises(NonFiniteGradientError) as exc:
        e.step(tokens, targets)
    err = exc.value
    assert (err.parameter, err.batch, err.step) == ("h.1.attn.w_o", 2, 1)
    assert "'h.1.attn.w_o'" in str(err) and "batch 2" in str(err) and "step 1" in str(err)
    after = e.state()
    assert after.step == 1
    for field in ("params", "adam_m", "adam_v"):
        assert _same_bits(getattr(after, field), getattr(before, field)), field


def test_nan_weights_stop_the_first_step():
    params = init_params(CFG.model, 0)
    params["h.0.ln1.g"][3] = np.nan
    e = ReferenceEngine(CFG, params=params)
    with pytest.raises(NonFiniteGradientError) as exc:
        e.step(*_group(2))
    assert exc.value.parameter == param_specs(CFG.model)[0].name  # every gradient is NaN
    assert exc.value.batch == 0 and exc.value.step == 0
    assert e.state().step == 0 and not e.state().adam_m["wte"].any()


def test_state_is_a_copy_and_load_state_restores_in_place():
    e = ReferenceEngine(CFG)
    e.step(*_group(2))
    saved = e.state()
    saved_copy = e.state()
    held = e.params["wte"]
    e.step(*_group(2, seed=1))
    saved.params["wte"][:] = 0.0  # mutating a returned state changes nothing inside
    assert np.any(e.params["wte"] != 0.0)
    e.load_state(saved_copy)
    assert e.params["wte"] is held  # callers holding the arrays see the restored values
    assert _same_bits(e.state().params, saved_copy.params)
    assert _same_bits(e.state().adam_m, saved_copy.adam_m) and e.state().step == 1
    broken = e.state()
    broken.adam_v["wpe"] = broken.adam_v["wpe"][:3]
    with pytest.raises(InputError, match="checkpoint adam_v: 'wpe' has shape"):
        e.load_state(broken)


def test_close_is_a_no_op_and_idempotent():
    with ReferenceEngine(CFG) as e:
        e.close()
    e.close()
    result = e.step(*_group(1))  # the reference holds no resources: still usable
    assert np.isfinite(result.loss) and e.state().step == 1
