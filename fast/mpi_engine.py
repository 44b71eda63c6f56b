"""The fast engine across MPI ranks: rank 0 is the root Node Zero, ranks own level-1 positions.

One step, every rank with its own FastTrainer (its own Node Zero, T workers and watchdog):
  1. rank 0 broadcasts a header and the group's tokens and targets (identical batches by
     construction: only rank 0 reads data);
  2. each rank computes the batches of its positions (fast.mpi_topology) into its position
     segments: a compute-only job, the same kernels and fold order as the single process;
  3. a status gather: rank 0 learns of any rank's fault or stall and ends the job;
  4. the owned segments (Igatherv, in place) and per-batch loss / count / worker go to rank 0;
  5. rank 0 runs the unchanged reduction and decision (positions 0..11 summed in order, chunk
     norms in chunk order, finite check, clip, learning rate) and the AdamW update as a
     reduce-only job: literally the single-process arithmetic on the same bits;
  6. rank 0 broadcasts the new weights; the other ranks copy them in.
So the weights after any number of steps are bitwise those of the single-process engine for
every R and T. Only rank 0 keeps Adam moments (it alone writes checkpoints). Rank 0 is
`MpiEngine` (the Engine protocol, so the ordinary training loop drives it); the others run
`follow()`, which obeys rank 0's headers until told to stop.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from fast.faults import FaultPlan, parse_inject
from fast.mpi_comm import Channel, CommTimeout
from fast.mpi_topology import batches_of, positions_of, rank_of_position
from fast.node_zero import StepJob
from fast.spheres import POSITIONS
from fast.trainer import FastTrainer
from plumbing.errors import FaultError, NonFiniteGradientError, SpheresError, StallError
from reference.config import Config
from reference.engine import StepResult, TrainState

CMD_STOP, CMD_STEP, CMD_GRADS, CMD_LOAD = 0, 1, 2, 3
HEADER_LEN = 4  # command, step, rows, cols
GRACE_SECONDS = 10.0  # deadline slack over the stall timeout: MPI start-up, page faults, load
IDLE_SECONDS = 600.0  # a follower waits this long for rank 0's next command (data loading,
#                       checkpoint writing) before it declares rank 0 gone


def step_deadline(stall_timeout: float, compute_seconds: float) -> float:
    """How long a rank waits in one collective of a step.

    A stuck rank's own watchdog reports within `stall_timeout`; the others may be slower than
    this rank by their share of work (rank 0 owns at most twice the batches of any rank), so
    three times this rank's compute time covers an honest difference.
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
    compute_s: float = 0.0  # its batches (compute-only job)
    wait_s: float = 0.0  # status gather: waiting for the slowest rank
    comm_s: float = 0.0  # tokens, segments, per-batch info and weights
    reduce_s: float = 0.0  # rank 0: reduction, decision and update
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


class _Rank:
    """What rank 0 and the followers share: the trainer, the channel, the half step."""

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
        self.rows = [positions_of(r, self.ranks) for r in range(self.ranks)]
        self.times = RankTimes()

    def _bcast_group(self, tokens: np.ndarray, targets: np.ndarray) -> None:
        before = self.ch.seconds
        self.ch.bcast(tokens, self.stall_timeout + GRACE_SECONDS, "tokens")
        self.ch.bcast(targets, self.stall_timeout + GRACE_SECONDS, "targets")
        self.times.comm_s += self.ch.seconds - before

    def _compute(self, step: int, tokens: np.ndarray, targets: np.ndarray, apply: bool):
        """Compute-only job on this rank's batches; (job, error as a status dict, seconds)."""
        g = tokens.shape[0] // self.config.train.batch_size
        job = StepJob(step=step, tokens=tokens, targets=targets, n_batches=g,
                      apply_update=apply, only=batches_of(self.rank, self.ranks, g),
                      reduce=False)
        t0 = time.perf_counter()
        status = {"rank": self.rank, "ok": True}
        try:
            self.trainer.run_job(job)
        except SpheresError as exc:
            status = {"rank": self.rank, "ok": False, "code": exc.exit_code,
                      "stall": isinstance(exc, StallError), "message": str(exc)[:2500],
                      "threads": _stuck_threads(exc)[:500]}
        seconds = time.perf_counter() - t0
        self.times.compute_s += seconds
        return job, status, seconds

    def _exchange(self, job: StepJob, status: dict, seconds: float):
        """Status gather, then segments and per-batch info to rank 0; rank 0 gets the info."""
        deadline = step_deadline(self.stall_timeout, seconds)
        before = self.ch.seconds
        statuses = self.ch.gather_json(status, deadline, "status")
        self.times.wait_s += self.ch.seconds - before
        if statuses is not None:
            _raise_first_failure(statuses)
        before = self.ch.seconds
        self.ch.gather_rows(self.trainer.shared.segments.data, self.rows, deadline, "segments")
        info = np.concatenate([job.batch_loss, job.batch_n.astype(np.float64),
                               job.batch_worker.astype(np.float64),
                               np.asarray(job.bad_batch, dtype=np.float64)])
        infos = self.ch.gather(info, deadline, "batch-info")
        self.times.comm_s += self.ch.seconds - before
        return infos, deadline

    def _bcast_params(self, deadline: float) -> None:
        before = self.ch.seconds
        self.ch.bcast(self.trainer.shared.params, deadline, "weights")
        self.times.comm_s += self.ch.seconds - before

    def _tally(self) -> None:
        self.times.steps += 1
        self.times.last_sent_bytes = self.ch.bytes.sent - self.times.sent_bytes
        self.times.last_received_bytes = self.ch.bytes.received - self.times.received_bytes
        self.times.sent_bytes = self.ch.bytes.sent
        self.times.received_bytes = self.ch.bytes.received
        self.times.by_kind = dict(self.ch.bytes.by_kind)

    def report(self) -> dict:
        self.times.sent_bytes = self.ch.bytes.sent
        self.times.received_bytes = self.ch.bytes.received
        self.times.by_kind = dict(self.ch.bytes.by_kind)
        return {"rank": self.rank, "times": self.times.to_dict(),
                "unfired": [str(f) for f in self.trainer.unfired_faults()],
                "threads": self.threads}


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
        return self.trainer.state()

    def load_state(self, state: TrainState) -> None:
        self.trainer.load_state(state)
        try:
            self._header(CMD_LOAD, state.step, 0, 0)
            self._bcast_params(self.stall_timeout + GRACE_SECONDS)
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
        self.ch.bcast(np.array([cmd, step, rows, cols], dtype=np.int64),
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
        self._header(CMD_STEP if apply else CMD_GRADS, step, *tokens.shape)
        self._bcast_group(tokens, targets)
        job, status, seconds = self._compute(step, tokens, targets, apply)
        infos, deadline = self._exchange(job, status, seconds)
        full = StepJob(step=step, tokens=tokens, targets=targets, n_batches=g,
                       apply_update=apply, only=(), reduce=True)
        _fill(full, infos, self.ranks)
        t0 = time.perf_counter()
        try:
            self.trainer.run_job(full, count_step=apply)
        except NonFiniteGradientError as exc:
            raise _with_rank(exc, self.ranks) from exc
        finally:
            self.times.reduce_s += time.perf_counter() - t0
        if full.error is not None:
            raise _with_rank(full.error, self.ranks)
        if apply:
            self._bcast_params(deadline)
        self._tally()
        lr = full.scalars.lr if full.apply and full.scalars is not None else math.nan
        return StepResult(loss=full.loss, n_targets=full.n_targets, grad_norm=full.norm, lr=lr,
                          grads=None, stats={"batches": g, "ranks": self.ranks,
                                             "batch_worker": full.batch_worker.tolist()})


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
            cmd, step, rows, cols = (int(x) for x in header)
            if cmd == CMD_STOP:
                report = me.report()
                for fault in report["unfired"]:  # never silently dropped (SPEC 5)
                    print(f"spheres: rank {me.rank}: warning: injected fault never fired: "
                          f"{fault}", file=sys.stderr, flush=True)
                channel.gather_json(report, stall_timeout + GRACE_SECONDS, "report")
                return 0
            if cmd == CMD_LOAD:
                me._bcast_params(stall_timeout + GRACE_SECONDS)
                continue
            tokens = np.empty((rows, cols), dtype=np.int64)
            targets = np.empty((rows, cols), dtype=np.int64)
            me._bcast_group(tokens, targets)
            job, status, seconds = me._compute(step, tokens, targets, cmd == CMD_STEP)
            _, deadline = me._exchange(job, status, seconds)
            if cmd == CMD_STEP:
                me._bcast_params(deadline)
            me._tally()
    finally:
        me.trainer.close()


# -- helpers ----------------------------------------------------------------------------------

def _fill(full: StepJob, infos: np.ndarray, ranks: int) -> None:
    """Loss, count and worker of each batch from the rank that ran it; bad batch per position."""
    g = full.n_batches
    for b in range(g):
        row = infos[rank_of_position(b % POSITIONS, ranks)]
        full.batch_loss[b] = row[b]
        full.batch_n[b] = int(row[g + b])
        full.batch_worker[b] = int(row[2 * g + b])
    for p in range(POSITIONS):
        full.bad_batch[p] = int(infos[rank_of_position(p, ranks)][3 * g + p])


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


def _with_rank(exc: BaseException, ranks: int) -> BaseException:
    if isinstance(exc, NonFiniteGradientError) and exc.batch is not None:
        rank = rank_of_position(exc.batch % POSITIONS, ranks)
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
