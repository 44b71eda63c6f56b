"""The workers' workspace pool: at most min(T, cores) workspaces, reused, waits that end.

With more workers than cores a workspace per worker buys no speed, only memory; the pool
hands out `size` of them. Its waits end on release, on abort and on an idle timeout, never
hang; and the gradient's bits do not depend on how many workspaces there are.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support import digest

import fast.trainer
from fast.model import FastModel
from fast.reduction import TicketsAborted
from fast.trainer import FastTrainer
from fast.workspace_pool import WorkspacePool, pool_size
from reference.batches import BatchGroups
from reference.config import ModelConfig, preset

M = ModelConfig(vocab_size=11, seq_len=4, d_model=8, n_layers=1, n_heads=2, d_ff=16)


def test_pool_size_is_threads_capped_by_cores():
    assert pool_size(63, cores=2) == 2
    assert pool_size(1, cores=2) == 1
    assert pool_size(3, cores=8) == 3


def test_workspaces_are_created_up_to_size_then_reused():
    pool = WorkspacePool(FastModel(M), 2, threading.Event())
    a, b = pool.acquire(), pool.acquire()
    assert a is not b and pool.created == 2
    pool.release(a)
    assert pool.acquire() is a and pool.created == 2


def test_a_waiter_stops_on_abort_and_on_idle_timeout():
    abort = threading.Event()
    pool = WorkspacePool(FastModel(M), 1, abort, timeout=0.3, ticks=lambda: 0)
    pool.acquire()
    with pytest.raises(TicketsAborted, match="without progress"):
        pool.acquire()  # nobody releases and nothing advances: the idle deadline ends it
    abort.set()
    with pytest.raises(TicketsAborted, match="aborted"):
        pool.acquire()


def test_a_release_wakes_a_waiter(no_thread_leak):
    pool = WorkspacePool(FastModel(M), 1, threading.Event(), timeout=30.0)
    held = pool.acquire()
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire()), name="test-pool-wait")
    waiter.start()
    pool.release(held)
    waiter.join(timeout=30)
    assert not waiter.is_alive() and got == [held]


def test_pool_size_changes_no_bit_and_bounds_the_workspaces(monkeypatch, no_thread_leak):
    """5 workers with 1, 2 or 5 workspaces: identical gradient bits; never more workspaces
    than the pool size (the broken variant, one per worker, is what 5 would look like)."""
    cfg = preset("tiny")
    b, s = cfg.train.batch_size, cfg.model.seq_len
    stream = np.random.default_rng(4).integers(1, cfg.model.vocab_size, 8 * b * s + 1)
    g = BatchGroups(stream, b, s, cfg.train.group_size).group(0)
    digests, created = [], []
    for size in (1, 2, 5):
        monkeypatch.setattr(fast.trainer, "pool_size", lambda threads, cores=None, n=size: n)
        with FastTrainer(cfg, 5) as tr:
            result = tr.group_grads(g.tokens, g.targets)
            created.append(tr.workspaces.created)
        digests.append(digest(result.grads))
    assert digests[0] == digests[1] == digests[2]
    assert created[0] == 1 and created[1] <= 2 and created[2] <= 5


def test_the_lowest_batches_get_workspaces_first_whatever_their_arrival(no_thread_leak):
    """One workspace, held; batches 9, 5 and 7 of the step arrive in that order: 5, 7, 9 get
    it. A batch the step did not announce waits for any free one, as before."""
    pool = WorkspacePool(FastModel(M), 1, threading.Event(), timeout=30.0)
    pool.begin([5, 7, 9])
    held = pool.acquire()  # not one of the step's batches: unordered
    got, lock = [], threading.Lock()

    def wait_for(batch: int) -> None:
        ws = pool.acquire(batch)
        with lock:
            got.append(batch)
        pool.release(ws)

    waiters = []
    for b in (9, 5, 7):
        t = threading.Thread(target=wait_for, args=(b,), name=f"test-pool-{b}")
        t.start()
        waiters.append(t)
        t.join(0.2)  # each is waiting before the next arrives
    pool.release(held)
    for t in waiters:
        t.join(30)
    assert not any(t.is_alive() for t in waiters) and got == [5, 7, 9]


def test_a_high_batch_never_takes_the_last_free_workspace(no_thread_leak):
    """Two free workspaces, batch 3 first: 0, 1 and 2 are still to come, so it waits; once 0
    and 1 hold theirs (one left, kept for 2), 2 takes it and 3 waits for a release."""
    pool = WorkspacePool(FastModel(M), 2, threading.Event(), timeout=30.0)
    pool.begin(range(4))
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(3)), name="test-pool-3")
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and got == []
    w0 = pool.acquire(0)
    w1 = pool.acquire(1)  # one free was kept for 2 from 3, none for 1 below it: fine
    waiter.join(0.3)
    assert waiter.is_alive()
    pool.release(w0)  # free 1, kept back for batch 2
    waiter.join(0.3)
    assert waiter.is_alive()
    w2 = pool.acquire(2)
    pool.release(w1)
    waiter.join(30)
    assert not waiter.is_alive() and len(got) == 1
    pool.release(w2)
