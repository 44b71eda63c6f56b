"""Every available engine side by side on one workload (SPEC 13): `spheres engines --measure`,
the engines section of `analyze`, and the last step of `make bench`.

Each engine is measured in its own child process (`python -m harness.bench.engine_compare`), so its
peak memory is its own and one engine's thread pool cannot slow the next. Per engine: tokens/s
of training steps (best of the rounds), that rate as a share of the machine's float32 matmul
limit, the worst tensor's relative L2 error against the float64 reference on the same group,
and whether two thread counts give bitwise the same gradient (measured, whatever it is).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from harness.bench.summary import flops_per_token
from harness.figures.bench_metrics import EngineComparison, EngineRow, Workload
from harness.figures.serial import from_json
from harness.measure.machine import REPO_ROOT
from harness.measure.process import peak_rss_bytes
from harness.run.corpus import load_corpus, one_group_tokens
from harness.run.engines import make_engine
from harness.run.plugins import list_engines
from harness.run.progress import report_work
from harness.run.stop import GracefulStop, Stopped, check_stop, run_child
from harness.verify.gates import digest, worst_tensor
from plumbing.cores import usable_cores
from plumbing.errors import SpheresError
from plumbing.outputs import json_text, write_output
from reference.config import Config, preset
from reference.engine import ReferenceEngine, ReportsChildMemory
from reference.params import param_specs

EXAMPLE_ENGINE = f"exec:{sys.executable} {REPO_ROOT / 'examples' / 'numpy_engine.py'}"
MATMUL_N = 1024  # sgemm size for the limit: large enough to run at BLAS speed, ~0.1 s a round
CHILD_TIMEOUT_S = 3600.0  # one engine's whole measurement; a backstop, each request has its own


def sgemm_limit(n: int = MATMUL_N, rounds: int = 5) -> float:
    """The machine's float32 matmul FLOP/s on every core: the yardstick of every engine."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(rounds))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _group(cfg: Config):
    corpus = load_corpus(cfg, None, synthetic_tokens=one_group_tokens(cfg, 2))
    return corpus.groups(cfg).group(0)


def measure_one(spec: str, work: Workload, ref_file: Path, limit: float,
                stall_timeout: float) -> EngineRow:
    """In this process: accuracy, bitwise across two thread counts, then timed steps."""
    cfg = work.config()
    names = [s.name for s in param_specs(cfg.model)]
    dtype = "float64" if spec == "reference" else work.dtype
    row = EngineRow(spec, dtype, 1 if spec == "reference" else work.threads)
    group = _group(cfg)
    with np.load(ref_file) as z:
        ref_loss = float(z["loss"])
        ref_grads = {n: z[f"grad/{n}"] for n in names}
    t0 = time.perf_counter()
    low = 1 if work.threads > 1 else 2
    row.bitwise_threads = f"{low} vs {work.threads}"
    engine = make_engine(spec, cfg, threads=low, dtype=dtype, stall_timeout=stall_timeout)
    try:
        low_hash = digest(engine.group_grads(group.tokens, group.targets).grads, names)
    finally:
        engine.close()
    engine = make_engine(spec, cfg, threads=work.threads, dtype=dtype,
                         stall_timeout=stall_timeout)
    try:
        res = engine.group_grads(group.tokens, group.targets)  # also the warm-up
        row.bitwise = digest(res.grads, names) == low_hash
        row.worst_error, row.worst_tensor = worst_tensor(res.grads, ref_grads, names)
        row.loss_error = abs(res.loss - ref_loss) / abs(ref_loss)
        best = float("inf")
        for _ in range(work.rounds):
            t = time.perf_counter()
            step = engine.step(group.tokens, group.targets)
            best = min(best, time.perf_counter() - t)
        row.tokens_per_s = step.n_targets / best
        row.sgemm_flops = sgemm_limit()  # right after the steps: under the same machine load
        child_peak = (engine.child_peak_rss_bytes() if isinstance(engine, ReportsChildMemory)
                      else None) or 0
    finally:
        engine.close()
    row.sgemm_share = row.tokens_per_s * flops_per_token(cfg.model) / max(limit,
                                                                          row.sgemm_flops)
    row.seconds = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child would report
    # the parent's peak; VmHWM belongs to this process image alone
    row.peak_rss_bytes = (peak_rss_bytes() or 0) + child_peak
    return row


def available_specs(extra: list[str] | None = None, example: bool = True) -> list[str]:
    """Every registered engine that loads here, the example exec engine, and `extra`."""
    specs = [i.name for i in list_engines() if i.available]
    if example:
        specs.append(EXAMPLE_ENGINE)
    return specs + [s for s in (extra or []) if s not in specs]


def compare(specs: list[str], work: Workload, *, stall_timeout: float = 600.0,
            say=print) -> EngineComparison:
    """Measure every engine in its own child process; the reference answer is computed once."""
    cfg = work.config()
    limit = sgemm_limit()
    say(f"engines: float32 sgemm limit {limit / 1e9:.1f} GFLOP/s; workload {work.preset}, "
        f"G={work.group_size}, {work.dtype}, T={work.threads}, {work.rounds} timed steps")
    rows = []
    # the child imports `module:factory` specs from the same path as this process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with tempfile.TemporaryDirectory(prefix="ks-engines-") as tmp:
        ref_file = Path(tmp) / "reference.npz"
        group = _group(cfg)
        ref = ReferenceEngine(cfg).group_grads(group.tokens, group.targets)
        np.savez(ref_file, loss=np.float64(ref.loss),
                 **{f"grad/{n}": g for n, g in ref.grads.items()})
        report_work(say, "engine", 0, len(specs))
        for spec in specs:
            out = Path(tmp) / "row.json"
            cmd = [sys.executable, "-m", "harness.bench.engine_compare", "--engine", spec,
                   "--ref", str(ref_file), "--limit", repr(limit), "--out", str(out),
                   "--stall-timeout", repr(stall_timeout), "--workload",
                   json.dumps(asdict(work))]
            check_stop(f"after {len(rows)} of {len(specs)} engines")
            # its own process group, ended whole when a signal stops this run
            proc = run_child(cmd, timeout=CHILD_TIMEOUT_S, cwd=REPO_ROOT, env=env,
                             where=f"measuring {short_name(spec)} ({len(rows)} of "
                                   f"{len(specs)} engines done)")
            if proc.returncode == 0 and out.exists():
                row = from_json(EngineRow, json.loads(out.read_text()))  # null: NaN
            else:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                row = EngineRow(spec, work.dtype, work.threads,
                                error=f"exit {proc.returncode}: {tail}")
            out.unlink(missing_ok=True)
            rows.append(row)
            say(format_row(row))
            report_work(say, "engine", len(rows), len(specs))
    # the limit is the best the machine showed during the run (other load only lowers it):
    # every share uses the same yardstick
    limit = max([limit] + [r.sgemm_flops for r in rows if r.sgemm_flops == r.sgemm_flops])
    fpt = flops_per_token(cfg.model)
    for r in rows:
        r.sgemm_share = r.tokens_per_s * fpt / limit
    return EngineComparison(workload=work, sgemm_limit_flops=limit,
                            flops_per_token=flops_per_token(cfg.model), cores=usable_cores(),
                            rows=rows)


def short_name(spec: str) -> str:
    """`exec:/path/python /path/examples/numpy_engine.py` -> `exec:numpy_engine.py`."""
    if spec.startswith("exec:"):
        return "exec:" + Path(spec.split()[-1]).name
    return spec


def format_row(r: EngineRow) -> str:
    if r.error:
        return f"  {short_name(r.engine):<24} not measured: {r.error}"
    bit = {True: "yes", False: "no", None: "-"}[r.bitwise]
    return (f"  {short_name(r.engine):<24} {r.dtype:<7} T={r.threads:<3} "
            f"{r.tokens_per_s:>10,.0f} tok/s  {r.sgemm_share:>6.1%} of sgemm  "
            f"worst err {r.worst_error:.1e} ({r.worst_tensor})  bitwise {r.bitwise_threads}: "
            f"{bit}  peak {r.peak_rss_bytes / 2**20:,.0f} MiB")


def markdown(result: EngineComparison) -> str:
    w = result.workload
    lines = [f"Workload: preset `{w.preset}`, G={w.group_size} batches per step, "
             f"{w.dtype} (the reference computes in float64), T={w.threads}, best of "
             f"{w.rounds} timed steps; float32 sgemm limit "
             f"{result.sgemm_limit_flops / 1e9:.1f} GFLOP/s on {result.cores} cores (the "
             "best of the measurements before and after each engine); "
             f"{result.flops_per_token:,} model FLOPs per token.", "",
             "| engine | dtype | T | tokens/s | share of sgemm limit | worst error vs reference "
             "| worst tensor | bitwise across T | peak memory MiB |",
             "|---|---|---:|---:|---:|---:|---|---|---:|"]
    for r in result.rows:
        if r.error:
            lines.append(f"| `{short_name(r.engine)}` | not measured: {r.error} "
                         "| | | | | | | |")
            continue
        bit = {True: "yes", False: "no", None: "-"}[r.bitwise]
        lines.append(f"| `{short_name(r.engine)}` | {r.dtype} | {r.threads} | "
                     f"{r.tokens_per_s:,.0f} | {r.sgemm_share:.1%} | {r.worst_error:.1e} | "
                     f"`{r.worst_tensor}` | {bit} ({r.bitwise_threads}) | "
                     f"{r.peak_rss_bytes / 2**20:,.0f} |")
    return "\n".join(lines) + "\n"


def analyze_phase(preset_name: str, threads: int, extra: list[str],
                  say=print) -> EngineComparison:
    """The engines section of `spheres analyze`: every available engine plus `extra`
    (`analyze --engine`), on two batches of the analysed preset."""
    cfg = preset(preset_name)
    work = Workload(preset_name, min(cfg.train.group_size, 2), "float32", threads, rounds=2)
    try:
        return compare(available_specs(extra), work, say=say)
    except (OSError, subprocess.SubprocessError, SpheresError) as exc:
        say(f"engines: not measured: {exc}")
        return EngineComparison(error=f"{type(exc).__name__}: {exc}")


def _child(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench.engine_compare")
    p.add_argument("--engine", required=True)
    p.add_argument("--ref", type=Path, required=True)
    p.add_argument("--limit", type=float, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stall-timeout", type=float, default=600.0)
    p.add_argument("--workload", required=True)
    a = p.parse_args(argv)
    try:  # the parent's stop sends SIGTERM: close the engine (its process group) and go
        with GracefulStop():
            row = measure_one(a.engine, Workload(**json.loads(a.workload)), a.ref, a.limit,
                              a.stall_timeout)
    except SpheresError as exc:
        print(f"engine {a.engine}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except Stopped as exc:
        print(f"engine {a.engine}: {exc}", file=sys.stderr)
        return exc.exit_code
    write_output(a.out, json_text(asdict(row)))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
