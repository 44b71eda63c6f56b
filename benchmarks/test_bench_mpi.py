"""Scale-out on this machine's loopback (SPEC 10), side by side in one run.

- R=2 ranks x T=1 thread against the single-process engine with T=2 threads on the same cores,
  G=24 batches (both timed by harness.bench.mpi_steps's loop: best of `rounds` steps after warm-up);
- bytes each rank sent and received in one step at R = 2, 3 and 12, for the tiny preset and the
  bench preset, beside a ring all-reduce's 2P elements per rank.
Each launch is a subprocess (mpiexec); the benchmark stores its JSON lines in `extra_info` and
`harness.bench.summary.summarize` turns them into the target and the bytes table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
RATIO_GROUP = 24  # the workload: seed preset, G = 24
BYTES_GROUP = 12  # one batch per position: every rank of R = 12 gets work
TIMEOUT_S = 3600


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI_LOCAL"))}


def _bench(argv: list[str], ranks: int | None) -> dict:
    cmd = [sys.executable, "-m", "harness.bench.mpi_steps", *argv]
    if ranks is not None:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("{")))


def test_mpi_ranks_vs_threads(benchmark, bench_settings):
    common = ["--preset", bench_settings.preset, "--group", str(RATIO_GROUP), "--rounds",
              str(bench_settings.rounds)]
    result = {}

    def run() -> None:
        result["mpi"] = _bench([*common, "--threads", "1"], ranks=2)
        result["single"] = _bench([*common, "--threads", "2", "--single"], ranks=None)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(kind="mpi_ratio", **result)
    assert result["mpi"]["tokens"] == result["single"]["tokens"]


@pytest.mark.parametrize("ranks", [2, 3, 12])
@pytest.mark.parametrize("which", ["tiny", "bench"])
def test_mpi_bytes_per_step(benchmark, bench_settings, ranks, which):
    name = "tiny" if which == "tiny" else bench_settings.preset
    result = {}

    def run() -> None:
        result["run"] = _bench(["--preset", name, "--group", str(BYTES_GROUP), "--rounds", "1"],
                               ranks=ranks)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(kind="mpi_bytes", **result["run"])
    assert len(result["run"]["per_rank"]) == ranks
