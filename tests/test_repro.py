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
    assert f"| thread-dependent | 1 | yes · 0 | **NO** · {broken.max_ulps:,} |" in text
    assert "| reference | 1 | yes · 0 | yes · 0 |" in text


def test_an_engine_that_fails_is_not_measured_never_a_pass():
    engines = (("missing", "no_such_module_ks:build", False),)
    table = produce(preset("tiny"), engines=engines, threads=(1,), worlds=(1,),
                    dtypes=("float64",), say=lambda line: None)
    assert table.errors and "no_such_module_ks" in table.errors[0]
    assert table.cells[0].bitwise is None
    assert "| missing | 1 | not measured |" in markdown(table)
