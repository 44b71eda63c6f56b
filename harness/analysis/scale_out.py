"""`spheres analyze --ranks R`: the report's "Scale-out" section, measured with real mpiexec runs.

Two launches: `harness.bench.mpi_steps` (step time; per rank its compute, waiting and communication
seconds and the bytes it sent and received in one step) and `harness.verify.digest` (SHA-256 of
the gradient, the first update and a 3-step trajectory), whose hashes are compared with the
single-process engine's, computed here in-process by the same `fingerprint` code.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from harness.figures.bench_metrics import MpiStepBench
from harness.figures.results import AnalysisResults, Check, ScaleOut
from harness.figures.serial import from_json
from harness.run.stop import run_child
from harness.verify.ranks import mpiexec_path
from plumbing.errors import InputError
from reference.config import preset

SCALE_GROUP = 12  # batches per step: one per symmetry position, so every rank has work
LAUNCH_TIMEOUT_S = 3600.0


def _launch(ranks: int, module: str, argv: list[str]) -> list[dict]:
    cmd = [mpiexec_path(), "-n", str(ranks), sys.executable, "-m", module, *argv]
    proc = run_child(cmd, timeout=LAUNCH_TIMEOUT_S, where="during the scale-out launch")
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"mpiexec -n {ranks} {module} exited {proc.returncode}: {tail}")
    return [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]


def phase_scale_out(preset_name: str, ranks: int, threads: int, seed: int, say) -> ScaleOut:
    """Measure R ranks x T threads: timing, bytes, and the bitwise comparison."""
    from fast.trainer import FastTrainer
    from harness.verify.digest import Fingerprint, fingerprint, trajectory_groups

    out = ScaleOut(ranks=ranks, threads=threads, preset=preset_name, group=SCALE_GROUP)
    try:
        say(f"scale-out: {ranks} ranks x {threads} threads, {preset_name}, G={SCALE_GROUP}")
        out.bench = from_json(MpiStepBench, _launch(ranks, "harness.bench.mpi_steps", [
            "--preset", preset_name, "--group", str(SCALE_GROUP), "--threads", str(threads),
            "--rounds", "2"])[0])
        fp = from_json(Fingerprint, _launch(ranks, "harness.verify.digest", [
            "--preset", preset_name, "--seed", str(seed), "--group-size", str(SCALE_GROUP),
            "--threads", str(threads), "--dtypes", "float32", "--steps", "3"])[0])
        cfg = preset(preset_name, seed=seed, group_size=SCALE_GROUP)
        with FastTrainer(cfg, threads, dtype=np.float32) as engine:
            single = fingerprint(engine, trajectory_groups(cfg, 3), ranks=0, threads=threads,
                                 dtype="float32")
        out.mpi_hashes = {"grads_sha": fp.grads_sha, "update_sha": fp.update_sha,
                          "trajectory_sha": fp.trajectory_sha}
        out.single_hashes = {"grads_sha": single.grads_sha, "update_sha": single.update_sha,
                             "trajectory_sha": single.trajectory_sha}
    except (RuntimeError, subprocess.TimeoutExpired, OSError, InputError) as exc:
        out.error = str(exc)
    return out


def scale_out_checks(s: ScaleOut) -> list[Check]:
    """The bitwise verdict, read from the two runs' hashes."""
    title = (f"{s.ranks} MPI ranks x {s.threads} threads: gradient, first update and "
             "3-step weights bitwise equal to the single process")
    if s.error:
        return [Check("scale-out-bitwise", "scale_out", title, False,
                      f"the MPI run failed: {s.error}")]
    mpi, one = s.mpi_hashes, s.single_hashes
    differ = [k for k in mpi if mpi[k] != one[k]]
    figure = (f"SHA-256 trajectory {mpi['trajectory_sha'][:12]} (MPI) vs "
              f"{one['trajectory_sha'][:12]} (single process)"
              + (f"; differ: {', '.join(differ)}" if differ else ""))
    return [Check("scale-out-bitwise", "scale_out", title, not differ, figure)]


def section_lines(s: ScaleOut) -> list[str]:
    """The markdown body of the Scale-out section."""
    if s.error or s.bench is None:
        return [f"The MPI runs failed: {s.error}", ""]
    b = s.bench
    P = b.params
    lines = [f"`mpiexec -n {s.ranks}` ranks x {s.threads} worker threads on this machine's "
             f"loopback, preset `{s.preset}`, G={s.group} (one batch per symmetry "
             f"position). Best step {b.best_step_s:.3f} s, {b.tokens_per_s:,.0f} tokens/s. "
             "Per rank, seconds per step (averaged over its steps, warm-up included) and the "
             "bytes it moved in one full step, measured around its own MPI calls:", "",
             "| rank | compute s | waiting s | communication s | reduce+update s | bytes sent "
             "| bytes received | vs ring 2P |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ring = 2 * P * 4
    for r in b.per_rank:
        n = max(1, r.steps)
        moved = r.last_sent_bytes + r.last_received_bytes
        lines.append(f"| {r.rank} | {r.compute_s / n:.3f} | {r.wait_s / n:.3f} | "
                     f"{r.comm_s / n:.3f} | {r.reduce_s / n:.3f} | "
                     f"{r.last_sent_bytes:,} | {r.last_received_bytes:,} | "
                     f"{moved / ring:.2f}x |")
    lines += ["", f"Ring all-reduce reference: 2P = {2 * P:,} float32 elements = {ring:,} bytes "
              "per rank per step. Waiting = the status gather (the slowest rank's compute); "
              "communication = tokens, position segments, per-batch figures and weights (for "
              "ranks other than 0 it includes waiting for rank 0's reduction and update).", ""]
    return lines


def add_scale_out(results: AnalysisResults, preset_name: str, ranks: int, threads: int,
                  seed: int, say) -> None:
    """Measure, then add the section's data and checks to an analysis' results."""
    results.scale_out = s = phase_scale_out(preset_name, ranks, threads, seed, say)
    # what build_checks gives once scale_out is set (`spheres check` re-derives it from there)
    results.checks = [c for c in results.checks if c.section != "scale_out"]
    results.checks += scale_out_checks(s)
    results.set_verdict()
