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
