"""The targets of `make bench`: each judges one figure of the summary, pass, fail or skipped.

Each names the `BenchMetrics` attributes it reads; thresholds come from
harness/figures/thresholds.py (each defined once, with its reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.figures.bench_metrics import BenchMetrics, Verdict
from harness.figures.thresholds import (
    ATTENTION_PEAK_FRACTION_TARGET,
    GB,
    GEMM_IN_PLACE_TARGET,
    MB,
    MPI_RATIO_TARGET,
    OVERSUBSCRIPTION_RATIO,
    PEAK_FRACTION_T1_TARGET,
    PEAK_FRACTION_T2_TARGET,
    SCALING_TARGET,
    SEED_WORKLOAD_PEAK_BYTES,
    TOKENIZE_PEAK_BYTES,
    TOKENIZE_SECONDS,
    TORCH_RATIO_TARGET,
    TRACE_OVERHEAD_LIMIT,
)


@dataclass(frozen=True)
class RatioTarget:
    """metrics.numerator / metrics.denominator must be at least `at_least`."""

    name: str
    numerator: str
    denominator: str
    at_least: float
    skip_unless: str | None = None  # a metric that must be truthy for the target to apply
    skip_message: str = ""

    def check(self, metrics: BenchMetrics) -> Verdict:
        required = f">= {self.at_least:g}x"
        if self.skip_unless and not getattr(metrics, self.skip_unless):
            return Verdict(self.name, "skipped", None, required, self.skip_message)
        missing = _missing(metrics, self.numerator, self.denominator)
        if missing:
            return Verdict(self.name, "fail", None, required, missing)
        ratio = getattr(metrics, self.numerator) / getattr(metrics, self.denominator)
        if ratio >= self.at_least:
            return Verdict(self.name, "pass", ratio, required,
                           f"{ratio:.2f}x (needs {required})")
        short = self.at_least - ratio
        return Verdict(self.name, "fail", ratio, required,
                       f"missed: {ratio:.2f}x, needs {required}; short by {short:.2f}x "
                       f"({short / self.at_least:.0%})")


@dataclass(frozen=True)
class LimitTarget:
    """metrics.metric must be finite and below `below` (in `unit`s of `scale`)."""

    name: str
    metric: str
    below: float = math.inf  # inf: the measurement only has to exist (the run finished)
    unit: str = "s"
    scale: float = 1.0

    def check(self, metrics: BenchMetrics) -> Verdict:
        required = f"< {self.below:g} {self.unit}" if math.isfinite(self.below) else "completes"
        missing = _missing(metrics, self.metric)
        if missing:
            return Verdict(self.name, "fail", None, required, missing)
        value = getattr(metrics, self.metric) / self.scale
        shown = f"{value:.3g} {self.unit}"
        if value < self.below:
            return Verdict(self.name, "pass", value, required, f"{shown} ({required})")
        over = value - self.below
        return Verdict(self.name, "fail", value, required,
                       f"missed: {shown}, needs {required}; over by {over:.3g} {self.unit} "
                       f"({over / self.below:.0%})")


def _missing(metrics: BenchMetrics, *names: str) -> str | None:
    absent = [n for n in names if not _finite(getattr(metrics, n))]
    if not absent:
        return None
    return (f"no measurement of {', '.join(absent)}: its benchmark failed or did not run "
            "(see the pytest output above)")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


TARGETS: tuple[RatioTarget | LimitTarget, ...] = (
    RatioTarget("2 threads vs 1 thread tokens/s", "fast_tokens_per_s_T2", "fast_tokens_per_s_T1",
                SCALING_TARGET),
    RatioTarget("seed group: 63 threads vs one thread per core tokens/s", "seed_tokens_per_s",
                "seed_at_cores_tokens_per_s", OVERSUBSCRIPTION_RATIO),
    RatioTarget("model FLOP/s at 2 threads vs float32 sgemm peak (same run)",
                "model_flops_per_s_T2", "matmul_peak_flops", PEAK_FRACTION_T2_TARGET),
    RatioTarget("model FLOP/s at 1 thread vs one core's float32 sgemm peak",
                "model_flops_per_s_T1", "matmul_peak_flops_one_core", PEAK_FRACTION_T1_TARGET),
    RatioTarget("linear GEMM groups in place vs the same calls alone (worst group, 1 thread)",
                "gemm_worst_in_place_flops", "gemm_worst_alone_flops", GEMM_IN_PLACE_TARGET),
    RatioTarget("attention FLOP/s in place vs one core's float32 sgemm peak (1 thread)",
                "attention_flops_per_s", "matmul_peak_flops_one_core",
                ATTENTION_PEAK_FRACTION_TARGET),
    RatioTarget("fast vs PyTorch eager tokens/s (same threads)", "fast_tokens_per_s_torch_threads",
                "torch_tokens_per_s", TORCH_RATIO_TARGET, skip_unless="torch_available",
                skip_message="skipped: torch not importable"),
    RatioTarget("fast vs torch.compile tokens/s (same threads)",
                "fast_tokens_per_s_torch_compile_threads", "torch_compile_tokens_per_s",
                TORCH_RATIO_TARGET, skip_unless="torch_available",
                skip_message="skipped: torch not importable"),
    RatioTarget("run record / --trace overhead: traced vs untraced tokens/s",
                "traced_tokens_per_s", "untraced_tokens_per_s", 1 - TRACE_OVERHEAD_LIMIT),
    LimitTarget("seed workload completes (one group of 63 batches)", "seed_seconds"),
    LimitTarget("seed workload peak RSS", "seed_peak_rss_bytes", SEED_WORKLOAD_PEAK_BYTES / GB,
                "GB", GB),
    LimitTarget("tokenisation of a 24 MB corpus: time", "tokenize_seconds", TOKENIZE_SECONDS,
                "s"),
    LimitTarget("tokenisation of a 24 MB corpus: peak memory", "tokenize_peak_bytes",
                TOKENIZE_PEAK_BYTES / MB, "MB", MB),
    # SPEC 10: two ranks of one thread must keep most of two threads' speed on the same cores
    RatioTarget("MPI R=2 x T=1 vs single process T=2 tokens/s (G=24)", "mpi_tokens_per_s_R2T1",
                "single_tokens_per_s_T2", MPI_RATIO_TARGET),
)
