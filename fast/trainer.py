"""FastTrainer: owns Node Zero, the workers and the watchdog; implements the `Engine` protocol.

Threads are created once, after the Numba kernels are compiled (warm-up), and reused for every
step and epoch (the original rebuilt them every epoch and double-freed on cleanup). `close()`
ends and joins all of them, is idempotent, and also works after an error or a stall. A failed
step raises from `step()` with the weights untouched: FaultError subclasses (exit 4) name the
thread, step and batch; a stall raises StallError (exit 3) with the watchdog's diagnosis.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Iterable

import numpy as np
from threadpoolctl import threadpool_limits

from fast import evaluate, grad_pool, reduction, update
from fast import model as fast_model
from fast.barrier import Barrier
from fast.faults import Fault, FaultPlan
from fast.grad_pool import GradPool, grad_pool_size
from fast.heartbeat import HeartbeatBoard
from fast.model import FastModel
from fast.node_zero import Barriers, JobBoard, NodeZero, Shared, StepJob
from fast.record import FoldDigests
from fast.reduction import CHUNK_ELEMENTS, PositionSegments, PositionTickets, chunk_bounds
from fast.spheres import assign
from fast.update import decay_mask
from fast.watchdog import Watchdog
from fast.workers import Worker
from fast.workspace_pool import WorkspacePool, pool_size
from plumbing.cores import usable_cores
from plumbing.errors import InputError
from plumbing.thread_limits import thread_limit
from reference.config import Config
from reference.engine import StepResult, TrainState
from reference.evaluate import EvalResult
from reference.params import init_params

JOIN_SECONDS = 5.0  # close(): how long to wait for a thread before aborting it
ERROR_GRACE_SECONDS = 5.0  # after a failure, how long step() waits for Node Zero to finish

_warm_lock = threading.Lock()  # guards _warm_dtypes: each dtype compiled once per process
_warm_dtypes: set[np.dtype] = set()
# guards _blas_users and _blas_limit: BLAS runs 1 thread while any trainer lives
_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit = None


def warmup(dtype) -> float:
    """Compile every kernel for `dtype` once per process, before any thread starts."""
    start = time.perf_counter()
    with _warm_lock:
        dt = np.dtype(dtype)
        if dt not in _warm_dtypes:
            fast_model.warmup(dt.type)
            reduction.warmup(dt)
            grad_pool.warmup(dt)
            update.warmup(dt)
            evaluate.warmup(dt)
            _warm_dtypes.add(dt)
    return time.perf_counter() - start


def _blas_single_thread(enter: bool) -> None:
    """BLAS limited to 1 thread while any trainer lives: parallelism is our workers' job."""
    global _blas_users, _blas_limit
    with _blas_lock:
        if enter:
            if _blas_users == 0:
                _blas_limit = threadpool_limits(1)
            _blas_users += 1
        else:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limit is not None:
                _blas_limit.restore_original_limits()
                _blas_limit = None


def _check_sizes(threads, stall_timeout, cores, grad_buffers) -> None:
    """Bad sizes are refused before anything is built (exit 2 through InputError)."""
    if not isinstance(threads, int | np.integer) or isinstance(threads, bool) or threads < 1:
        raise InputError(f"threads={threads!r} must be a positive integer (1 to 63 or more)")
    for value, what in ((cores, "cores"), (grad_buffers, "grad_buffers")):
        if value is not None and (not isinstance(value, int | np.integer)
                                  or isinstance(value, bool) or value < 1):
            raise InputError(f"{what}={value!r} must be a positive integer or None")
    if not stall_timeout > 0:
        raise InputError(f"stall_timeout={stall_timeout!r} must be positive seconds")


class FastTrainer:
    """Node Zero + `threads` workers + a watchdog, over flat float32/float64 buffers."""

    def __init__(self, config: Config, threads: int, dtype=np.float32,
                 params: dict[str, np.ndarray] | None = None, stall_timeout: float = 60.0,
                 faults: Iterable[Fault | str] | FaultPlan | None = None,
                 barrier_timeout: float | None = None, *,
                 chunk_size: int = CHUNK_ELEMENTS, locate: bool = False,
                 cores: int | None = None, grad_buffers: int | None = None,
                 kernel: Callable | None = None) -> None:
        """`cores`: the core count the pools are sized for (None: plumbing.cores.usable_cores;
        `spheres simulate` raises it to a machine we do not have). `grad_buffers`: the gradient
        pool's size (None: fast.grad_pool.grad_pool_size). `kernel`: a stand-in for
        fast.model.batch_forward_backward with its signature (the simulator's sleeping kernel)."""
        _check_sizes(threads, stall_timeout, cores, grad_buffers)
        self.config = config.validate()
        self.threads = int(threads)
        self.stall_timeout = float(stall_timeout)
        # the barriers' idle timeout is a backstop: the watchdog must diagnose first
        self.barrier_timeout = (2.0 * self.stall_timeout + 1.0 if barrier_timeout is None
                                else float(barrier_timeout))
        self.model = FastModel(config.model, dtype, config.train.micro_batch)
        self.dtype = self.model.dtype
        self.faults = faults if isinstance(faults, FaultPlan) else FaultPlan(faults)
        # a fault aimed at a worker that does not exist never fires and is reported as unfired
        # (SPEC 5); the CLI may call self.faults.check_threads() to refuse it up front instead
        self.warmup_seconds = warmup(self.dtype)
        self._step = 0
        self._closed = False
        # one Engine call at a time: guards _step and the shared buffers between steps
        self._call_lock = threading.Lock()
        self._in_flight_since: float | None = None
        self._current: StepJob | None = None  # the group in flight, for batches_done()
        self.unjoined: list[str] = []  # threads close() could not end (stuck in a kernel)

        P = self.model.n_params
        start_params = params if params is not None else init_params(config.model,
                                                                     config.train.seed)
        hearts = HeartbeatBoard()
        worker_hearts = [hearts.add("worker", i, f"ks-worker-{i}") for i in range(self.threads)]
        zero_heart = hearts.add("node-zero", None, "ks-node-zero")
        ticks = hearts.total_ticks
        parties = self.threads + 1  # T workers + Node Zero wait at every barrier
        barriers = Barriers(*(self._new_barrier(name, parties, ticks)
                              for name in ("point-A", "reduced", "decided", "point-B")))
        chunks = chunk_bounds(P, chunk_size)
        self.shared = Shared(
            config=self.config, model=self.model, n_workers=self.threads,
            params=self.model.flatten(start_params),
            adam_m=np.zeros(P, dtype=self.dtype), adam_v=np.zeros(P, dtype=self.dtype),
            decay=decay_mask(config.model), segments=PositionSegments(P, self.dtype),
            total=np.zeros(P, dtype=self.dtype), chunks=chunks,
            chunk_norms=np.zeros(len(chunks), dtype=np.float64),
            tickets=PositionTickets(self.barrier_timeout, ticks), barriers=barriers,
            board=JobBoard(), heartbeats=hearts, faults=self.faults, kernel=kernel)
        self.cores = int(cores) if cores is not None else usable_cores()
        self.workspaces = self._make_pools(grad_buffers, ticks)
        self.faults.attach(self.shared.abort, hearts.ticks)

        self.record = self.shared.record  # the run record every verdict reads (fast.record)
        if locate:  # fold digests of every partial sum (`spheres verify --locate`)
            self.record_digests()
        self._node_zero = NodeZero(self.shared, zero_heart)
        self._workers = [Worker(i, self.shared, h, self.workspaces)
                         for i, h in enumerate(worker_hearts)]
        party_names = {i: f"ks-worker-{i}" for i in range(self.threads)}
        party_names[self.threads] = "ks-node-zero"
        self.watchdog = Watchdog(hearts, barriers.all(), party_names, self.stall_timeout,
                                 lambda: self._in_flight_since, self.shared.fail)
        self._threads = [threading.Thread(target=self._node_zero.run, name="ks-node-zero",
                                          daemon=True)]
        self._threads += [threading.Thread(target=w.run, name=f"ks-worker-{w.index}",
                                           daemon=True) for w in self._workers]
        _blas_single_thread(True)
        self._blas_entered = True
        self._start_threads()

    def _start_threads(self) -> None:
        """Start Node Zero, the workers and the watchdog; when the OS refuses one, close the
        ones that started and raise InputError (exit 2) naming the limit, never a half-built
        trainer (Python's own "can't start new thread" names none)."""
        started = 0
        try:
            for t in self._threads:
                t.start()
                started += 1
            self.watchdog.start()
        except RuntimeError as exc:
            self.close()
            limit = thread_limit()
            raise InputError(
                f"could not start thread {started + 1} of {len(self._threads) + 1} ({exc}): "
                f"the OS limit is {limit.name}; use fewer --threads (at most "
                f"{started} started here)") from None
        except BaseException:
            self.close()
            raise

    def _make_pools(self, grad_buffers: int | None, ticks) -> WorkspacePool:
        """The gradient pool (into `shared.grads`) and the workspace pool (returned), both
        sized for `self.cores`: min(T, cores) workspaces shared by the workers instead of one
        per worker (SPEC 4's per-worker buffers are per batch in flight: no two batches ever
        share one at once), and min(T, cores) + 1 gradient buffers (fast/grad_pool.py)."""
        size = (int(grad_buffers) if grad_buffers is not None
                else grad_pool_size(self.threads, self.cores))
        # only an oversubscribed pool (fewer items than threads) keeps items back for lower
        # batches: with one for every thread nobody waits, and no worker waits for another
        self.shared.grads = GradPool(self.model.n_params, self.dtype, size, self.shared.abort,
                                     self.barrier_timeout, ticks, ordered=size < self.threads)
        spaces = pool_size(self.threads, self.cores)
        self.shared.workspaces = WorkspacePool(self.model, spaces, self.shared.abort,
                                               self.barrier_timeout, ticks,
                                               ordered=spaces < self.threads)
        return self.shared.workspaces

    def _new_barrier(self, name: str, parties: int, ticks) -> Barrier:
        """One step barrier (a seam for tests that build deliberately broken variants)."""
        return Barrier(parties, name, timeout=self.barrier_timeout, ticks=ticks)

    # -- Engine protocol ----------------------------------------------------------------------

    def group_grads(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        """Loss and mean gradient (float64 copies) of one group; no update."""
        with self._call_lock:
            job = self._run(tokens, targets, apply_update=False)
            grads = {name: np.array(view, dtype=np.float64)
                     for name, view in self.model.unflatten(self.shared.total).items()}
            return self._result(job, grads)

    def step(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        """One optimiser step on one group: gradient, checks, clip, AdamW."""
        with self._call_lock:
            job = self._run(tokens, targets, apply_update=True)
            self._step += 1
            return self._result(job, None)

    def eval_loss(self, tokens: np.ndarray, targets: np.ndarray) -> EvalResult:
        """Held-out loss (forward only, on the workers): batch loss sums in batch order."""
        with self._call_lock:
            job = self._run(tokens, targets, apply_update=False, eval_only=True)
            return EvalResult(loss=job.loss, n_targets=job.n_targets, batches=job.n_batches)

    def batches_done(self) -> tuple[int, int] | None:
        """(batches finished, batches) of the group in flight, None between calls. Safe to
        poll from any thread: it reads which batches the workers have recorded as done."""
        job = self._current
        if job is None:
            return None
        return int(np.count_nonzero(job.batch_worker >= 0)), job.n_batches

    def state(self) -> TrainState:
        with self._call_lock:
            s, copy = self.shared, self._named_copies
            return TrainState(params=copy(s.params), adam_m=copy(s.adam_m),
                              adam_v=copy(s.adam_v), step=self._step)

    def load_state(self, state: TrainState) -> None:
        with self._call_lock:
            s = self.shared
            s.params[:] = self.model.flatten(state.params)
            s.adam_m[:] = self.model.flatten(state.adam_m)
            s.adam_v[:] = self.model.flatten(state.adam_v)
            self._step = int(state.step)

    def close(self) -> None:
        """End and join every thread; idempotent; safe after errors and stalls."""
        if self._closed:
            return
        self._closed = True
        self.shared.board.close()
        self._node_zero.inbox.put(None)
        alive = self._join(self._threads, JOIN_SECONDS)
        if alive:  # someone is blocked (a barrier, a hang drill): abort and try again
            self.shared.fail(RuntimeError("trainer closed while threads were still busy"))
            alive = self._join(alive, JOIN_SECONDS)
        if not self.watchdog.stop(JOIN_SECONDS):
            alive.append(self.watchdog.thread)
        if alive:
            self.unjoined = [t.name for t in alive]
            warnings.warn(f"FastTrainer.close(): threads {self.unjoined} did not end (stuck in "
                          "compiled code); they are daemon threads and die with the process",
                          RuntimeWarning, stacklevel=2)
        self.workspaces.close()
        self.shared.grads.close()
        if self._blas_entered:
            self._blas_entered = False
            _blas_single_thread(False)

    def __enter__(self) -> FastTrainer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- reporting ----------------------------------------------------------------------------

    def stats(self) -> dict:
        """Per-thread statistics: batches, CPU seconds, seconds waiting at A and B, reducing..."""
        records = self.shared.heartbeats.records
        workers = [r.stats() for r in records if r.role == "worker"]
        node_zero = next(r.stats() for r in records if r.role == "node-zero")
        return {"workers": workers, "node_zero": node_zero, "n_workers": self.threads,
                "steps": self._step, "chunks": len(self.shared.chunks),
                "segment_bytes": self.shared.segments.nbytes,
                "grad_buffers": self.shared.grads.size,
                "grad_buffers_created": self.shared.grads.created,
                "grad_buffers_peak": self.shared.grads.in_use_peak}

    def record_digests(self, capture=()) -> FoldDigests:
        """From the next step on, record a digest of every partial sum of the reduction tree
        (fast.record.FoldDigests), keeping copies of the keys in `capture`. Off by default."""
        with self._call_lock:
            self.record.digests = FoldDigests(capture)
            return self.record.digests

    def unfired_faults(self) -> list[Fault]:
        """Injected faults that never fired (the run reports them as warnings)."""
        return self.faults.unfired()

    @property
    def diagnosis(self) -> dict | None:
        return self.watchdog.diagnosis

    # -- private steps ------------------------------------------------------------------------

    def run_job(self, job: StepJob, *, count_step: bool = False) -> StepJob:
        """Run a prepared job (fast.mpi_engine's compute-only and reduce-only halves of a step)."""
        with self._call_lock:
            job = self._run_job(job)
            if count_step:
                self._step += 1
            return job

    def _run(self, tokens: np.ndarray, targets: np.ndarray, apply_update: bool,
             eval_only: bool = False) -> StepJob:
        """Hand one group to Node Zero and wait; raise the step's error, if any."""
        tokens, targets, g = self._check_group(tokens, targets)
        job = StepJob(step=self._step, tokens=tokens, targets=targets, n_batches=g,
                      apply_update=apply_update, eval_only=eval_only)
        return self._run_job(job)

    def _run_job(self, job: StepJob) -> StepJob:
        if self._closed:
            raise InputError("this FastTrainer is closed; create a new one")
        if self.shared.error is not None:
            raise self.shared.error
        self._current = job
        self._in_flight_since = time.monotonic()
        try:
            self._node_zero.inbox.put(job)
            while not job.done.wait(0.1):
                if self.shared.error is not None:
                    job.done.wait(ERROR_GRACE_SECONDS)
                    break
        finally:
            self._in_flight_since = None
            self._current = None
        if self.shared.error is not None:
            raise self.shared.error
        if job.error is not None:
            raise job.error
        return job

    def _check_group(self, tokens, targets) -> tuple[np.ndarray, np.ndarray, int]:
        m, B = self.config.model, self.config.train.batch_size
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        targets = np.ascontiguousarray(targets, dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape != targets.shape:
            raise InputError(f"tokens {tokens.shape} and targets {targets.shape} must be the "
                             "same 2-D shape (g*B rows, up to S positions)")
        rows, cols = tokens.shape
        if rows == 0 or rows % B:
            raise InputError(f"a group has {rows} rows, not a positive multiple of the batch "
                             f"size B={B}; pad the last batch (reference.batches does)")
        if cols == 0 or cols > m.seq_len:
            raise InputError(f"rows have {cols} positions; the model takes 1..{m.seq_len}")
        for ids, what in ((tokens, "tokens"), (targets, "targets")):
            if ids.min() < 0 or ids.max() >= m.vocab_size:
                raise InputError(f"{what} hold ids in [{ids.min()}, {ids.max()}] but the "
                                 f"vocabulary has {m.vocab_size}; re-tokenize with the model's "
                                 "vocabulary")
        if not np.count_nonzero(targets):
            raise InputError("the group has no non-pad targets (every target is <pad>=0); "
                             "there is nothing to learn from: check the data")
        return tokens, targets, rows // B

    def _result(self, job: StepJob, grads: dict | None) -> StepResult:
        lr = job.scalars.lr if job.apply and job.scalars is not None else math.nan
        per_worker = [len(b) for b in assign(job.n_batches, self.threads)]
        return StepResult(loss=job.loss, n_targets=job.n_targets, grad_norm=job.norm, lr=lr,
                          grads=grads, stats={"batches": job.n_batches,
                                              "batches_per_worker": per_worker,
                                              "batch_worker": job.batch_worker.tolist()})

    def _named_copies(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {name: view.copy() for name, view in self.model.unflatten(flat).items()}

    @staticmethod
    def _join(threads: list[threading.Thread], seconds: float) -> list[threading.Thread]:
        deadline = time.monotonic() + seconds
        started = [t for t in threads if t.ident is not None]  # never started: nothing to end
        for t in started:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t for t in started if t.is_alive()]
