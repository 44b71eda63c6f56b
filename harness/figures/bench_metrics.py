"""The typed benchmark metrics: engines side by side (`spheres engines --measure`, the analysis'
Engines section) and `make bench`'s summary.

`harness.bench` builds them; `harness.bench.render`, `targets`, `compare` and the analysis
report read their attributes. The JSON files are `to_json()` of them under `schema_version`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.figures.serial import to_json
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
    """`python -m harness.mpi.bench`: step times of R ranks x T threads (R=0: one process)."""

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
    """`harness.mpi.bench --loopback-mb`: the step's two collectives at one segment per rank."""

    ranks: int
    segment_bytes: int
    gather_s: float
    bcast_s: float
    gather_s_per_byte_into_root: float
    bcast_s_per_byte: float
