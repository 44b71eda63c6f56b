"""The CPython-style barrier: reuse, timeouts that break it for everyone, abort, diagnosis.

SPEC 8.4: the original's barrier counted one participant more than the threads that waited,
and the run hung. Here such a barrier is detected within its timeout and names who is missing.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fast.barrier import Barrier, BarrierBroken, BarrierState
from fast.heartbeat import HeartbeatBoard, Phase


def _run_parties(barrier: Barrier, ids: list[int], timeout: float | None = None):
    """Start one thread per id waiting on the barrier; returns (threads, results dict)."""
    results: dict[int, object] = {}

    def party(i: int) -> None:
        try:
            results[i] = barrier.wait(i, timeout=timeout)
        except BaseException as exc:  # recorded for the assertions
            results[i] = exc

    threads = [threading.Thread(target=party, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    return threads, results


def _join(threads, seconds: float = 5.0) -> None:
    for t in threads:
        t.join(seconds)
    assert not any(t.is_alive() for t in threads), "a barrier waiter is still blocked"


def test_all_parties_pass_and_the_barrier_is_reusable(no_thread_leak):
    barrier = Barrier(4, "meet", timeout=5.0)
    for generation in range(5):
        threads, results = _run_parties(barrier, [0, 1, 2, 3])
        _join(threads)
        assert sorted(results.values()) == [0, 1, 2, 3], results  # arrival indices
        assert barrier.state is BarrierState.FILLING
        assert barrier.describe()["generation"] == generation + 1


def test_one_party_too_many_times_out_for_every_waiter_and_names_the_missing(no_thread_leak):
    """3 threads, a barrier of 4 (the seed's bug): every waiter gets BrokenBarrierError."""
    barrier = Barrier(4, "point-A", timeout=0.4)
    start = time.monotonic()
    threads, results = _run_parties(barrier, [0, 1, 2])
    _join(threads)
    assert time.monotonic() - start < 3.0
    assert len(results) == 3
    for exc in results.values():
        assert isinstance(exc, threading.BrokenBarrierError)  # CPython's exception family
        assert isinstance(exc, BarrierBroken)
        assert "'point-A'" in str(exc) and "timed out" in str(exc)
        assert exc.missing == [3] and exc.timed_out
    assert barrier.broken and barrier.state is BarrierState.BROKEN
    with pytest.raises(BarrierBroken):  # stays broken for latecomers
        barrier.wait(3)


def test_abort_releases_waiters_and_says_why(no_thread_leak):
    barrier = Barrier(3, "point-B")  # no timeout at all: only abort can end the wait
    threads, results = _run_parties(barrier, [0, 1])
    deadline = time.monotonic() + 5
    while barrier.n_waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    d = barrier.describe()
    assert d["waiting"] == 2 and d["arrived"] == [0, 1] and d["missing"] == [2]
    barrier.abort("watchdog: stall")
    _join(threads)
    for exc in results.values():
        assert isinstance(exc, BarrierBroken) and "watchdog: stall" in str(exc)
        assert not exc.timed_out


def test_reset_makes_a_broken_barrier_usable_again(no_thread_leak):
    barrier = Barrier(2, "r", timeout=0.2)
    with pytest.raises(BarrierBroken):
        barrier.wait(0)
    barrier.reset()
    assert barrier.state is BarrierState.FILLING
    threads, results = _run_parties(barrier, [0, 1])
    _join(threads)
    assert sorted(results.values()) == [0, 1]


def test_idle_timeout_spares_progress_and_breaks_when_it_stops(no_thread_leak):
    """With a progress probe the timeout counts idle time: slow work is never a stall."""
    counter = np.zeros(1, dtype=np.int64)
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0.05)

    ticker = threading.Thread(target=busy)
    ticker.start()
    barrier = Barrier(2, "slow", timeout=0.5, ticks=lambda: int(counter[0]))
    threads, results = _run_parties(barrier, [0])
    time.sleep(1.2)  # more than twice the timeout, but progress keeps coming
    assert threads[0].is_alive() and not barrier.broken
    stop.set()
    ticker.join(2)
    start = time.monotonic()
    _join(threads)
    assert isinstance(results[0], BarrierBroken)
    assert 0.3 < time.monotonic() - start < 3.0


def test_wait_timeout_argument_overrides_the_default(no_thread_leak):
    barrier = Barrier(2, "x", timeout=100.0)
    start = time.monotonic()
    with pytest.raises(BarrierBroken):
        barrier.wait(0, timeout=0.2)
    assert time.monotonic() - start < 2.0


def test_heartbeat_phase_changes_count_as_progress_and_time():
    board = HeartbeatBoard()
    hb = board.add("worker", 0, "ks-worker-0")
    hb.start()
    before = board.total_ticks()
    hb.set(Phase.COMPUTING, step=3, batch=7)
    time.sleep(0.05)
    hb.set(Phase.WAITING_A)
    assert board.total_ticks() == before + 2
    snap = hb.snapshot()
    assert snap["phase"] == "WAITING_A" and snap["step"] == 3 and snap["batch"] is None
    stats = hb.stats()
    assert stats["compute_seconds"] >= 0.04
    assert stats["cpu_seconds"] >= 0.0


def test_bad_party_count_is_rejected():
    with pytest.raises(ValueError):
        Barrier(0, "empty")
