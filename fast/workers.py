"""The worker thread loop: batches with position tickets, then a share of reduction and update.

Worker i runs batches i, i+T, i+2T, ... of each group (fast.spheres.worker_batches), in that
order. Batch b takes a gradient buffer (fast/grad_pool.py, granted in batch order; the first
batch of a position computes into its zeroed segment instead), computes its gradient into it
without waiting for any other batch, then waits for its position's ticket (the position's
previous batch has folded) and folds the buffer into position b % 12's segment: no lock on
gradient memory, and the segment's bits depend only on batch indices. Its activations live in
a Workspace taken from the trainer's WorkspacePool after the buffer grant and given back when
the compute is done, so with T=63 on 2 cores only 2 workspaces exist (fast/workspace_pool.py).
Like ThreadPoolExecutor's workers: any BaseException is caught, recorded with thread, step and
batch, and turned into broken barriers so nobody waits forever; a closed JobBoard is the
shutdown sentinel.
"""

from __future__ import annotations

import numpy as np

from fast.evaluate import batch_forward_loss
from fast.grad_pool import fold_into
from fast.heartbeat import Heartbeat, Phase
from fast.model import batch_forward_backward, n_marks
from fast.node_zero import Shared, StepJob
from fast.record import (
    BATCH,
    FOLD,
    FOLDING,
    GRANT,
    REDUCE,
    TICKET,
    UPDATE,
    WORKSPACE,
    wait_kind,
)
from fast.reduction import chunk_sq_norm, first_nonfinite, reduce_chunk, zero_segment
from fast.spheres import POSITIONS, position_of, worker_batches, worker_position
from fast.update import apply_chunk
from fast.workspace_pool import WorkspacePool


class Worker:
    """One `ks-worker-<i>` thread."""

    def __init__(self, index: int, shared: Shared, heartbeat: Heartbeat,
                 workspaces: WorkspacePool) -> None:
        self.index = index
        self.shared = shared
        self.hb = heartbeat
        self.log = shared.record.register(f"ks-worker-{index}", "worker", index,
                                          worker_position(index))
        self._step = -1  # the job being run (its generation: the record's step key)
        self.workspaces = workspaces

    def run(self) -> None:
        self.hb.start()
        self.shared.record.attach(self.log)
        seen = 0
        try:
            while True:
                self.hb.set(Phase.IDLE)
                job = self.shared.board.wait_next(seen, self.shared.abort)
                if job is None:
                    break
                seen = job.generation
                self.run_step(job)
        except BaseException as exc:
            self.shared.fail_from(self.hb, exc)
        finally:
            self.hb.set(Phase.STOPPED)

    def run_step(self, job: StepJob) -> None:
        # held-out evaluations are not training steps: the run record leaves them out (-1)
        self._step = -1 if job.eval_only else job.generation
        if job.eval_only:
            self.run_eval(job)
            return
        self.compute_batches(job)
        self.point_a(job)
        if job.reduce:
            self.reduce(job)
        self.wait(self.shared.barriers.reduced, Phase.WAITING_REDUCED)
        self.wait(self.shared.barriers.decided, Phase.WAITING_DECISION)
        if job.apply:
            self.update(job)
        self.wait(self.shared.barriers.point_b, Phase.WAITING_B)

    def compute_batches(self, job: StepJob) -> None:
        s, hb = self.shared, self.hb
        batches = worker_batches(self.index, job.n_batches, s.n_workers)
        if job.only is not None:  # an MPI rank: round robin over its positions' batches only
            batches = job.only[self.index::s.n_workers]
        if not batches:  # no batch this step: the fault point is Point A (SPEC 5)
            s.faults.fire("worker", self.index, job.step, None, hb.slot, first=True)
            return
        for k, b in enumerate(batches):
            self.run_batch(job, k, b)

    def run_eval(self, job: StepJob) -> None:
        """Held-out loss: this worker's batches forward only, each into its own slot."""
        s, hb = self.shared, self.hb
        B = s.config.train.batch_size
        for b in worker_batches(self.index, job.n_batches, s.n_workers):
            hb.set(Phase.COMPUTING, step=job.step, batch=b)
            workspace = self.workspaces.acquire(b)
            try:
                loss, n = batch_forward_loss(s.model, s.params, job.tokens[b * B:(b + 1) * B],
                                             job.targets[b * B:(b + 1) * B], workspace,
                                             s.heartbeats.ticks, hb.slot)
            finally:
                self.workspaces.release(workspace)
            job.batch_loss[b] = loss
            job.batch_n[b] = n
            job.batch_worker[b] = self.index
        self.point_a(job)
        self.wait(s.barriers.point_b, Phase.WAITING_B)

    def run_batch(self, job: StepJob, k: int, b: int) -> None:
        """Batch b (the k-th of this thread's share): compute into a buffer of its own, then
        fold into position b % 12 when the position's ticket says it is b's turn.

        Compute never waits for another batch: only the buffer grant (lower batches first; a
        holder never waits for a grant) and the fold (one P-length add) are ordered. The first
        batch of a position computes straight into its zeroed segment. Recorded in the log of
        the thread that RUNS it (`record.here()`), whoever that is.
        """
        s, hb = self.shared, self.hb
        if not 0 <= b < job.n_batches:  # a broken plan fails loudly, before any wait
            raise IndexError(f"batch {b} is outside the group of {job.n_batches} batches")
        rec = s.record
        log = rec.here()
        p = position_of(b)
        segment = s.segments.segment(p)
        direct = b in job.first_batches  # the position's first batch: into its zeroed segment
        buffer = None
        if not direct:
            hb.set(Phase.WAITING_TICKET, step=job.step, batch=b)
            t0 = rec.now()
            buffer = s.grads.acquire(b)  # before the workspace: workspace holders never wait
            log.span(GRANT, job.generation, t0, rec.now(), b)
        try:
            target = segment if buffer is None else buffer
            self.compute(job, k, b, target, direct)
            t2 = rec.now()
            hb.set(Phase.WAITING_TICKET, batch=b)
            s.tickets.wait_turn(b)
            t3 = rec.now()
            log.span(TICKET, job.generation, t2, t3, b)
            if buffer is not None:
                bad = fold_into(segment, buffer)  # also zeroes the buffer for its next batch
            else:
                bad = first_nonfinite(segment, 0, segment.shape[0])
        finally:
            if buffer is not None:
                s.grads.release(buffer)
        if job.bad_batch[p] < 0 and bad >= 0:
            job.bad_batch[p] = b  # the first batch after which this position went bad
        hb.batches += 1
        order = rec.next_fold(p)  # still holding p's ticket
        log.fold(job.generation, b, p, order)
        if rec.digests is not None:  # --locate: this fold's partial sum (reads, never writes)
            rec.digests.note((job.generation, FOLD, b), segment, where=(p, order))
        log.span(FOLDING, job.generation, t3, rec.now(), b)
        s.tickets.advance(b)

    def compute(self, job: StepJob, k: int, b: int, target: np.ndarray, direct: bool) -> bool:
        """Forward + backward of batch b into `target` (+=, from zero) in a pooled workspace;
        True when a fault drill poisons it (the poison is written into `target`)."""
        s, hb = self.shared, self.hb
        B = s.config.train.batch_size
        log, rec = self.shared.record.here(), self.shared.record
        t0 = rec.now()
        workspace = self.workspaces.acquire(b)  # the lowest waiting batch first
        t1 = rec.now()
        log.span(WORKSPACE, job.generation, t0, t1, b)
        hb.set(Phase.COMPUTING, step=job.step, batch=b)
        try:
            poison = s.faults.fire("worker", self.index, job.step, b, hb.slot, first=k == 0)
            if direct:  # the position's first batch of this step starts from zero
                zero_segment(target)
            tokens, targets = job.tokens[b * B:(b + 1) * B], job.targets[b * B:(b + 1) * B]
            marks = np.zeros(n_marks(s.model, tokens.shape[0]), np.int64)  # forward/backward
            t_call = rec.now()
            kernel = s.kernel if s.kernel is not None else batch_forward_backward
            loss, n = kernel(s.model, s.params, target, tokens, targets, workspace,
                             s.heartbeats.ticks, hb.slot, marks=marks)
        finally:
            self.workspaces.release(workspace)
        t2 = rec.now()
        log.span(BATCH, job.generation, t1, t2, b)  # computing: holds a workspace (a core)
        log.micro_spans(job.generation, b, marks, t_call, t2)
        if poison:
            target[0] = np.nan  # fault drill: this batch's gradient is poisoned
        job.batch_loss[b] = loss
        job.batch_n[b] = n
        job.batch_worker[b] = self.index
        return poison

    def point_a(self, job: StepJob) -> None:
        """Every batch of the group is done (T workers + Node Zero meet here)."""
        self.wait(self.shared.barriers.point_a, Phase.WAITING_A)

    def my_chunks(self) -> list[tuple[int, int]]:
        """Chunks c = i, i+T, ... of the fixed chunk list (which thread does one never matters)."""
        return self.shared.chunks[self.index::self.shared.n_workers]

    def reduce(self, job: StepJob) -> None:
        s = self.shared
        self.hb.set(Phase.REDUCING)
        t0 = s.record.now()
        used = min(job.n_batches, POSITIONS)  # positions without a batch hold stale data
        n_targets = int(job.batch_n.sum())
        for c in range(self.index, len(s.chunks), s.n_workers):
            lo, hi = s.chunks[c]
            reduce_chunk(s.segments.data, used, s.total, lo, hi, n_targets)
            s.chunk_norms[c] = chunk_sq_norm(s.total, lo, hi)
            self.hb.tick()
        self.log.span(REDUCE, job.generation, t0, s.record.now())

    def update(self, job: StepJob) -> None:
        s = self.shared
        self.hb.set(Phase.UPDATING)
        t0 = s.record.now()
        for lo, hi in self.my_chunks():
            apply_chunk(s.params, s.total, s.adam_m, s.adam_v, s.decay, lo, hi, job.scalars,
                        s.config.train)
            self.hb.tick()
        self.log.span(UPDATE, job.generation, t0, s.record.now())

    def wait(self, barrier, phase: Phase) -> None:
        self.hb.set(phase)
        rec = self.shared.record
        t0 = rec.now()
        barrier.wait(self.index)
        if self._step >= 0:
            self.log.span(wait_kind(barrier.name), self._step, t0, rec.now())
