"""Scale-out on this machine's loopback (SPEC 10), side by side in one run.

- R=2 ranks x T=1 thread against the single-process engine with T=2 threads on the same cores,
  G=24 batches (both timed by harness.bench.mpi_steps's loop: best of `rounds` steps after warm-up);
- bytes each rank sent and received in one step at R = 2, 12 and 24 (G = 24: at R = 24 every
  position is a chain of two ranks), for the tiny preset and the bench preset, printed in units
  of P (the weights' bytes) beside a ring all-reduce's 2P per rank and direction; at R >= 12
  every rank, rank 0 included, must stay within MPI_BYTES_OVER_RING x 2P both ways.
Each launch is a subprocess (mpiexec); the benchmark stores its JSON lines in `extra_info` and
`harness.bench.summary.summarize` turns them into the target and the bytes table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.figures.thresholds import MPI_BYTES_OVER_RING

pytestmark = pytest.mark.bench

MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
RATIO_GROUP = 24  # the workload: seed preset, G = 24
BYTES_GROUP = 24  # two spheres per position: every rank of R = 24 gets work
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


@pytest.mark.parametrize("ranks", [2, 12, 24])
@pytest.mark.parametrize("which", ["tiny", "bench"])
def test_mpi_bytes_per_step(benchmark, bench_settings, ranks, which, capsys):
    name = "tiny" if which == "tiny" else bench_settings.preset
    result = {}

    def run() -> None:
        result["run"] = _bench(["--preset", name, "--group", str(BYTES_GROUP), "--rounds", "1"],
                               ranks=ranks)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(kind="mpi_bytes", **result["run"])
    per_rank = result["run"]["per_rank"]
    assert sorted(r["rank"] for r in per_rank) == list(range(ranks))
    unit = result["run"]["params"] * np.dtype(result["run"]["dtype"]).itemsize
    text, worst = bytes_lines(name, ranks, unit, per_rank)
    with capsys.disabled():
        print("\n" + "\n".join(text), flush=True)
    if ranks >= 12:  # the target of #18: every rank within 1.5 x a ring's 2P, both ways
        assert worst <= MPI_BYTES_OVER_RING * 2.0, text


def bytes_lines(name: str, ranks: int, unit: int, per_rank: list[dict]) -> tuple[list[str], float]:
    """Rank 0 and the busiest rank in units of P; the worst direction's multiple of P."""
    def moved(r: dict) -> tuple[float, float]:
        return r["last_sent_bytes"] / unit, r["last_received_bytes"] / unit

    zero = next(r for r in per_rank if r["rank"] == 0)
    busiest = max(per_rank, key=lambda r: max(moved(r)))
    worst = max(moved(busiest))
    text = [f"mpi bytes per step, preset {name}, R={ranks}, G={BYTES_GROUP}, P = {unit:,} bytes "
            f"(ring all-reduce: 2P each way; bound {MPI_BYTES_OVER_RING * 2:.1f}P)"]
    for label, r in (("rank 0", zero), (f"max (rank {busiest['rank']})", busiest)):
        sent, received = moved(r)
        text.append(f"  {label:<14} sent {sent:5.2f}P  received {received:5.2f}P")
    return text, worst
