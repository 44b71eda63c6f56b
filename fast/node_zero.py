"""Node Zero: the control thread. It hands out groups, checks, decides, and never computes a batch.

Step protocol (DESIGN.md "Threads"); every arrow is a barrier of T workers + Node Zero:
    Node Zero posts the group on the JobBoard -> workers compute their batches into gradient
    buffers and fold them into the position segments (position tickets order the folds only)
    -> Point A -> workers sum the 12 position segments by chunks, with chunk norms
    -> `reduced` -> Node Zero: loss, global norm, finiteness, clip scale, learning rate
    -> `decided` -> workers apply AdamW by chunks (only if Node Zero said so)
    -> Point B: the new weights are visible; the caller gets the result.
Nothing touches the weights before `decided`, and Node Zero only lets the update start when
every check passed, so a failed step leaves the weights exactly as they were (SPEC 5).
This module also holds what Node Zero and the workers share: `Shared`, `StepJob`, `JobBoard`.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fast.barrier import Barrier, BarrierBroken
from fast.faults import FaultAborted, FaultPlan, InjectedFault, ThreadFault
from fast.grad_pool import GradPool, split_first
from fast.heartbeat import Heartbeat, HeartbeatBoard, Phase
from fast.model import FastModel
from fast.record import DECIDE, DISPATCH, STEP, SUM, UPDATE_CHUNK, Recorder, wait_kind
from fast.reduction import (
    PositionSegments,
    PositionTickets,
    TicketsAborted,
    first_nonfinite,
    sum_chunk_norms,
)
from fast.spheres import POSITIONS
from fast.update import StepScalars, step_scalars
from fast.workspace_pool import WorkspacePool
from plumbing.errors import NonFiniteGradientError, StallError
from reference.config import Config

log = logging.getLogger("fast.node_zero")

IDLE_POLL_SECONDS = 0.25  # idle threads re-check the abort flag this often


@dataclass
class StepJob:
    """One group handed from the caller to Node Zero to the workers, and what came back."""

    step: int  # optimiser updates applied before this group (fault drills count these)
    tokens: np.ndarray  # (g*B, S') int64, S' <= S
    targets: np.ndarray  # (g*B, S') int64
    n_batches: int  # g
    apply_update: bool  # False for group_grads: gradient only
    eval_only: bool = False  # held-out loss: forward only, no gradient, no update
    only: tuple[int, ...] | None = None  # batches this process computes (MPI rank); None: all
    reduce: bool = True  # False: compute the position segments only (an MPI rank's half step)
    generation: int = 0  # set by JobBoard.post
    first_batches: frozenset = frozenset()  # each position's first batch here (Node Zero sets)
    continued: frozenset = frozenset()  # positions whose segment holds an upstream partial
    # (an MPI chain link, R > 12): every batch of theirs folds onto it, none computes into it
    batch_loss: np.ndarray = field(default=None)  # (g,) float64 loss SUM per batch
    batch_n: np.ndarray = field(default=None)  # (g,) int64 non-pad targets per batch
    batch_worker: np.ndarray = field(default=None)  # (g,) int64 worker that ran the batch
    bad_batch: list = field(default=None)  # per position: first batch that made it non-finite
    apply: bool = False  # Node Zero's decision: run the update
    scalars: StepScalars | None = None
    loss: float = math.nan
    n_targets: int = 0
    norm: float = math.nan
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        g = self.n_batches
        self.batch_loss = np.zeros(g, dtype=np.float64)
        self.batch_n = np.zeros(g, dtype=np.int64)
        self.batch_worker = np.full(g, -1, dtype=np.int64)
        self.bad_batch = [-1] * POSITIONS


class JobBoard:
    """Where Node Zero posts the current group; idle workers sleep here between steps.

    A generation counter (not a barrier) releases the workers, so they may stay idle for as
    long as the caller likes between steps without any timeout firing; `close()` is the
    shutdown sentinel.
    """

    def __init__(self) -> None:
        # guards _job, _generation and _closed; idle workers sleep on it between steps
        self._cond = threading.Condition(threading.Lock())
        self._job: StepJob | None = None
        self._generation = 0
        self._closed = False

    @property
    def generation(self) -> int:
        """Jobs posted so far (only Node Zero posts, so it may read this without the lock)."""
        return self._generation

    def post(self, job: StepJob) -> None:
        with self._cond:
            self._generation += 1
            job.generation = self._generation
            self._job = job
            self._cond.notify_all()

    def wait_next(self, seen: int, abort: threading.Event) -> StepJob | None:
        """The job after generation `seen`; None when closed or aborted (time to exit)."""
        with self._cond:
            while self._generation == seen and not self._closed and not abort.is_set():
                self._cond.wait(IDLE_POLL_SECONDS)
            if self._closed or abort.is_set():
                return None
            return self._job

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class Barriers:
    """The four meeting points of a step, each with T workers + Node Zero as parties."""

    point_a: Barrier
    reduced: Barrier
    decided: Barrier
    point_b: Barrier

    def all(self) -> list[Barrier]:
        return [self.point_a, self.reduced, self.decided, self.point_b]


@dataclass
class Shared:
    """Everything Node Zero and the workers share; gradient memory is written lock-free."""

    config: Config
    model: FastModel
    n_workers: int
    params: np.ndarray  # (P,) engine dtype; read-only while batches run
    adam_m: np.ndarray  # (P,)
    adam_v: np.ndarray  # (P,)
    decay: np.ndarray  # (P,) uint8: weight decay applies
    segments: PositionSegments  # (12, P) one gradient vector per symmetry position
    total: np.ndarray  # (P,) the group's mean gradient after the reduction
    chunks: list[tuple[int, int]]  # fixed parameter chunks for reduction and update
    chunk_norms: np.ndarray  # (n_chunks,) float64 squared norm per chunk
    tickets: PositionTickets
    barriers: Barriers
    board: JobBoard
    heartbeats: HeartbeatBoard
    faults: FaultPlan
    grads: GradPool | None = None  # gradient buffers of batches in flight (batch-order grants)
    workspaces: WorkspacePool | None = None  # activation workspaces, lowest batches first
    kernel: Callable | None = None  # None: fast.model.batch_forward_backward (simulator: stand-in)
    record: Recorder = field(default_factory=Recorder)  # what every thread did (SPEC 11)
    abort: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def node_zero_party(self) -> int:
        return self.n_workers

    def fail(self, error: BaseException) -> None:
        """Record the FIRST error and stop everything: barriers, tickets, idle threads."""
        with self._lock:
            if self.error is not None:
                return
            self.error = error
        reason = f"{type(error).__name__}: {error}"
        self.abort.set()
        for barrier in self.barriers.all():
            barrier.abort(reason)
        self.tickets.abort(reason)
        self.board.close()

    def fail_from(self, heartbeat: Heartbeat, exc: BaseException) -> None:
        """A thread caught `exc`: turn it into the run's error unless it is an abort echo."""
        if self.abort.is_set() or isinstance(exc, FaultAborted):
            return  # a consequence of the first error, which is already recorded
        if isinstance(exc, BarrierBroken | TicketsAborted):
            # no abort yet, so a wait timed out without progress: a stall the watchdog missed
            error: BaseException = StallError(
                f"{heartbeat.name} ({heartbeat.phase.name}, step {heartbeat.step}): {exc}",
                {"threads": self.heartbeats.snapshot(),
                 "barriers": [b.describe() for b in self.barriers.all()]})
        else:
            error = ThreadFault(heartbeat.name, heartbeat.step, heartbeat.batch, exc)
            error.__cause__ = exc
            # a drill's InjectedFault is expected; a real bug gets its traceback in the log
            log.error("%s", error, exc_info=None if isinstance(exc, InjectedFault) else exc)
        self.fail(error)


class NodeZero:
    """The `ks-node-zero` thread: takes jobs from the caller's inbox, one step at a time."""

    def __init__(self, shared: Shared, heartbeat: Heartbeat) -> None:
        self.shared = shared
        self.hb = heartbeat
        self.inbox: queue.Queue[StepJob | None] = queue.Queue()
        self.log = shared.record.register("ks-node-zero", "node-zero")

    def run(self) -> None:
        self.hb.start()
        self.shared.record.attach(self.log)
        try:
            while True:
                self.hb.set(Phase.IDLE)
                job = self._next_job()
                if job is None:
                    break
                self.run_step(job)
        finally:
            self.hb.set(Phase.STOPPED)

    def _next_job(self) -> StepJob | None:
        while not self.shared.abort.is_set():
            try:
                return self.inbox.get(timeout=IDLE_POLL_SECONDS)
            except queue.Empty:
                continue
        return None

    def run_step(self, job: StepJob) -> None:
        """Drive one step; the job always ends `done`, with `error` set if it failed."""
        s, party = self.shared, self.shared.node_zero_party
        if job.eval_only:
            self.run_eval(job)
            return
        rec, log = s.record, self.log
        try:
            self.hb.set(Phase.DISPATCHING, step=job.step)
            t_step = rec.now()
            s.faults.fire("node-zero", None, job.step, None, self.hb.slot, first=True)
            self.prepare(job)
            rec.new_step(s.board.generation + 1)  # the key the job is about to get
            s.board.post(job)
            key = job.generation  # the record's step key: one per group handed out
            log.span(DISPATCH, key, t_step, rec.now(), job.n_batches)  # batch field: g
            self.hb.set(Phase.WAITING_A)
            self._wait(s.barriers.point_a, party, key)
            self.hb.set(Phase.WAITING_REDUCED)  # the workers reduce; Node Zero waits
            self._wait(s.barriers.reduced, party, key)
            if rec.digests is not None and job.reduce:  # --locate: the summed gradient
                rec.digests.note_chunks(key, SUM, s.total, s.chunks)
            self.hb.set(Phase.DECIDING)
            t0 = rec.now()
            if job.reduce:
                self.decide(job)
            log.span(DECIDE, key, t0, rec.now())
            self.hb.set(Phase.WAITING_DECISION)
            self._wait(s.barriers.decided, party, key)
            self.hb.set(Phase.WAITING_B)  # the workers update; Node Zero waits
            self._wait(s.barriers.point_b, party, key)
            if rec.digests is not None and job.apply:  # --locate: the updated weights
                rec.digests.note_chunks(key, UPDATE_CHUNK, s.params, s.chunks)
            log.span(STEP, key, t_step, rec.now())
        except BaseException as exc:
            s.fail_from(self.hb, exc)
            job.error = s.error
        finally:
            job.done.set()

    def prepare(self, job: StepJob) -> None:
        """Before the workers see the group: which batches fold in which order, which need a
        gradient buffer (granted in batch order), which compute into their zeroed segment."""
        s = self.shared
        batches = range(job.n_batches) if job.only is None else job.only
        first, rest = split_first(batches, job.continued)
        job.first_batches = frozenset(first)
        s.tickets.reset(batches)
        if s.grads is not None:
            s.grads.begin(rest)
        if s.workspaces is not None:
            s.workspaces.begin(batches)

    def run_eval(self, job: StepJob) -> None:
        """A held-out evaluation: post, Point A, the loss in batch order, Point B. No faults
        fire here (drills count training steps) and nothing touches gradients or weights."""
        s, party = self.shared, self.shared.node_zero_party
        try:
            self.hb.set(Phase.DISPATCHING, step=job.step)
            if s.workspaces is not None:
                s.workspaces.begin(range(job.n_batches))
            s.board.post(job)
            self.hb.set(Phase.WAITING_A)
            s.barriers.point_a.wait(party)
            self.hb.set(Phase.DECIDING)
            loss_sum = 0.0
            for value in job.batch_loss.tolist():  # batch-index order, whatever T
                loss_sum += value
            job.n_targets = int(job.batch_n.sum())
            job.loss = loss_sum / job.n_targets if job.n_targets else math.nan
            self.hb.set(Phase.WAITING_B)
            s.barriers.point_b.wait(party)
        except BaseException as exc:
            s.fail_from(self.hb, exc)
            job.error = s.error
        finally:
            job.done.set()

    def _wait(self, barrier: Barrier, party: int, key: int) -> None:
        t0 = self.shared.record.now()
        barrier.wait(party)
        self.log.span(wait_kind(barrier.name), key, t0, self.shared.record.now())

    def decide(self, job: StepJob) -> None:
        """Loss, global norm and finiteness; the update runs only if every check passed."""
        s = self.shared
        loss_sum = 0.0
        for value in job.batch_loss.tolist():  # batch-index order, whatever T
            loss_sum += value
        job.n_targets = int(job.batch_n.sum())
        job.loss = loss_sum / job.n_targets
        job.norm = math.sqrt(sum_chunk_norms(s.chunk_norms))
        if not math.isfinite(job.norm):
            job.error = self._nonfinite(job)
            return
        if job.apply_update:
            job.scalars = step_scalars(job.step, job.norm, s.config.train)
            job.apply = True

    def _nonfinite(self, job: StepJob) -> NonFiniteGradientError:
        """Name the first non-finite parameter (registry order) and the batch that caused it."""
        s = self.shared
        parameter = "(unknown)"
        for lo, hi in s.chunks:
            index = first_nonfinite(s.total, lo, hi)
            if index >= 0:
                parameter = next(name for name, (a, b) in s.model.offsets.items()
                                 if a <= index < b)
                break
        bad = [b for b in job.bad_batch if b >= 0]
        batch = min(bad) if bad else None
        thread = (f"ks-worker-{int(job.batch_worker[batch])}" if batch is not None else None)
        return NonFiniteGradientError(parameter, batch=batch, step=job.step, thread=thread)
