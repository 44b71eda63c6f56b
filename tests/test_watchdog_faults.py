"""Fault drills and the watchdog, in process: the right error, naming the culprit, in time.

Every drill also checks the run never hangs (pytest-timeout is the outer net), that the weights
and optimiser state after a failed step are exactly those before it, and that every thread
ended (`no_thread_leak`). Deliberately broken variants of the trainer (a barrier with one party
too many, a worker that skips Point A) must end in a StallError, not a hang (SPEC 8.4, 8.13).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fast.barrier import Barrier
from fast.faults import (
    SPEC_FORM,
    Fault,
    FaultKind,
    FaultPlan,
    InjectedFault,
    ThreadFault,
    parse_inject,
)
from fast.heartbeat import HeartbeatBoard, Phase
from fast.trainer import FastTrainer
from fast.watchdog import Watchdog
from fast.workers import Worker
from plumbing.errors import FaultError, InputError, NonFiniteGradientError, StallError
from reference.batches import BatchGroups
from reference.config import preset

CFG = preset("tiny")  # B=4, S=16, G=8
B, S = CFG.train.batch_size, CFG.model.seq_len
STALL = 1.0  # seconds; detection must come within STALL + SLACK
SLACK = 10.0
THREADS = 4


@pytest.fixture(scope="module")
def groups():
    n = 3 * 8 * B * S + 1  # three full groups
    stream = np.random.default_rng(5).integers(1, CFG.model.vocab_size, n)
    return BatchGroups(stream, B, S, CFG.train.group_size)


def _drill(groups, inject: str, fail_step: int, threads: int = THREADS,
           stall: float = STALL, **kw):
    """Run steps 0..fail_step; return (exception, seconds, state unchanged?, trainer, retry).

    `retry` is what a second attempt at the failed step raised or returned."""
    tr = FastTrainer(CFG, threads, stall_timeout=stall, faults=[inject], **kw)
    try:
        for s in range(fail_step):
            tr.step(groups.group(s).tokens, groups.group(s).targets)
        before = tr.state()
        g = groups.group(fail_step)
        start = time.monotonic()
        with pytest.raises(BaseException) as info:
            tr.step(g.tokens, g.targets)
        seconds = time.monotonic() - start
        after = tr.state()
        unchanged = after.step == before.step and all(
            np.array_equal(getattr(before, part)[k], getattr(after, part)[k])
            for part in ("params", "adam_m", "adam_v") for k in before.params)
        try:
            retry = tr.step(g.tokens, g.targets)
        except BaseException as exc:  # recorded for the assertions
            retry = exc
        return info.value, seconds, unchanged, tr, retry
    finally:
        tr.close()


# -- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("hang:target=worker=1,step=2", Fault(FaultKind.HANG, "worker", 1, 2)),
    ("raise:target=node-zero,step=0", Fault(FaultKind.RAISE, "node-zero", None, 0)),
    ("nan:worker=0,step=3,batch=5", Fault(FaultKind.NAN, "worker", 0, 3, 5)),
    ("slow:target=node-zero,step=1,seconds=2.5",
     Fault(FaultKind.SLOW, "node-zero", None, 1, None, 2.5)),
])
def test_parse_inject_reads_every_form_and_round_trips(spec, expected):
    fault = parse_inject(spec)
    assert fault == expected
    assert parse_inject(str(fault)) == fault


@pytest.mark.parametrize("spec", [
    "explode:worker=1,step=0", "hang", "hang:step=1", "hang:worker=1", "hang:worker=x,step=1",
    "hang:worker=-1,step=1", "slow:worker=1,step=1", "hang:worker=1,step=1,seconds=2",
    "raise:node-zero,step=1,batch=2", "nan:node-zero,step=1", "hang:worker=1,node-zero,step=1",
    "hang:worker=1,step=1,colour=red", "slow:worker=1,step=1,seconds=-2",
])
def test_parse_inject_rejects_bad_specs_showing_the_form(spec):
    with pytest.raises(InputError) as info:
        parse_inject(spec)
    assert SPEC_FORM in str(info.value) and spec in str(info.value)


def test_fault_plan_fires_at_the_right_progress_point_once():
    plan = FaultPlan(["raise:worker=1,step=2", "nan:worker=0,step=1,batch=8",
                      "nan:worker=3,step=0"])
    assert not plan.fire("worker", 1, 1, 1, 0, first=True)  # wrong step
    assert not plan.fire("worker", 0, 1, 0, 0, first=True)  # batch 0 is not batch 8
    assert plan.fire("worker", 0, 1, 8, 0, first=False)  # batch=8: poison
    assert not plan.fire("worker", 0, 1, 8, 0, first=False)  # fires once
    with pytest.raises(InjectedFault):
        plan.fire("worker", 1, 2, None, 0, first=True)  # Point A without a batch
    assert not plan.fire("worker", 3, 0, None, 0, first=True)  # nan needs a gradient
    assert [str(f) for f in plan.unfired()] == ["nan:target=worker=3,step=0"]
    with pytest.raises(InputError, match="only 2 workers"):
        plan.check_threads(2)


# -- watchdog unit (synthetic clock) -------------------------------------------------------------

def test_watchdog_tells_slow_from_stuck_by_the_counter():
    board = HeartbeatBoard()
    slow, stuck = board.add("worker", 0, "ks-worker-0"), board.add("worker", 1, "ks-worker-1")
    slow.set(Phase.COMPUTING, step=0, batch=0)
    stuck.set(Phase.COMPUTING, step=0, batch=1)
    errors = []
    dog = Watchdog(board, [], {0: "ks-worker-0", 1: "ks-worker-1"}, stall_timeout=5.0,
                   in_flight_since=lambda: None, on_stall=errors.append)
    t0 = time.monotonic()
    for k in range(1, 5):  # 4 s: nobody is stuck yet
        board.ticks[0] += 1
        assert dog.check(t0 + k) is None
    board.ticks[0] += 1
    error = dog.check(t0 + 6.0)
    assert isinstance(error, StallError)
    names = [s["name"] for s in error.diagnosis["stuck"]]
    assert names == ["ks-worker-1"]  # the slow one advanced, so it is not named
    assert "ks-worker-1" in str(error) and "COMPUTING" in str(error) and "batch 1" in str(error)
    assert "MainThread" in error.diagnosis["stacks"]


def test_watchdog_blames_the_missing_party_of_the_oldest_barrier(no_thread_leak):
    board = HeartbeatBoard()
    hb = [board.add("worker", i, f"ks-worker-{i}") for i in range(2)]
    for h in hb:
        h.set(Phase.WAITING_A, step=0)
    barrier = Barrier(3, "point-A", timeout=None)
    waiters = [threading.Thread(target=_wait_quietly, args=(barrier, i)) for i in range(2)]
    for t in waiters:
        t.start()
    deadline = time.monotonic() + 10  # poll with a deadline: never an unbounded wait
    while barrier.n_waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert barrier.n_waiting == 2
    dog = Watchdog(board, [barrier], {0: "ks-worker-0", 1: "ks-worker-1", 2: "ks-node-zero"},
                   stall_timeout=1.0, in_flight_since=lambda: 0.0, on_stall=lambda e: None)
    now = time.monotonic()
    assert dog.check(now) is None
    error = dog.check(now + 1.5)
    barrier.abort("test over")
    for t in waiters:
        t.join(5)
    assert isinstance(error, StallError) and "ks-node-zero" in str(error)
    assert error.diagnosis["missing_at_barrier"] == [
        {"barrier": "point-A", "party": 2, "name": "ks-node-zero"}]


def _wait_quietly(barrier: Barrier, party: int) -> None:
    try:
        barrier.wait(party)
    except threading.BrokenBarrierError:
        pass


def test_watchdog_ignores_idle_threads_between_steps():
    board = HeartbeatBoard()
    board.add("worker", 0, "ks-worker-0").set(Phase.IDLE)
    dog = Watchdog(board, [], {}, stall_timeout=1.0, in_flight_since=lambda: None,
                   on_stall=lambda e: None)
    assert dog.check(time.monotonic() + 100) is None


# -- in-process drills --------------------------------------------------------------------------

@pytest.mark.parametrize("inject, step, culprit", [
    ("hang:target=worker=1,step=0", 0, "ks-worker-1"),
    ("hang:target=worker=2,step=1,batch=6", 1, "ks-worker-2"),
    ("hang:target=node-zero,step=0", 0, "ks-node-zero"),
    ("hang:target=node-zero,step=2", 2, "ks-node-zero"),
])
def test_hang_is_a_stall_naming_the_thread(groups, inject, step, culprit, no_thread_leak):
    error, seconds, unchanged, tr, retry = _drill(groups, inject, step)
    assert isinstance(error, StallError), error
    assert culprit in str(error)
    stuck = error.diagnosis["stuck"]
    assert [s["name"] for s in stuck] == [culprit] and stuck[0]["step"] == step
    assert culprit in error.diagnosis["stacks"] and "fire" in error.diagnosis["stacks"][culprit]
    assert STALL <= seconds <= STALL + SLACK
    assert unchanged
    assert tr.unjoined == []
    assert retry is error


@pytest.mark.parametrize("inject, step, culprit, batch", [
    ("raise:target=worker=2,step=0", 0, "ks-worker-2", 2),
    ("raise:target=worker=3,step=1,batch=7", 1, "ks-worker-3", 7),
    ("raise:target=node-zero,step=0", 0, "ks-node-zero", None),
    ("raise:target=node-zero,step=2", 2, "ks-node-zero", None),
])
def test_raise_is_a_fault_naming_thread_step_and_batch(groups, inject, step, culprit, batch,
                                                       no_thread_leak):
    error, seconds, unchanged, tr, retry = _drill(groups, inject, step)
    assert isinstance(error, ThreadFault) and isinstance(error, FaultError), error
    assert error.exit_code == 4
    assert (error.thread, error.step, error.batch) == (culprit, step, batch)
    assert isinstance(error.cause, InjectedFault)
    assert culprit in str(error) and f"step {step}" in str(error)
    assert seconds < SLACK
    assert unchanged
    assert retry is error  # a failed trainer keeps saying so


@pytest.mark.parametrize("inject, step, batch, thread", [
    ("nan:target=worker=0,step=0", 0, 0, "ks-worker-0"),
    ("nan:target=worker=1,step=2,batch=5", 2, 5, "ks-worker-1"),
])
def test_nan_stops_the_step_naming_parameter_batch_and_thread(groups, inject, step, batch,
                                                              thread, no_thread_leak):
    error, seconds, unchanged, tr, retry = _drill(groups, inject, step)
    assert isinstance(error, NonFiniteGradientError), error
    assert (error.parameter, error.batch, error.step, error.thread) == ("wte", batch, step,
                                                                        thread)
    assert unchanged
    assert seconds < SLACK


def test_nan_leaves_the_trainer_usable_and_the_retry_matches_a_clean_run(groups,
                                                                         no_thread_leak):
    g = groups.group(0)
    with FastTrainer(CFG, THREADS, faults=["nan:worker=2,step=0"]) as tr:
        with pytest.raises(NonFiniteGradientError):
            tr.step(g.tokens, g.targets)
        retried = tr.step(g.tokens, g.targets)  # the fault fired once; now clean
        got = tr.state().params
    with FastTrainer(CFG, THREADS) as clean:
        expected = clean.step(g.tokens, g.targets)
        want = clean.state().params
    assert retried.loss == expected.loss
    assert all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("inject", ["slow:target=worker=1,step=1,seconds=1.6",
                                    "slow:target=node-zero,step=1,seconds=1.6"])
def test_slow_longer_than_the_stall_timeout_completes_with_the_same_bits(groups, inject,
                                                                          no_thread_leak):
    results = []
    for faults in ([inject], None):
        with FastTrainer(CFG, THREADS, stall_timeout=STALL, faults=faults) as tr:
            start = time.monotonic()
            for s in range(2):
                tr.step(groups.group(s).tokens, groups.group(s).targets)
            seconds = time.monotonic() - start
            results.append((tr.state().params, tr.unfired_faults(), seconds))
    (slow_params, unfired, seconds), (clean_params, _, _) = results
    assert unfired == [] and seconds >= 1.6  # it really was slow
    assert all(np.array_equal(slow_params[k], clean_params[k]) for k in clean_params)


def test_unfired_faults_are_reported(groups, no_thread_leak):
    faults = ["raise:worker=1,step=99", "nan:worker=9,step=0", "hang:worker=0,step=0,batch=3"]
    with FastTrainer(CFG, 10, faults=faults) as tr:  # G=8: workers 8, 9 idle; batch 3 is w3's
        tr.step(groups.group(0).tokens, groups.group(0).targets)
        assert sorted(str(f) for f in tr.unfired_faults()) == sorted(
            str(parse_inject(f)) for f in faults)


def test_idle_time_between_steps_is_not_a_stall(groups, no_thread_leak):
    with FastTrainer(CFG, 2, stall_timeout=0.3) as tr:
        tr.step(groups.group(0).tokens, groups.group(0).targets)
        time.sleep(1.0)  # the caller thinks for a while; the threads are legitimately idle
        tr.step(groups.group(1).tokens, groups.group(1).targets)
        assert tr.diagnosis is None


def test_thread_stuck_in_compiled_code_is_named_and_joined_once_it_returns(
        groups, monkeypatch, no_thread_leak):
    """A batch that blocks without ticking (like a nogil loop gone wrong) is a stall; close()
    still joins the thread once the call returns."""
    import fast.workers

    real = fast.workers.batch_forward_backward

    def stuck_on_batch_3(model, params, segment, tokens, targets, ws, ticks, slot, **kw):
        if slot == 3:
            time.sleep(2.0)  # no ticks, GIL released: indistinguishable from a hang
        return real(model, params, segment, tokens, targets, ws, ticks, slot, **kw)

    monkeypatch.setattr(fast.workers, "batch_forward_backward", stuck_on_batch_3)
    g = groups.group(0)
    tr = FastTrainer(CFG, THREADS, stall_timeout=0.5)
    try:
        with pytest.raises(StallError, match="ks-worker-3 \\(worker 3, COMPUTING"):
            tr.step(g.tokens, g.targets)
    finally:
        tr.close()
    assert tr.unjoined == []


# -- deliberately broken variants ---------------------------------------------------------------

class _OneTooManyAtPointA(FastTrainer):
    """The seed's bug: Point A counts one participant more than the threads that wait."""

    def _new_barrier(self, name, parties, ticks):
        extra = 1 if name == "point-A" else 0
        return Barrier(parties + extra, name, timeout=self.barrier_timeout, ticks=ticks)


def test_barrier_with_one_party_too_many_is_a_stall_not_a_hang(groups, no_thread_leak):
    g = groups.group(0)
    with _OneTooManyAtPointA(CFG, 3, stall_timeout=STALL) as tr:
        start = time.monotonic()
        with pytest.raises(StallError) as info:
            tr.step(g.tokens, g.targets)
        assert time.monotonic() - start <= STALL + SLACK
    message = str(info.value)
    assert "point-A" in message and "no such thread" in message
    assert info.value.diagnosis["missing_at_barrier"][0]["party"] == 4


def test_worker_that_skips_point_a_is_caught(groups, monkeypatch, no_thread_leak):
    original = Worker.point_a

    def skipping(self, job):
        if self.index != 1:
            original(self, job)

    monkeypatch.setattr(Worker, "point_a", skipping)
    g = groups.group(0)
    with FastTrainer(CFG, 3, stall_timeout=STALL) as tr:
        start = time.monotonic()
        with pytest.raises(StallError) as info:
            tr.step(g.tokens, g.targets)
        assert time.monotonic() - start <= STALL + SLACK
    missing = info.value.diagnosis["missing_at_barrier"]
    assert missing[0]["barrier"] == "point-A" and [m["name"] for m in missing] == ["ks-worker-1"]


def test_barrier_timeout_alone_bounds_a_stall_when_no_watchdog_fires(groups, monkeypatch,
                                                                      no_thread_leak):
    """Backstop: with the watchdog disabled, the barriers' idle timeout still ends the run."""
    monkeypatch.setattr(Watchdog, "check", lambda self, now: None)
    g = groups.group(0)
    with _OneTooManyAtPointA(CFG, 2, stall_timeout=STALL, barrier_timeout=0.5) as tr:
        start = time.monotonic()
        with pytest.raises(StallError, match="point-A"):
            tr.step(g.tokens, g.targets)
        assert time.monotonic() - start <= 0.5 + SLACK


def test_fault_for_a_missing_worker_is_reported_unfired(groups, no_thread_leak):
    with FastTrainer(CFG, 2, faults=["raise:worker=5,step=0"]) as tr:
        tr.step(groups.group(0).tokens, groups.group(0).targets)
        assert [str(f) for f in tr.unfired_faults()] == ["raise:target=worker=5,step=0"]
