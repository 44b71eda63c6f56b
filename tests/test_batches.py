"""Batches and batch groups: exact counts, padding, and an epoch that ends (SPEC 2, 8.1, 8.12)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plumbing.errors import DataError
from reference.batches import BatchGroups, get_batch, n_batches


def _batches_by_counting(N: int, B: int, S: int) -> int:
    """Batches needed until every target position 1..N-1 is covered, one B*S block at a time."""
    covered, count = 0, 0
    while covered < N - 1:
        covered += B * S
        count += 1
    return count


def _naive_batch(stream, b, B, S):
    """Batch b position by position, straight from the definition in docs/DESIGN.md."""
    N = len(stream)
    inputs = np.zeros((B, S), dtype=np.int64)
    targets = np.zeros((B, S), dtype=np.int64)
    for r in range(B):
        w = b * B + r
        for j in range(S):
            i = w * S + j
            inputs[r, j] = stream[i] if i < N else 0
            targets[r, j] = stream[i + 1] if i + 1 < N else 0
    return inputs, targets


@pytest.mark.parametrize("N", range(2, 40))
@pytest.mark.parametrize("B, S", [(1, 1), (1, 3), (2, 2), (3, 5)])
def test_n_batches_is_the_covering_count(N, B, S):
    assert n_batches(N, B, S) == _batches_by_counting(N, B, S)


@pytest.mark.parametrize("N", [0, 1])
def test_fewer_than_two_tokens_is_an_error_not_zero_batches(N):
    with pytest.raises(DataError, match=f"has {N} tokens and needs at least 2"):
        n_batches(N, 4, 16)
    with pytest.raises(DataError, match="at least 2"):
        BatchGroups(np.arange(N), 4, 16, 8)


def test_sizes_must_be_positive():
    with pytest.raises(DataError, match="B=0"):
        n_batches(10, 0, 4)
    with pytest.raises(DataError, match="G=-1"):
        BatchGroups(np.arange(10), 2, 2, -1)


@settings(max_examples=80, deadline=None)
@given(N=st.integers(2, 120), B=st.integers(1, 4), S=st.integers(1, 9), data=st.data())
def test_get_batch_matches_the_definition(N, B, S, data):
    stream = np.arange(10, 10 + N)  # distinct non-zero values, so any shift shows
    b = data.draw(st.integers(0, n_batches(N, B, S) - 1))
    inputs, targets = get_batch(stream, b, B, S)
    want_in, want_t = _naive_batch(stream, b, B, S)
    assert inputs.dtype == targets.dtype == np.int64
    assert inputs.shape == targets.shape == (B, S)
    np.testing.assert_array_equal(inputs, want_in)
    np.testing.assert_array_equal(targets, want_t)


def test_an_epoch_sees_every_token_and_every_target_exactly_once():
    N, B, S = 103, 3, 4
    stream = np.arange(1, N + 1)
    nb = n_batches(N, B, S)
    all_in = np.concatenate([get_batch(stream, b, B, S)[0].ravel() for b in range(nb)])
    all_t = np.concatenate([get_batch(stream, b, B, S)[1].ravel() for b in range(nb)])
    np.testing.assert_array_equal(all_in[:N], stream)
    np.testing.assert_array_equal(all_t[:N - 1], stream[1:])
    assert not all_in[N:].any() and not all_t[N - 1:].any()  # padding only past the end
    assert np.count_nonzero(all_t) == N - 1


def test_last_batch_is_padded_and_out_of_range_batches_refused():
    stream = np.arange(1, 31)  # N = 30, B*S = 8 -> ceil(29/8) = 4 batches
    inputs, targets = get_batch(stream, 3, 2, 4)
    assert inputs.tolist() == [[25, 26, 27, 28], [29, 30, 0, 0]]
    assert targets.tolist() == [[26, 27, 28, 29], [30, 0, 0, 0]]
    with pytest.raises(IndexError, match="outside the epoch's 4 batches"):
        get_batch(stream, 4, 2, 4)


def test_tiny_corpus_gives_one_padded_batch_in_one_group():
    stream = np.array([5, 6, 7, 3])
    groups = BatchGroups(stream, B=4, S=16, G=8)
    assert groups.n_batches == 1 and len(groups) == 1
    (only,) = list(groups)
    assert only.index == 0 and only.first_batch == 0 and only.n_batches == 1
    assert only.tokens.shape == only.targets.shape == (4, 16)
    assert only.tokens[0, :4].tolist() == [5, 6, 7, 3] and not only.tokens[0, 4:].any()
    assert only.targets[0, :3].tolist() == [6, 7, 3] and not only.targets.ravel()[3:].any()


@pytest.mark.parametrize("N, B, S, G", [
    (1000, 4, 16, 8),   # 16 batches -> 2 full groups
    (1001, 4, 16, 8),   # still 16 batches: N-1 = 1000 targets, 1024 slots
    (1090, 4, 16, 8),   # 18 batches -> groups of 8, 8, 2
    (50, 2, 3, 100),    # G larger than the epoch: one short group
    (2, 1, 1, 1),       # the smallest corpus: one batch, one group
])
def test_groups_cover_the_epoch_exactly_and_then_stop(N, B, S, G):
    stream = np.arange(1, N + 1)
    groups = BatchGroups(stream, B, S, G)
    nb = _batches_by_counting(N, B, S)
    expected_groups = -(-nb // G)
    # the original iterator never stopped: take far more than exist and count what comes out
    got = list(itertools.islice(groups, 10 * expected_groups + 10))
    assert len(got) == len(groups) == expected_groups
    assert sum(g.n_batches for g in got) == nb
    assert [g.first_batch for g in got] == list(range(0, nb, G))
    assert got[-1].n_batches == nb - (expected_groups - 1) * G
    for g in got:
        want = [get_batch(stream, b, B, S) for b in range(g.first_batch,
                                                         g.first_batch + g.n_batches)]
        np.testing.assert_array_equal(g.tokens, np.concatenate([w[0] for w in want]))
        np.testing.assert_array_equal(g.targets, np.concatenate([w[1] for w in want]))
        assert g.tokens.shape == (g.n_batches * B, S)
    it = iter(groups)
    for _ in range(expected_groups):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    assert len(list(groups)) == expected_groups  # a second epoch is the same length


def test_group_random_access_equals_iteration_and_checks_range():
    groups = BatchGroups(np.arange(1, 700), B=2, S=8, G=5)  # 44 batches -> 9 groups
    listed = list(groups)
    for i in (0, 4, 8):
        g = groups.group(i)
        assert g.index == i
        np.testing.assert_array_equal(g.tokens, listed[i].tokens)
        np.testing.assert_array_equal(g.targets, listed[i].targets)
    for bad in (-1, 9):
        with pytest.raises(IndexError, match="outside the epoch's 9 groups"):
            groups.group(bad)
