"""SPEC section 8: every failure of the original C system, as a test our system must pass.

One test per failure, named after it, its docstring quoting the failure. Where practical a test
also builds a deliberately broken variant of our system (the original's bug put back with
monkeypatch or a small subclass) and shows that the SAME check catches it: a check that cannot
fail proves nothing, which was the seed report's problem.

Measurements come from instrumentation, not from the code's own plan: `ComputeRecorder` wraps
the batch computation the workers call (`fast.workers.batch_forward_backward`) and records, per
call, the thread that ran it, the batch, the position segment it wrote, the workspace it used
and when it started and ended.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support import digest, rel

import fast.trainer
import fast.workers
from fast import kernels as K
from fast.barrier import Barrier
from fast.model import FastModel, Workspace, batch_forward_backward
from fast.node_zero import JobBoard
from fast.reduction import PositionTickets
from fast.spheres import POSITIONS, worker_batches
from fast.trainer import FastTrainer
from fast.watchdog import Watchdog
from harness.cli import main
from harness.run.checkpoint import latest_checkpoint, load_checkpoint
from harness.run.corpus import load_corpus
from plumbing.errors import DataError, FaultError, InputError, StallError
from reference.batches import BatchGroups, Group, _windows
from reference.config import preset
from reference.engine import ReferenceEngine
from reference.model import batch_loss_and_grads
from reference.params import init_params

CFG = preset("tiny")  # V=64 S=16 d=32 L=2 H=4 f=128, B=4, G=8
V, S = CFG.model.vocab_size, CFG.model.seq_len
B, G = CFG.train.batch_size, CFG.train.group_size
STALL = 1.0  # seconds: the stall timeout of the watchdog drills
SLACK = 10.0  # SPEC 5: a stall ends the run within the stall timeout plus a few seconds
REPO = Path(__file__).resolve().parents[1]

# the real functions, captured before any test patches them, so wrappers never nest
_REAL_COMPUTE = fast.workers.batch_forward_backward
_REAL_REDUCE = fast.workers.reduce_chunk
_REAL_FOLD = fast.workers.fold_into


# -- data helpers --------------------------------------------------------------------------------

def _stream(n_tokens: int, seed: int = 0) -> np.ndarray:
    """Random ids in 1..V-1: no <pad> inside the data, so every target position is a real one."""
    return np.random.default_rng(seed).integers(1, V, n_tokens)


def _groups(cfg, full_batches: int, tail_targets: int = 0, seed: int = 0) -> BatchGroups:
    """`full_batches` full batches, then a padded batch holding `tail_targets` real targets."""
    b, s = cfg.train.batch_size, cfg.model.seq_len
    n = full_batches * b * s + tail_targets + 1
    return BatchGroups(_stream(n, seed), b, s, cfg.train.group_size)


def _definition(params: dict, tokens: np.ndarray, targets: np.ndarray
                ) -> tuple[float, int, dict[str, np.ndarray]]:
    """SPEC 2 spelled out: loss SUMS of every batch (reference model), divided once by the
    group's non-pad target count. Returns (loss sum, count, mean gradient)."""
    loss_sum, count, grad_sum = 0.0, 0, None
    for start in range(0, len(tokens), B):
        loss, n, grads = batch_loss_and_grads(params, CFG.model, tokens[start:start + B],
                                              targets[start:start + B])
        loss_sum += loss
        count += n
        grad_sum = grads if grad_sum is None else {k: grad_sum[k] + grads[k] for k in grads}
    return loss_sum, count, {k: v / count for k, v in grad_sum.items()}


# -- instrumentation -----------------------------------------------------------------------------

@dataclass
class Call:
    """One batch computation as the instrumentation saw it."""

    thread: threading.Thread  # the object, not the ident: idents are reused, objects are not
    batch: int
    position: int  # which of the 12 position segments it wrote (-1: its own gradient buffer)
    workspace: Workspace  # kept alive here, so no two workspaces ever share an id()
    start: float
    end: float


class ComputeRecorder:
    """Wraps the workers' batch computation and (optionally) the reduction, recording each call.

    `delay` maps a batch index to seconds slept INSIDE its write window (to force overlaps);
    `lock` wraps every call in one lock (the original's model-wide lock).
    """

    def __init__(self, monkeypatch, *, delay: dict[int, float] | None = None,
                 lock: threading.Lock | None = None, reductions: bool = False) -> None:
        self.trainer: FastTrainer | None = None
        self.calls: list[Call] = []
        self.reduce_starts: list[float] = []
        self.delay = dict(delay or {})
        self.lock = lock
        self.active = 0
        self.max_active = 0
        self._count_lock = threading.Lock()  # guards the counters only, never the compute
        self.writes: list[Call] = []  # every write into a position segment: computes, folds
        self._buffer_batch: dict[int, int] = {}  # id(buffer) -> the batch computing into it
        monkeypatch.setattr(fast.workers, "batch_forward_backward", self._compute)
        monkeypatch.setattr(fast.workers, "fold_into", self._fold)
        if reductions:
            monkeypatch.setattr(fast.workers, "reduce_chunk", self._reduce)

    def _compute(self, model, params, segment, tokens, targets, workspace, ticks, slot,
                 **kw):
        if self.lock is not None:
            with self.lock:
                return self._measured(model, params, segment, tokens, targets, workspace,
                                      ticks, slot, **kw)
        return self._measured(model, params, segment, tokens, targets, workspace, ticks, slot,
                              **kw)

    def _measured(self, model, params, segment, tokens, targets, workspace, ticks, slot,
                  **kw):
        shared = self.trainer.shared
        batch = shared.heartbeats.records[slot].batch  # set by the worker just before the call
        base = shared.segments.data.__array_interface__["data"][0]
        offset = segment.__array_interface__["data"][0] - base
        inside = 0 <= offset < shared.segments.data.nbytes
        position = offset // segment.nbytes if inside else -1
        if not inside:
            self._buffer_batch[id(segment)] = batch
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        start = time.perf_counter()
        try:
            if batch in self.delay:
                time.sleep(self.delay[batch])
            return _REAL_COMPUTE(model, params, segment, tokens, targets, workspace, ticks,
                                 slot, **kw)
        finally:
            end = time.perf_counter()
            with self._count_lock:
                self.active -= 1
            call = Call(threading.current_thread(), batch, int(position), workspace, start, end)
            self.calls.append(call)
            if position >= 0:
                self.writes.append(call)

    def _fold(self, segment, buffer):
        shared = self.trainer.shared
        base = shared.segments.data.__array_interface__["data"][0]
        position = (segment.__array_interface__["data"][0] - base) // segment.nbytes
        batch = self._buffer_batch[id(buffer)]
        start = time.perf_counter()
        try:
            return _REAL_FOLD(segment, buffer)
        finally:
            self.writes.append(Call(threading.current_thread(), batch, int(position), None,
                                    start, time.perf_counter()))

    def _reduce(self, segments, n_positions, total, lo, hi, n_targets):
        self.reduce_starts.append(time.perf_counter())
        return _REAL_REDUCE(segments, n_positions, total, lo, hi, n_targets)


class _OnePartyTooMany(FastTrainer):
    """The seed's barrier bug: one barrier counts one participant more than the threads."""

    broken_barrier = "point-A"

    def _new_barrier(self, name, parties, ticks):
        extra = 1 if name == self.broken_barrier else 0
        return Barrier(parties + extra, name, timeout=self.barrier_timeout, ticks=ticks)


# -- 8.1 ------------------------------------------------------------------------------------------

def assert_epoch_ends(groups, stream: np.ndarray, b: int, s: int, g: int) -> None:
    """An epoch of `groups` is exactly ceil(ceil((N-1)/(B*S))/G) groups, holds every target of
    the stream once in order, and then STOPS (read with a bound, so a runaway cannot hang)."""
    n = len(stream)
    want_batches = -(-(n - 1) // (b * s))  # counted here, not taken from the code under test
    want_groups = -(-want_batches // g)
    it = iter(groups)
    got = list(itertools.islice(it, want_groups))
    extra = list(itertools.islice(it, 3))
    assert not extra, f"the iterator went on past the end: {len(extra)}+ extra groups"
    assert len(got) == want_groups, f"{len(got)} groups, expected {want_groups}"
    sizes = [grp.n_batches for grp in got]
    assert sizes == [g] * (want_groups - 1) + [want_batches - g * (want_groups - 1)], sizes
    targets = np.concatenate([grp.targets.ravel() for grp in got])
    assert np.array_equal(targets[:n - 1], stream[1:]) and not targets[n - 1:].any()


class _CountsPastTheEnd(BatchGroups):
    """The original's iterator: it counted groups on past the end of the data."""

    def __iter__(self):
        for i in itertools.count():
            tokens, targets = _windows(self.stream, i * self.G, self.G, self.B, self.S)
            yield Group(i, i * self.G, tokens, targets, self.G)


def test_08_1_batch_iterator_stops_at_the_end_of_the_data():
    """SPEC 8.1: "The batch iterator never stopped (groups counted past the end of the data)."

    Several stream lengths give exactly the right groups, then StopIteration; an iterator
    that counts on past the end is caught by the same audit.
    """
    for n_batches_wanted, tail in ((0, 5), (8, 0), (8, 1), (18, 37)):
        stream = _stream(n_batches_wanted * B * S + tail + 1, seed=n_batches_wanted)
        assert_epoch_ends(BatchGroups(stream, B, S, G), stream, B, S, G)
    stream = _stream(19 * B * S + 1)
    groups = BatchGroups(stream, B, S, G)
    it = iter(groups)
    assert len(list(it)) == 3
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(AssertionError, match="past the end"):
        assert_epoch_ends(_CountsPastTheEnd(stream, B, S, G), stream, B, S, G)


# -- 8.2 ------------------------------------------------------------------------------------------

def assert_private_workspaces(calls: list[Call]) -> None:
    """No byte of workspace memory is used by two batch computations at the same time.

    (Workers take workspaces from a pool of min(T, cores), so one workspace serves several
    threads one after another; what the original got wrong was sharing one AT ONCE.)
    """
    assert calls, "no batch was computed"
    spans = [(c.workspace.buffer.ctypes.data,
              c.workspace.buffer.ctypes.data + c.workspace.buffer.nbytes, c) for c in calls]
    for (lo_a, hi_a, a), (lo_b, hi_b, b) in itertools.combinations(spans, 2):
        same_memory = lo_a < hi_b and lo_b < hi_a
        same_time = a.start < b.end and b.start < a.end
        assert not (same_memory and same_time), (
            f"batches {a.batch} ({a.thread.name}) and {b.batch} ({b.thread.name}) used the same "
            "workspace memory at once")


def test_08_2_workers_own_their_activation_buffers(monkeypatch, no_thread_leak):
    """SPEC 8.2: "Worker threads shared activation buffers: NaN gradients."

    Four workers over three calls: every workspace is used by one thread only and the
    gradient is SPEC 2's mean; one Workspace shared by all workers is caught.
    """
    groups = _groups(CFG, 2 * G)
    g0, g1 = groups.group(0), groups.group(1)
    # 4 workspaces for 4 workers whatever the core count, and batches 0 and 1 held open, so
    # two computations are surely in flight together (the broken variant below must overlap)
    monkeypatch.setattr(fast.trainer, "pool_size", lambda threads, cores=None: threads)
    rec = ComputeRecorder(monkeypatch, delay={0: 0.3, 1: 0.3})
    with FastTrainer(CFG, 4, dtype=np.float64) as tr:
        rec.trainer = tr
        first = tr.group_grads(g0.tokens, g0.targets)
        tr.step(g0.tokens, g0.targets)
        tr.group_grads(g1.tokens, g1.targets)
    assert_private_workspaces(rec.calls)
    assert len({c.thread.name for c in rec.calls}) == 4  # four threads really ran batches
    _, n, want = _definition(init_params(CFG.model, CFG.train.seed), g0.tokens, g0.targets)
    assert first.n_targets == n
    for name, value in want.items():
        assert np.all(np.isfinite(first.grads[name])), name
        assert rel(first.grads[name], value) <= 1e-10, name

    # broken: every worker gets the same Workspace (patched after warm-up, so only the
    # trainer's model is affected). The race usually corrupts the numbers (NaN on `small`), but
    # that depends on timing; the ownership check catches the sharing every time
    one: dict[int, Workspace] = {}

    def one_shared_workspace(model: FastModel) -> Workspace:
        return one.setdefault(id(model), Workspace(model))

    rec = ComputeRecorder(monkeypatch, delay={0: 0.3, 1: 0.3})
    with FastTrainer(CFG, 4, dtype=np.float64) as tr:
        rec.trainer = tr
        monkeypatch.setattr(FastModel, "new_workspace", one_shared_workspace)
        try:
            tr.group_grads(g0.tokens, g0.targets)
        except FaultError:
            pass  # a NaN from the race (the original's symptom) is fine here
    with pytest.raises(AssertionError, match="at once"):
        assert_private_workspaces(rec.calls)


# -- 8.3 ------------------------------------------------------------------------------------------

def max_concurrent_batches(monkeypatch, lock: threading.Lock | None = None) -> int:
    """Most batch computations ever in flight at once: `small` preset, 2 workers, 8 batches."""
    cfg = preset("small", group_size=8)
    g = _groups(cfg, 8).group(0)
    rec = ComputeRecorder(monkeypatch, lock=lock)
    # one workspace per worker even on a 1-core machine (the pool caps batches in flight at
    # the core count on purpose; this check is about locks, not cores)
    monkeypatch.setattr(fast.trainer, "pool_size", lambda threads, cores=None: threads)
    with FastTrainer(cfg, 2) as tr:
        rec.trainer = tr
        tr.group_grads(g.tokens, g.targets)
    assert len(rec.calls) == 8
    return rec.max_active


def test_08_3_no_model_wide_lock_serialises_the_workers(monkeypatch, no_thread_leak):
    """SPEC 8.3: "A model-wide lock serialised all workers: 63 threads, one core busy."

    Two workers on `small` have two batches in flight at once; with one lock around every
    batch the same count drops to 1.
    """
    # the whole batch runs in one compiled function that releases the GIL
    assert K.model_forward_backward.targetoptions["nogil"] is True
    assert max_concurrent_batches(monkeypatch) >= 2
    # broken: one global lock around every batch, as in the original
    assert max_concurrent_batches(monkeypatch, lock=threading.Lock()) == 1


# -- 8.4 ------------------------------------------------------------------------------------------

def assert_barriers_count_their_waiters(tr: FastTrainer) -> None:
    """Every barrier has exactly the threads that wait at it: T workers + Node Zero."""
    counts = {b.name: b.parties for b in tr.shared.barriers.all()}
    assert counts == dict.fromkeys(counts, tr.threads + 1), \
        f"barrier parties {counts}, but {tr.threads} workers + Node Zero wait at each"


def test_08_4_barrier_participants_match_the_threads_that_wait(no_thread_leak):
    """SPEC 8.4: "Barrier participant counts did not match the threads that waited; one thread
    never arrived."

    Every barrier counts T workers + Node Zero and completes one round per step; a barrier
    with one party too many fails the count check and, at run time, is a StallError naming
    the party that does not exist (the Point A case is in test_watchdog_faults.py).
    """
    g = _groups(CFG, G).group(0)
    with FastTrainer(CFG, 3, stall_timeout=STALL) as tr:
        assert_barriers_count_their_waiters(tr)
        tr.step(g.tokens, g.targets)
        assert [b.describe()["generation"] for b in tr.shared.barriers.all()] == [1] * 4

    class OneTooManyAtReduced(_OnePartyTooMany):
        broken_barrier = "reduced"

    with OneTooManyAtReduced(CFG, 3, stall_timeout=STALL) as tr:
        with pytest.raises(AssertionError, match="barrier parties"):
            assert_barriers_count_their_waiters(tr)
        start = time.monotonic()
        with pytest.raises(StallError) as info:  # and at run time: a diagnosis, not a hang
            tr.step(g.tokens, g.targets)
        assert time.monotonic() - start <= STALL + SLACK
    assert "no such thread" in str(info.value)
    missing = info.value.diagnosis["missing_at_barrier"]
    assert [(m["barrier"], m["party"]) for m in missing] == [("reduced", 4)]


# -- 8.5 ------------------------------------------------------------------------------------------

def run_epochs(tr: FastTrainer, rec: ComputeRecorder, groups: BatchGroups, epochs: int) -> None:
    """Train `epochs` epochs; in every epoch every worker must have computed batches."""
    everyone = {f"ks-worker-{i}" for i in range(tr.threads)}
    for epoch in range(epochs):
        first = len(rec.calls)
        for g in groups:
            tr.step(g.tokens, g.targets)
        worked = {c.thread.name for c in rec.calls[first:]}
        assert worked == everyone, f"epoch {epoch}: only {sorted(worked)} computed"


def test_08_5_second_epoch_runs_on_every_worker_and_shutdown_joins_all(monkeypatch,
                                                                       no_thread_leak):
    """SPEC 8.5: "Shutdown joined a thread still blocked at a barrier; the second epoch waited
    alone at Point A."

    Here the second half: every worker computes in epoch 2 and close() joins everyone without
    an abort; workers that shut down with the first epoch leave Node Zero alone at Point A,
    which is a StallError naming them, not a hang.
    """
    groups = _groups(CFG, G + 2, 9)  # 2 groups per epoch: 8 batches, then 3 (the last padded)
    rec = ComputeRecorder(monkeypatch)
    tr = FastTrainer(CFG, 3, stall_timeout=STALL)
    rec.trainer = tr
    threads = [t for t in threading.enumerate() if t.name.startswith("ks-")]
    try:
        run_epochs(tr, rec, groups, 2)
    finally:
        start = time.monotonic()
        tr.close()
        seconds = time.monotonic() - start
    assert seconds < fast.trainer.JOIN_SECONDS  # nobody had to be aborted to be joined
    assert tr.unjoined == [] and not any(t.is_alive() for t in threads)
    assert len(threads) == 3 + 2  # workers, Node Zero, watchdog

    # broken: the workers shut down at the end of the first epoch (the original's lifecycle);
    # epoch 2's Node Zero then waits alone at Point A: a named stall, not a hang
    real_wait = JobBoard.wait_next

    def workers_stop_after_one_epoch(board, seen, abort):
        return None if seen >= len(groups) else real_wait(board, seen, abort)

    monkeypatch.setattr(JobBoard, "wait_next", workers_stop_after_one_epoch)
    rec = ComputeRecorder(monkeypatch)
    with FastTrainer(CFG, 3, stall_timeout=STALL) as tr:
        rec.trainer = tr
        start = time.monotonic()
        with pytest.raises(StallError) as info:
            run_epochs(tr, rec, groups, 2)
        assert time.monotonic() - start <= STALL + SLACK
    assert tr.unjoined == []
    missing = info.value.diagnosis["missing_at_barrier"]
    assert {(m["barrier"], m["name"]) for m in missing} == {
        ("point-A", f"ks-worker-{i}") for i in range(3)}


def close_while_blocked(monkeypatch, *, close_cannot_abort: bool = False):
    """A step whose Point A can never complete; close() is called while every thread is
    blocked there. Returns (trainer, seconds close() took, what the step raised)."""
    monkeypatch.setattr(fast.trainer, "JOIN_SECONDS", 0.5)
    g = _groups(CFG, G).group(0)
    tr = _OnePartyTooMany(CFG, 2, stall_timeout=60.0)  # the watchdog stays out of this
    outcome: list[BaseException] = []

    def run_step() -> None:
        try:
            tr.step(g.tokens, g.targets)
        except BaseException as exc:  # recorded for the assertions
            outcome.append(exc)

    stepper = threading.Thread(target=run_step, name="test-stepper")
    stepper.start()
    deadline = time.monotonic() + 20
    while tr.shared.barriers.point_a.n_waiting < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tr.shared.barriers.point_a.n_waiting == 3  # 2 workers + Node Zero, blocked
    if close_cannot_abort:  # broken: close() can only join, like the original's shutdown
        monkeypatch.setattr(tr.shared, "fail", lambda error: None)
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tr.close()
    seconds = time.monotonic() - start
    if close_cannot_abort:  # release the threads the broken close() left behind
        tr.shared.abort.set()
        for barrier in tr.shared.barriers.all():
            barrier.abort("test cleanup")
    stepper.join(10)
    return tr, seconds, outcome


def assert_closed_cleanly(tr: FastTrainer, seconds: float) -> None:
    assert tr.unjoined == [], f"close() left threads running: {tr.unjoined}"
    assert seconds < 3 * fast.trainer.JOIN_SECONDS + 1.0


def test_08_5_shutdown_joins_threads_blocked_at_a_barrier(monkeypatch, no_thread_leak):
    """SPEC 8.5: "Shutdown joined a thread still blocked at a barrier; the second epoch waited
    alone at Point A."

    Here the first half: close() while every thread is blocked at Point A joins them all
    and tells the step in flight; a close() that can only join leaves them running.
    """
    tr, seconds, outcome = close_while_blocked(monkeypatch)
    assert_closed_cleanly(tr, seconds)
    assert len(outcome) == 1 and "closed" in str(outcome[0])  # the step in flight was told
    tr, seconds, _ = close_while_blocked(monkeypatch, close_cannot_abort=True)
    with pytest.raises(AssertionError, match="left threads running"):
        assert_closed_cleanly(tr, seconds)


# -- 8.6 ------------------------------------------------------------------------------------------

def assert_segment_writes_in_turn(calls: list[Call], n_batches: int) -> None:
    """Each batch wrote its own position's segment once; within a position the writes never
    overlapped in time and came in batch-index order (b before b + 12)."""
    assert sorted(c.batch for c in calls) == list(range(n_batches))
    for c in calls:
        assert c.position == c.batch % POSITIONS, f"batch {c.batch} wrote segment {c.position}"
    for p in range(POSITIONS):
        writes = sorted((c for c in calls if c.position == p), key=lambda c: c.start)
        order = [c.batch for c in writes]
        assert order == sorted(order), f"position {p} folded batches in order {order}"
        for a, b in itertools.pairwise(writes):
            assert a.end <= b.start, (f"batches {a.batch} and {b.batch} wrote position {p} "
                                      "at the same time")


def test_08_6_no_two_threads_accumulate_one_segment_at_once(monkeypatch, no_thread_leak):
    """SPEC 8.6: "Two threads accumulated the same gradients concurrently after Point B."

    Two steps of 26 batches on 5 workers: per position, writes never overlap and come in
    batch order, even with batch 0 held for 1 s; without tickets the overlap is caught.
    """
    cfg = CFG.replace(group_size=26)  # every position folds 2 or 3 batches
    g = _groups(cfg, 26).group(0)
    # batch 0 takes 1 s inside its write window (it computes straight into position 0's
    # segment): batches 12 and 24 (other workers, a workspace each) are folded long before it
    # ends, so only the tickets keep them out of position 0's segment
    monkeypatch.setattr(fast.trainer, "pool_size", lambda threads, cores=None: threads)
    delay = {0: 1.0}
    rec = ComputeRecorder(monkeypatch, delay=delay)
    with FastTrainer(cfg, 5) as tr:
        rec.trainer = tr
        tr.step(g.tokens, g.targets)
        tr.step(g.tokens, g.targets)  # the step after Point B: tickets reset, same rule
    assert_segment_writes_in_turn(rec.writes[:26], 26)
    assert_segment_writes_in_turn(rec.writes[26:], 26)

    # broken: no tickets
    monkeypatch.setattr(PositionTickets, "wait_turn", lambda self, batch: None)
    rec = ComputeRecorder(monkeypatch, delay=delay)
    with FastTrainer(cfg, 5) as tr:
        rec.trainer = tr
        tr.step(g.tokens, g.targets)
    with pytest.raises(AssertionError, match="position 0"):
        assert_segment_writes_in_turn(rec.writes, 26)


# -- 8.7 ------------------------------------------------------------------------------------------

def assert_short_group_is_the_token_weighted_mean(full: Group, short: Group) -> tuple:
    """After a full group has dirtied all 12 segments, a short padded group's loss and
    gradient are exactly SPEC 2's token-weighted mean over its own batches. Returns both
    groups' (loss, n_targets) from the trainer."""
    params = init_params(CFG.model, CFG.train.seed)
    loss_sum, n, grads = _definition(params, short.tokens, short.targets)
    with FastTrainer(CFG, 3, dtype=np.float64) as tr:
        r_full = tr.group_grads(full.tokens, full.targets)
        r = tr.group_grads(short.tokens, short.targets)
    assert r.n_targets == n == np.count_nonzero(short.targets), (r.n_targets, n)
    assert abs(r.loss - loss_sum / n) <= 1e-12 * loss_sum / n, (r.loss, loss_sum / n)
    for name, value in grads.items():
        assert rel(r.grads[name], value) <= 1e-10, f"{name} is not the group's mean gradient"
    return (r_full.loss, r_full.n_targets), (r.loss, r.n_targets)


def test_08_7_short_last_group_and_epoch_loss_use_only_real_targets(monkeypatch,
                                                                     no_thread_leak):
    """SPEC 8.7: "Idle workers' stale gradients were averaged into a short last group; the
    epoch loss used the wrong denominator."

    A short padded group after a full one is SPEC 2's token-weighted mean (reference model,
    batch by batch); the epoch loss is the epoch's loss sum over its real targets. Summing
    stale segments, or counting <pad> targets, is caught.
    """
    groups = _groups(CFG, G + 2, 23)  # group 1: 3 batches, the last with 23 real targets
    full, short = groups.group(0), groups.group(1)
    assert short.n_batches == 3 and np.count_nonzero(short.targets[-B:]) == 23
    (loss0, n0), (loss1, n1) = assert_short_group_is_the_token_weighted_mean(full, short)
    # the epoch loss: every loss sum over every real target of the epoch
    params = init_params(CFG.model, CFG.train.seed)
    epoch_sum = sum(_definition(params, g.tokens, g.targets)[0] for g in groups)
    assert n0 + n1 == len(groups.stream) - 1
    epoch_loss = (loss0 * n0 + loss1 * n1) / (n0 + n1)
    assert abs(epoch_loss - epoch_sum / (n0 + n1)) <= 1e-12 * epoch_loss
    assert abs((loss0 + loss1) / 2 - epoch_loss) > 1e-6  # a mean of group means would be wrong

    # broken 1: the reduction sums all 12 segments, stale ones included
    def stale(segments, n_positions, total, lo, hi, n_targets):
        return _REAL_REDUCE(segments, POSITIONS, total, lo, hi, n_targets)

    monkeypatch.setattr(fast.workers, "reduce_chunk", stale)
    with pytest.raises(AssertionError, match="mean gradient"):
        assert_short_group_is_the_token_weighted_mean(full, short)

    # broken 2: the denominator counts <pad> targets too
    def pads_counted(segments, n_positions, total, lo, hi, n_targets):
        return _REAL_REDUCE(segments, n_positions, total, lo, hi, short.targets.size)

    monkeypatch.setattr(fast.workers, "reduce_chunk", pads_counted)
    with pytest.raises(AssertionError, match="mean gradient"):
        assert_short_group_is_the_token_weighted_mean(full, short)


# -- 8.8 ------------------------------------------------------------------------------------------

def assert_blind_past_the_end(compute) -> None:
    """`compute(tokens, targets) -> (loss, n, flat gradient)` must not depend on the memory
    after the batch: the batch is passed as the head of a larger array whose tail (the next
    rows in memory) holds one of two different poisons; T = S, T < S, T = 1 and a padded last
    row are covered. Both runs must agree bit for bit, and with the reference model."""
    rng = np.random.default_rng(8)
    model = FastModel(CFG.model, np.float64)
    params = init_params(CFG.model, 0)
    for cols in (S, 9, 1):
        tokens = rng.integers(1, V, (B, cols))
        targets = rng.integers(1, V, (B, cols))
        targets[-1, cols // 2:] = 0  # a padded last row
        results = []
        for _poison in range(2):
            big_tokens = rng.integers(1, V, (2 * B, cols))
            big_targets = rng.integers(1, V, (2 * B, cols))
            big_tokens[:B], big_targets[:B] = tokens, targets
            results.append(compute(big_tokens[:B], big_targets[:B]))
        (loss, n, grad), (loss2, n2, grad2) = results
        assert (loss, n) == (loss2, n2) and np.array_equal(grad, grad2), \
            f"T={cols}: the result depends on memory past the end of the batch"
        want_loss, want_n, want = batch_loss_and_grads(params, CFG.model, tokens, targets)
        assert n == want_n and abs(loss - want_loss) <= 1e-12 * want_loss
        assert rel(grad, model.flatten(want)) <= 1e-10


def _compute_with_poisoned_workspace(tokens, targets):
    """One batch through the fast engine (float64), with the workspace pre-filled with NaN:
    a read of scratch memory this batch did not write would show up as NaN."""
    model = FastModel(CFG.model, np.float64, micro_batch=3)  # 3 does not divide B=4: a partial
    workspace = model.new_workspace()  # last micro-batch, another end of a batch
    workspace.buffer[:] = np.nan
    grad = np.zeros(model.n_params)
    params = model.flatten(init_params(CFG.model, 0))
    loss, n = batch_forward_backward(model, params, grad, tokens, targets, workspace,
                                     np.zeros(1, np.int64), 0)
    assert np.isfinite(loss) and np.all(np.isfinite(grad)), "NaN from unwritten scratch memory"
    return loss, n, grad


_BOUNDSCHECK_SCRIPT = r"""
import json
import numba
import numpy as np
from fast import kernels as K
from fast.model import FastModel, batch_forward_backward
from fast.trainer import FastTrainer
from reference.batches import BatchGroups
from reference.config import preset
from reference.model import batch_loss_and_grads, group_loss_and_grads
from reference.params import init_params

out = {"boundscheck": numba.config.BOUNDSCHECK}
try:  # the checker is live in the project's own kernels, compiled fresh in this process
    K.embedding_forward(np.array([[1, 2, 3]]), np.zeros((8, 4)), np.zeros((2, 4)),
                        np.zeros((3, 4)))  # wpe has 2 rows, the batch 3 positions
    out["out_of_range_read_caught"] = False
except IndexError:
    out["out_of_range_read_caught"] = True
cfg = preset("tiny")
m, B, S = cfg.model, cfg.train.batch_size, cfg.model.seq_len
params = init_params(m, 0)
rng = np.random.default_rng(3)
errors = []
for T, micro in ((9, 1), (1, 3), (S, 3)):  # T < S, T = 1, a partial last micro-batch
    tokens = rng.integers(1, m.vocab_size, (B, T))
    targets = rng.integers(1, m.vocab_size, (B, T))
    targets[-1, T // 2:] = 0
    model = FastModel(m, np.float64, micro_batch=micro)
    grad = np.zeros(model.n_params)
    loss, n = batch_forward_backward(model, model.flatten(params), grad, tokens, targets,
                                     model.new_workspace(), np.zeros(1, np.int64), 0)
    rl, rn, rg = batch_loss_and_grads(params, m, tokens, targets)
    ref = model.flatten(rg)
    errors.append([abs(loss - rl) / rl, n - rn, float(np.abs(grad - ref).max())])
stream = rng.integers(1, m.vocab_size, 2 * B * S + 23)  # 3 batches, the last padded
g = BatchGroups(stream, B, S, cfg.train.group_size).group(0)
cols = 11  # T < S through the whole threaded system, reduction and update included
with FastTrainer(cfg, 2, dtype=np.float64, chunk_size=1000) as tr:
    r = tr.group_grads(g.tokens[:, :cols], g.targets[:, :cols])
    tr.step(g.tokens, g.targets)
rl, rn, rg = group_loss_and_grads(params, m, g.tokens[:, :cols], g.targets[:, :cols], B)
errors.append([abs(r.loss - rl) / rl, r.n_targets - rn,
               max(float(np.abs(r.grads[k] - v).max()) for k, v in rg.items())])
out["errors"] = errors
print(json.dumps(out))
"""


def test_08_8_kernels_never_read_past_the_end_of_a_batch(tmp_path):
    """SPEC 8.8: "Kernels read past the end of a batch."

    In process: results do not change with what lies after the batch in memory, and NaN
    scratch never leaks in; a kernel reading one row too many is caught. In a subprocess:
    every kernel recompiled with Numba bounds checking runs T < S, a padded last batch and a
    partial micro-batch without an IndexError (the checker is shown live first).
    """
    # 1. in process: results do not depend on the memory after the batch or on stale scratch
    assert_blind_past_the_end(_compute_with_poisoned_workspace)

    def reads_one_row_too_many(tokens, targets):  # broken: a kernel that runs one row long
        over = np.lib.stride_tricks.as_strided
        return _compute_with_poisoned_workspace(
            over(tokens, (B + 1, tokens.shape[1]), tokens.strides),
            over(targets, (B + 1, targets.shape[1]), targets.strides))

    with pytest.raises(AssertionError, match="past the end"):
        assert_blind_past_the_end(reads_one_row_too_many)

    # 2. every kernel recompiled with Numba's bounds checking (a fresh cache: the on-disk cache
    # does not key on boundscheck), run on T < S, a padded last batch and the threaded system
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    proc = subprocess.run([sys.executable, "-c", _BOUNDSCHECK_SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["boundscheck"] == 1 and out["out_of_range_read_caught"] is True, out
    for rel_loss, dn, grad_err in out["errors"]:
        assert rel_loss <= 1e-12 and dn == 0 and grad_err <= 1e-12, out["errors"]


# -- 8.9 ------------------------------------------------------------------------------------------

def assert_one_thread_system(calls: list[Call], threads: int) -> None:
    """Every batch of every epoch ran on the same `threads` worker thread objects."""
    computing = {c.thread for c in calls}
    assert len(computing) == threads, \
        f"{len(computing)} different thread objects computed batches; {threads} expected"


class _RebuiltEveryEpoch:
    """The original's lifecycle: a new thread system for every epoch, torn down after it."""

    def __init__(self, rec: ComputeRecorder, threads: int) -> None:
        self.rec, self.threads = rec, threads

    def epoch(self, groups: BatchGroups) -> None:
        with FastTrainer(CFG, self.threads) as tr:
            self.rec.trainer = tr
            for g in groups:
                tr.step(g.tokens, g.targets)


def test_08_9_threads_are_built_once_and_close_is_idempotent(monkeypatch, no_thread_leak):
    """SPEC 8.9: "The thread system was rebuilt every epoch; cleanup double-freed."

    Two epochs run on the thread objects built with the trainer; close() twice releases the
    BLAS limit once. A thread system rebuilt per epoch is caught by the thread-object count.
    """
    groups = _groups(CFG, G + 3, 5)
    blas_users = fast.trainer._blas_users
    rec = ComputeRecorder(monkeypatch)
    tr = FastTrainer(CFG, 3)
    rec.trainer = tr
    built = {t for t in threading.enumerate() if t.name.startswith("ks-")}
    for _epoch in range(2):
        for g in groups:
            tr.step(g.tokens, g.targets)
        assert {t for t in threading.enumerate() if t.name.startswith("ks-")} == built
    assert_one_thread_system(rec.calls, 3)
    assert {c.thread for c in rec.calls} <= built
    assert fast.trainer._blas_users == blas_users + 1
    tr.close()
    tr.close()  # harmless: nothing is released twice
    assert fast.trainer._blas_users == blas_users
    assert not any(t.is_alive() for t in built) and tr.unjoined == []
    with pytest.raises(InputError, match="closed"):
        tr.step(groups.group(0).tokens, groups.group(0).targets)

    rec = ComputeRecorder(monkeypatch)
    rebuilt = _RebuiltEveryEpoch(rec, 3)
    for _epoch in range(2):
        rebuilt.epoch(groups)
    with pytest.raises(AssertionError, match="6 different thread objects"):
        assert_one_thread_system(rec.calls, 3)


# -- 8.10 -----------------------------------------------------------------------------------------

def assert_valid_plan(plan, group: int, threads: int) -> None:
    """Each worker gets valid, increasing batch indices; together exactly 0..group-1."""
    seen: list[int] = []
    for w in range(threads):
        batches = list(plan(w, group, threads))
        assert all(0 <= b < group for b in batches), \
            f"worker {w} got batches {batches} outside 0..{group - 1}"
        assert batches == sorted(batches)
        seen += batches
    assert sorted(seen) == list(range(group)), f"batches handed out: {sorted(seen)}"


def _contiguous_plan(worker: int, group: int, threads: int) -> range:
    """Broken: the original's ranges, ceil(G/T) consecutive batches per worker."""
    per = -(-group // threads)
    return range(worker * per, (worker + 1) * per)


def test_08_10_more_threads_than_batches_is_valid_and_bitwise_equal(monkeypatch,
                                                                    no_thread_leak):
    """SPEC 8.10: "More threads than batches produced invalid batch ranges."

    The plan is valid for T > G; T=63 with G=5 (and a short padded group of 2) gives the
    T=1 bits. The original's ceil(G/T) ranges are caught, and would fail the run loudly.
    """
    for group, threads in ((5, 63), (1, 63), (2, 3), (12, 5), (63, 63), (64, 63)):
        assert_valid_plan(worker_batches, group, threads)
    cfg = CFG.replace(group_size=5)
    groups = _groups(cfg, 5 + 1, 17)  # a full group of 5, then 2 batches, the last padded
    assert [grp.n_batches for grp in groups] == [5, 2]
    runs = {}
    for threads in (1, 63):
        with FastTrainer(cfg, threads) as tr:
            results = [tr.step(grp.tokens, grp.targets) for grp in groups]
            runs[threads] = ([(r.loss, r.grad_norm) for r in results], digest(tr.state().params))
            if threads == 63:
                assert [r.stats["batch_worker"] for r in results] == [[0, 1, 2, 3, 4], [0, 1]]
    assert runs[63] == runs[1]

    with pytest.raises(AssertionError, match="outside"):
        assert_valid_plan(_contiguous_plan, 5, 63)
    # the system fails loudly (not silently, not a hang) if such a plan ever reached it
    monkeypatch.setattr(fast.workers, "worker_batches", _contiguous_plan)
    g = groups.group(0)
    with FastTrainer(cfg, 63) as tr, pytest.raises(FaultError, match=r"ks-worker-.*IndexError"):
        tr.step(g.tokens, g.targets)


# -- 8.11 -----------------------------------------------------------------------------------------

def assert_every_worker_computed_once(calls: list[Call], batch_worker: list[int],
                                      threads: int) -> None:
    """G = T: every worker ran exactly one batch, by the threads' own records."""
    ran = sorted(c.thread.name for c in calls)
    assert ran == sorted(f"ks-worker-{i}" for i in range(threads)), \
        f"{len(set(ran))} of {threads} workers computed"
    assert sorted(batch_worker) == list(range(threads))


def _by_symmetry_group(worker: int, group: int, threads: int) -> list[int]:
    """Broken: batches handed to one worker per symmetry group (positions 0-2, 3-5, ...)."""
    return [b for b in range(group) if (b % POSITIONS) // 3 == worker]


def test_08_11_every_one_of_63_workers_gets_work(monkeypatch, no_thread_leak):
    """SPEC 8.11: "Only 1 or 4 of 63 workers ever got work, through how symmetry groups were
    assigned."

    G = T = 63: each of the 63 threads recorded exactly one batch; handing batches out by
    symmetry group (4 workers busy) is caught.
    """
    cfg = CFG.replace(group_size=63)
    g = _groups(cfg, 63).group(0)
    rec = ComputeRecorder(monkeypatch)
    with FastTrainer(cfg, 63) as tr:
        rec.trainer = tr
        result = tr.step(g.tokens, g.targets)
        per_thread = [w["batches"] for w in tr.stats()["workers"]]
    assert_every_worker_computed_once(rec.calls, result.stats["batch_worker"], 63)
    assert per_thread == [1] * 63

    monkeypatch.setattr(fast.workers, "worker_batches", _by_symmetry_group)
    rec = ComputeRecorder(monkeypatch)
    with FastTrainer(cfg, 63) as tr:
        rec.trainer = tr
        result = tr.step(g.tokens, g.targets)
    with pytest.raises(AssertionError, match="4 of 63 workers computed"):
        assert_every_worker_computed_once(rec.calls, result.stats["batch_worker"], 63)


# -- 8.12 -----------------------------------------------------------------------------------------

class _FloorBatches(BatchGroups):
    """Broken: floor((N-1)/(B*S)) batches, so a corpus smaller than one batch has none."""

    def __init__(self, stream, b, s, g) -> None:
        super().__init__(stream, b, s, g)
        self.n_batches = (len(self.stream) - 1) // (self.B * self.S)


def test_08_12_dataset_smaller_than_one_batch_still_trains_one_padded_batch(
        tmp_path, capsys, no_thread_leak):
    """SPEC 8.12: "A dataset smaller than one batch gave zero batches and silent "training"."

    `spheres train` on a 5-token file trains one padded batch (one real update, the
    reference's loss); floor division of the batch count is caught; no data is exit 2.
    """
    text = tmp_path / "tiny.txt"
    text.write_text("The cat sat.")  # the, cat, sat, . and <eos>: 5 tokens, 4 targets
    summary = tmp_path / "summary.json"
    code = main(["train", "--data", str(text), "--preset", "tiny", "--threads", "2",
                 "--json", str(summary), "--checkpoint-dir", str(tmp_path / "ckpt")])
    capsys.readouterr()
    assert code == 0
    done = json.loads(summary.read_text())
    assert (done["steps"], done["tokens"], done["epochs_completed"]) == (1, 4, 1)
    corpus = load_corpus(CFG, text)
    assert corpus.stream.size == 5
    assert_epoch_ends(corpus.groups(CFG), corpus.stream, B, S, G)  # one padded batch
    group = corpus.groups(CFG).group(0)
    want = ReferenceEngine(CFG).group_grads(group.tokens, group.targets)
    assert abs(done["final_loss"] - want.loss) <= 1e-5 * want.loss
    trained = load_checkpoint(latest_checkpoint(tmp_path / "ckpt")).state
    initial = init_params(CFG.model, CFG.train.seed)
    assert trained.step == 1
    assert not np.array_equal(trained.params["wte"], initial["wte"])  # a real update happened

    with pytest.raises(AssertionError, match="0 groups"):  # broken: zero batches
        stream = corpus.stream
        assert_epoch_ends(_FloorBatches(stream, B, S, G), stream, B, S, G)

    # fewer than 2 tokens: a DataError (exit 2), never zero batches
    for n in (0, 1):
        with pytest.raises(DataError, match="at least 2"):
            BatchGroups(_stream(n), B, S, G)
    assert DataError.exit_code == 2
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\t\n")  # the smallest corpus a file can give: nothing
    code = main(["train", "--data", str(blank), "--preset", "tiny", "--threads", "2"])
    assert code == 2 and "empty" in capsys.readouterr().err


# -- 8.13 -----------------------------------------------------------------------------------------

def slow_run_params(faults, seconds: float) -> dict[str, np.ndarray]:
    """Two steps with `faults`; a `seconds`-long slow fault must complete with no stall."""
    groups = _groups(CFG, 2 * G)
    with FastTrainer(CFG, 3, stall_timeout=STALL, faults=faults) as tr:
        start = time.monotonic()
        for g in groups:
            tr.step(g.tokens, g.targets)
        assert time.monotonic() - start >= seconds and tr.unfired_faults() == []
        assert tr.diagnosis is None
        return tr.state().params


def _step_timer_check(self, now):
    """Broken watchdog: any step longer than the stall timeout is a "hang"."""
    since = self.in_flight_since()
    if since is not None and now - since >= self.stall_timeout:
        return StallError(f"step in flight for more than {self.stall_timeout:g} s", {})
    return None


def test_08_13_slow_work_completes_and_real_hangs_are_caught(monkeypatch, no_thread_leak):
    """SPEC 8.13: "Long slow work was reported as a hang, and real hangs went undetected."

    Work twice the stall timeout long completes with the clean run's bits; a hang is named
    within the stall timeout + 10 s; a watchdog that only times steps is caught.
    """
    slow = ["slow:target=worker=1,step=1,seconds=2"]  # twice the stall timeout
    clean = slow_run_params(None, 0.0)
    slowed = slow_run_params(slow, 2.0)
    assert all(np.array_equal(slowed[k], clean[k]) for k in clean)

    g = _groups(CFG, G).group(0)
    with FastTrainer(CFG, 3, stall_timeout=STALL, faults=["hang:worker=2,step=0"]) as tr:
        start = time.monotonic()
        with pytest.raises(StallError) as info:
            tr.step(g.tokens, g.targets)
        seconds = time.monotonic() - start
    assert STALL <= seconds <= STALL + SLACK
    assert [s["name"] for s in info.value.diagnosis["stuck"]] == ["ks-worker-2"]

    monkeypatch.setattr(Watchdog, "check", _step_timer_check)
    with pytest.raises(StallError, match="in flight for more than"):
        slow_run_params(slow, 2.0)


# -- 8.14 -----------------------------------------------------------------------------------------

def late_worker_run(monkeypatch, trainer_cls=FastTrainer, faults=None):
    """Two steps on 3 workers; per step (last batch write end, first reduction start), and the
    final parameters' digest."""
    cfg = CFG
    groups = _groups(cfg, 2 * G)
    rec = ComputeRecorder(monkeypatch, reductions=True)
    windows = []
    with trainer_cls(cfg, 3, faults=faults, chunk_size=4096) as tr:
        rec.trainer = tr
        for g in groups:
            calls, reduces = len(rec.calls), len(rec.reduce_starts)
            tr.step(g.tokens, g.targets)
            windows.append((max(c.end for c in rec.calls[calls:]),
                            min(rec.reduce_starts[reduces:])))
        return windows, digest(tr.state().params)


def assert_late_worker_harmless(windows, digest: str, clean_digest: str) -> None:
    for step, (last_write, first_read) in enumerate(windows):
        assert last_write <= first_read, \
            f"step {step}: the reduction started {last_write - first_read:.3f} s before the " \
            "last batch finished writing"
    assert digest == clean_digest, "a late worker changed the parameters"


class _PassThrough(Barrier):
    def wait(self, party=None, timeout=None) -> int:
        return 0


class _NoPointA(FastTrainer):
    """Broken: Point A lets everyone through; nobody waits for the last batch."""

    def _new_barrier(self, name, parties, ticks):
        if name == "point-A":
            return _PassThrough(parties, name)
        return super()._new_barrier(name, parties, ticks)


def test_08_14_late_workers_never_race_the_optimiser_update(monkeypatch, no_thread_leak):
    """SPEC 8.14: "Workers finishing late raced with the optimiser update."

    The last batch made 0.5 s late: no reduction starts before it is written, and the
    weights are the clean run's bits; without Point A the race is caught.
    """
    late = ["slow:target=worker=1,step=1,batch=7,seconds=0.5"]  # the last batch of step 1
    _, clean = late_worker_run(monkeypatch)
    windows, digest = late_worker_run(monkeypatch, faults=late)
    assert_late_worker_harmless(windows, digest, clean)
    windows, digest = late_worker_run(monkeypatch, _NoPointA, faults=late)
    with pytest.raises(AssertionError, match="before the last batch finished"):
        assert_late_worker_harmless(windows, digest, clean)
    assert digest != clean  # and the race really changed the weights
