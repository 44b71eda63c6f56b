"""A breaking test for every check: a deliberately broken variant, and the check seen FAILING.

Three registries are covered: analyze's checks (`harness.analysis.checks.ANALYZE_CHECKS`), verify's
gates
(`harness.verify.gates.VERIFY_GATES`) and `make bench`'s targets (`harness.bench.targets.TARGETS`).
`test_every_check_has_a_breaker` fails when a check is added without a breaker here.

Most are broken in the ENGINE (monkeypatched fast/ code: Node Zero running a batch, a batch
written into the wrong position segment, positions folded in another order, a barrier a worker
skips, a worker finishing its batches after the update, close() that joins nothing, a NaN loss,
a one-ulp difference at T=2...) and the check reads what analyze's own training phase, verify's
gates or the run record measured. Checks that judge a machine-level figure (throughput ratios,
CPU use, peak memory, memray, tokenisation, the data counts, the drills' outcome) are fed the
figure a broken run would measure, starting from a baseline on which every check passes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

import fast.trainer
import fast.workers as fw
from fast.barrier import Barrier
from fast.node_zero import JobBoard
from fast.reduction import PositionTickets
from fast.trainer import FastTrainer
from fast.workers import Worker
from harness.analysis.checks import ANALYZE_CHECKS, build_checks
from harness.bench import targets as bench_targets
from harness.figures.bench_metrics import BenchMetrics, EngineComparison, EngineRow
from harness.figures.facts import ThreadStats, ThreadTable
from harness.figures.results import (
    AllocationSite,
    AnalysisResults,
    DataSummary,
    DrillResult,
    EquivalenceResult,
    MemoryResult,
    MemrayResult,
    Performance,
    RecordSummary,
    RunMeta,
    RunRecord,
    ThroughputPoint,
    TrainingResult,
)
from harness.measure import evidence
from harness.run.corpus import load_corpus, one_group_tokens
from harness.verify.gates import RECORD_GATES, VERIFY_GATES, _Reference, check_bitwise, verify_one
from reference.config import preset

G = 26  # > 2 x 12: every position folds two or three batches, so fold order matters
CFG = preset("tiny").replace(group_size=G)

# ------------------------------------------------------------------ broken engine variants


def node_zero_computes(mp: pytest.MonkeyPatch) -> None:
    """Node Zero runs batch 0 itself (worker 0 skips it)."""
    orig = fw.worker_batches
    mp.setattr(fw, "worker_batches", lambda w, g, t: [b for b in orig(w, g, t) if b != 0])
    orig_post = JobBoard.post

    def post(board, job):
        orig_post(board, job)
        trainer = _current[-1]
        w = object.__new__(Worker)  # Node Zero borrows the batch routine: no worker of its own
        w.index, w.shared, w.hb = 0, trainer.shared, trainer._node_zero.hb
        w.workspaces = trainer.workspaces
        w.run_batch(job, 0, 0)

    mp.setattr(JobBoard, "post", post)


def wrong_position(mp: pytest.MonkeyPatch) -> None:
    """Batch 5 is written into position 6's segment (a worker at the wrong position)."""
    mp.setattr(fw, "position_of", lambda b: 6 if b == 5 else b % 12)


def _ample_pools(mp: pytest.MonkeyPatch) -> None:
    """A workspace and a gradient buffer per batch. The pools keep one back for every lower
    batch of the step still to come (fast/grad_pool.py), so a broken plan that never runs a
    batch, or runs them out of order, would wait for it; with enough for everyone it runs to
    the end and the check under test sees what it did."""
    mp.setattr(fast.trainer, "grad_pool_size", lambda threads, cores, needers=None: 64)
    mp.setattr(fast.trainer, "pool_size", lambda threads, cores=None: 64)


def reversed_folds(mp: pytest.MonkeyPatch) -> None:
    """Each worker runs its batches in descending order; neither tickets nor buffer grants
    (which would wait for the ascending batch forever) order them any more."""
    orig = fw.worker_batches
    mp.setattr(fw, "worker_batches", lambda w, g, t: list(orig(w, g, t))[::-1])
    mp.setattr(PositionTickets, "wait_turn", lambda self, batch: None)
    _ample_pools(mp)


def skipped_batch(mp: pytest.MonkeyPatch) -> None:
    """The last batch of the group is never run (the original's stale short group)."""
    orig = fw.worker_batches
    mp.setattr(fw, "worker_batches", lambda w, g, t: [b for b in orig(w, g, t) if b != g - 1])


def one_position(mp: pytest.MonkeyPatch) -> None:
    """Every batch is folded into position 0: the 12-fold spread collapses."""
    mp.setattr(fw, "position_of", lambda b: 0)


def outside_tree(mp: pytest.MonkeyPatch) -> None:
    """Batch 3 is written to position -1 (numpy wraps it onto segment 11): off the tree."""
    mp.setattr(fw, "position_of", lambda b: -1 if b == 3 else b % 12)


class _SkippingBarrier(Barrier):
    """Worker 0 walks through without waiting; the others meet with one party fewer."""

    def wait(self, party=None, timeout=None):
        if party == 0:
            return 0
        return super().wait(party, timeout)


def skipped_barrier(mp: pytest.MonkeyPatch) -> None:
    orig = FastTrainer._new_barrier

    def new_barrier(self, name, parties, ticks):
        if name == "reduced":
            return _SkippingBarrier(parties - 1, name, timeout=self.barrier_timeout,
                                    ticks=ticks)
        return orig(self, name, parties, ticks)

    mp.setattr(FastTrainer, "_new_barrier", new_barrier)


def late_worker(mp: pytest.MonkeyPatch) -> None:
    """Worker 1 passes every barrier first and computes its batches after the update."""
    orig = Worker.run_step

    def run_step(self, job):
        if self.index != 1:
            return orig(self, job)
        self._step = job.generation
        self.point_a(job)
        self.reduce(job)
        self.wait(self.shared.barriers.reduced, fw.Phase.WAITING_REDUCED)
        self.wait(self.shared.barriers.decided, fw.Phase.WAITING_DECISION)
        if job.apply:
            self.update(job)
        self.wait(self.shared.barriers.point_b, fw.Phase.WAITING_B)
        self.compute_batches(job)

    mp.setattr(Worker, "run_step", run_step)
    _ample_pools(mp)  # worker 0 must not wait for what is kept back for worker 1's batches


_current: list[FastTrainer] = []

# record finding -> (threads, broken variant)
ENGINE_BREAKERS = {
    "node-zero-no-batch": (3, node_zero_computes),
    "every-batch-once": (3, skipped_batch),
    "fold-position": (1, wrong_position),
    "fold-order": (1, reversed_folds),
    "positions-filled": (1, one_position),
    "hierarchy": (1, outside_tree),
    "barriers": (2, skipped_barrier),
    "update-after-batches": (2, late_worker),
}


@pytest.fixture(scope="module")
def group():
    corpus = load_corpus(CFG, None, synthetic_tokens=one_group_tokens(CFG, 1))
    return corpus.groups(CFG).group(0)


def run_record(group, threads: int, breaker=None):
    """One step of a (possibly broken) engine; the record once every thread was joined."""
    with pytest.MonkeyPatch.context() as mp:
        if breaker is not None:
            breaker(mp)
        trainer = FastTrainer(CFG, threads, stall_timeout=20.0)
        _current.append(trainer)
        try:
            trainer.step(group.tokens, group.targets)
        finally:
            trainer.close()
            _current.pop()
    assert trainer.unjoined == []
    return trainer.record.snapshot()


_records: dict[str, object] = {}


def record_of(group, name: str):
    """The record of the broken variant for `name` (each variant runs once per module)."""
    if name not in _records:
        threads, breaker = ENGINE_BREAKERS[name]
        _records[name] = run_record(group, threads, breaker)
    return _records[name]


@pytest.fixture(scope="module")
def healthy(group):
    return run_record(group, 3)


def test_healthy_run_passes_every_record_finding(healthy, no_thread_leak):
    for name, finding in evidence.RECORD_FINDINGS.items():
        f = finding(healthy)
        assert f.passed, f"{name}: {f.figure}"


@pytest.mark.parametrize("name", sorted(ENGINE_BREAKERS))
def test_broken_engine_fails_its_record_finding(group, name, no_thread_leak):
    f = evidence.RECORD_FINDINGS[name](record_of(group, name))
    assert not f.passed, f"{name} passed on its broken variant: {f.figure}"


# ------------------------------------------------------------------ analyze's checks


def baseline_results(findings: dict) -> AnalysisResults:
    """The figures of a healthy seed-preset analysis (every check passes on them)."""
    tp = [ThroughputPoint(1, 1000.0, speedup=1.0), ThroughputPoint(2, 1900.0, speedup=1.9),
          ThroughputPoint(63, 1850.0, speedup=1.85)]
    record = RunRecord("tiny", "float32", 2, 1e-8, 1e-7, "wte", "a", "b", "c", 1e-7, "wte",
                       [1, 1], 0, 0.1)
    return AnalysisResults(
        meta=RunMeta(threads=2, preset="seed", steps=3),
        data=DataSummary(group_size=63, batches_per_epoch=100, expected_batches=100,
                         groups_per_epoch=2, expected_groups=2,
                         tokenize_peak_bytes=200_000_000, tokenize_seconds=1.0),
        training=TrainingResult(compile_seconds=1.0, steps=3, threads_alive_after_close=[],
                                losses=[6.5, 6.4, 6.3], seconds=30.0),
        threads=ThreadTable(node_zero=ThreadStats("ks-node-zero", "node-zero"),
                            workers=[ThreadStats("ks-worker-0", "worker", 0, batches=95),
                                     ThreadStats("ks-worker-1", "worker", 1, batches=94)]),
        performance=Performance(throughput=tp, cores=2, cpu_utilisation=0.9,
                                cpu_seconds=54.0, wall_seconds=30.0),
        memory=MemoryResult(peak_rss_bytes=900_000_000, memray=MemrayResult(
            peak_bytes=100_000_000, top=[AllocationSite("f", "x.py", 1, 1000)])),
        equivalence=EquivalenceResult(runs=2, dtypes=["float32"], records=[record]),
        drills=[DrillResult("hang in a worker", passed=True, outcome="StallError")],
        engines=EngineComparison(rows=[EngineRow("fast", "float32", 2, tokens_per_s=1000.0)]),
        record=RecordSummary(findings=findings),
    )


def _set(path: str, value):
    def mutate(r):
        *keys, last = path.split(".")
        node = r
        for k in keys:
            node = getattr(node, k)
        setattr(node, last, value)
    return mutate


def _tp(threads: int, speedup: float):
    def mutate(r):
        for p in r.performance.throughput:
            if p.threads == threads:
                p.speedup = speedup
                p.tokens_per_s = 1000.0 * speedup
    return mutate


def _drill_failed(r):
    r.drills[0] = dataclasses.replace(r.drills[0], passed=False,
                                      outcome="completed (the hang was not detected)")


def analyze_training(breaker=None, inject: tuple[str, ...] = ()):
    """analyze's real training phase (tiny, 2 threads, 1 step) on a possibly broken engine;
    returns a function that puts its measurements into a results dict."""
    from harness.analysis.phases import phase_training, record_stats
    from harness.analysis.plan import make_plan

    plan = make_plan(quick=True, preset="tiny", threads=2, steps=1, seed=0, data=None,
                     stall_timeout=10.0, inject=list(inject))
    cfg = preset("tiny")
    corpus = load_corpus(cfg, None, synthetic_tokens=plan.synthetic_tokens)
    with pytest.MonkeyPatch.context() as mp:
        _Current(mp)
        if breaker is not None:
            breaker(mp)
        run = phase_training(plan, cfg, corpus, Path("."), lambda line: None)
    for trainer in _current:  # a breaker that kept threads alive: end them for real now
        FastTrainer.close(trainer)
    _current.clear()

    def splice(r: AnalysisResults) -> None:
        r.meta.threads, r.meta.steps = 2, 1
        r.data.group_size = cfg.train.group_size
        r.training = run.result
        r.threads = record_stats(run.record, run.cpu)
        if run.record is not None:
            r.record.findings = evidence.findings(run.record)
    return splice


def analyze_equivalence(breaker):
    """analyze's equivalence figures from verify's gates run on a broken engine (tiny, T=1,2)."""
    from harness.verify.gates import run_verify

    with pytest.MonkeyPatch.context() as mp:
        _Current(mp)
        breaker(mp)
        report = run_verify([preset("tiny")], ["float32"], [1, 2], trajectory_steps=2,
                            out=lambda line: None)
    _current.clear()
    records = list(report.records)

    def splice(r: AnalysisResults) -> None:
        r.equivalence = EquivalenceResult(records=records, runs=len(records), dtypes=["float32"],
                                          failures=[f for x in records for f in x.failures])
    return splice


def _no_close(mp):
    """close() returns without ending any thread (the original's shutdown)."""
    mp.setattr(FastTrainer, "close", lambda self: None)


def _nan_loss(mp):
    orig = fw.batch_forward_backward
    mp.setattr(fw, "batch_forward_backward",
               lambda *a, **kw: (lambda loss, n: (math.nan, n))(*orig(*a, **kw)))


def _worker_one_idle(mp):
    orig = fw.worker_batches
    mp.setattr(fw, "worker_batches", lambda w, g, t: [] if w == 1 else list(orig(w, g, t)))
    _ample_pools(mp)  # worker 1's batches never ask: nothing may be kept back for them


# check id -> how a broken run's figures look (record ids: the broken engine's findings;
# `analyze_training(...)`: analyze's own training phase on a broken engine)
FIGURE_BREAKERS = {
    "engine-started": lambda r: (_set("training.compile_seconds", 0.0)(r),
                                 _set("training.steps", 0)(r)),
    "clean-shutdown": lambda r: analyze_training(_no_close)(r),
    "steps-finished": lambda r: analyze_training(inject=("raise:target=worker=0,step=0",))(r),
    "loss-finite": lambda r: analyze_training(_nan_loss)(r),
    "faults-fired": lambda r: analyze_training(inject=("hang:target=worker=9,step=0",))(r),
    "workers-busy": lambda r: analyze_training(_worker_one_idle)(r),
    "bitwise-reduction": lambda r: analyze_equivalence(_perturb_total)(r),
    "batches-per-epoch": _set("data.batches_per_epoch", 163),
    "tokenize-peak": _set("data.tokenize_peak_bytes", None),  # not measured: never a PASS
    "scaling-2": _tp(2, 1.2),
    "no-collapse": _tp(63, 0.8),
    "cpu-use": _set("performance.cpu_utilisation", 0.3),
    "peak-rss": _set("memory.peak_rss_bytes", 1.5e9),
    "memray": _set("memory.memray", MemrayResult(error="memray failed")),
    "drill": _drill_failed,
    "fast-equals-reference": lambda r: analyze_equivalence(_scaled_grads)(r),
    "engines-measured": lambda r: r.engines.rows.append(
        EngineRow("exec:python engine.py", "float32", 2, error="FaultError: died")),
}


@pytest.fixture(scope="module")
def healthy_findings(healthy):
    return evidence.findings(healthy)


def test_baseline_passes_every_analyze_check(healthy_findings):
    checks = build_checks(baseline_results(healthy_findings))
    failed = [c for c in checks if not c.passed]
    assert not failed, failed
    ids = {c.id for c in checks}
    assert ids <= set(ANALYZE_CHECKS), ids - set(ANALYZE_CHECKS)
    conditional = {"faults-fired"}  # made only when a fault never fired
    assert ids | conditional == set(ANALYZE_CHECKS)


@pytest.mark.parametrize("cid", ANALYZE_CHECKS)
def test_broken_run_fails_analyze_check(group, healthy_findings, cid, no_thread_leak):
    results = baseline_results(copy.deepcopy(healthy_findings))
    if cid in ENGINE_BREAKERS:
        results.record.findings = evidence.findings(record_of(group, cid))
    else:
        FIGURE_BREAKERS[cid](results)
    mine = [c for c in build_checks(results) if c.id == cid]
    assert mine, f"check {cid} was not made"
    assert not any(c.passed for c in mine), f"{cid} passed a broken run: {mine}"


# ------------------------------------------------------------------ verify's gates


@pytest.fixture(scope="module")
def tiny_reference():
    return _Reference(preset("tiny"), 3)


def _perturb_total(mp):
    orig = Worker.reduce

    def reduce(self, job):
        orig(self, job)
        if self.shared.n_workers == 2 and self.index == 0:  # one ulp, only with T=2
            self.shared.total[0] = np.nextafter(self.shared.total[0], np.inf)
    mp.setattr(Worker, "reduce", reduce)


def _perturb_update(from_step: int):
    def breaker(mp):
        orig = Worker.update

        def update(self, job):
            orig(self, job)
            if self.shared.n_workers == 2 and self.index == 0 and job.step >= from_step:
                self.shared.params[0] = np.nextafter(self.shared.params[0], np.inf)
        mp.setattr(Worker, "update", update)
    return breaker


def _scaled_loss(mp):
    orig = fw.batch_forward_backward
    mp.setattr(fw, "batch_forward_backward",
               lambda *a, **kw: (lambda loss, n: (loss * 1.01, n))(*orig(*a, **kw)))


def _scaled_grads(mp):
    orig = fw.batch_forward_backward

    def fb(model, params, segment, *rest, **kw):
        out = orig(model, params, segment, *rest, **kw)
        segment *= 1.01
        return out
    mp.setattr(fw, "batch_forward_backward", fb)


def _nudged_update(mp):
    orig = fw.apply_chunk

    def apply_chunk(params, total, m, v, decay, lo, hi, scalars, train):
        orig(params, total, m, v, decay, lo, hi, scalars, train)
        params[lo] += 1e-3
    mp.setattr(fw, "apply_chunk", apply_chunk)


def _idle_worker(mp):
    orig = fw.worker_batches
    mp.setattr(fw, "worker_batches", lambda w, g, t: [] if w == 1 else list(orig(w, g, t)))
    _ample_pools(mp)  # worker 1's batches never ask: nothing may be kept back for them


def _miscounted(mp):
    orig = FastTrainer.group_grads

    def group_grads(self, tokens, targets):
        result = orig(self, tokens, targets)
        result.n_targets += 1
        return result
    mp.setattr(FastTrainer, "group_grads", group_grads)


VERIFY_BREAKERS = {
    "loss-equivalence": _scaled_loss,
    "target-count": _miscounted,
    "grad-equivalence": _scaled_grads,
    "trajectory": _nudged_update,
    "work-distribution": _idle_worker,
    "node-zero": node_zero_computes,
    "reduction-record": wrong_position,
    "barrier-record": skipped_barrier,
    "bitwise-grads": _perturb_total,
    "bitwise-update": _perturb_update(0),
    "bitwise-trajectory": _perturb_update(1),
}


class _Current:
    """verify builds its own engines: track each one for breakers that need the trainer."""

    def __init__(self, mp):
        orig = FastTrainer.__init__

        def init(trainer, *a, **k):
            orig(trainer, *a, **k)
            _current.append(trainer)
        mp.setattr(FastTrainer, "__init__", init)


@pytest.mark.parametrize("gate", VERIFY_GATES)
def test_broken_engine_fails_verify_gate(tiny_reference, gate, no_thread_leak):
    cfg = preset("tiny")
    with pytest.MonkeyPatch.context() as mp:
        _Current(mp)
        VERIFY_BREAKERS[gate](mp)
        records = [verify_one(cfg, "float64", T, tiny_reference, stall_timeout=20.0)
                   for T in (1, 2)]
    _current.clear()
    check_bitwise(records)
    failures = [f for r in records for f in r.failures]
    assert any(f.startswith(f"{gate}:") for f in failures), (gate, failures)


def test_healthy_engine_passes_every_verify_gate(tiny_reference, no_thread_leak):
    records = [verify_one(preset("tiny"), "float64", T, tiny_reference, stall_timeout=20.0)
               for T in (1, 2)]
    check_bitwise(records)
    assert not [f for r in records for f in r.failures]


# ------------------------------------------------------------------ make bench's targets

BENCH_BASELINE = {
    "torch_available": True, "fast_tokens_per_s_T1": 1000.0, "fast_tokens_per_s_T2": 1900.0,
    "seed_tokens_per_s": 1800.0, "seed_at_cores_tokens_per_s": 1810.0,
    "model_flops_per_s_T2": 9.5e10, "matmul_peak_flops": 1e11,
    "model_flops_per_s_T1": 4.5e10, "matmul_peak_flops_one_core": 5e10,
    "fast_tokens_per_s_torch_threads": 1900.0, "torch_tokens_per_s": 1000.0,
    "seed_seconds": 40.0, "seed_peak_rss_bytes": 0.9e9, "tokenize_seconds": 4.0,
    "tokenize_peak_bytes": 300e6, "traced_tokens_per_s": 995.0, "untraced_tokens_per_s": 1000.0,
    "mpi_tokens_per_s_R2T1": 950.0, "single_tokens_per_s_T2": 1000.0,
    "gemm_worst_in_place_flops": 4.8e10, "gemm_worst_alone_flops": 5e10,
    "attention_flops_per_s": 3e10, "fast_tokens_per_s_torch_compile_threads": 1900.0,
    "torch_compile_tokens_per_s": 1000.0,
}
# the per-thread-count names the targets read, and where BenchMetrics keeps them
_BY_THREADS = {"fast_tokens_per_s_T1": ("fast_tokens_per_s", 1),
               "fast_tokens_per_s_T2": ("fast_tokens_per_s", 2),
               "model_flops_per_s_T1": ("model_flops_per_s_by_threads", 1),
               "model_flops_per_s_T2": ("model_flops_per_s_by_threads", 2)}


def bench_metrics(values: dict) -> BenchMetrics:
    """BenchMetrics holding `values` under the targets' names."""
    m = BenchMetrics()
    for name, value in values.items():
        if name in _BY_THREADS:
            field, threads = _BY_THREADS[name]
            getattr(m, field)[threads] = value
        else:
            assert hasattr(m, name), name
            setattr(m, name, value)
    for name, value in values.items():
        assert getattr(m, name) == value or value != value, name  # the target reads it back
    return m
BENCH_BREAKERS = {  # target -> the metric a broken run measures
    "2 threads vs 1 thread tokens/s": {"fast_tokens_per_s_T2": 1200.0},
    "run record / --trace overhead: traced vs untraced tokens/s": {"traced_tokens_per_s": 950.0},
    "seed group: 63 threads vs one thread per core tokens/s": {"seed_tokens_per_s": 1700.0},
    "model FLOP/s at 2 threads vs float32 sgemm peak (same run)": {"model_flops_per_s_T2": 6e10},
    "model FLOP/s at 1 thread vs one core's float32 sgemm peak": {"model_flops_per_s_T1": 3e10},
    "fast vs PyTorch eager tokens/s (same threads)": {"torch_tokens_per_s": 1800.0},
    "seed workload completes (one group of 63 batches)": {"seed_seconds": math.nan},
    "seed workload peak RSS": {"seed_peak_rss_bytes": 1.07e9},
    "tokenisation of a 24 MB corpus: time": {"tokenize_seconds": 30.0},
    "tokenisation of a 24 MB corpus: peak memory": {"tokenize_peak_bytes": 838e6},
    "MPI R=2 x T=1 vs single process T=2 tokens/s (G=24)": {"mpi_tokens_per_s_R2T1": 700.0},
    "linear GEMM groups in place vs the same calls alone (worst group, 1 thread)":
        {"gemm_worst_in_place_flops": 3.5e10},
    "attention FLOP/s in place vs one core's float32 sgemm peak (1 thread)":
        {"attention_flops_per_s": 1e10},
    "fast vs torch.compile tokens/s (same threads)": {"torch_compile_tokens_per_s": 1800.0},
}


@pytest.mark.parametrize("target", bench_targets.TARGETS, ids=lambda t: t.name)
def test_broken_metrics_fail_bench_target(target):
    assert target.check(bench_metrics(BENCH_BASELINE)).status == "pass"
    broken = bench_metrics({**BENCH_BASELINE, **BENCH_BREAKERS[target.name]})
    assert target.check(broken).status == "fail"


# ------------------------------------------------------------------ the registry


def test_every_check_has_a_breaker():
    """Adding a check without a breaking test fails here."""
    analyze_breakers = set(FIGURE_BREAKERS) | (set(ENGINE_BREAKERS) & set(ANALYZE_CHECKS))
    assert set(ANALYZE_CHECKS) == analyze_breakers, set(ANALYZE_CHECKS) ^ analyze_breakers
    assert set(VERIFY_GATES) == set(VERIFY_BREAKERS), set(VERIFY_GATES) ^ set(VERIFY_BREAKERS)
    names = {t.name for t in bench_targets.TARGETS}
    assert names == set(BENCH_BREAKERS), names ^ set(BENCH_BREAKERS)
    used = {n for names in RECORD_GATES.values() for n in names}
    assert used <= set(ENGINE_BREAKERS), used - set(ENGINE_BREAKERS)


def test_checks_doc_lists_every_check():
    text = (Path(__file__).resolve().parents[1] / "docs" / "CHECKS.md").read_text()
    missing = [c for c in (*ANALYZE_CHECKS, *VERIFY_GATES) if f"| `{c}` |" not in text]
    missing += [t.name for t in bench_targets.TARGETS if f"| {t.name} |" not in text]
    assert not missing, missing
