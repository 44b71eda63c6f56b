"""The typed results model: to_json -> from_json gives the same objects, and a reader is told
(InputError, exit 2) when a file does not match the model it reads."""

from __future__ import annotations

import json
import math

import pytest

from harness.figures.bench_metrics import (
    BenchMetrics,
    BenchRow,
    BenchSummary,
    EngineComparison,
    EngineRow,
    KernelShare,
    MpiRankTimes,
    MpiStepBench,
    Verdict,
    Workload,
)
from harness.figures.facts import (
    BlasFacts,
    BlasLibrary,
    Finding,
    GitCommit,
    MachineFacts,
    ThreadStats,
    ThreadTable,
)
from harness.figures.results import (
    SCHEMA_VERSION,
    AnalysisResults,
    Check,
    DrillResult,
    MemoryResult,
    MemrayResult,
    RecordSummary,
    RunMeta,
    ScaleOut,
    ThroughputPoint,
    TrainingResult,
)
from harness.figures.serial import from_json, to_json
from plumbing.errors import InputError

MACHINE = MachineFacts(cores=2, cpu_model="test cpu", git=GitCommit("abc", False),
                       blas=BlasFacts([BlasLibrary("openblas", "0.3", "SkylakeX", 2)],
                                      {"OMP_NUM_THREADS": "1"}, "skylakex", []))
STEP = MpiStepBench("tiny", 12, 2, 1, "float32", 100, [0.2, 0.1], 0.1, 50, 500.0,
                    [MpiRankTimes(0, 2, 0.1, 0.0, 0.01, 0.02, 400, 2400)])


def full_results() -> AnalysisResults:
    """Every optional part present, including a NaN (an engine that could not be measured)."""
    return AnalysisResults(
        meta=RunMeta(preset="tiny", threads=2, steps=2, machine=MACHINE, inject=["x"]),
        training=TrainingResult(steps=2, losses=[5.0, 4.5], eval_losses=[(2, 4.6)]),
        threads=ThreadTable(ThreadStats("ks-node-zero", "node-zero", decide_seconds=0.1),
                            [ThreadStats("ks-worker-0", "worker", 0, batches=4)]),
        memory=MemoryResult(peak_rss_bytes=10, memray=MemrayResult(error="no memray")),
        drills=[DrillResult("hang", True, "StallError after 2.1s", weights_unchanged=True)],
        engines=EngineComparison(Workload("tiny", 2, "float32", 2, 2), 1e11, 1000, 2,
                                 [EngineRow("fast", "float32", 2, tokens_per_s=10.0),
                                  EngineRow("torch", "float32", 2, error="not installed")]),
        record=RecordSummary({"fold-order": Finding(True, "ascending")}, steps=2),
        checks=[Check("fold-order", "symmetry", "fold order", True, "ascending")],
        verdict="PASS", plots={"loss_curve": "loss.png"},
        scale_out=ScaleOut(2, 1, "tiny", 12, bench=STEP, mpi_hashes={"grads_sha": "a"}),
    )


def text(obj) -> str:
    return json.dumps(obj.to_json(), sort_keys=True)  # NaN as text: equal NaNs compare equal


def test_analysis_results_round_trip():
    r = full_results()
    back = AnalysisResults.from_json(json.loads(json.dumps(r.to_json())))
    assert text(back) == text(r)
    assert back.training.eval_losses == [(2, 4.6)]  # tuples, not lists
    assert isinstance(back.threads.node_zero, ThreadStats)
    assert isinstance(back.record.findings["fold-order"], Finding)
    assert back.scale_out.bench.per_rank[0].last_received_bytes == 2400
    assert math.isnan(back.engines.rows[1].tokens_per_s)
    assert back.meta.machine == MACHINE and back.threads == r.threads
    assert r.to_json()["schema_version"] == SCHEMA_VERSION


def test_bench_summary_round_trip():
    m = BenchMetrics(fast_tokens_per_s={1: 100.0, 2: 190.0}, seed_seconds=4.0)
    s = BenchSummary("now", MACHINE, {"preset": "tiny"}, {}, 1000, "6N",
                     engines=[BenchRow("t[T2]", "scaling", "fast", 2, 8, 1000, 5.0, 200.0, 2e5,
                                       2, trainer_stats={"workers": []}, speedup=1.9)],
                     mpi_bytes=[STEP], kernel_table=[KernelShare("gemm fc", 0.6, "gemm")],
                     metrics=m, targets=[Verdict("x", "pass", 1.9, ">= 1.8x", "ok")])
    data = json.loads(json.dumps(s.to_json()))
    assert data["metrics"]["fast_tokens_per_s"] == {"1": 100.0, "2": 190.0}
    back = BenchSummary.from_json(data)
    assert back == s and back.metrics.fast_tokens_per_s_T2 == 190.0


def test_a_file_that_does_not_match_the_model_is_an_input_error():
    data = full_results().to_json()
    with pytest.raises(InputError, match=f"schema_version 2 but .* schema_version "
                                         f"{SCHEMA_VERSION}"):
        AnalysisResults.from_json(dict(data, schema_version=2))
    with pytest.raises(InputError, match="no schema_version"):
        AnalysisResults.from_json({k: v for k, v in data.items() if k != "schema_version"})
    data["training"]["surprise"] = 1
    with pytest.raises(InputError, match=r"training: unknown field\(s\) \['surprise'\]"):
        AnalysisResults.from_json(data)
    with pytest.raises(InputError, match="Check"):
        from_json(Check, {"id": "x"})  # required fields missing
    with pytest.raises(InputError, match="expected an object"):
        from_json(RunMeta, [1, 2])


def test_to_json_gives_plain_json_data():
    import numpy as np

    data = to_json(ThroughputPoint(np.int64(2), np.float64(1.5)))
    assert data == {"threads": 2, "tokens_per_s": 1.5, "seconds": 0.0, "group_size": 0,
                    "speedup": 1.0, "step_seconds": []}
    assert type(data["threads"]) is int and type(data["tokens_per_s"]) is float
    assert to_json({"x": np.arange(3), "y": (np.float32(0.5),)}) == {"x": [0, 1, 2], "y": [0.5]}
