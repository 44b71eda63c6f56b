"""The reference loss: pad targets ignored, log V at uniform logits, token-weighted group means,
and clear errors for empty groups, over-long rows and out-of-vocabulary ids (SPEC 1-2)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plumbing.errors import InputError
from reference import model
from reference.config import ConfigError, ModelConfig
from reference.params import init_params, param_specs

M = ModelConfig(vocab_size=13, seq_len=6, d_model=8, n_layers=2, n_heads=2, d_ff=12).validate()


@pytest.fixture
def params():
    return init_params(M, seed=7)


def batch(rng, rows: int, T: int = M.seq_len, pad_frac: float = 0.0):
    tokens = rng.integers(0, M.vocab_size, size=(rows, T))
    targets = rng.integers(1, M.vocab_size, size=(rows, T))
    targets[rng.random((rows, T)) < pad_frac] = 0
    return tokens, targets


def assert_grads_close(a: dict, b: dict, rtol: float = 1e-12, atol: float = 1e-15) -> None:
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


def test_every_parameter_has_a_gradient_of_its_shape(params):
    tokens, targets = batch(np.random.default_rng(0), 3)
    _, _, grads = model.batch_loss_and_grads(params, M, tokens, targets)
    assert list(grads) == [s.name for s in param_specs(M)]
    for s in param_specs(M):
        assert grads[s.name].shape == s.shape and grads[s.name].dtype == np.float64


def test_pad_targets_change_nothing(params):
    """Setting targets to pad removes exactly those terms: the same sum, count and gradient as
    the rows cut before the padded positions (causality: later inputs cannot affect them)."""
    rng = np.random.default_rng(1)
    tokens, targets = batch(rng, 3, T=4)
    loss, n, grads = model.batch_loss_and_grads(params, M, tokens, targets)
    # append two positions whose targets are all pad, with arbitrary input tokens
    tokens_p = np.concatenate([tokens, rng.integers(0, M.vocab_size, (3, 2))], axis=1)
    targets_p = np.concatenate([targets, np.zeros((3, 2), dtype=targets.dtype)], axis=1)
    loss_p, n_p, grads_p = model.batch_loss_and_grads(params, M, tokens_p, targets_p)
    assert n_p == n == 12
    assert loss_p == pytest.approx(loss, rel=1e-13)
    assert_grads_close(grads_p, grads)
    # and a fully padded extra row adds nothing either
    tokens_r = np.concatenate([tokens_p, rng.integers(0, M.vocab_size, (1, 6))])
    targets_r = np.concatenate([targets_p, np.zeros((1, 6), dtype=targets.dtype)])
    loss_r, n_r, grads_r = model.batch_loss_and_grads(params, M, tokens_r, targets_r)
    assert n_r == n and loss_r == pytest.approx(loss, rel=1e-13)
    assert_grads_close(grads_r, grads)


def test_pad_targets_inside_rows_are_ignored(params):
    """The loss sum equals the sum of the per-position terms over non-pad targets only."""
    rng = np.random.default_rng(2)
    tokens, targets = batch(rng, 2, pad_frac=0.4)
    loss, n, _ = model.batch_loss_and_grads(params, M, tokens, targets)
    logits, _ = model.forward(params, M, tokens)
    expect = 0.0
    for b, t in zip(*np.nonzero(targets), strict=True):
        row = logits[b, t]
        expect -= row[targets[b, t]] - math.log(sum(math.exp(v) for v in row))
    assert n == int((targets != 0).sum())
    assert loss == pytest.approx(expect, rel=1e-12)


def test_uniform_logits_give_log_v(params):
    """Zero wte makes every logit 0: the mean loss is exactly log V, whatever the targets."""
    params = dict(params, wte=np.zeros_like(params["wte"]))
    tokens, targets = batch(np.random.default_rng(3), 8, pad_frac=0.2)
    loss, n, _ = model.group_loss_and_grads(params, M, tokens, targets, batch_size=4)
    assert n == int((targets != 0).sum())
    assert loss == pytest.approx(math.log(M.vocab_size), rel=1e-13)


@pytest.mark.parametrize("rows,batch_size", [(10, 4), (9, 3)])
def test_group_is_token_weighted_mean_of_batches(params, rows, batch_size):
    """Batches with different pad counts (and a short last batch when rows % B != 0) combine as
    sum of batch sums / total count: not the mean of batch means."""
    rng = np.random.default_rng(4)
    tokens, targets = batch(rng, rows)
    targets[:batch_size][rng.random((batch_size, M.seq_len)) < 0.8] = 0  # a mostly-pad batch
    loss, n, grads = model.group_loss_and_grads(params, M, tokens, targets, batch_size)
    parts = [model.batch_loss_and_grads(params, M, tokens[i:i + batch_size],
                                        targets[i:i + batch_size])
             for i in range(0, rows, batch_size)]
    n_total = sum(p[1] for p in parts)
    assert n == n_total == int((targets != 0).sum())
    assert loss == pytest.approx(sum(p[0] for p in parts) / n_total, rel=1e-13)
    expect = {k: sum(p[2][k] for p in parts) / n_total for k in grads}
    assert_grads_close(grads, expect)
    mean_of_means = np.mean([p[0] / p[1] for p in parts])
    assert abs(loss - mean_of_means) > 1e-6, "uneven batches must not be averaged equally"


def test_group_does_not_depend_on_the_split(params):
    """The group mean is a property of the rows, not of how they are cut into batches."""
    tokens, targets = batch(np.random.default_rng(5), 6, pad_frac=0.3)
    loss1, n1, g1 = model.group_loss_and_grads(params, M, tokens, targets, batch_size=6)
    loss2, n2, g2 = model.group_loss_and_grads(params, M, tokens, targets, batch_size=1)
    assert n1 == n2 and loss1 == pytest.approx(loss2, rel=1e-13)
    assert_grads_close(g1, g2, rtol=1e-10)


def test_no_targets_raises_input_error(params):
    tokens, targets = batch(np.random.default_rng(6), 4)
    with pytest.raises(InputError, match="no non-pad targets"):
        model.group_loss_and_grads(params, M, tokens, np.zeros_like(targets), batch_size=2)


def test_rows_longer_than_context_raise_config_error(params):
    tokens, targets = batch(np.random.default_rng(7), 2, T=M.seq_len + 1)
    with pytest.raises(ConfigError, match="seq_len"):
        model.forward(params, M, tokens)
    with pytest.raises(ConfigError):
        model.group_loss_and_grads(params, M, tokens, targets, batch_size=2)


def test_shorter_rows_use_the_first_positions(params):
    """T < S uses wpe[0:T]: the logits of a prefix equal the first T logits of the full row."""
    tokens, _ = batch(np.random.default_rng(8), 2)
    full, _ = model.forward(params, M, tokens)
    short, _ = model.forward(params, M, tokens[:, :3])
    np.testing.assert_allclose(short, full[:, :3], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad", [-1, M.vocab_size])
def test_out_of_vocabulary_ids_raise_input_error(params, bad):
    tokens, targets = batch(np.random.default_rng(9), 2)
    tokens[1, 2] = bad
    with pytest.raises(InputError, match="vocab_size"):
        model.forward(params, M, tokens)
    tokens[1, 2] = 1
    targets[0, 0] = bad
    with pytest.raises(InputError, match="vocab_size"):
        model.batch_loss_and_grads(params, M, tokens, targets)
