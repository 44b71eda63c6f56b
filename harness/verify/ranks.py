"""`spheres verify --ranks`: the bitwise and reference gates across MPI ranks (SPEC 10).

For every rank count R it launches ONE `mpiexec -n R python -m harness.verify.digest` run that
fingerprints every (dtype, T) of the sweep on the verify gate's own trajectory, then checks each
fingerprint against what the single-process engine did in the same `spheres verify` run:
the SHA-256 of the gradient, of the weights after one update and after the trajectory must be
equal, and the loss, gradient and trajectory must be within the reference tolerances.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fast.mpi_topology import MAX_RANKS
from harness.figures.serial import from_json
from harness.run.stop import run_child
from harness.verify.digest import Fingerprint
from plumbing.errors import InputError
from reference.config import Config

LAUNCH_TIMEOUT_S = 1800.0  # one mpiexec launch: its own stall timeouts end a stuck run first


@dataclass
class RankRecord:
    """One (preset, dtype, R, T) run across ranks, and its gates."""

    preset: str
    dtype: str
    ranks: int
    threads: int
    loss_error: float
    grad_error: float
    trajectory_error: float
    grad_hash: str
    update_hash: str
    trajectory_hash: str
    seconds: float
    bytes_per_step: dict = field(default_factory=dict)  # rank -> sent + received per step
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # bitwise differences measured, not gated
    bitwise: bool | None = None  # all three hashes equal to the single process's


def parse_ranks(text: str) -> list[int]:
    """`1,2,3,5,12,24` or `1-12` -> sorted rank counts, each 1..144 (the level-2 spheres)."""
    from harness.run.engines import parse_threads

    if any(int(n) > MAX_RANKS for n in re.findall(r"\d+", text)):
        raise InputError(f"--ranks {text!r}: the {MAX_RANKS} level-2 spheres allow 1 to "
                         f"{MAX_RANKS} ranks")
    try:
        ranks = parse_threads(text, cap=MAX_RANKS)
    except InputError:
        raise InputError(f"--ranks {text!r}: expected counts like 1,2,3,5,12,24 or 1-12"
                         ) from None
    return ranks


def mpiexec_path() -> str:
    """The mpiexec beside this Python (the `mpich` wheel's), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    from shutil import which

    found = which("mpiexec")
    if found is None:
        raise InputError("--ranks needs mpiexec: install the extra with pip install -e '.[mpi]'")
    return found


def launch_digest(ranks: int, cfg: Config, dtypes: list[str], threads: list[int], *,
                  steps: int, stall_timeout: float) -> list[Fingerprint]:
    """One mpiexec launch; the fingerprints rank 0 printed (one JSON line per configuration)."""
    argv = [mpiexec_path(), "-n", str(ranks), sys.executable, "-m", "harness.verify.digest",
            "--preset", cfg.preset, "--seed", str(cfg.train.seed), "--group-size",
            str(cfg.train.group_size), "--threads", ",".join(map(str, threads)), "--dtypes",
            ",".join(dtypes), "--steps", str(steps), "--stall-timeout", str(stall_timeout),
            "--reference"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI_LOCAL"))}
    proc = run_child(argv, timeout=LAUNCH_TIMEOUT_S, where=f"during mpiexec -n {ranks}",
                     env=env)  # a stop ends mpiexec's whole process group
    if proc.returncode != 0:
        raise RuntimeError(launch_failure(ranks, proc.returncode, proc.stderr))
    return [from_json(Fingerprint, json.loads(line)) for line in proc.stdout.splitlines()
            if line.startswith("{")]


# mpiexec (hydra) exits with N when a rank was ended by signal N: the common ones, named
RANK_SIGNALS = {6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}


def launch_failure(ranks: int, code: int, stderr: str) -> str:
    """Why one mpiexec launch failed: its exit code (a rank's signal named where mpiexec
    reports one) and the end of its stderr, cleaned and cut."""
    from harness.run.engine_text import engine_text

    tail = " | ".join(stderr.strip().splitlines()[-3:])
    why = (f" (mpiexec's report of a rank ended by signal {code}, {RANK_SIGNALS[code]})"
           if code in RANK_SIGNALS else "")
    return (f"mpiexec -n {ranks} exited {code}{why}: "
            + (engine_text(tail) if tail else "nothing on stderr"))


def run_rank_gates(cfg: Config, dtypes: list[str], threads: list[int], ranks: list[int],
                   baseline: dict, *, steps: int, stall_timeout: float,
                   tolerances: tuple[dict, dict, dict], out=print, launcher=None,
                   require_bitwise: bool = True) -> list[RankRecord]:
    """Every R: fingerprints vs the single-process `baseline[dtype]` record and the reference.

    `baseline[dtype]` holds grad_hash, update_hash and trajectory_hash of the single-process
    engine in this same verify run; `tolerances` are (LOSS_TOL, GRAD_TOL, TRAJ_TOL).
    `launcher` (default `launch_digest`, fast under mpiexec) gives the fingerprints of R ranks;
    a bitwise difference is a failure with `require_bitwise`, otherwise a note (measured).
    """
    launcher = launch_digest if launcher is None else launcher
    loss_tol, grad_tol, traj_tol = tolerances
    records = []
    for R in ranks:
        start = time.perf_counter()
        try:
            fps = launcher(R, cfg, dtypes, threads, steps=steps, stall_timeout=stall_timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            seconds = time.perf_counter() - start
            for dtype in dtypes:  # every case this launch was for failed: one record each
                for T in threads:
                    rec = RankRecord(cfg.preset, dtype, R, T, *(float("nan"),) * 3, "", "", "",
                                     seconds)
                    rec.failures.append(f"ranks-run: preset {cfg.preset}, {dtype}, R={R}, "
                                        f"T={T}: {exc}")
                    records.append(rec)
            out(f"  R={R}: FAIL: {exc}")
            continue
        seen = {(f.dtype, f.threads) for f in fps}
        for dtype in dtypes:
            for T in threads:
                if (dtype, T) not in seen:
                    rec = RankRecord(cfg.preset, dtype, R, T, *(float("nan"),) * 3, "", "", "",
                                     0.0)
                    rec.failures.append(f"ranks-run: preset {cfg.preset}, {dtype}, R={R}, "
                                        f"T={T}: no fingerprint came back")
                    records.append(rec)
        for f in fps:
            rec = _record(cfg, f)
            base = baseline[f.dtype]
            where = f"preset {cfg.preset}, {f.dtype}, R={R}, T={f.threads}"
            rec.bitwise = all(getattr(rec, name) == base[name]
                              for name in ("grad_hash", "update_hash", "trajectory_hash"))
            for name, check in (("grad_hash", "bitwise-ranks-grads"),
                                ("update_hash", "bitwise-ranks-update"),
                                ("trajectory_hash", "bitwise-ranks-trajectory")):
                if getattr(rec, name) != base[name]:
                    (rec.failures if require_bitwise else rec.notes).append(
                        f"{check}: {where} differs from the single process "
                        f"({getattr(rec, name)[:12]} vs {base[name][:12]})")
            for value, tol, check in ((rec.loss_error, loss_tol, "loss-equivalence"),
                                      (rec.grad_error, grad_tol, "grad-equivalence"),
                                      (rec.trajectory_error, traj_tol, "trajectory")):
                if not value <= tol[f.dtype]:
                    rec.failures.append(f"{check}: {where}: relative error {value:.3e} > "
                                        f"{tol[f.dtype]:.0e}")
            records.append(rec)
            out(format_rank_row(rec))
    return records


def _record(cfg: Config, f: Fingerprint) -> RankRecord:
    per_step = {}
    for r in f.ranks_report or []:  # the MPI engine's own per-rank reports
        t = r["times"]
        jobs = max(1, t["steps"])
        per_step[str(r["rank"])] = (t["sent_bytes"] + t["received_bytes"]) // jobs
    return RankRecord(cfg.preset, f.dtype, f.ranks, f.threads, f.loss_err, f.grad_err,
                      f.traj_err, f.grads_sha, f.update_sha, f.trajectory_sha, f.seconds,
                      per_step)


RANK_HEADER = (f"{'preset':<6} {'dtype':<7} {'R':>3} {'T':>3} {'loss err':>9} {'grad err':>9} "
               f"{'traj err':>9} {'grads':>12} {'s':>6}  status")


def format_rank_row(r: RankRecord) -> str:
    return (f"{r.preset:<6} {r.dtype:<7} {r.ranks:>3} {r.threads:>3} {r.loss_error:>9.2e} "
            f"{r.grad_error:>9.2e} {r.trajectory_error:>9.2e} {r.grad_hash[:12]:>12} "
            f"{r.seconds:>6.2f}  {'PASS' if not r.failures else 'FAIL'}")


def verify_across_ranks(ranks_text: str, configs: list[Config], dtypes: list[str],
                        threads: list[int], report, *, steps: int, stall_timeout: float,
                        out=print, engine: str = "fast",
                        require_bitwise: bool | None = None) -> list[RankRecord]:
    """The `--ranks` part of `spheres verify`, after the single-process sweep: fast under
    mpiexec, or (`engine` torch-ddp) DDP worlds of R processes, bitwise gated by default only
    for fast (RANK_ENGINES). Every case asked for goes into `report.planned_cases` first, each
    record into `report.ranks` as it comes (harness.verify.gates.VerifyReport: a case with no
    record is a failure)."""
    from harness.figures.thresholds import GRAD_TOL, LOSS_TOL, TRAJ_TOL

    ranks = parse_ranks(ranks_text)
    launcher = rank_launcher(engine)
    gate = engine == "fast" if require_bitwise is None else require_bitwise
    records = report.records
    report.planned_cases += [f"{cfg.preset} {dtype} R={R} T={T}" for cfg in configs
                             for R in ranks for dtype in dtypes for T in threads]
    out(f"# across {RANK_ENGINES[engine]} {ranks} (T = {threads}; bitwise "
        f"{'gated' if gate else 'measured, not gated'})")
    out(RANK_HEADER)
    result: list[RankRecord] = report.ranks
    for cfg in configs:
        baseline = {}
        for rec in records:
            if rec.preset == cfg.preset and rec.dtype not in baseline:
                baseline[rec.dtype] = {"grad_hash": rec.grad_hash,
                                       "update_hash": rec.update_hash,
                                       "trajectory_hash": rec.trajectory_hash}
        done = run_rank_gates(cfg, dtypes, threads, ranks, baseline, steps=steps,
                              stall_timeout=stall_timeout,
                              tolerances=(LOSS_TOL, GRAD_TOL, TRAJ_TOL), out=out,
                              launcher=launcher, require_bitwise=gate)
        for rec in done:
            for note in rec.notes:
                out(f"  measured, not gated (--require-bitwise gates it): {note}")
        result += done
    return result


# the engines `--ranks` can spread over processes, and what a rank count means for each
RANK_ENGINES = {"fast": "MPI ranks (one mpiexec launch per R)",
                "torch-ddp": "torch-ddp world sizes (one DDP world per R, dtype and T)"}


def rank_launcher(engine: str):
    """The fingerprint launcher of `--ranks` for `engine`, or InputError (before any work)."""
    if engine not in RANK_ENGINES:
        raise InputError(f"--ranks runs {' or '.join(RANK_ENGINES)} across processes, not "
                         f"{engine!r}; use --engine fast or --engine torch-ddp")
    if engine == "torch-ddp":
        from harness.verify.ddp_ranks import launch_ddp

        return launch_ddp
    return launch_digest
