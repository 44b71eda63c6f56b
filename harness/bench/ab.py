"""`spheres ab`: two trees' training throughput, interleaved, with an A/A noise floor.

On a shared machine the load changes minute by minute, so the honest comparison measures A and
B side by side: every round runs three fresh processes, A, A' (A again) and B, in an order
drawn from a seeded generator, each timing `steps` training steps of one fixed workload after
a warm-up step (tokens/s of its median step). B/A is judged by `harness.bench.significance`
(Hodges-Lehmann ratio, Moses interval, Mann-Whitney U p-value); A'/A, measured in the same
session, gives the noise band the B/A interval must clear. A revision is exported with
`git archive` into a temporary folder, a folder is used in place; either runs with PYTHONPATH
set to that tree alone (the venv's packages, the tree's own `fast/` and `reference/`). One
untimed build process per tree fills its numba cache (in the tree's own `__pycache__`, as any
run of it would: about a minute for a fresh export on the 2-core machine, nothing for a folder
already run). The temporary folder is always removed, also after a stop.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.bench.significance import RatioEstimate, judge, noise_band, ratio_estimate
from harness.figures.thresholds import AB_ALPHA, AB_CHILD_TIMEOUT_SECONDS, AB_MIN_EFFECT
from harness.run.progress import format_seconds
from harness.run.stop import check_stop, run_child
from plumbing.errors import InputError, SpheresError

# What a tree must hold for the measuring process to import it.
TREE_FILES = ("fast/trainer.py", "reference/config.py")
SLOTS = ("A", "A'", "B")  # A' is tree A again: the A/A noise floor

# One measurement in a fresh process: imports the tree on PYTHONPATH, one warm-up step, then
# `steps` timed steps of the same seeded batches; its figures are tokens per second of the
# median step (a step that lost the core to another process does not move it), by the wall
# clock and by the process's CPU clock (all its threads); prints one JSON line.
CHILD = r'''
import json, sys, time
args = json.loads(sys.argv[1])
import numpy as np
from threadpoolctl import threadpool_info
import fast
from fast.trainer import FastTrainer
from reference.config import preset
cfg = preset(args["preset"]).replace(group_size=args["group_size"])
rng = np.random.default_rng(0)
shape = (args["group_size"] * cfg.train.batch_size, cfg.model.seq_len)
tok = rng.integers(4, cfg.model.vocab_size, shape, dtype=np.int64)
tgt = rng.integers(4, cfg.model.vocab_size, shape, dtype=np.int64)
tr = FastTrainer(cfg, args["threads"])
try:
    tr.step(tok, tgt)
    wall, cpu = [], []
    for _ in range(args["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        tr.step(tok, tgt)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
finally:
    tr.close()
blas = sorted({"%s %s" % (p.get("internal_api"), p.get("architecture"))
               for p in threadpool_info() if p.get("user_api") == "blas"})
print(json.dumps({"wall": tok.size / float(np.median(wall)), "seconds": sum(wall),
                  "cpu": tok.size / max(float(np.median(cpu)), 1e-9),
                  "mean_wall": len(wall) * tok.size / sum(wall),
                  "fast": fast.__file__, "blas": blas}))
'''


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a folder used in place, or a revision of a git repo."""

    spec: str  # as given on the command line
    kind: str  # "folder" or "revision"
    path: str  # the folder, or the repository the revision is in
    commit: str | None = None


@dataclass(frozen=True)
class AbWorkload:
    """The fixed workload every process times (fast engine, float32, seeded batches)."""

    preset: str
    group_size: int
    threads: int
    steps: int
    clock: str = "wall"  # "wall": tokens per second; "cpu": tokens per CPU second


@dataclass
class AbResult:
    """Every sample, the schedule, B/A and A'/A, the band and the verdict."""

    a: Side
    b: Side
    workload: AbWorkload
    rounds: int
    seed: int
    alpha: float
    order: list[list[str]]  # the slots of each round, in the order they ran
    samples: dict[str, list[float]]  # tokens/s per slot, in round order
    ab: RatioEstimate  # B / A
    aa: RatioEstimate  # A' / A
    band: float  # relative noise band the B/A interval must clear
    verdict: str  # "regressed", "faster" or "same"
    cpu: str = ""
    blas: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def regressed(self) -> bool:
        return self.verdict == "regressed"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "medians": {k: float(np.median(v))
                                            for k, v in self.samples.items()}}


class MeasureError(SpheresError):
    """A measuring process failed or printed no figure: the comparison cannot be made."""


def _git(repo: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                          timeout=60)


def resolve_side(spec: str, repo: str, which: str) -> Side:
    """A folder holding a checkout, or a revision of `repo`: InputError (exit 2) otherwise."""
    folder = Path(spec)
    if folder.is_dir():
        missing = [f for f in TREE_FILES if not (folder / f).is_file()]
        if missing:
            raise InputError(f"{which} {spec} is a folder without {', '.join(missing)}; give "
                             "a checkout of this project (or a revision)")
        return Side(spec, "folder", str(folder.resolve()))
    found = _git(repo, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if found.returncode != 0:
        where = ("" if _git(repo, "rev-parse", "--git-dir").returncode == 0
                 else f" ({repo} is not a git repository; give --repo)")
        raise InputError(f"{which} {spec!r} is neither a folder nor a revision of the git "
                         f"repository at {repo}{where}; give a commit, branch or tag "
                         "(git log --oneline) or a checkout folder")
    commit = found.stdout.strip()
    for name in TREE_FILES:
        if _git(repo, "cat-file", "-e", f"{commit}:{name}").returncode != 0:
            raise InputError(f"{which} {spec} ({commit[:10]}) has no {name}; give a revision "
                             "of this project that has the fast engine")
    return Side(spec, "revision", str(Path(repo).resolve()), commit)


def materialize(side: Side, into: Path) -> Path:
    """The tree to run: the folder itself, or the revision exported with `git archive`."""
    if side.kind == "folder":
        return Path(side.path)
    out = subprocess.run(["git", "-C", side.path, "archive", "--format=tar", str(side.commit)],
                         capture_output=True, timeout=300)
    if out.returncode != 0:
        raise InputError(f"git archive {side.commit} failed: {out.stderr.decode().strip()}")
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(tree: Path, work: AbWorkload, *, steps: int | None = None,
            timeout: float = AB_CHILD_TIMEOUT_SECONDS) -> dict[str, Any]:
    """One fresh process on `tree`: its tokens/s (and the BLAS it ran), checked to be that
    tree's engine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    args = dict(asdict(work), steps=work.steps if steps is None else steps)
    try:
        done = run_child([sys.executable, "-c", CHILD, json.dumps(args)], timeout=timeout,
                         where="between measuring processes", cwd=tree, env=env)
    except subprocess.TimeoutExpired:
        raise MeasureError(f"the measuring process on {tree} did not finish within "
                           f"{timeout:g} s; measure a smaller workload (--steps, --preset)"
                           ) from None
    lines = done.stdout.strip().splitlines()
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    if done.returncode != 0 or not lines:
        raise MeasureError(f"the measuring process on {tree} exited {done.returncode}: {tail}")
    try:
        figure = json.loads(lines[-1])
    except ValueError:
        raise MeasureError(f"the measuring process on {tree} printed no figure, its last "
                           f"line: {lines[-1][:200]!r}") from None
    if not Path(figure["fast"]).resolve().is_relative_to(tree.resolve()):
        raise MeasureError(f"the measuring process on {tree} imported {figure['fast']}, not "
                           "that tree's engine")
    return figure


def schedule(rounds: int, seed: int) -> list[list[str]]:
    """Each round's slots in a seeded random order (randomised blocks)."""
    rng = np.random.default_rng(seed)
    return [[SLOTS[i] for i in rng.permutation(len(SLOTS))] for _ in range(rounds)]


Measure = Callable[[str], float]  # slot -> tokens/s of one fresh process


def alternate(measure_slot: Measure, rounds: int, seed: int, say: Callable[[str], None],
              unit: str = "tokens/s") -> tuple[list[list[str]], dict[str, list[float]]]:
    """The rounds, with a progress line (round i/N, ETA) each and a safe point between."""
    order = schedule(rounds, seed)
    samples: dict[str, list[float]] = {s: [] for s in SLOTS}
    start = time.monotonic()
    for i, slots in enumerate(order, 1):
        for slot in slots:
            samples[slot].append(measure_slot(slot))
            check_stop(f"after {slot} of round {i}/{rounds}")
        elapsed = time.monotonic() - start
        eta = format_seconds(elapsed / i * (rounds - i))
        now = "  ".join(f"{s} {samples[s][-1]:,.0f}" for s in SLOTS)
        say(f"ab: round {i}/{rounds}: {now} {unit} "
            f"(B/A {samples['B'][-1] / samples['A'][-1]:.3f}; ETA {eta})")
    return order, samples


def verdict_of(samples: dict[str, list[float]], alpha: float = AB_ALPHA
               ) -> tuple[RatioEstimate, RatioEstimate, float, str]:
    """B/A and A'/A estimates, the band from A'/A, and the verdict on B/A (tokens/s)."""
    ab = ratio_estimate(samples["A"], samples["B"], alpha=alpha)
    aa = ratio_estimate(samples["A"], samples["A'"], alpha=alpha)
    band = noise_band(aa, AB_MIN_EFFECT)
    return ab, aa, band, judge(ab, band, alpha=alpha, higher_is_better=True)


def run_ab(a: Side, b: Side, work: AbWorkload, *, rounds: int, seed: int,
           say: Callable[[str], None] = print) -> AbResult:
    """Build both trees, then the interleaved rounds; the temporary trees are always removed."""
    from harness.measure.machine import machine_facts

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spheres-ab-") as tmp:
        trees = {"A": materialize(a, Path(tmp) / "a"), "B": materialize(b, Path(tmp) / "b")}
        blas: list[str] = []
        for name, tree in trees.items():
            say(f"ab: building {name} ({tree}): one untimed process compiles its kernels")
            blas = measure(tree, work, steps=1)["blas"]
            check_stop(f"after building {name}")

        def slot(name: str) -> float:
            return measure(trees["B" if name == "B" else "A"], work)[work.clock]

        unit = "tokens/s" if work.clock == "wall" else "tokens/CPU s"
        order, samples = alternate(slot, rounds, seed, say, unit)
    ab, aa, band, verdict = verdict_of(samples)
    return AbResult(a=a, b=b, workload=work, rounds=rounds, seed=seed, alpha=AB_ALPHA,
                    order=order, samples=samples, ab=ab, aa=aa, band=band, verdict=verdict,
                    cpu=machine_facts().cpu_model, blas=blas,
                    seconds=time.monotonic() - began)


def _name(side: Side) -> str:
    return f"{side.spec} ({side.commit[:10]})" if side.commit else f"{side.spec} (folder)"


def markdown(r: AbResult) -> str:
    """The comparison as a markdown table and one verdict line."""
    w = r.workload
    med = {k: float(np.median(v)) for k, v in r.samples.items()}
    lines = [f"A = {_name(r.a)}, B = {_name(r.b)}; workload: preset {w.preset}, G={w.group_size},"
             f" T={w.threads}, {w.steps} timed steps per process, tokens per {w.clock} second "
             f"of the median step; {r.rounds} rounds of A, A', B "
             f"in seeded random order (seed {r.seed}); CPU {r.cpu}; BLAS "
             f"{', '.join(r.blas) or 'none found'}.", "",
             "| comparison | ratio | interval | confidence | p (Mann-Whitney U) |",
             "|---|---:|---:|---:|---:|"]
    for label, e in (("A'/A (noise floor)", r.aa), ("B/A", r.ab)):
        lines.append(f"| {label} | {e.ratio:.4f} | [{e.low:.4f}, {e.high:.4f}] | "
                     f"{e.confidence:.1%} | {e.p_value:.3g} |")
    medians = ", ".join(f"{slot} {med[slot]:,.0f}" for slot in SLOTS)
    lines += ["", f"Median tokens per {w.clock} second: {medians}.", "", verdict_line(r)]
    return "\n".join(lines) + "\n"


def verdict_line(r: AbResult) -> str:
    """What the statistics say, in one line."""
    e = r.ab
    change = f"B/A {e.ratio:.3f} [{e.low:.3f}, {e.high:.3f}], p={e.p_value:.3g}"
    rule = f"noise band ±{r.band:.1%} (A'/A), alpha {r.alpha:g}"
    if r.verdict == "regressed":
        return f"**REGRESSED**: B is slower than A: {change}; beyond the {rule}."
    if r.verdict == "faster":
        return f"faster: B is faster than A: {change}; beyond the {rule}."
    return f"same: no change beyond the noise: {change}; {rule}."
