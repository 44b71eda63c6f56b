"""Gradient buffers of batches in flight (issue #18): compute never waits for another batch.

A batch computes into a buffer of its own and only its fold is ordered; buffers are granted in
batch order so the lowest unfolded batch can always go on. Checked here: the grant order, the
waits' ends (abort, idle deadline), the fold's bits, and the whole engine at its smallest pools
(one workspace, one gradient buffer) under perturbed timing: bitwise the one-thread weights,
every thread ends, no deadlock.
"""

from __future__ import annotations

import json
import random
import threading
import time

import numpy as np
import pytest
from support import digest

from fast import perturb
from fast.grad_pool import GradPool, fold_into, grad_pool_size, split_first
from fast.record import BATCH
from fast.reduction import TicketsAborted
from fast.standin import SleepKernel
from fast.trainer import FastTrainer
from reference.batches import BatchGroups
from reference.config import preset


def test_pool_size_is_the_computing_batches_plus_one_capped_by_need():
    assert grad_pool_size(63, 2) == 3
    assert grad_pool_size(63, 64) == 64
    assert grad_pool_size(63, 64, needers=51) == 51
    assert grad_pool_size(1, 2, needers=0) == 1  # never below one buffer


def test_the_first_batch_of_each_position_needs_no_buffer():
    first, rest = split_first(range(29))
    assert first == list(range(12)) and rest == list(range(12, 29))
    first, rest = split_first([30, 6, 18, 7])  # an MPI rank's share: its own first batches
    assert first == [6, 7] and rest == [18, 30]


def test_a_buffer_is_kept_back_for_each_lower_ungranted_batch(no_thread_leak):
    """Two buffers: 13 takes one at once (one kept for 12); 14 waits (one free, kept for 12);
    12 takes it; 14 gets 13's once 13 gives it back."""
    pool = GradPool(8, np.float32, 2, threading.Event(), timeout=30.0)
    pool.begin([12, 13, 14])
    b13 = pool.acquire(13)
    assert pool.lowest_ungranted() == 12
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(14)), name="test-grant")
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and got == []  # the last buffer is 12's
    b12 = pool.acquire(12)
    assert pool.lowest_ungranted() == 14 and b12 is not b13
    waiter.join(0.3)
    assert waiter.is_alive()  # none free now
    pool.release(b13)
    waiter.join(30)
    assert not waiter.is_alive() and got[0] is b13 and pool.created == 2
    assert pool.lowest_ungranted() is None


def test_a_high_batch_never_takes_the_buffers_lower_ones_need(no_thread_leak):
    """Four buffers, batches 12..20 ungranted: 20 has 8 lower ungranted batches, so it waits
    even with every buffer free; once 12..15 are granted and released it may go."""
    pool = GradPool(8, np.float32, 4, threading.Event(), timeout=30.0)
    pool.begin(range(12, 21))
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(20)), name="test-grant")
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and got == []
    for b in range(12, 17):  # 17..19 still ungranted: 3 kept back, 4 free > 3
        pool.release(pool.acquire(b))
    waiter.join(30)
    assert not waiter.is_alive() and len(got) == 1


def test_one_buffer_is_strict_batch_order(no_thread_leak):
    pool = GradPool(8, np.float32, 1, threading.Event(), timeout=30.0)
    pool.begin([12, 13])
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(13)), name="test-grant")
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and got == []  # 12 comes first
    pool.release(pool.acquire(12))
    waiter.join(30)
    assert not waiter.is_alive() and len(got) == 1


def test_a_batch_out_of_order_or_twice_is_refused():
    pool = GradPool(8, np.float32, 2, threading.Event(), timeout=5.0)
    pool.begin([12, 13])
    pool.acquire(12)
    with pytest.raises(RuntimeError, match="asked twice"):
        pool.acquire(12)  # already granted: asking again is a bug, not a wait
    with pytest.raises(RuntimeError, match="not given"):
        pool.acquire(5)  # not a buffer batch of this step


def test_a_grant_wait_ends_on_idle_timeout_and_on_abort():
    abort = threading.Event()
    pool = GradPool(8, np.float32, 1, abort, timeout=0.3, ticks=lambda: 0)
    pool.begin([12, 13])
    pool.acquire(12)
    with pytest.raises(TicketsAborted, match="without progress"):
        pool.acquire(13)  # the one buffer is held and nothing advances
    abort.set()
    with pytest.raises(TicketsAborted, match="aborted"):
        pool.acquire(13)


def test_the_fold_adds_in_the_engine_dtype_and_zeroes_the_buffer():
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        seg = rng.standard_normal(1000).astype(dt)
        buf = rng.standard_normal(1000).astype(dt)
        want = seg + buf  # numpy's elementwise add in the same dtype: the same bits
        assert fold_into(seg, buf) == -1
        assert seg.tobytes() == want.tobytes() and not buf.any()
    seg, buf = np.zeros(4, np.float32), np.array([0, 1, np.inf, 0], np.float32)
    assert fold_into(seg, buf) == 2  # the first non-finite sum, found in the same pass


def _data(group: int, n_batches: int):
    cfg = preset("tiny", group_size=group)
    B, S = cfg.train.batch_size, cfg.model.seq_len
    rng = np.random.default_rng(1)
    stream = rng.integers(1, cfg.model.vocab_size, size=n_batches * B * S + 1 - 7)
    return cfg, BatchGroups(stream, B, S, group)


def _weights(cfg, groups, threads, **kw) -> str:
    with FastTrainer(cfg, threads, stall_timeout=20.0, **kw) as tr:
        for k in range(3):
            g = groups.group(k % len(groups))
            tr.step(g.tokens, g.targets)
        return digest(tr.state().params)


def _jitter(seed: int):
    """A sync-point hook sleeping up to 1 ms or yielding, seeded per thread."""
    rngs: dict[str, random.Random] = {}
    lock = threading.Lock()

    def hook(thread: str, phase: str, step) -> None:
        with lock:
            rng = rngs.setdefault(thread, random.Random(f"{seed}:{thread}"))
            u, d = rng.random(), rng.uniform(0, 1e-3)
        if u < 0.3:
            time.sleep(0)
        elif u < 0.7:
            time.sleep(d)

    return hook


@pytest.mark.parametrize("group,threads", [(29, 5), (29, 13), (13, 40), (25, 2)])
def test_smallest_pools_under_perturbed_timing_give_the_one_thread_bits(group, threads,
                                                                        no_thread_leak):
    """One workspace and one gradient buffer, jittered at every sync point: no deadlock (the
    stall timeout would end one as a StallError), and the weights are T=1's bit for bit,
    with a short padded last group."""
    cfg, groups = _data(group, 2 * group + group // 2)
    want = _weights(cfg, groups, 1)
    for seed in range(2):
        with perturb.installed(_jitter(seed)):
            got = _weights(cfg, groups, threads, cores=1, grad_buffers=1)
        assert got == want, f"T={threads} G={group} smallest pools seed {seed}"


def test_compute_overlaps_the_batch_it_folds_after(no_thread_leak):
    """Batch 12 computes while batch 0 (its position's previous fold) still computes: read
    from the run record. On the old engine batch 12 waited for batch 0's ticket first."""
    cfg = preset("tiny", group_size=24)
    B, S = cfg.train.batch_size, cfg.model.seq_len
    tokens = np.ones((24 * B, S), np.int64)
    with FastTrainer(cfg, 24, cores=24, kernel=SleepKernel(0.2)) as tr:
        tr.step(tokens, tokens)
    spans = {b: (a, e) for t in tr.record.snapshot().threads for k, _, a, e, b in t.spans
             if k == BATCH}
    assert spans[12][0] < spans[0][1] and spans[0][0] < spans[12][1]


def test_verify_sweeps_groups_that_fold_from_buffers(tmp_path, no_thread_leak):
    """`spheres verify --group-size 14`: batches 12 and 13 fold from their own buffers, and
    the gates (bitwise across T, reference tolerances, record gates) pass."""
    from harness.cli import main

    out = tmp_path / "v.json"
    code = main(["verify", "--presets", "tiny", "--group-size", "14", "--threads", "1,5,13",
                 "--dtypes", "float32", "--trajectory-steps", "2", "--json", str(out)])
    assert code == 0
    records = json.loads(out.read_text())["records"]
    assert [r["threads"] for r in records] == [1, 5, 13]
    assert all(sum(r["worker_batches"]) == 14 and not r["failures"] for r in records)
