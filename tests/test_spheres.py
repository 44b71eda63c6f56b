"""The kissing-sphere tree, the static batch assignment, and the reduction it drives.

The tree decides where a batch's gradient goes (position b % 12, turn b // 12); the assignment
decides who computes it (worker b % T). These tests pin both, then check the reduction
kernels against plain float64 NumPy and that chunking never changes a bit.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fast import reduction
from fast.reduction import (
    PositionSegments,
    PositionTickets,
    TicketsAborted,
    chunk_bounds,
    chunk_sq_norm,
    first_nonfinite,
    reduce_chunk,
    sum_chunk_norms,
    zero_segment,
)
from fast.spheres import (
    LEVEL2_SPHERES,
    POSITIONS,
    TOTAL_SPHERES,
    assign,
    describe,
    level2_index,
    position_of,
    sphere_of,
    worker_batches,
    worker_position,
)


def test_tree_has_157_spheres_in_three_levels():
    assert (POSITIONS, LEVEL2_SPHERES, TOTAL_SPHERES) == (12, 144, 157)
    levels = describe(63, 63)["levels"]
    assert [lv["count"] for lv in levels] == [1, 12, 144]
    assert 1 + 12 + 144 == sum(lv["count"] for lv in levels)


def test_batch_position_and_sphere_come_from_the_index():
    # written out by hand, not by the formula under test
    expected = {0: (0, 0), 5: (5, 0), 11: (11, 0), 12: (0, 1), 13: (1, 1), 25: (1, 2),
                62: (2, 5), 143: (11, 11)}
    for b, (pos, sph) in expected.items():
        assert (position_of(b), sphere_of(b)) == (pos, sph)
    assert [worker_position(i) for i in (0, 7, 12, 19, 62)] == [0, 7, 0, 7, 2]


def test_level2_indices_are_a_bijection_onto_the_144_spheres():
    indices = [level2_index(b) for b in range(144)]
    assert sorted(indices) == list(range(144))
    assert level2_index(144) is None and level2_index(1000) is None


def test_negative_indices_are_rejected():
    with pytest.raises(ValueError):
        position_of(-1)
    with pytest.raises(ValueError):
        worker_batches(3, 8, 2)  # worker 3 does not exist with T=2


@settings(max_examples=60, deadline=None)
@given(group=st.integers(0, 200), threads=st.integers(1, 80))
def test_assign_partitions_the_group(group, threads):
    per_worker = assign(group, threads)
    assert len(per_worker) == threads
    flat = sorted(b for batches in per_worker for b in batches)
    assert flat == list(range(group))  # every batch exactly once, none out of range
    for w, batches in enumerate(per_worker):
        assert batches == sorted(batches)  # increasing order: the tickets cannot deadlock
        assert all(b % threads == w for b in batches)
    if group >= threads:  # SPEC 8.11: every worker gets work
        assert all(per_worker)
    else:  # SPEC 8.10: idle workers get empty lists, not invalid ranges
        assert sum(1 for b in per_worker if not b) == threads - group


def test_describe_counts_busy_and_idle_workers():
    d = describe(5, 63)
    assert d["busy_workers"] == 5 and d["idle_workers"] == 58
    assert d["occupied_positions"] == [0, 1, 2, 3, 4]
    d = describe(63, 63)
    assert d["busy_workers"] == 63 and d["idle_workers"] == 0
    assert d["occupied_positions"] == list(range(12))
    assert d["spheres_per_position"][2] == [0, 1, 2, 3, 4, 5]  # batches 2, 14, ..., 62
    assert d["spheres_per_position"][3] == [0, 1, 2, 3, 4]  # batches 3, ..., 51
    assert d["occupied_level2_spheres"] == 63
    assert describe(150, 4)["batches_beyond_tree"] == 6


# -- reduction ----------------------------------------------------------------------------------


def test_chunk_bounds_cover_every_parameter_once():
    bounds = chunk_bounds(10, 4)
    assert bounds == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(65536 * 2 + 1)[-1] == (131072, 131073)
    with pytest.raises(ValueError):
        chunk_bounds(10, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reduce_chunk_matches_numpy_and_ignores_unused_positions(dtype):
    rng = np.random.default_rng(1)
    P, used, n = 1000, 7, 123
    seg = PositionSegments(P, dtype)
    seg.data[:] = rng.standard_normal((12, P))
    total = np.zeros(P, dtype=dtype)
    for lo, hi in chunk_bounds(P, 333):
        reduce_chunk(seg.data, used, total, lo, hi, n)
    expected = seg.data[:used].astype(np.float64).sum(axis=0) / n  # positions 7..11 are stale
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(total, expected, rtol=tol, atol=tol)


def test_reduction_bits_do_not_depend_on_chunking():
    rng = np.random.default_rng(2)
    seg = rng.standard_normal((12, 5000)).astype(np.float32)
    outs = []
    for chunk in (5000, 1024, 7, 1):
        total = np.zeros(5000, dtype=np.float32)
        for lo, hi in chunk_bounds(5000, chunk):
            reduce_chunk(seg, 12, total, lo, hi, 99)
        outs.append(total.tobytes())
    assert len(set(outs)) == 1


def test_chunk_norms_match_float64_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(10_000).astype(np.float32)
    bounds = chunk_bounds(x.size, 4096)
    norms = np.array([chunk_sq_norm(x, lo, hi) for lo, hi in bounds])
    expected = float(np.sum(x.astype(np.float64) ** 2))
    assert abs(sum_chunk_norms(norms) - expected) <= 1e-12 * expected
    # chunk order, left to right: the same value a plain loop gives
    acc = 0.0
    for v in norms:
        acc += float(v)
    assert sum_chunk_norms(norms) == acc


def test_zero_and_first_nonfinite():
    x = np.arange(10, dtype=np.float32) + 1
    assert first_nonfinite(x, 0, 10) == -1
    x[6] = np.inf
    x[8] = np.nan
    assert first_nonfinite(x, 0, 10) == 6
    assert first_nonfinite(x, 7, 10) == 8
    zero_segment(x)
    assert not x.any()


def test_tickets_enforce_batch_order_within_a_position(no_thread_leak):
    """Batch 12 must wait for batch 0; batch 1 (another position) does not."""
    tickets = PositionTickets(timeout=5.0)
    order = []
    go = threading.Event()  # batch 0 starts only when the test says so

    def run(b: int) -> None:
        if b == 0:
            assert go.wait(5)
        tickets.wait_turn(b)
        order.append(b)
        tickets.advance(b)

    threads = {b: threading.Thread(target=run, args=(b,)) for b in (24, 12, 1, 0)}
    for t in threads.values():
        t.start()
    threads[1].join(5)  # position 1 is not held up by position 0
    assert order == [1]  # and 12, 24 are still waiting for batch 0
    go.set()
    for t in threads.values():
        t.join(5)
    assert order == [1, 0, 12, 24]
    assert tickets.next_batches()[0] == 36 and tickets.next_batches()[1] == 13
    tickets.reset()
    assert tickets.next_batches() == list(range(12))


def test_ticket_wait_is_released_by_abort_and_bounded_by_timeout(no_thread_leak):
    tickets = PositionTickets(timeout=None)
    errors = []

    def waiter():
        try:
            tickets.wait_turn(12)
        except TicketsAborted as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    tickets.abort("test abort")  # before or during the wait: either way the wait ends
    t.join(2)
    assert not t.is_alive() and "test abort" in str(errors[0])

    start = time.monotonic()
    with pytest.raises(TicketsAborted, match="without progress"):
        PositionTickets(timeout=0.3).wait_turn(12)
    assert time.monotonic() - start < 2


def test_warmup_compiles_both_dtypes():
    for dtype in (np.float32, np.float64):
        reduction.warmup(dtype)
        compiled = {str(sig[0]) for sig in reduction.reduce_chunk.signatures}
        assert any(np.dtype(dtype).name in s for s in compiled), compiled
        segments = np.arange(24, dtype=dtype).reshape(12, 2)
        total = np.zeros(2, dtype=dtype)
        reduction.reduce_chunk(segments, 12, total, 0, 2, 4)
        np.testing.assert_array_equal(total, segments.sum(axis=0) / 4)
