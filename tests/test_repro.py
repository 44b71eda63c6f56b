"""The reproducibility table (issue 23): ULPs measured right, and an engine known to differ
across thread counts shows it (a non-zero ULP entry), one that does not shows `yes · 0`."""

from __future__ import annotations

import numpy as np
import pytest

from harness.bench.repro import compare, markdown, produce, ulps
from reference.config import preset


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ulps_count_the_floats_between_two_values(dtype):
    x = np.array([1.0, -2.5, 0.0, 1e-30], dtype)
    assert ulps(x, x) == 0
    up = np.nextafter(x, np.array(np.inf, dtype))
    assert ulps(up, x) == 1
    three = np.nextafter(np.nextafter(up, np.array(np.inf, dtype)), np.array(np.inf, dtype))
    assert ulps(three, x) == 3
    tiny = np.finfo(dtype).smallest_subnormal
    # across zero: -tiny .. +tiny is two steps; -0.0 and +0.0 are the same value
    assert ulps(np.array([-tiny], dtype), np.array([tiny], dtype)) == 2
    assert ulps(np.array([-0.0], dtype), np.array([0.0], dtype)) == 0
    big = np.finfo(dtype).max
    steps = ulps(np.array([-big], dtype), np.array([big], dtype))  # no overflow, exact
    assert steps == 2 * int(np.array(big, dtype).view(np.int32 if dtype == np.float32
                                                        else np.int64))


def test_compare_names_the_tensor_and_counts_the_elements():
    base = {"a": np.ones(4, np.float32), "b": np.zeros((2, 2), np.float32)}
    other = {"a": base["a"].copy(), "b": base["b"].copy()}
    assert compare(other, base, "float32", ["a", "b"]) == (True, 0, "", 0)
    other["b"][1, 1] = np.float32(5 * np.finfo(np.float32).smallest_subnormal)
    same, worst, where, differing = compare(other, base, "float32", ["a", "b"])
    assert (same, worst, where, differing) == (False, 5, "b", 1)


def test_table_shows_a_thread_dependent_engine_as_differing_and_the_reference_as_same():
    engines = (("thread-dependent", "engine_plugins:thread_dependent", False),
               ("reference", "reference", False))
    table = produce(preset("tiny"), engines=engines, threads=(1, 2), worlds=(1,),
                    dtypes=("float64",), say=lambda line: None)
    cells = {(c.engine, c.threads): c for c in table.cells}
    assert not table.errors, table.errors
    assert cells[("thread-dependent", 1)].bitwise is True
    assert cells[("thread-dependent", 1)].max_ulps == 0
    broken = cells[("thread-dependent", 2)]
    assert broken.bitwise is False and broken.max_ulps > 0 and broken.differing > 0
    assert cells[("reference", 2)].bitwise is True and cells[("reference", 2)].max_ulps == 0
    text = markdown(table)
    shown = (f"{broken.max_ulps:,}" if broken.max_ulps < 10**6 else f"{broken.max_ulps:.2e}")
    assert (f"| thread-dependent | 1 | yes · 0 | **NO** · {shown} ({broken.differing:,}) |"
            in text)
    assert f"lies in: `{broken.worst_tensor}`" in text
    assert "| reference | 1 | yes · 0 | yes · 0 |" in text


def test_an_engine_that_fails_is_not_measured_never_a_pass():
    engines = (("missing", "no_such_module_ks:build", False),)
    table = produce(preset("tiny"), engines=engines, threads=(1,), worlds=(1,),
                    dtypes=("float64",), say=lambda line: None)
    assert table.errors and "no_such_module_ks" in table.errors[0]
    assert table.cells[0].bitwise is None
    assert "| missing | 1 | not measured |" in markdown(table)


def test_vectorised_ulps_agree_with_the_scalar_ones_of_divergence():
    from harness.verify.divergence import ulps as scalar_ulps

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal(200).astype(dtype)
        b = (a * (1 + rng.standard_normal(200) * 1e-6)).astype(dtype)
        b[:5] = -a[:5]  # some across zero
        assert ulps(a, b) == max(scalar_ulps(x, y) for x, y in zip(a, b, strict=True))


def test_the_analysis_report_renders_the_table_and_results_json_keeps_it():
    from harness.analysis.report import render
    from harness.figures.bench_metrics import ReproCell, ReproTable
    from harness.figures.results import AnalysisResults

    table = ReproTable(preset="tiny", steps=3, cpu_model="AMD EPYC", cores=2, blas="BLAS x",
                       torch="2.13.0", cells=[
                           ReproCell("torch-ddp", "torch-ddp", "float64", 1, 2, "t", False, 7,
                                     "wte", 3),
                           ReproCell("torch-ddp", "torch-ddp", "float64", 1, 1, "t", True, 0)])
    results = AnalysisResults(repro=table)
    text = render(results)
    assert "## Reproducibility Across Threads and Processes" in text
    assert "| torch-ddp | 2 | **NO** · 7 (3) |" in text and "| torch-ddp | 1 | yes · 0 |" in text
    back = AnalysisResults.from_json(results.to_json())
    assert back.repro == table
    assert "Not measured: not run" in render(AnalysisResults())
