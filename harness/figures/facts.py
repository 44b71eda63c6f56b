"""Typed facts shared by every results file: the machine, its BLAS, per-thread statistics and
record findings. Producers live above (`harness.measure.machine`, `harness.measure.evidence`);
these types sit in the lowest tier so that analysis and bench results can both hold them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BlasLibrary:
    """One BLAS library threadpoolctl found loaded (or why it could not look)."""

    library: str | None
    version: str | None = None
    kernel: str | None = None
    threads: int | None = None
    file: str = ""
    error: str | None = None


@dataclass
class BlasFacts:
    """The BLAS behind a measurement: libraries, environment pins, the CPU's best kernel, and
    a warning when a pin selects an older kernel than the CPU supports."""

    libraries: list[BlasLibrary] = field(default_factory=list)
    pins: dict[str, str] = field(default_factory=dict)
    cpu_best_kernel: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class GitCommit:
    commit: str
    dirty: bool


@dataclass
class MachineFacts:
    """The machine and software behind a measurement (`harness.measure.machine`)."""

    cores: int = 0  # available to this process (affinity): the one definition of cores
    logical_cpus: int | None = None
    physical_cores: int | None = None
    cpu_model: str = "n/a"
    memory_total_bytes: int | None = None
    platform: str = ""
    python: str = ""
    numpy: str = ""
    numba: str = ""
    git: GitCommit | None = None
    blas: BlasFacts | None = None


@dataclass(frozen=True)
class Finding:
    """One measured verdict of the run record: whether it held, and the figure that says so."""

    passed: bool
    figure: str


@dataclass
class ThreadStats:
    """One thread's measured figures over the run (seconds from the record, CPU from its clock)."""

    name: str
    role: str
    position: int | None = None
    batches: int = 0
    compute_seconds: float = 0.0
    ticket_wait_seconds: float = 0.0
    wait_a_seconds: float = 0.0
    wait_reduced_seconds: float = 0.0
    wait_decided_seconds: float = 0.0
    wait_b_seconds: float = 0.0
    reduce_seconds: float = 0.0
    update_seconds: float = 0.0
    dispatch_seconds: float = 0.0
    decide_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    cpu_seconds: float = 0.0


@dataclass
class ThreadTable:
    """Node Zero's and each worker's statistics from the run record."""

    node_zero: ThreadStats | None = None
    workers: list[ThreadStats] = field(default_factory=list)

    @property
    def all_threads(self) -> list[ThreadStats]:
        return ([self.node_zero] if self.node_zero else []) + self.workers


@dataclass
class SamplerSummary:
    """What `harness.measure.sampler.ThreadCpuSampler` saw: per-thread CPU, use of all cores
    over time, and RSS over time (seconds since the sampler started)."""

    wall_seconds: float
    cores: int
    cpu_seconds_total: float
    cpu_use: float  # NaN when no time passed
    thread_cpu_seconds: dict[str, float] = field(default_factory=dict)
    utilisation: list[tuple[float, float]] = field(default_factory=list)  # (t, share of cores)
    rss_times: list[float] = field(default_factory=list)
    rss_bytes: list[int] = field(default_factory=list)
    peak_rss_bytes: int | None = None
