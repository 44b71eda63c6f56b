"""The typed benchmark metrics: engines side by side (`spheres engines --measure`, the analysis'
Engines section) and `make bench`'s summary.

`harness.bench` builds them; `harness.bench.render`, `targets`, `compare` and the analysis
report read their attributes. The JSON files are `to_json()` of them under `schema_version`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.figures.facts import BlasLibrary, MachineFacts
from harness.figures.serial import check_schema, from_json, to_json
from reference.config import Config, preset

NAN = math.nan


@dataclass
class EngineRow:
    """What was measured for one engine on the shared workload."""

    engine: str
    dtype: str
    threads: int
    tokens_per_s: float = NAN
    sgemm_share: float = NAN  # model FLOP/s over the float32 matmul limit
    sgemm_flops: float = NAN  # the limit as measured in this engine's process
    worst_error: float = NAN  # relative L2, worst tensor, against float64 reference
    worst_tensor: str = ""
    loss_error: float = NAN
    bitwise_threads: str = ""  # the two thread counts compared, e.g. "1 vs 2"
    bitwise: bool | None = None
    peak_rss_bytes: int = 0  # peak RSS of the measuring process plus the exec engine process
    seconds: float = 0.0
    error: str = ""  # why the engine could not be measured ("" when it was)


@dataclass
class Workload:
    preset: str
    group_size: int
    dtype: str
    threads: int
    rounds: int
    seed: int = 0

    def config(self) -> Config:
        return preset(self.preset, seed=self.seed, group_size=self.group_size)


@dataclass
class EngineComparison:
    """Every engine on one workload, each in its own process; `error` when none could run."""

    workload: Workload | None = None
    sgemm_limit_flops: float = NAN
    flops_per_token: int = 0
    cores: int = 0
    rows: list[EngineRow] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return to_json(self)


# --------------------------------------------------------------------------- MPI (SPEC 10)


@dataclass
class MpiRankTimes:
    """One rank's seconds over its steps and the bytes it moved in its last full step."""

    rank: int
    steps: int
    compute_s: float
    wait_s: float
    comm_s: float
    reduce_s: float
    last_sent_bytes: int
    last_received_bytes: int


@dataclass
class MpiStepBench:
    """`python -m harness.bench.mpi_steps`: step times of R ranks x T threads (R=0: one process)."""

    preset: str
    group: int
    ranks: int
    threads: int
    dtype: str
    params: int
    step_seconds: list[float]
    best_step_s: float
    tokens: int
    tokens_per_s: float
    per_rank: list[MpiRankTimes] = field(default_factory=list)


@dataclass
class MpiBytesRow:
    """`harness.bench.mpi_steps --loopback-mb`: the step's two collectives, one segment per rank."""

    ranks: int
    segment_bytes: int
    gather_s: float
    bcast_s: float
    gather_s_per_byte_into_root: float
    bcast_s_per_byte: float


# --------------------------------------------------------------------------- make bench

# 1: first typed summary.json (dataclasses behind it; metrics by name, per-thread rates keyed by
#    thread count). Bump when a field changes meaning or goes away.
BENCH_SCHEMA_VERSION = 1


@dataclass
class BenchRow:
    """One engine benchmark (scaling sweep point, seed workload, torch, reference...) from its
    best round; speedup/efficiency for sweep points, peak_fraction when a peak was measured."""

    name: str
    kind: str
    engine: str
    threads: int
    group: int | None
    tokens_per_round: int
    seconds: float
    tokens_per_s: float
    model_flops_per_s: float
    cores: int
    node_zero_share: float | None = None  # Node Zero's own work over the steps' wall time
    cpu_use: float | None = None
    worker_cpu_seconds_min: float | None = None
    worker_cpu_seconds_max: float | None = None
    workers_busy: int = 0
    peak_rss_bytes: float | None = None
    # FastTrainer.stats() delta over the measured rounds: the engine's own record, kept as it
    # came (its nesting is fast/'s, not the harness's)
    trainer_stats: dict[str, Any] | None = None
    speedup: float | None = None
    efficiency: float | None = None
    peak_fraction: float | None = None


@dataclass
class KernelShare:
    """One row of the per-kernel table: a kernel group or a step phase, its share of step time."""

    name: str
    share: float
    kind: str  # "gemm", "kernel", "step" or "wait"
    gflops: float | None = None  # a product group's model GFLOP/s in place (1 thread)
    gflops_alone: float | None = None  # the same calls alone (harness.bench.groups)


@dataclass
class KernelTableSource:
    kernels: str | None = None
    phases: str | None = None
    blas: list[BlasLibrary] | None = None  # the BLAS that ran the kernel-cycle benchmark


@dataclass
class TokenizeResult:
    name: str
    seconds: float
    peak_bytes: float | None = None


@dataclass
class BenchMetrics:
    """The figures the targets judge (`harness.bench.targets` reads them by attribute name);
    None when the benchmark behind a figure did not run."""

    torch_available: bool = False
    fast_tokens_per_s: dict[int, float] = field(default_factory=dict)  # scaling, by threads
    model_flops_per_s_by_threads: dict[int, float] = field(default_factory=dict)
    model_flops_per_s: float | None = None  # the fastest fast-engine row
    matmul_peak_flops: float | None = None  # the yardstick: max(all cores, one core)
    matmul_peak_flops_all_cores: float | None = None
    matmul_peak_flops_one_core: float | None = None
    traced_tokens_per_s: float | None = None
    untraced_tokens_per_s: float | None = None
    mpi_tokens_per_s_R2T1: float | None = None  # R ranks x T threads (SPEC 10)
    single_tokens_per_s_T2: float | None = None
    torch_tokens_per_s: float | None = None
    fast_tokens_per_s_torch_threads: float | None = None
    torch_compile_tokens_per_s: float | None = None
    fast_tokens_per_s_torch_compile_threads: float | None = None
    reference_tokens_per_s: float | None = None
    seed_at_cores_tokens_per_s: float | None = None
    seed_tokens_per_s: float | None = None
    seed_seconds: float | None = None
    seed_peak_rss_bytes: float | None = None
    seed_node_zero_share: float | None = None
    tokenize_seconds: float | None = None
    tokenize_peak_bytes: float | None = None
    # the linear GEMM group with the lowest in place / alone GFLOP/s ratio, both figures
    gemm_worst_group: str | None = None
    gemm_worst_in_place_flops: float | None = None
    gemm_worst_alone_flops: float | None = None
    attention_flops_per_s: float | None = None  # in place, 1 thread, the model's FLOP count

    # the targets' names for the sweep points they judge
    @property
    def fast_tokens_per_s_T1(self) -> float | None:
        return self.fast_tokens_per_s.get(1)

    @property
    def fast_tokens_per_s_T2(self) -> float | None:
        return self.fast_tokens_per_s.get(2)

    @property
    def model_flops_per_s_T1(self) -> float | None:
        return self.model_flops_per_s_by_threads.get(1)

    @property
    def model_flops_per_s_T2(self) -> float | None:
        return self.model_flops_per_s_by_threads.get(2)


@dataclass(frozen=True)
class Verdict:
    """One target's outcome: status is "pass", "fail" or "skipped"."""

    name: str
    status: str
    measured: float | None
    required: str
    message: str


@dataclass
class BenchSummary:
    """`make bench`'s figures and verdicts; `summary.json` is its `to_json()`."""

    created: str
    machine: MachineFacts | None
    settings: dict[str, Any]  # the bench suites' settings (benchmarks/conftest.BenchSettings)
    config: dict[str, Any]
    flops_per_token: int
    flops_formula: str
    engines: list[BenchRow] = field(default_factory=list)
    tokenize: TokenizeResult | None = None
    mpi_bytes: list[MpiStepBench] = field(default_factory=list)
    kernel_table: list[KernelShare] = field(default_factory=list)
    kernel_table_source: KernelTableSource = field(default_factory=KernelTableSource)
    metrics: BenchMetrics = field(default_factory=BenchMetrics)
    targets: list[Verdict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    passed: bool = False
    bench_json: str = ""  # the pytest-benchmark JSON it was computed from
    pytest_exit_code: int = 0
    plots: dict[str, str] = field(default_factory=dict)
    schema_version: int = BENCH_SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls, data: Any, what: str = "summary.json") -> BenchSummary:
        """Read back `to_json()` data; another schema_version is an InputError (exit 2)."""
        check_schema(data, BENCH_SCHEMA_VERSION, what)
        return from_json(cls, data)


@dataclass
class ReproCell:
    """One engine, dtype, thread count and world size of the reproducibility table: are the
    weights after the steps bitwise the baseline's, and their largest difference in ULPs."""

    engine: str  # the table's label: fast, fast under MPI, torch, torch-ddp, exec example
    spec: str  # the --engine spelling that ran it
    dtype: str
    threads: int
    world: int  # processes: MPI ranks or DDP world size; 1 for a single process
    baseline: str = ""  # which run it is compared with, e.g. "fast T=1"
    bitwise: bool | None = None  # None when it could not be measured
    max_ulps: int | None = None  # the largest difference over every weight, in ULPs of dtype
    worst_tensor: str = ""  # the weight holding that difference
    differing: int = 0  # how many weights (elements) differ at all
    seconds: float = 0.0
    error: str = ""  # why it was not measured ("" when it was)


@dataclass
class ReproTable:
    """`harness.bench.repro`: every cell, and what machine and software measured them."""

    preset: str = ""
    steps: int = 0
    cpu_model: str = ""
    cores: int = 0
    blas: str = ""
    torch: str = ""  # the torch version behind torch and torch-ddp
    weights: int = 0  # elements of the model's weights (what `differing` counts out of)
    cells: list[ReproCell] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    @property
    def errors(self) -> list[str]:
        return [f"{c.engine} {c.dtype} T={c.threads} W={c.world}: {c.error}"
                for c in self.cells if c.error] + ([self.error] if self.error else [])
