"""Machine facts: the BLAS kernel and its pins are named, and an older pinned kernel is flagged."""

from __future__ import annotations

from harness.measure.machine import best_kernel, blas_facts, blas_line, cpu_flags, pin_warnings

AVX512 = "processor\t: 0\nflags\t\t: fpu sse3 ssse3 sse4_2 avx avx2 avx512f avx512bw\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse3 ssse3 sse4_2 avx avx2\n"


def test_cpu_flags_and_best_kernel():
    assert {"avx512f", "avx2"} <= cpu_flags(AVX512)
    assert best_kernel(cpu_flags(AVX512)) == "skylakex"
    assert best_kernel(cpu_flags(AVX2)) == "haswell"
    assert cpu_flags("no flags here") == set() and best_kernel(set()) is None


def test_an_older_pinned_kernel_is_flagged():
    warnings = pin_warnings({"OPENBLAS_CORETYPE": "Haswell"}, cpu_flags(AVX512), ["Haswell"])
    assert warnings and "Haswell" in warnings[0] and "skylakex" in warnings[0]
    assert "env -u OPENBLAS_CORETYPE" in warnings[0]


def test_no_warning_when_the_pin_matches_the_cpu():
    assert pin_warnings({"OPENBLAS_CORETYPE": "Haswell"}, cpu_flags(AVX2), ["Haswell"]) == []
    assert pin_warnings({}, cpu_flags(AVX512), ["SkylakeX"]) == []
    assert pin_warnings({}, cpu_flags(AVX512), ["SapphireRapids"]) == []  # same sgemm kernel


def test_blas_facts_name_library_kernel_threads_and_pins():
    facts = blas_facts(env={"OPENBLAS_CORETYPE": "Haswell", "OMP_NUM_THREADS": "1",
                            "HOME": "/root"}, cpuinfo=AVX512)
    assert facts.pins == {"OMP_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell"}
    assert facts.libraries, "numpy's BLAS was not found by threadpoolctl"
    lib = facts.libraries[0]
    assert lib.library and lib.kernel and lib.threads >= 1
    assert any("OPENBLAS_CORETYPE pins the Haswell kernel" in w for w in facts.warnings)
    line = blas_line(facts)
    assert f"kernel {lib.kernel}" in line and "OPENBLAS_CORETYPE=Haswell" in line
