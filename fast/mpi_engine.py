"""The fast engine across MPI ranks: spheres of the tree are the unit of distribution (SPEC 10).

One step, every rank with its own FastTrainer (its own Node Zero, T workers and watchdog):
  1. rank 0 broadcasts a header and scatters to each rank the rows of its batches (only rank 0
     reads data);
  2. each rank computes its batches (fast.mpi_topology): whole positions when R <= 12, blocks
     of level-2 spheres when R > 12. A position served by several ranks is a chain: a rank
     receives the position's partial from the previous one, continues the fold in place with
     its own batches, and passes it on, so the fold is the single process's, batch by batch.
     The receive is posted before the job and completed by the main thread while the rank's
     batches compute: only the first fold onto the partial waits for it (a held ticket);
  3. a status gather: rank 0 learns of any rank's fault or stall and ends the job; it then
     broadcasts the target count;
  4. reduce-scatter, no root gather: rank r owns the parameter slice [rP/R, (r+1)P/R) and
     receives that slice of every finished position (Ialltoallv), sums them in position order
     0..11 in float64 (fast.reduction.reduce_chunk: the single process's elementwise code);
  5. chunk norms in index order, a chunk cut by a slice boundary continued from the previous
     rank's partial (one float64), gathered to rank 0 and added in chunk order: the clip and
     finite decision, broadcast as the step's scalars;
  6. each rank applies AdamW to its slice with its own moments (ZeRO-1: the optimizer state
     is sharded), then an Iallgatherv gives every rank the new weights.
So the weights after any number of steps are bitwise those of the single-process engine for
every R and T. Rank 0 gathers the moments only when asked for the state (checkpoints). Rank 0
is `MpiEngine` (the Engine protocol, so the ordinary training loop drives it); the others run
`follow()`, which obeys rank 0's headers until told to stop.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field

import numba
import numpy as np

from fast import reduction
from fast.faults import FaultPlan, parse_inject
from fast.mpi_comm import Channel, CommTimeout
from fast.mpi_poll import POLL_MAX_SECONDS
from fast.mpi_topology import batches_of, holders, rank_of_batch, slice_bounds
from fast.node_zero import StepJob
from fast.record import BATCH
from fast.spheres import POSITIONS
from fast.trainer import FastTrainer
from fast.update import StepScalars, apply_chunk, step_scalars
from plumbing.errors import (
    FaultError,
    InputError,
    NonFiniteGradientError,
    SpheresError,
    StallError,
)
from reference.config import Config
from reference.engine import StepResult, TrainState

CMD_STOP, CMD_STEP, CMD_GRADS, CMD_LOAD, CMD_STATE = 0, 1, 2, 3, 4
HEADER_LEN = 5  # command, step, rows, cols, slowest rank's milliseconds per batch (0: unknown)
GRACE_SECONDS = 10.0  # deadline slack over the stall timeout: MPI start-up, page faults, load
JOIN_POLL_SECONDS = 0.1  # once its links are in, a chain rank checks its job this often
IDLE_SECONDS = 600.0  # a follower waits this long for rank 0's next command (data loading,
#                       checkpoint writing) before it declares rank 0 gone


def step_deadline(stall_timeout: float, compute_seconds: float) -> float:
    """How long a rank waits in one collective of a step.

    A stuck rank's own watchdog reports within `stall_timeout`; `compute_seconds` is the
    longest honest compute any rank is expected to need before it joins (the slowest rank's
    seconds per batch in the last step times its batches, or this rank's own time), tripled
    for noise.
    """
    return 2.0 * stall_timeout + GRACE_SECONDS + 3.0 * compute_seconds


class RankFault(FaultError):
    """A fault reported by another rank (exit 4), named by rank, thread and phase."""


class RankStall(StallError):
    """A stall reported by another rank (exit 3)."""


@dataclass
class RankTimes:
    """Wall seconds one rank spent per part of its steps, and its bytes (summed over steps)."""

    steps: int = 0
    compute_s: float = 0.0  # its batches (compute-only job), chain waits included
    chain_wait_s: float = 0.0  # job start to the last upstream partial's arrival (chain ranks)
    chain_overlap_s: float = 0.0  # of it, seconds its own batches computed meanwhile
    wait_s: float = 0.0  # status gather: waiting for the slowest rank
    comm_s: float = 0.0  # rows, chain links, slices, norms, decision and weights
    reduce_s: float = 0.0  # its slice: sum, norms, update
    sent_bytes: int = 0
    received_bytes: int = 0
    last_sent_bytes: int = 0  # the last step alone (a full step after any warm-up)
    last_received_bytes: int = 0
    by_kind: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def rank_faults(faults, rank: int) -> FaultPlan:
    """This rank's share of the `--inject` faults (`rank=R`, default 0)."""
    parsed = [parse_inject(f) if isinstance(f, str) else f for f in (faults or [])]
    plan = FaultPlan([f for f in parsed if f.rank == rank])
    plan.rank = rank
    return plan


@numba.njit(nogil=True, cache=True)
def sq_norm_from(total, start, stop, acc):  # pragma: no cover
    """fast.reduction.chunk_sq_norm continued from `acc`: the same loop, the same bits."""
    for i in range(start, stop):
        x = np.float64(total[i])
        acc += x * x
    return acc


def slice_pieces(chunks: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int, int]]:
    """(chunk index, start, stop) of every chunk's part inside [lo, hi), in index order."""
    return [(c, max(a, lo), min(b, hi)) for c, (a, b) in enumerate(chunks) if a < hi and b > lo]


class _Rank:
    """What rank 0 and the followers share: the trainer, the channel, the parts of a step."""

    def __init__(self, channel: Channel, cfg: Config, threads: int, dtype, stall_timeout: float,
                 faults, params: dict[str, np.ndarray] | None = None) -> None:
        self.ch = channel
        self.rank, self.ranks = channel.rank, channel.size
        self.stall_timeout = stall_timeout
        self.trainer = FastTrainer(cfg, threads, dtype=dtype, params=params,
                                   stall_timeout=stall_timeout,
                                   faults=rank_faults(faults, channel.rank))
        self.config = self.trainer.config
        self.dtype = self.trainer.dtype
        self.threads = threads
        s = self.trainer.shared
        P = s.params.shape[0]
        if P < self.ranks:
            raise InputError(f"{self.ranks} ranks but the model has only {P} parameters: "
                             "every rank owns a slice; use fewer ranks")
        self.bounds = [slice_bounds(r, self.ranks, P) for r in range(self.ranks)]
        self.lo, self.hi = self.bounds[self.rank]
        n = self.hi - self.lo
        self.adam_m = np.zeros(n, dtype=self.dtype)  # ZeRO-1: this slice's moments only
        self.adam_v = np.zeros(n, dtype=self.dtype)
        self.total = np.zeros(n, dtype=self.dtype)  # this slice of the group's mean gradient
        self.pieces = slice_pieces(s.chunks, self.lo, self.hi)
        if self.rank:  # the followers never hold the whole optimizer state
            s.adam_m, s.adam_v = np.zeros(0, self.dtype), np.zeros(0, self.dtype)
        self.per_batch_s = 0.0  # the slowest rank's seconds per batch in the last step
        self.deadline = step_deadline(stall_timeout, 0.0)
        self.times = RankTimes()
        self._bytes_at_start = (0, 0)

    # -- the parts of a step, in order --------------------------------------------------------

    def _scatter_group(self, tokens, targets, rows: int, cols: int):
        """Each rank gets the rows of its own batches (rank 0 keeps the whole group)."""
        self._bytes_at_start = (self.ch.bytes.sent, self.ch.bytes.received)
        before = self.ch.seconds
        B = self.config.train.batch_size
        g = rows // B
        mine = batches_of(self.rank, self.ranks, g)
        parts = None
        if self.rank == 0:
            parts = [_rows_of(tokens, targets, batches_of(q, self.ranks, g), B)
                     for q in range(self.ranks)]
        recv = np.empty((2, len(mine) * B, cols), dtype=np.int64)
        self.ch.scatter_parts(parts, recv, self.stall_timeout + GRACE_SECONDS, "rows")
        if self.rank:
            tokens = np.zeros((rows, cols), dtype=np.int64)
            targets = np.zeros((rows, cols), dtype=np.int64)
            for k, b in enumerate(mine):
                tokens[b * B:(b + 1) * B] = recv[0, k * B:(k + 1) * B]
                targets[b * B:(b + 1) * B] = recv[1, k * B:(k + 1) * B]
        self.times.comm_s += self.ch.seconds - before
        return tokens, targets, g

    def _compute(self, step: int, tokens: np.ndarray, targets: np.ndarray, g: int, apply: bool):
        """Chain links in (posted, not awaited), the compute-only job on this rank's batches,
        chain links out.

        The job starts at once: a continued position's ticket is held until its upstream
        partial has arrived in the segment, so only the first fold there waits for it.
        Returns (job, error as a status dict, seconds). A failed job still passes its partial
        on, so every rank reaches the status gather and rank 0 reports the first failure.
        """
        segments = self.trainer.shared.segments
        links = [(p, hs, [r for r, _ in hs].index(self.rank))
                 for p in range(min(g, POSITIONS)) for hs in [holders(p, self.ranks, g)]
                 if self.rank in [r for r, _ in hs]]
        t0 = time.perf_counter()
        incoming = {}
        for p, hs, i in links:
            if i > 0:  # continue the partial the previous rank of this position leaves
                upstream = sum(len(b) for _, b in hs[:i])
                self.trainer.shared.tickets.hold([p])
                incoming[p] = self.ch.irecv(
                    segments.segment(p), hs[i - 1][0],
                    step_deadline(self.stall_timeout, upstream * self.per_batch_s), "chain")
        job = StepJob(step=step, tokens=tokens, targets=targets, n_batches=g,
                      apply_update=apply, only=batches_of(self.rank, self.ranks, g),
                      reduce=False, continued=frozenset(incoming))
        status = {"rank": self.rank, "ok": True, "batches": len(job.only)}
        t1 = time.perf_counter()
        error = self._run_linked(job, incoming) if incoming else self._run(job)
        if error is not None:
            status = {"rank": self.rank, "ok": False, "code": error.exit_code,
                      "stall": isinstance(error, StallError), "message": str(error)[:2500],
                      "threads": _stuck_threads(error)[:500]}
        status["seconds"] = time.perf_counter() - t1
        if incoming:
            self._note_overlap(t1, max(link.arrived for link in incoming.values()))
        for p, hs, i in links:
            if i + 1 < len(hs):
                self.ch.send(segments.segment(p), hs[i + 1][0], self.deadline, "chain")
        seconds = time.perf_counter() - t0
        self.times.compute_s += seconds
        return job, status, seconds

    def _run(self, job: StepJob) -> SpheresError | None:
        try:
            self.trainer.run_job(job)
        except SpheresError as exc:
            return exc
        return None

    def _run_linked(self, job: StepJob, incoming: dict) -> SpheresError | None:
        """The job on thread ks-chain-job while this (the main) thread completes the chain
        receives and releases their positions' tickets.

        Only the main thread calls MPI (safe under MPI_THREAD_FUNNELED, whatever level the
        library gives). While a receive is pending this thread ticks Node Zero's counter: the
        wait is for another rank, bounded by the link's own deadline, not a stall of this one.
        A deadline that passes (or a signal) fails the trainer, so the job ends, and raises.
        """
        result: list[SpheresError | None] = [None]

        def run() -> None:
            result[0] = self._run(job)

        shared = self.trainer.shared
        slot = next(r.slot for r in shared.heartbeats.records if r.role == "node-zero")
        runner = threading.Thread(target=run, name="ks-chain-job", daemon=True)
        runner.start()
        pending, pause = dict(incoming), 0.0
        try:
            while pending or runner.is_alive():
                for p in [p for p, link in pending.items() if link.done()]:
                    shared.tickets.release(p)
                    del pending[p]
                if pending:
                    shared.heartbeats.ticks[slot] += 1  # waiting on another rank, not stuck
                    time.sleep(pause)
                    pause = min(POLL_MAX_SECONDS, pause + 0.0001)
                else:
                    runner.join(JOIN_POLL_SECONDS)
        except BaseException as exc:
            shared.fail(exc if isinstance(exc, SpheresError)
                        else FaultError(f"rank {self.rank}: step abandoned: {exc!r}"))
            runner.join(self.stall_timeout + GRACE_SECONDS)
            raise
        finally:
            for p in pending:
                shared.tickets.release(p)
        return result[0]

    def _note_overlap(self, t1: float, arrived: float) -> None:
        """Seconds from the job's start to the last upstream partial's arrival, and the
        seconds of this rank's batch compute done before it (the chain's overlap)."""
        rec = self.trainer.shared.record
        start, until = t1 - rec.origin, arrived - rec.origin
        overlap = 0.0
        for log in list(rec.logs):
            for kind, _, a, b, _ in reversed(list(log.spans)):
                if b < start:
                    break
                if kind == BATCH and a >= start:
                    overlap += max(0.0, min(b, until) - a)
        self.times.chain_wait_s += max(0.0, arrived - t1)
        self.times.chain_overlap_s += overlap

    def _exchange(self, job: StepJob, status: dict, seconds: float):
        """Status and per-batch info to rank 0; then every rank learns the target count.

        Rank 0 raises the first failure here (the others wait in the next collective until
        the caller aborts the job). Returns (n_targets, infos on rank 0 or None).
        """
        most = max(len(batches_of(q, self.ranks, job.n_batches)) for q in range(self.ranks))
        self.deadline = step_deadline(self.stall_timeout,
                                      max(seconds, most * self.per_batch_s))
        before = self.ch.seconds
        statuses = self.ch.gather_json(status, self.deadline, "status")
        self.times.wait_s += self.ch.seconds - before
        before = self.ch.seconds
        if statuses is not None:
            _raise_first_failure(statuses)
            self.per_batch_s = max((s["seconds"] / s["batches"] for s in statuses
                                    if s.get("batches")), default=0.0)
        info = np.concatenate([job.batch_loss, job.batch_n.astype(np.float64),
                               job.batch_worker.astype(np.float64),
                               np.asarray(job.bad_batch, dtype=np.float64)])
        infos = self.ch.gather(info, self.deadline, "batch-info")
        count = np.zeros(1, dtype=np.int64)
        if infos is not None:
            g = job.n_batches
            count[0] = sum(int(infos[rank_of_batch(b, self.ranks, g)][g + b]) for b in range(g))
        self.ch.bcast(count, self.deadline, "targets")
        self.times.comm_s += self.ch.seconds - before
        return int(count[0]), infos

    def _reduce_scatter(self, g: int, n_targets: int) -> None:
        """Every finished position's slice to its owner; the owner sums them in order 0..11."""
        used = min(g, POSITIONS)
        finisher = [holders(p, self.ranks, g)[-1][0] for p in range(used)]
        assert finisher == sorted(finisher), finisher  # rank order is position order
        data = self.trainer.shared.segments.data
        mine = [p for p in range(used) if finisher[p] == self.rank]
        send = (np.concatenate([data[p, lo:hi] for lo, hi in self.bounds for p in mine])
                if mine else np.zeros(0, dtype=self.dtype))
        send_counts = [len(mine) * (hi - lo) for lo, hi in self.bounds]
        n = self.hi - self.lo
        recv = np.empty(used * n, dtype=self.dtype)
        recv_counts = [finisher.count(q) * n for q in range(self.ranks)]
        before = self.ch.seconds
        self.ch.alltoallv(send, send_counts, recv, recv_counts, self.deadline, "slices")
        self.times.comm_s += self.ch.seconds - before
        t0 = time.perf_counter()
        reduction.reduce_chunk(recv.reshape(used, n), used, self.total, 0, n, n_targets)
        self.times.reduce_s += time.perf_counter() - t0

    def _norms(self) -> list[np.ndarray] | None:
        """Squared norms of the chunks that end in this slice (a chunk cut by the slice's start
        continues the previous rank's sum), and the first non-finite index; rank 0 gets all
        ranks' rows in rank order, which is chunk order."""
        lo, hi, pieces = self.lo, self.hi, self.pieces
        chunks = self.trainer.shared.chunks
        carry_in = chunks[pieces[0][0]][0] < lo
        carry_out = chunks[pieces[-1][0]][1] > hi
        acc: dict[int, float] = {}
        before = self.ch.seconds

        def run(i: int, start: float) -> None:
            _, a, b = pieces[i]
            acc[i] = sq_norm_from(self.total, a - lo, b - lo, start)

        last = len(pieces) - 1
        if carry_out and not (carry_in and last == 0):
            run(last, 0.0)  # independent of the carry: pass it on at once
            self.ch.send(np.array([acc[last]]), self.rank + 1, self.deadline, "norm-carry")
        if carry_in:
            carry = self.ch.recv(np.zeros(1), self.rank - 1, self.deadline, "norm-carry")
            run(0, float(carry[0]))
        for i in range(len(pieces)):
            if i not in acc:
                run(i, 0.0)
        if carry_out and carry_in and last == 0:
            self.ch.send(np.array([acc[0]]), self.rank + 1, self.deadline, "norm-carry")
        bad = reduction.first_nonfinite(self.total, 0, hi - lo)
        ends = [acc[i] for i in range(len(pieces)) if not (carry_out and i == last)]
        row = np.array([*ends, float(lo + bad if bad >= 0 else -1)], dtype=np.float64)
        rows = self.ch.gather_varied(row, self.deadline, "norms")
        self.times.comm_s += self.ch.seconds - before
        return rows

    def _finish(self, cmd: int, decision: np.ndarray | None = None) -> np.ndarray:
        """GRADS: the gradient slices to rank 0. STEP: the decision from rank 0, this slice's
        AdamW update, the weights to everyone. Returns the decision."""
        s = self.trainer.shared
        before = self.ch.seconds
        if cmd == CMD_GRADS:
            if self.rank == 0:
                s.total[self.lo:self.hi] = self.total
            self.ch.gather_ranges(self.total, s.total, self.bounds, self.deadline, "gradient")
            self.times.comm_s += self.ch.seconds - before
            return np.zeros(5)
        decision = decision if decision is not None else np.zeros(5)
        self.ch.bcast(decision, self.deadline, "decision")
        t0 = time.perf_counter()
        scalars = StepScalars(*(float(x) for x in decision[1:]))
        apply_chunk(s.params[self.lo:self.hi], self.total, self.adam_m, self.adam_v,
                    s.decay[self.lo:self.hi], 0, self.hi - self.lo, scalars,
                    self.config.train)
        self.times.reduce_s += time.perf_counter() - t0
        self.ch.allgather_ranges(s.params, self.bounds, self.deadline, "weights")
        self.times.comm_s += self.ch.seconds - before
        return decision

    def _half_step(self, cmd: int, step: int, tokens, targets, rows: int, cols: int):
        """Parts 1-5 of a step; returns (job, n_targets, infos, norm rows) (rank 0: filled)."""
        tokens, targets, g = self._scatter_group(tokens, targets, rows, cols)
        job, status, seconds = self._compute(step, tokens, targets, g, cmd == CMD_STEP)
        n_targets, infos = self._exchange(job, status, seconds)
        self._reduce_scatter(g, n_targets)
        return job, n_targets, infos, self._norms()

    def _moments(self, cmd: int) -> None:
        """CMD_STATE: every slice's moments into rank 0's trainer; CMD_LOAD: the reverse."""
        s, seconds = self.trainer.shared, self.stall_timeout + GRACE_SECONDS
        for mine, full, what in ((self.adam_m, s.adam_m, "adam-m"),
                                 (self.adam_v, s.adam_v, "adam-v")):
            if cmd == CMD_STATE:
                if self.rank == 0:
                    full[self.lo:self.hi] = mine
                self.ch.gather_ranges(mine, full, self.bounds, seconds, what)
            else:
                self.ch.scatter_ranges(full, mine, self.bounds, seconds, what)

    def _bcast_params(self, deadline: float) -> None:
        before = self.ch.seconds
        self.ch.bcast(self.trainer.shared.params, deadline, "weights")
        self.times.comm_s += self.ch.seconds - before

    def _tally(self) -> None:
        self.times.steps += 1
        self.times.last_sent_bytes = self.ch.bytes.sent - self._bytes_at_start[0]
        self.times.last_received_bytes = self.ch.bytes.received - self._bytes_at_start[1]
        self.times.sent_bytes = self.ch.bytes.sent
        self.times.received_bytes = self.ch.bytes.received
        self.times.by_kind = dict(self.ch.bytes.by_kind)

    def report(self) -> dict:
        self.times.sent_bytes = self.ch.bytes.sent
        self.times.received_bytes = self.ch.bytes.received
        self.times.by_kind = dict(self.ch.bytes.by_kind)
        return {"rank": self.rank, "times": self.times.to_dict(),
                "unfired": [str(f) for f in self.trainer.unfired_faults()],
                "threads": self.threads, "slice": [self.lo, self.hi]}


class MpiEngine(_Rank):
    """Rank 0: the root Node Zero, behind the ordinary Engine protocol."""

    def __init__(self, channel: Channel, cfg: Config, threads: int, dtype, stall_timeout: float,
                 faults=None, params: dict[str, np.ndarray] | None = None) -> None:
        if channel.rank != 0:
            raise ValueError("MpiEngine runs on rank 0; other ranks call follow()")
        super().__init__(channel, cfg, threads, dtype, stall_timeout, faults, params)
        self.reports: list[dict] = []
        self._closed = False
        self.failed = False  # a step raised: the ranks are out of step, only Abort ends them

    def step(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        return self._guarded(tokens, targets, apply=True)

    def group_grads(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        result = self._guarded(tokens, targets, apply=False)
        model = self.trainer.model
        result.grads = {name: np.array(view, dtype=np.float64)
                        for name, view in model.unflatten(self.trainer.shared.total).items()}
        return result

    def state(self) -> TrainState:
        """The whole state: the weights every rank holds, the moments gathered from the slices."""
        try:
            self._header(CMD_STATE, 0, 0, 0)
            self._moments(CMD_STATE)
        except BaseException:
            self.failed = True
            raise
        return self.trainer.state()

    def load_state(self, state: TrainState) -> None:
        self.trainer.load_state(state)
        try:
            self._header(CMD_LOAD, state.step, 0, 0)
            self._bcast_params(self.stall_timeout + GRACE_SECONDS)
            self._moments(CMD_LOAD)
        except BaseException:
            self.failed = True
            raise

    def unfired_faults(self) -> list[str]:
        """Rank 0's own; the other ranks print theirs when told to stop."""
        return [str(f) for f in self.trainer.unfired_faults()]

    def close(self) -> None:
        """Tell the followers to stop, collect their reports, close this rank's trainer.

        After a failed step the followers sit in another collective: only this rank's trainer
        is closed, and the caller ends the job with MPI_Abort (harness.commands.mpi_launch).
        """
        if self._closed:
            return
        self._closed = True
        if self.failed:
            self.trainer.close()
            return
        try:
            self._header(CMD_STOP, 0, 0, 0)
            self.reports = self.ch.gather_json(self.report(), self.stall_timeout + GRACE_SECONDS,
                                               "report") or []
        finally:
            self.trainer.close()

    def stats(self) -> dict:
        stats = self.trainer.stats()
        stats["ranks"] = self.reports or [self.report()]
        return stats

    # -- private ------------------------------------------------------------------------------

    def _header(self, cmd: int, step: int, rows: int, cols: int) -> None:
        hint_ms = int(math.ceil(self.per_batch_s * 1000.0))
        self.ch.bcast(np.array([cmd, step, rows, cols, hint_ms], dtype=np.int64),
                      self.stall_timeout + GRACE_SECONDS, "header")

    def _guarded(self, tokens: np.ndarray, targets: np.ndarray, apply: bool) -> StepResult:
        try:
            return self._step(tokens, targets, apply)
        except BaseException:
            self.failed = True
            raise

    def _step(self, tokens: np.ndarray, targets: np.ndarray, apply: bool) -> StepResult:
        tokens, targets, g = self.trainer._check_group(tokens, targets)
        step = self.trainer._step  # updates applied so far (the trainer's own count)
        cmd = CMD_STEP if apply else CMD_GRADS
        self._header(cmd, step, *tokens.shape)
        _, n_targets, infos, norms = self._half_step(cmd, step, tokens, targets,
                                                     *tokens.shape)
        full = StepJob(step=step, tokens=tokens, targets=targets, n_batches=g,
                       apply_update=apply, only=(), reduce=True)
        _fill(full, infos, self.ranks)
        scalars = self._decide(full, norms)
        if apply:
            self._finish(cmd, np.array([1.0, scalars.lr, scalars.scale, scalars.bias1,
                                        scalars.bias2]))
            self.trainer._step += 1
        else:
            self._finish(cmd)
        self._tally()
        lr = scalars.lr if scalars is not None else math.nan
        return StepResult(loss=full.loss, n_targets=full.n_targets, grad_norm=full.norm, lr=lr,
                          grads=None, stats={"batches": g, "ranks": self.ranks,
                                             "batch_worker": full.batch_worker.tolist()})

    def _decide(self, job: StepJob, norms: list[np.ndarray]) -> StepScalars | None:
        """Node Zero's decision on the gathered figures: loss in batch order, norms in chunk
        order, the finite check; the step's scalars, or None for a gradient-only job."""
        loss_sum = 0.0
        for value in job.batch_loss.tolist():  # batch-index order, whatever R and T
            loss_sum += value
        job.n_targets = int(job.batch_n.sum())
        job.loss = loss_sum / job.n_targets
        chunk_norms = np.concatenate([row[:-1] for row in norms])
        job.norm = math.sqrt(reduction.sum_chunk_norms(chunk_norms))
        if not math.isfinite(job.norm):
            raise _with_rank(self._nonfinite(job, norms), self.ranks, job.n_batches)
        if not job.apply_update:
            return None
        return step_scalars(job.step, job.norm, self.config.train)

    def _nonfinite(self, job: StepJob, norms: list[np.ndarray]) -> NonFiniteGradientError:
        """Name the first non-finite parameter (registry order) and the batch that caused it."""
        index = next((int(row[-1]) for row in norms if row[-1] >= 0), -1)
        parameter = next((name for name, (a, b) in self.trainer.model.offsets.items()
                          if a <= index < b), "(unknown)")
        bad = [b for b in job.bad_batch if b >= 0]
        batch = min(bad) if bad else None
        thread = (f"ks-worker-{int(job.batch_worker[batch])}" if batch is not None else None)
        return NonFiniteGradientError(parameter, batch=batch, step=job.step, thread=thread)


def follow(channel: Channel, cfg: Config, threads: int, dtype, stall_timeout: float,
           faults=None) -> int:
    """A rank > 0: obey rank 0's commands until CMD_STOP; returns the exit code 0.

    Errors in this rank's own batches go to rank 0 in the status gather (rank 0 ends the job);
    a collective past its deadline raises CommTimeout (the caller aborts the job with code 3).
    """
    me = _Rank(channel, cfg, threads, dtype, stall_timeout, faults)
    try:
        while True:
            header = np.zeros(HEADER_LEN, dtype=np.int64)
            channel.bcast(header, IDLE_SECONDS, "header")
            cmd, step, rows, cols, hint_ms = (int(x) for x in header)
            me.per_batch_s = hint_ms / 1000.0
            if cmd == CMD_STOP:
                report = me.report()
                for fault in report["unfired"]:  # never silently dropped (SPEC 5)
                    print(f"spheres: rank {me.rank}: warning: injected fault never fired: "
                          f"{fault}", file=sys.stderr, flush=True)
                channel.gather_json(report, stall_timeout + GRACE_SECONDS, "report")
                return 0
            if cmd == CMD_LOAD:
                me._bcast_params(stall_timeout + GRACE_SECONDS)
                me._moments(CMD_LOAD)
                continue
            if cmd == CMD_STATE:
                me._moments(CMD_STATE)
                continue
            me._half_step(cmd, step, None, None, rows, cols)
            me._finish(cmd)
            me._tally()
    finally:
        me.trainer.close()


# -- helpers ----------------------------------------------------------------------------------

def _rows_of(tokens: np.ndarray, targets: np.ndarray, batches, B: int) -> np.ndarray:
    """The token and target rows of `batches`, stacked: what one rank receives."""
    rows = np.concatenate([np.arange(b * B, (b + 1) * B) for b in batches]) if batches else \
        np.zeros(0, dtype=np.int64)
    return np.stack([tokens[rows], targets[rows]])


def _fill(full: StepJob, infos: np.ndarray, ranks: int) -> None:
    """Loss, count and worker of each batch from the rank that ran it; per position, the
    first bad batch along its chain of ranks."""
    g = full.n_batches
    for b in range(g):
        row = infos[rank_of_batch(b, ranks, g)]
        full.batch_loss[b] = row[b]
        full.batch_n[b] = int(row[g + b])
        full.batch_worker[b] = int(row[2 * g + b])
    for p in range(min(g, POSITIONS)):
        bad = [int(infos[r][3 * g + p]) for r, _ in holders(p, ranks, g)]
        full.bad_batch[p] = next((b for b in bad if b >= 0), -1)


def _raise_first_failure(statuses: list[dict]) -> None:
    """Rank 0: the lowest failed rank's error, as a stall (exit 3) or a fault (exit 4)."""
    for s in statuses:
        if s is None or s.get("ok", False):
            continue
        text = f"rank {s['rank']}: {s.get('message', '(no message)')}"
        if s.get("threads"):
            text += f" [stuck: {s['threads']}]"
        if s.get("stall") or s.get("code") == StallError.exit_code:
            raise RankStall(text, {"rank": s["rank"], "threads": s.get("threads")})
        raise RankFault(text)


def _with_rank(exc: BaseException, ranks: int, group: int) -> BaseException:
    if isinstance(exc, NonFiniteGradientError) and exc.batch is not None:
        rank = rank_of_batch(exc.batch, ranks, group)
        return RankFault(f"rank {rank}: {exc}")
    return exc


def _stuck_threads(exc: SpheresError) -> str:
    """'ks-worker-0 (hang phase COMPUTING)'-style summary of a stall's stuck threads."""
    diagnosis = getattr(exc, "diagnosis", None) or {}
    stuck = diagnosis.get("stuck") or diagnosis.get("stuck_threads") or []
    parts = []
    for t in stuck if isinstance(stuck, list) else []:
        if isinstance(t, dict):
            parts.append(f"{t.get('name', '?')} in {t.get('phase', '?')}")
        else:
            parts.append(str(t))
    return ", ".join(parts)


__all__ = ["CommTimeout", "MpiEngine", "RankFault", "RankStall", "follow", "step_deadline"]
