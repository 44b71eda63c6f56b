"""The reproducibility table (issue 23): ours and the peers, measured side by side.

For each engine (fast, fast under MPI, torch, torch-ddp, the exec example), thread count
(1, 2, 3) and world size (1, 2, 3, 4 for the engines that spread over processes): train the
verify trajectory (3 steps, the last group short with a padded batch) from the same seeded
weights, then compare every weight with the engine's own 1-thread single process (fast under
MPI: with fast's), bit for bit and by the largest difference in ULPs of the run's dtype.
Nothing is assumed: a peer that turns out bitwise stable somewhere reads `yes · 0`.

`python -m harness.bench.repro` (a step of `make bench`) writes reports/bench/repro.md and
repro.json; `spheres analyze` renders the same table in its report (`markdown`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from harness.figures.bench_metrics import ReproCell, ReproTable
from harness.figures.serial import from_json, to_json
from harness.measure.machine import blas_facts, blas_line, machine_facts
from harness.run.stop import check_stop, run_child
from plumbing.errors import SpheresError
from plumbing.outputs import json_text, write_output
from reference.config import Config, preset
from reference.params import init_params, param_count, param_specs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = f"exec:{sys.executable} {ROOT / 'examples' / 'numpy_engine.py'}"
# (label, --engine spelling, spreads over processes): the five engines
ENGINES: tuple[tuple[str, str, bool], ...] = (
    ("fast", "fast", False), ("fast under MPI", "mpi", True), ("torch", "torch", False),
    ("torch-ddp", "torch-ddp", True), ("exec example", EXAMPLE, False))
THREADS = (1, 2, 3)
WORLDS = (1, 2, 3, 4)
DTYPES = ("float32", "float64")
STEPS = 3  # the verify trajectory's length (`spheres verify --trajectory-steps` default)
ULPS_IN_FULL = 10**6  # a cell writes a ULP count below this in full, above it as 1.23e+09
MPI_LAUNCH_SECONDS = 1800.0  # one mpiexec launch of every (dtype, T): its own stall timeouts
# end a stuck rank first; this only bounds a launcher that never returns


def _ordered(x: np.ndarray) -> np.ndarray:
    """The floats' bits as int64 in the floats' own order: neighbours differ by 1, +0 == -0."""
    itype = np.int32 if x.dtype == np.float32 else np.int64
    i = np.ascontiguousarray(x).view(itype).astype(np.int64)
    return np.where(i < 0, np.int64(np.iinfo(itype).min) - i, i)


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """The largest distance between `a` and `b` elementwise, in units in the last place of
    their dtype (float32 or float64; `b`'s dtype is used for both)."""
    b = np.asarray(b)
    a = np.asarray(a, b.dtype)
    if a.size == 0:
        return 0
    oa, ob = _ordered(a).ravel(), _ordered(b).ravel()
    same = (oa >= 0) == (ob >= 0)  # same sign: the int64 difference cannot overflow
    worst = int(np.max(np.abs(oa[same] - ob[same]), initial=0))
    if not same.all():  # across zero: |a| + |b| steps, in Python integers
        worst = max(worst, max(abs(int(p)) + abs(int(q))
                               for p, q in zip(oa[~same], ob[~same], strict=True)))
    return worst


def compare(params: dict[str, np.ndarray], base: dict[str, np.ndarray], dtype: str,
            names: list[str]) -> tuple[bool, int, str, int]:
    """(bitwise equal, largest ULP difference, the tensor holding it, elements that differ),
    both sides taken in the run's dtype."""
    dt = np.dtype(dtype)
    worst, where, differing = 0, "", 0
    for n in names:
        a, b = np.asarray(params[n], dt), np.asarray(base[n], dt)
        itype = np.int32 if dt == np.float32 else np.int64
        differing += int(np.count_nonzero(a.reshape(-1).view(itype)
                                          != b.reshape(-1).view(itype)))
        u = ulps(a, b)
        if u > worst:
            worst, where = u, n
    return differing == 0, worst, where, differing


def trained_weights(engine, groups) -> dict[str, np.ndarray]:
    """One `step` per group, then the weights (the engine is closed by the caller)."""
    for g in groups:
        engine.step(g.tokens, g.targets)
    return engine.state().params


def run_in_process(spec: str, cfg: Config, groups, dtype: str, threads: int,
                   world: int, stall_timeout: float) -> dict[str, np.ndarray]:
    """One engine run here (torch-ddp: a world of `world` processes) -> its weights."""
    from harness.run.engines import make_engine

    params = init_params(cfg.model, cfg.train.seed)
    if spec == "torch-ddp":
        from harness.run.ddp_engine import build

        engine = build(cfg, world=world, threads=threads, dtype=dtype, params=params,
                       stall_timeout=stall_timeout)
    else:
        engine = make_engine(spec, cfg, threads=threads, dtype=dtype, params=params,
                             stall_timeout=stall_timeout)
    try:
        return trained_weights(engine, groups)
    finally:
        engine.close()


def run_mpi(world: int, cfg: Config, dtypes: list[str], threads: list[int], *, steps: int,
            stall_timeout: float) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """fast under `mpiexec -n world`, every (dtype, T) in one launch -> weights by (dtype, T)."""
    from harness.verify.ranks import mpiexec_path

    with tempfile.TemporaryDirectory(prefix="ks-repro-") as tmp:
        argv = [mpiexec_path(), "-n", str(world), sys.executable, "-m", "harness.bench.repro_mpi",
                "--preset", cfg.preset, "--seed", str(cfg.train.seed), "--threads",
                ",".join(map(str, threads)), "--dtypes", ",".join(dtypes), "--steps",
                str(steps), "--stall-timeout", str(stall_timeout), "--out", tmp]
        proc = run_child(argv, timeout=MPI_LAUNCH_SECONDS, where=f"during mpiexec -n {world}")
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"mpiexec -n {world} exited {proc.returncode}: {tail}")
        out = {}
        for dtype in dtypes:
            for T in threads:
                with np.load(Path(tmp) / f"{dtype}-T{T}.npz") as z:
                    out[(dtype, T)] = {k: z[k] for k in z.files}
        return out


def _cells(label: str, spec: str, spread: bool, threads, worlds, dtypes) -> list[ReproCell]:
    """The cells of one engine, its (T=1, W=1) first: the baseline of the rest."""
    ws = worlds if spread else (1,)
    return [ReproCell(label, spec, d, T, W) for d in dtypes for W in ws for T in threads]


def _measure(cells: list[ReproCell], cfg: Config, groups, stall_timeout: float,
             say: Callable[[str], None]) -> dict[tuple[str, str, int, int], dict]:
    """Weights of every cell, by (spec, dtype, T, W); a failure is the cell's `error`."""
    weights: dict[tuple[str, str, int, int], dict] = {}
    mpi = [c for c in cells if c.spec == "mpi"]
    for W in sorted({c.world for c in mpi}):
        check_stop(f"before the reproducibility run of mpiexec -n {W}")
        mine = [c for c in mpi if c.world == W]
        start = time.perf_counter()
        try:
            got = run_mpi(W, cfg, sorted({c.dtype for c in mine}),
                          sorted({c.threads for c in mine}), steps=len(groups),
                          stall_timeout=stall_timeout)
            weights.update({("mpi", d, T, W): p for (d, T), p in got.items()})
        except (RuntimeError, OSError, SpheresError) as exc:
            for c in mine:
                c.error = f"{type(exc).__name__}: {exc}"
        for c in mine:
            c.seconds = (time.perf_counter() - start) / len(mine)
        say(f"repro: fast under MPI, world {W}: {len(mine)} runs")
    for c in (c for c in cells if c.spec != "mpi"):
        check_stop(f"before the reproducibility run of {c.engine} {c.dtype} T={c.threads}")
        start = time.perf_counter()
        try:
            weights[(c.spec, c.dtype, c.threads, c.world)] = run_in_process(
                c.spec, cfg, groups, c.dtype, c.threads, c.world, stall_timeout)
        except (RuntimeError, OSError, SpheresError) as exc:
            c.error = f"{type(exc).__name__}: {exc}"
        c.seconds = time.perf_counter() - start
        say(f"repro: {c.engine} {c.dtype} T={c.threads} W={c.world}: "
            f"{'measured' if not c.error else c.error}")
    return weights


def _judge(cells: list[ReproCell], weights: dict, names: list[str]) -> None:
    """Each cell against its baseline: the engine's own T=1 single process (MPI: fast's)."""
    for c in cells:
        base_spec = "fast" if c.spec == "mpi" else c.spec
        key = (base_spec, c.dtype, 1, 1)
        c.baseline = f"{'fast' if c.spec == 'mpi' else c.engine} T=1, single process"
        mine = weights.get((c.spec, c.dtype, c.threads, c.world))
        if c.error or mine is None:
            c.error = c.error or "no weights came back"
            continue
        if key not in weights:
            c.error = f"the baseline ({c.baseline}) was not measured"
            continue
        c.bitwise, c.max_ulps, c.worst_tensor, c.differing = compare(
            mine, weights[key], c.dtype, names)


def produce(cfg: Config, *, engines=ENGINES, threads=THREADS, worlds=WORLDS, dtypes=DTYPES,
            steps: int = STEPS, stall_timeout: float = 600.0,
            say: Callable[[str], None] = print) -> ReproTable:
    """Measure every cell of the table (see the module docstring)."""
    from harness.verify.digest import trajectory_groups

    start = time.perf_counter()
    facts = machine_facts()
    table = ReproTable(preset=cfg.preset, steps=steps, cpu_model=facts.cpu_model,
                       cores=facts.cores, blas=blas_line(blas_facts()), torch=_torch_version(),
                       weights=param_count(cfg.model))
    groups = trajectory_groups(cfg, steps)
    cells = [c for label, spec, spread in engines
             for c in _cells(label, spec, spread, threads, worlds, dtypes)]
    if any(c.spec == "mpi" for c in cells) and not any(c.spec == "fast" for c in cells):
        cells += [ReproCell("fast", "fast", d, 1, 1) for d in dtypes]  # MPI's baseline
    weights = _measure(cells, cfg, groups, stall_timeout, say)
    _judge(cells, weights, [s.name for s in param_specs(cfg.model)])
    table.cells = cells
    table.seconds = time.perf_counter() - start
    return table


def _torch_version() -> str:
    try:
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


def _cell_text(c: ReproCell | None) -> str:
    if c is None:
        return "-"
    if c.error or c.bitwise is None:
        return "not measured"
    if c.bitwise:
        return "yes · 0"
    n = f"{c.max_ulps:,}" if c.max_ulps < ULPS_IN_FULL else f"{c.max_ulps:.2e}"
    return f"**NO** · {n} ({c.differing:,})"


def markdown(table: ReproTable, heading: str = "## Reproducibility across threads and "
             "processes") -> str:
    """The table: per engine and world size, per dtype and T, `yes · 0` or `NO · max ULPs`."""
    threads = sorted({c.threads for c in table.cells})
    dtypes = sorted({c.dtype for c in table.cells})
    at = {(c.engine, c.dtype, c.threads, c.world): c for c in table.cells}
    rows = sorted({(c.engine, c.world) for c in table.cells},
                  key=lambda r: ([e[0] for e in ENGINES].index(r[0])
                                 if r[0] in [e[0] for e in ENGINES] else 99, r[0], r[1]))
    head = ["engine", "world"] + [f"{d} T={T}" for d in dtypes for T in threads]
    lines = [heading, "", f"Weights after {table.steps} training steps (preset "
             f"`{table.preset}`, the verify trajectory: the last group short, its last batch "
             "padded), each compared with the engine's own 1-thread single process (fast under "
             "MPI: with fast's): `yes · 0` = bitwise equal; `NO · n (k)` = bits differ, n = the "
             "largest difference of any weight in ULPs of the run's dtype, k = how many of the "
             f"{table.weights:,} weights differ at all. World = processes "
             "(MPI ranks, DDP world size). Measured on "
             f"{table.cpu_model} ({table.cores} cores available), {table.blas}; torch "
             f"{table.torch}; in {table.seconds:,.0f} s.", "",
             "| " + " | ".join(head) + " |", "|---|---:|" + "---|" * (len(head) - 2)]
    for engine, world in rows:
        cells = [_cell_text(at.get((engine, d, T, world))) for d in dtypes for T in threads]
        lines.append(f"| {engine} | {world} | " + " | ".join(cells) + " |")
    worst = sorted({c.worst_tensor for c in table.cells if c.bitwise is False})
    if worst:
        lines += ["", "The largest difference of each differing cell lies in: "
                  + ", ".join(f"`{w}`" for w in worst) + " (per cell in the JSON)."]
    if table.errors:
        lines += ["", "Not measured:", ""] + [f"- {e}" for e in table.errors]
    return "\n".join(lines) + "\n"


def analyze_phase(threads: list[int], worlds: list[int], dtypes: list[str],
                  stall_timeout: float, say: Callable[[str], None] = print) -> ReproTable:
    """The reproducibility section of `spheres analyze`, at the tiny preset (the grid is 60
    trained runs; the table compares bits, which the preset's size does not change)."""
    say(f"reproducibility: {len(ENGINES)} engines, T={threads}, worlds={worlds}, {dtypes}")
    try:
        return produce(preset("tiny"), threads=tuple(threads), worlds=tuple(worlds),
                       dtypes=tuple(dtypes), stall_timeout=stall_timeout, say=say)
    except (OSError, RuntimeError, SpheresError) as exc:
        say(f"reproducibility: not measured: {exc}")
        return ReproTable(error=f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench.repro",
                                description="the reproducibility table into reports/bench/")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench",
                   help="folder for repro.md and repro.json")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="write the markdown of a measured repro.json again, measuring nothing")
    a = p.parse_args(argv)
    from harness.run.stop import GracefulStop, Stopped

    if a.render is not None:
        table = from_json(ReproTable, json.loads(a.render.read_text()))
        table.weights = table.weights or param_count(preset(table.preset).model)
    else:
        try:  # a signal ends every child (mpiexec, a DDP world) before we go
            with GracefulStop():
                table = produce(preset(a.preset), say=lambda line: print(line, flush=True))
        except Stopped as exc:
            print(f"repro: stopped by {exc.name}; nothing written", file=sys.stderr)
            return exc.exit_code
    write_output(a.out / "repro.json", json_text(to_json(table), indent=2), "repro.json")
    write_output(a.out / "repro.md", "# Reproducibility table\n\n" + markdown(table).split(
        "\n", 2)[2], "repro.md")
    print(markdown(table))
    return 1 if table.errors else 0  # asked for and not measured: a failure


if __name__ == "__main__":
    sys.exit(main())
