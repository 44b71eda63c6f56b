"""The typed results of `spheres analyze`, shared by producers and consumers.

`harness.analysis.phases`/`pipeline` build an `AnalysisResults`; the checks, the report and its
plots read its attributes; `results.json` is `to_json()` of it under `schema_version`, and
`AnalysisResults.from_json` reads one back (`spheres compare`, tests). Bump `SCHEMA_VERSION`
when a field changes meaning or goes away, so a reader of an old file is told, not misled.
Machine facts, thread statistics and findings: `harness.figures.facts`; bench metrics:
`harness.figures.bench_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.figures.bench_metrics import EngineComparison, MpiStepBench, ReproTable
from harness.figures.facts import Finding, MachineFacts, ThreadTable
from harness.figures.serial import check_schema, from_json, to_json

# 2: checks carry an id; thread statistics and structure come from the run record; `record`
#    (findings, trace, timeline) added; Node Zero's phases under honest names.
# 3: one typed model (dataclasses) behind the file; `threads.all`, `memory.seed_peak_bytes`,
#    `training.stats` (heartbeat copy of `threads`) and the per-run `passed` of equivalence
#    records dropped (derived or duplicated); Node Zero's position null; checks of
#    `--ranks` carry an id (`scale-out-bitwise`).
SCHEMA_VERSION = 3


@dataclass(frozen=True)
class Check:
    """One verdict: which check (`id`, in a registry with a breaker), where it goes in the
    report, whether it passed, and the measured figure behind it."""

    id: str
    section: str
    title: str
    passed: bool
    figure: str


@dataclass
class ThroughputPoint:
    """Tokens/s of one thread count, measured side by side with the others in one run."""

    threads: int
    tokens_per_s: float  # of the median timed step (reports before 2026-12-03: the fastest)
    seconds: float = 0.0  # the median timed step
    group_size: int = 0
    speedup: float = 1.0  # against the first (1-thread) point
    step_seconds: list[float] = field(default_factory=list)  # every timed step, in order


@dataclass
class RunMeta:
    """What ran, where and when."""

    date: str = ""
    command: str = ""
    preset: str = ""
    threads: int = 0
    steps: int = 0
    quick: bool = False
    machine: MachineFacts = field(default_factory=MachineFacts)
    commit: str | None = None
    n_params: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    config_json: str = ""
    inject: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class DataSummary:
    """The corpus as loaded, and the batches and groups its iterator yielded until it stopped."""

    source: str = ""
    n_documents: int = 0
    n_tokens: int = 0
    vocab_size: int = 0
    tokenize_seconds: float = 0.0
    tokenize_peak_bytes: int | None = None
    batch_size: int = 0
    seq_len: int = 0
    group_size: int = 0
    batches_per_epoch: int = 0
    expected_batches: int = 0
    groups_per_epoch: int = 0
    expected_groups: int = 0
    last_group_batches: int = 0
    last_batch_pad_targets: int = 0


@dataclass
class PositionRow:
    position: int
    workers: int  # threads that folded into this position
    batches: int  # the most batches it took in one step


@dataclass
class Structure:
    """The 12-fold structure and sphere levels as the run record saw them (not the plan)."""

    positions: list[PositionRow] = field(default_factory=list)
    level_sizes: list[int] = field(default_factory=lambda: [0, 0, 0])
    total_spheres: int = 0
    tree: list[int] = field(default_factory=lambda: [1, 12, 144])
    occupied_spheres: int = 0
    barrier_parties: int = 0


@dataclass
class TrainingResult:
    """The training phase: per-step figures, held-out losses, and how it ended."""

    steps: int = 0
    losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    eval_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    eval_tokens: int = 0
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    compile_seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    exit_code: int = 0
    diagnosis: dict[str, Any] | None = None  # a stall's diagnosis (who was stuck where)
    unfired_faults: list[str] = field(default_factory=list)
    threads_alive_after_close: list[str] | None = None


@dataclass
class Performance:
    """Throughput against threads and CPU use over the training steps."""

    throughput: list[ThroughputPoint] = field(default_factory=list)
    cores: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_utilisation: float = 0.0
    sampled_thread_cpu_seconds: dict[str, float] = field(default_factory=dict)
    sampled_cpu_use: float = 0.0
    sampled_wall_seconds: float = 0.0
    utilisation_times: list[float] = field(default_factory=list)
    utilisation: list[float] = field(default_factory=list)


@dataclass
class AllocationSite:
    function: str
    file: str
    line: int
    bytes: int


@dataclass
class MemrayResult:
    """memray's native view of one training step."""

    peak_bytes: int | None = None
    error: str | None = None
    group_size: int = 0
    top: list[AllocationSite] = field(default_factory=list)


@dataclass
class MemoryResult:
    peak_rss_bytes: int | None = None
    samples: int = 0
    rss_times: list[float] = field(default_factory=list)
    rss_bytes: list[int] = field(default_factory=list)
    memray: MemrayResult | None = None


@dataclass
class RunRecord:
    """Every figure the equivalence gates measured for one (preset, dtype, T)."""

    preset: str
    dtype: str
    threads: int
    loss_error: float
    grad_error: float
    worst_tensor: str
    grad_hash: str
    update_hash: str
    trajectory_hash: str
    trajectory_error: float
    trajectory_worst: str
    worker_batches: list[int]
    node_zero_batches: int
    seconds: float
    failures: list[str] = field(default_factory=list)
    engine: str = "fast"
    # measured for every engine: does this T give the first T's bits (grads, update,
    # trajectory)? None for the first T. Gates only with --require-bitwise.
    bitwise: bool | None = None
    notes: list[str] = field(default_factory=list)  # measured, not gated (e.g. bitwise)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class EquivalenceResult:
    records: list[RunRecord] = field(default_factory=list)
    seconds: float = 0.0
    presets: list[str] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    runs: int = 0
    threads_label: str = ""
    failures: list[str] = field(default_factory=list)


@dataclass
class DrillResult:
    """One watchdog/fault drill: what was expected, what happened, and the verdict."""

    name: str
    passed: bool
    outcome: str
    inject: str = ""
    expected: str = ""
    message: str = ""
    seconds: float = 0.0
    detect_seconds: float = 0.0
    stall_timeout: float = 0.0
    culprit_named: bool = False
    weights_unchanged: bool | None = None
    leaked_threads: list[str] = field(default_factory=list)


@dataclass
class Profiles:
    flamegraph: str | None = None  # file name in the report folder
    error: str | None = None


@dataclass
class RecordSummary:
    """The run record's findings, and its trace and timeline files in the report folder."""

    findings: dict[str, Finding] = field(default_factory=dict)
    steps: int = 0
    trace: str | None = None
    timeline_step: int | None = None
    timeline: str | None = None


@dataclass
class ScaleOut:
    """`analyze --ranks R` (SPEC 10): R ranks x T threads timed, and the bitwise comparison of
    their SHA-256 digests with the single process's."""

    ranks: int
    threads: int
    preset: str
    group: int
    error: str | None = None
    bench: MpiStepBench | None = None
    mpi_hashes: dict[str, str] = field(default_factory=dict)
    single_hashes: dict[str, str] = field(default_factory=dict)


@dataclass
class SimulatedRow:
    """One simulated thread count: the step the record measured against its ideal."""

    threads: int
    step_seconds: float
    ideal_seconds: float
    rounds: int  # ceil(G / min(T, N))
    peak_in_flight: int  # most batches computing at once, read from the run record
    cores_busy: float  # mean batches computing / N over the step


@dataclass
class SimulatedScaling:
    """The report's "Scaling beyond this machine": a quick `spheres simulate` sweep (#18)."""

    preset: str
    cores: int
    group: int
    compute_seconds: float
    rows: list[SimulatedRow] = field(default_factory=list)
    error: str | None = None


@dataclass
class AnalysisResults:
    """Everything `spheres analyze` measured and concluded; `results.json` is its `to_json()`."""

    meta: RunMeta = field(default_factory=RunMeta)
    data: DataSummary = field(default_factory=DataSummary)
    structure: Structure = field(default_factory=Structure)
    training: TrainingResult = field(default_factory=TrainingResult)
    threads: ThreadTable = field(default_factory=ThreadTable)
    performance: Performance = field(default_factory=Performance)
    memory: MemoryResult = field(default_factory=MemoryResult)
    equivalence: EquivalenceResult = field(default_factory=EquivalenceResult)
    drills: list[DrillResult] = field(default_factory=list)
    engines: EngineComparison | None = None
    repro: ReproTable | None = None  # the reproducibility table (harness/bench/repro.py)
    profiles: Profiles = field(default_factory=Profiles)
    record: RecordSummary = field(default_factory=RecordSummary)
    checks: list[Check] = field(default_factory=list)
    known_issues: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    verdict: str = ""
    plots: dict[str, str] = field(default_factory=dict)  # plot key -> file name
    scale_out: ScaleOut | None = None  # only with `analyze --ranks R`
    scaling: SimulatedScaling | None = None  # the simulated sweep ("Scaling beyond ...")
    schema_version: int = SCHEMA_VERSION

    def set_verdict(self) -> None:
        self.verdict = "PASS" if all(c.passed for c in self.checks) else "FAIL"

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls, data: Any, what: str = "results.json") -> AnalysisResults:
        """Read back `to_json()` data; another schema_version is an InputError (exit 2)."""
        check_schema(data, SCHEMA_VERSION, what)
        return from_json(cls, data)
