"""`spheres stress`: a seeded chaos run in the manner of deterministic simulation testing.

Hypothesis draws each case: thread count, group size, corpus length (so the last group may be
short), steps, precision, the core count the pools are sized for and the gradient pool's size
(down to one buffer and one workspace: batch-order grants must never deadlock, issue #18),
up to two injected faults (any kind, any thread, any step, also two at once and at the last
step, which the rescue checkpoint then follows) and a perturbation schedule.
The schedule is a hook at every synchronisation point of the fast engine (fast/perturb.py):
per thread and phase a seeded choice to sleep up to `max_delay_us`, yield, or go on. After each
case the invariants are checked against a baseline computed once per data shape with one
thread, no faults and no perturbation:
- no fault fired: every step's loss and the final weights are bitwise the baseline's;
- a fault fired: the run ended with the right kind (FaultError, exit 4, for raise/nan;
  StallError, exit 3, for hang), the message names a fired fault's thread, and the weights are
  bitwise the baseline's after the last completed step (nothing half-applied);
- every thread ended after close(); the checkpoint of the final state, written before close()
  as the CLI's rescue does (a hung thread may still be alive), loads and is bitwise it.
A failed case is printed with the batch seed that replays it (`--replay SEED`); exit 1.
A signal stops the run between cases (harness/run/stop.py): the totals so far are printed as
INTERRUPTED and the exit code is 128 + N, never a failure blamed on the case in flight.
"""

from __future__ import annotations

import logging
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fast import perturb
from harness.run.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from harness.run.corpus import load_corpus
from harness.run.stop import check_stop, deferred
from plumbing.errors import FaultError, InputError, StallError
from reference.config import preset

PRESET = "tiny"  # small enough for a case to take well under a second without faults
STALL_SECONDS = 1.5  # stall timeout of every case: far above any perturbation (<= 2 ms per
# sync point) so a slow, loaded machine is not a stall, yet a hang case ends in ~2 s
MAX_THREADS = 16  # past 12 workers share positions; more would only repeat cases
MAX_GROUP = 30  # batches 12.. fold after others: up to 3 per position, so the gradient pool and
# the fold order are exercised (issue #18), still well under a second per case
MAX_CORES = 8  # the core count the pools are sized for: 1 (one workspace) up to many
GRAD_BUFFERS = (None, 1, 2, 3)  # the gradient pool: default size, its smallest, a few
MAX_STEPS = 3
CASES_PER_BATCH = 10  # one hypothesis run; its seed replays all of its cases (hypothesis
# opens each run with the simplest case, so fewer cases per run would repeat it more often)
JOIN_SECONDS = 10.0  # after close(): how long the engine's threads may take to be gone
ERROR_KINDS = {"raise": FaultError, "nan": FaultError, "hang": StallError}


@dataclass(frozen=True)
class StressCase:
    threads: int
    group_size: int
    n_batches: int  # batches in the corpus: n_batches % group_size != 0 gives a short group
    trim: int  # tokens cut from the last batch (padding in the last rows)
    steps: int
    dtype: str
    faults: tuple[str, ...]  # --inject specs
    perturb_seed: int
    max_delay_us: int
    yield_share: float
    cores: int = 2  # FastTrainer(cores=): workspaces min(T, cores), gradient pool by default
    grad_buffers: int | None = None  # FastTrainer(grad_buffers=): None for the default size


def case_strategy():
    """The hypothesis strategy of one case (hypothesis is a dev dependency: imported here)."""
    from hypothesis import strategies as st

    @st.composite
    def cases(draw) -> StressCase:
        threads = draw(st.integers(1, MAX_THREADS))
        group = draw(st.integers(1, MAX_GROUP))
        steps = draw(st.integers(1, MAX_STEPS))
        target = st.one_of(st.just("node-zero"),
                           st.integers(0, threads - 1).map(lambda i: f"worker={i}"))

        def fault(kind_target_step):
            kind, where, step, seconds = kind_target_step
            spec = f"{kind}:target={where},step={step}"
            return spec + (f",seconds={seconds}" if kind == "slow" else "")

        one = st.tuples(st.sampled_from(["raise", "nan", "hang", "slow"]), target,
                        st.integers(0, steps), st.sampled_from([0.05, 0.2])).map(fault)
        faults = draw(st.lists(one, max_size=2, unique=True).filter(
            lambda fs: not any(f.startswith("nan:target=node-zero") for f in fs)))
        return StressCase(
            threads=threads, group_size=group,
            n_batches=draw(st.integers(1, 3 * group)), trim=draw(st.integers(0, 40)),
            steps=steps, dtype=draw(st.sampled_from(["float32", "float64"])),
            faults=tuple(faults), perturb_seed=draw(st.integers(0, 2**32 - 1)),
            max_delay_us=draw(st.sampled_from([0, 200, 2000])),
            yield_share=draw(st.sampled_from([0.0, 0.3, 0.7])),
            cores=draw(st.integers(1, MAX_CORES)),
            grad_buffers=draw(st.sampled_from(GRAD_BUFFERS)))

    return cases()


class Perturber:
    """The sync-point hook: per thread a seeded RNG decides to sleep, yield or go on."""

    def __init__(self, case: StressCase) -> None:
        self.case = case
        self._rngs: dict[str, random.Random] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def __call__(self, thread: str, phase: str, step: int | None) -> None:
        rng = self._rngs.get(thread)
        if rng is None:
            with self._lock:
                rng = self._rngs.setdefault(
                    thread, random.Random(f"{self.case.perturb_seed}:{thread}"))
        self.calls += 1  # approximate under races; only reported
        u = rng.random()
        if u < self.case.yield_share:
            time.sleep(0)
        elif self.case.max_delay_us and u < self.case.yield_share + 0.3:
            time.sleep(rng.uniform(0, self.case.max_delay_us) * 1e-6)


@dataclass
class Baseline:
    losses: list[float]
    params: list[dict[str, np.ndarray]]  # params[k]: after k steps


@dataclass
class StressTotals:
    cases: int = 0
    faults_fired: int = 0
    faults_unfired: int = 0
    invariants: int = 0
    sync_points: int = 0
    failures: list[str] = field(default_factory=list)


class InvariantFailed(AssertionError):
    pass


class CaseRunner:
    """Runs cases and checks their invariants; baselines are cached per data shape."""

    def __init__(self, totals: StressTotals, workdir: Path) -> None:
        self.totals = totals
        self.workdir = workdir
        self._baselines: dict[tuple, Baseline] = {}

    def check(self, ok: bool, what: str, case: StressCase) -> None:
        self.totals.invariants += 1
        if not ok:
            raise InvariantFailed(f"{what} in {case}")

    def _data(self, case: StressCase):
        cfg = preset(PRESET, group_size=case.group_size)
        t = cfg.train
        tokens = case.n_batches * t.batch_size * cfg.model.seq_len + 1 - case.trim
        corpus = load_corpus(cfg, None, synthetic_tokens=tokens)
        return cfg, corpus, corpus.groups(cfg)

    def baseline(self, case: StressCase) -> Baseline:
        key = (case.group_size, case.n_batches, case.trim, case.dtype)
        if key not in self._baselines:
            from fast.trainer import FastTrainer

            cfg, _, groups = self._data(case)
            with FastTrainer(cfg, 1, dtype=np.dtype(case.dtype)) as trainer:
                base = Baseline(losses=[], params=[trainer.state().params])
                for s in range(MAX_STEPS):
                    g = groups.group(s % len(groups))
                    base.losses.append(trainer.step(g.tokens, g.targets).loss)
                    base.params.append(trainer.state().params)
            self._baselines[key] = base
        return self._baselines[key]

    def run(self, case: StressCase) -> None:
        from fast.trainer import FastTrainer

        base = self.baseline(case)
        cfg, corpus, groups = self._data(case)
        before = set(threading.enumerate())
        hook = Perturber(case)
        error: BaseException | None = None
        with perturb.installed(hook):
            trainer = FastTrainer(cfg, case.threads, dtype=np.dtype(case.dtype),
                                  stall_timeout=STALL_SECONDS, faults=list(case.faults),
                                  cores=case.cores, grad_buffers=case.grad_buffers)
            try:
                try:
                    for s in range(case.steps):
                        g = groups.group(s % len(groups))
                        loss = trainer.step(g.tokens, g.targets).loss
                        self.check(loss == base.losses[s], f"loss of step {s} differs from "
                                   "the one-thread baseline", case)
                except (FaultError, StallError) as exc:
                    error = exc
                state = trainer.state()
                fired, unfired = trainer.faults.fired(), trainer.faults.unfired()
                # like the CLI's rescue: written while a hung thread may still be alive
                self._check_checkpoint(case, cfg, corpus, state)
            finally:
                trainer.close()
        self.totals.sync_points += hook.calls
        self.totals.faults_fired += len(fired)
        self.totals.faults_unfired += len(unfired)
        self._check_outcome(case, base, state, fired, error)
        self.check(not trainer.unjoined, f"threads not joined: {trainer.unjoined}", case)
        deadline = time.monotonic() + JOIN_SECONDS
        while (left := [t for t in set(threading.enumerate()) - before if t.is_alive()]) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        self.check(not left, f"threads still alive: {[t.name for t in left]}", case)
        self.totals.cases += 1

    def _check_outcome(self, case, base, state, fired, error) -> None:
        errors = [f for f in fired if f.kind.value in ERROR_KINDS]
        k = state.step
        same = all(np.array_equal(state.params[n], base.params[k][n]) for n in state.params)
        if not errors:
            self.check(error is None, f"run failed without a fault: {error!r}", case)
            self.check(k == case.steps, f"stopped at step {k}", case)
            self.check(same, "weights differ bitwise from the one-thread baseline", case)
            return
        self.check(error is not None, f"faults {[str(f) for f in errors]} fired but the run "
                   "did not fail", case)
        kinds = tuple(ERROR_KINDS[f.kind.value] for f in errors)
        self.check(isinstance(error, kinds), f"{type(error).__name__} is not the kind of the "
                   f"fired faults {[str(f) for f in errors]}", case)
        self.check(any(f.thread_name in str(error) for f in errors),
                   f"the message does not name a culprit: {error}", case)
        self.check(same, f"weights after the failure are not the baseline's after step {k} "
                   "(half-applied?)", case)

    def _check_checkpoint(self, case, cfg, corpus, state) -> None:
        with tempfile.TemporaryDirectory(dir=self.workdir) as folder:
            path = checkpoint_path(folder, state.step)
            save_checkpoint(path, state, cfg, corpus.vocab, extra={"data": corpus.source})
            loaded = load_checkpoint(path).state
        self.check(loaded.step == state.step and all(
            np.array_equal(loaded.params[n], state.params[n]) for n in state.params),
            "the checkpoint of the final state does not load bitwise", case)


def run_batch(runner: CaseRunner, batch_seed: int, deadline: float | None,
              show=None) -> list[str]:
    """One hypothesis run of CASES_PER_BATCH cases seeded by `batch_seed`; failures found."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hyp_seed

    failures: list[str] = []

    @hyp_seed(batch_seed)
    @settings(max_examples=CASES_PER_BATCH, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False, print_blob=False)
    @given(case=case_strategy())
    def prop(case: StressCase) -> None:
        if deadline is not None and time.monotonic() > deadline:
            return
        # a safe point between cases: `Stopped` is a BaseException, so hypothesis ends the run
        # and passes it on (never a FlakyFailure, never caught below as a case's failure)
        check_stop(f"after {runner.totals.cases} cases")
        if show is not None:
            show(f"  case {case}")
        runner.run(case)

    try:
        prop()
    except InvariantFailed as exc:
        failures.append(f"{exc} (replay: spheres stress --replay {batch_seed})")
    except Exception as exc:  # anything else a case raised is a failure too, never hidden
        failures.append(f"{type(exc).__name__}: {exc} (replay: spheres stress --replay "
                        f"{batch_seed})")
    return failures


def stress(seconds: float, seed: int, replay: int | None = None, say=print,
           totals: StressTotals | None = None) -> StressTotals:
    """Run batches until `seconds` have passed (or replay one batch); the totals (into
    `totals` when given, so a stopped run still has the cases it did)."""
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        raise InputError("spheres stress needs hypothesis: pip install -e '.[dev]'") from None
    from fast.trainer import warmup

    for dt in (np.float32, np.float64):
        warmup(dt)  # compile once, before the clock starts
    totals = StressTotals() if totals is None else totals
    engine_log = logging.getLogger("fast")  # each drilled fault logs its diagnosis: expected
    level = engine_log.level
    engine_log.setLevel(logging.CRITICAL)
    try:
        with deferred("the current case"):  # the warm-up above stops at once
            _run(totals, seconds, seed, replay, say)
    finally:
        engine_log.setLevel(level)
    return totals


def _run(totals: StressTotals, seconds: float, seed: int, replay: int | None, say) -> None:
    with tempfile.TemporaryDirectory(prefix="ks-stress-") as work:
        runner = CaseRunner(totals, Path(work))
        if replay is not None:
            say(f"replaying batch {replay} ({CASES_PER_BATCH} cases)")
            totals.failures += run_batch(runner, replay, None, show=say)
            return
        seeds = random.Random(seed)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            check_stop(f"after {totals.cases} cases")
            batch = seeds.getrandbits(32)
            found = run_batch(runner, batch, deadline)
            totals.failures += found
            for f in found:
                say(f"FAILED: {f}")
            say(f"batch {batch}: {totals.cases} cases, {totals.faults_fired} faults fired, "
                f"{totals.invariants} invariants checked, {len(totals.failures)} failures")
