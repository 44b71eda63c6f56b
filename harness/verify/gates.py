"""`spheres verify`: the equivalence gates, swept over thread counts, presets and dtypes.

For each preset and dtype the reference (float64 NumPy) computes one group's gradient and a
short training trajectory; then, for every thread count T, the engine under test (`--engine`,
default fast; any registered or exec: engine, docs/ENGINES.md) must
- match the reference loss and every parameter's gradient within the dtype's tolerance,
- give bitwise the same gradient, the same updated parameters and the same trajectory as every
  other T (compared by SHA-256 of the bytes): measured for every engine, gated with
  --require-bitwise (the default for fast),
and an engine that keeps a run record (fast.record: Node Zero + workers) must also
- hand every worker at least one batch when G >= T, and never give Node Zero a batch,
- fold every batch into position b mod 12 in ascending order and hold every barrier;
all read from the record the engine wrote while it ran, never the plan.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from fast.record import BATCH
from harness.figures.results import RunRecord
from harness.figures.thresholds import (  # relative L2, with reasons
    ACT_TOL,
    GRAD_TOL,
    LOSS_TOL,
    TRAJ_TOL,
)
from harness.measure.evidence import RECORD_FINDINGS, handed_out
from harness.measure.machine import blas_facts, blas_line
from harness.run.corpus import load_corpus
from harness.run.engines import make_engine
from harness.run.stop import Stopped, check_stop
from harness.verify.divergence import (
    RecordsDigests,
    drive,
    locate_forward,
    locate_records,
    locate_tolerance,
)
from plumbing.errors import InputError
from reference.config import Config
from reference.engine import Recorded, ReferenceEngine
from reference.params import param_specs

# gates read from the run record (harness.measure.evidence), by the finding each one needs
RECORD_GATES = {"reduction-record": ("fold-position", "fold-order", "every-batch-once"),
                "barrier-record": ("barriers", "update-after-batches")}
# every gate verify can fail, by the prefix of its failure message (tests/test_breakers.py)
VERIFY_GATES = ("loss-equivalence", "grad-equivalence", "target-count", "trajectory",
                "work-distribution", "node-zero", *RECORD_GATES, "bitwise-grads",
                "bitwise-update", "bitwise-trajectory")


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| in float64 (b the reference); 0 when both are zero."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = float(np.linalg.norm(b64))
    num = float(np.linalg.norm(a64 - b64))
    return num / den if den > 0 else num


def worst_tensor(fast: dict[str, np.ndarray], ref: dict[str, np.ndarray],
                 names: Iterable[str]) -> tuple[float, str]:
    """The largest relative L2 error over tensors, and which tensor it was."""
    return max((rel_l2(fast[n], ref[n]), n) for n in names)


def digest(tensors: dict[str, np.ndarray], names: Iterable[str]) -> str:
    """SHA-256 over every tensor's bytes in registry order: equal digests, equal bits."""
    h = hashlib.sha256()
    for n in names:
        h.update(np.ascontiguousarray(tensors[n]).tobytes())
    return h.hexdigest()


def case_name(r) -> str:
    """A run's identity, shared by the console, --markdown, --junit and the accounting:
    preset, dtype, (ranks,) thread count."""
    ranks = f" R={r.ranks}" if hasattr(r, "ranks") else ""
    return f"{r.preset} {r.dtype}{ranks} T={r.threads}"


@dataclass
class VerifyReport:
    """What was asked for and what happened: the one account the console, --json, --markdown
    and --junit read. A case asked for that has no record is a failure (`not-run`), never a
    silent pass; so is a sweep ended by an engine's error, or interrupted by a signal."""

    records: list[RunRecord] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: str | None = None  # the signal that stopped the sweep (harness/run/stop.py)
    planned: int = 0  # runs the sweep was asked for (what an interrupted one did not reach)
    planned_cases: list[str] = field(default_factory=list)  # case_name of every run asked for
    ranks: list = field(default_factory=list)  # harness.verify.ranks.RankRecord (--ranks)
    error: str | None = None  # the error that ended the sweep early (an engine's fault...)

    @property
    def not_run(self) -> list[str]:
        """Cases asked for that have no record."""
        done = {case_name(r) for r in (*self.records, *self.ranks)}
        return [c for c in self.planned_cases if c not in done]

    @property
    def failures(self) -> list[str]:
        out = [f for r in (*self.records, *self.ranks) for f in r.failures]
        if self.error:
            out.append(f"verify-run: the sweep ended early: {self.error}")
        if not self.interrupted:  # an interrupted sweep says so once, not once per case
            out += [f"not-run: {c}: asked for, never ran" for c in self.not_run]
        return out

    @property
    def passed(self) -> bool:
        return not self.failures and not self.interrupted and bool(self.planned_cases or
                                                                   self.records)

    def to_dict(self) -> dict:
        out = {"passed": self.passed, "seconds": self.seconds, "failures": self.failures,
               "records": [asdict(r) for r in self.records],
               "runs_planned": len(self.planned_cases) or self.planned,
               "not_run": self.not_run}
        if self.ranks:
            out["ranks"] = [asdict(r) for r in self.ranks]
        if self.interrupted:  # never reads as finished: passed is false, and says why
            out["interrupted"] = self.interrupted
        if self.error:
            out["error"] = self.error
        return out


def _trajectory_tokens(cfg: Config, steps: int) -> int:
    """Enough tokens for `steps` groups where the last group is short and its last batch padded,
    so the trajectory also covers the cases the original system got wrong (SPEC 8.7)."""
    t, S = cfg.train, cfg.model.seq_len
    full = (steps - 1) * t.group_size * t.batch_size * S
    last = max(1, t.group_size // 2) * t.batch_size * S - S // 2
    return full + max(last, 2) + 1


def _batch_counts(record, threads: int) -> tuple[list[int], int]:
    """From the run record: batches each worker ran in the first group (the gradient job), and
    batches run by any thread that is not a worker (Node Zero above all) over the whole run."""
    first = min(handed_out(record), default=None)
    workers = [0] * threads
    others = 0
    for t in record.threads:
        for kind, step, _, _, _ in t.spans:
            if kind != BATCH:
                continue
            if t.role != "worker":
                others += 1
            elif step == first:
                workers[t.ident] += 1
    return workers, others


def record_failures(record, where: str) -> list[str]:
    """The record gates: folds at the right position in order, and every barrier held."""
    failures = []
    for gate, names in RECORD_GATES.items():
        for name in names:
            finding = RECORD_FINDINGS[name](record)
            if not finding.passed:
                failures.append(f"{gate}: {where}: {name}: {finding.figure}")
    return failures


class _Reference:
    """The reference's answers for one preset, computed once and shared by every T and dtype."""

    def __init__(self, cfg: Config, steps: int):
        corpus = load_corpus(cfg, None, synthetic_tokens=_trajectory_tokens(cfg, steps))
        groups = corpus.groups(cfg)
        if len(groups) < steps:
            raise InputError(f"trajectory needs {steps} groups, corpus gave {len(groups)}")
        self.groups = [groups.group(i) for i in range(steps)]
        ref = ReferenceEngine(cfg)
        first = self.groups[0]
        self.result = ref.group_grads(first.tokens, first.targets)
        for g in self.groups:
            ref.step(g.tokens, g.targets)
        self.trajectory_params = ref.state().params


def _forward_locator(cfg: Config, dtype: str, ref: _Reference, engine_name: str):
    """For the fast engines: the first forward activation beyond ACT_TOL (batch 0 of group 0)."""
    if engine_name not in ("fast", "mpi"):
        return None
    B = cfg.train.batch_size
    first = ref.groups[0]
    return lambda: locate_forward(cfg, dtype, first.tokens[:B], first.targets[:B],
                                  ACT_TOL[dtype], rel_l2)


def verify_one(cfg: Config, dtype: str, threads: int, ref: _Reference, *, stall_timeout: float,
               faults=None, traces: list | None = None,
               engine_name: str = "fast", digests: dict | None = None) -> RunRecord:
    """All gates for one thread count; failures are collected, not raised. `digests` (a dict):
    record fold digests (`verify --locate`) into digests[threads]."""
    names = [s.name for s in param_specs(cfg.model)]
    t0 = time.perf_counter()
    engine = make_engine(engine_name, cfg, threads=threads, dtype=dtype,
                         stall_timeout=stall_timeout, faults=faults)
    try:
        if digests is not None and isinstance(engine, RecordsDigests):  # --locate
            digests[threads] = engine.record_digests()
        res, after_one, traj_params = drive(engine, ref.groups)
        update_hash = digest(after_one, names)
    finally:
        engine.close()
    # an engine with a run record (fast): complete now that every thread has been joined
    recorder = engine.record if isinstance(engine, Recorded) else None
    record = recorder.snapshot() if recorder is not None else None
    if traces is not None and record is not None:
        traces.append((f"{cfg.preset} {dtype} T={threads}", record))
    workers, nz_batches = _batch_counts(record, threads) if record is not None else ([], 0)
    loss_err = abs(res.loss - ref.result.loss) / max(abs(ref.result.loss), 1e-300)
    grad_err, worst = worst_tensor(res.grads, ref.result.grads, names)
    traj_err, traj_worst = worst_tensor(traj_params, ref.trajectory_params, names)
    rec = RunRecord(cfg.preset, dtype, threads, loss_err, grad_err, worst,
                    digest(res.grads, names), update_hash, digest(traj_params, names),
                    traj_err, traj_worst, workers, nz_batches, time.perf_counter() - t0,
                    engine=engine_name)
    where = f"{engine_name}: preset {cfg.preset}, {dtype}, T={threads}"
    located = ""
    if not (loss_err <= LOSS_TOL[dtype] and grad_err <= GRAD_TOL[dtype]):
        located = "; " + locate_tolerance(res.grads, ref.result.grads, names, GRAD_TOL[dtype],
                                          rel_l2, _forward_locator(cfg, dtype, ref, engine_name))
    if not loss_err <= LOSS_TOL[dtype]:
        rec.failures.append(f"loss-equivalence: {where}: relative error {loss_err:.3e} "
                            f"> {LOSS_TOL[dtype]:.0e}{located}")
    if not grad_err <= GRAD_TOL[dtype]:
        rec.failures.append(f"grad-equivalence: {where}: worst tensor {worst} relative L2 "
                            f"{grad_err:.3e} > {GRAD_TOL[dtype]:.0e}{located}")
    if res.n_targets != ref.result.n_targets:
        rec.failures.append(f"target-count: {where}: the engine counted {res.n_targets} "
                            f"targets, the group holds {ref.result.n_targets}")
    if not traj_err <= TRAJ_TOL[dtype]:
        rec.failures.append(f"trajectory: {where}: after {len(ref.groups)} steps worst tensor "
                            f"{traj_worst} relative L2 {traj_err:.3e} > {TRAJ_TOL[dtype]:.0e}")
    G = cfg.train.group_size
    if record is None:
        return rec  # no run record: the work-distribution and record gates do not apply
    if sum(workers) != G or len(workers) != threads:
        rec.failures.append(f"work-distribution: {where}: workers computed {sum(workers)} "
                            f"batches of a {G}-batch group")
    if G >= threads and min(workers) < 1:
        idle = [i for i, b in enumerate(workers) if b < 1]
        rec.failures.append(f"work-distribution: {where}: G={G} >= T but workers {idle} got no "
                            "batch")
    if nz_batches != 0:
        rec.failures.append(f"node-zero: {where}: Node Zero computed {nz_batches} batches")
    rec.failures += record_failures(record, where)
    return rec


def check_bitwise(records: list[RunRecord], require: bool = True) -> None:
    """Measure whether every T of a (preset, dtype) gives the first T's bits (`bitwise` on each
    record); a difference is a failure with `require`, otherwise a note."""
    for r in records[1:]:
        check_bitwise_one(records[0], r, require)


def check_bitwise_one(base: RunRecord, r: RunRecord, require: bool = True) -> None:
    """One run against the first T of its (preset, dtype), as soon as it ran: so the row
    printed for it already carries the verdict --junit and --json will."""
    r.bitwise = all(getattr(r, f) == getattr(base, f)
                    for f in ("grad_hash", "update_hash", "trajectory_hash"))
    for field_name, check in (("grad_hash", "bitwise-grads"), ("update_hash", "bitwise-update"),
                              ("trajectory_hash", "bitwise-trajectory")):
        if getattr(r, field_name) != getattr(base, field_name):
            (r.failures if require else r.notes).append(
                f"{check}: {r.engine}: preset {r.preset}, {r.dtype}: T={r.threads} differs "
                f"from T={base.threads} ({getattr(r, field_name)[:12]} vs "
                f"{getattr(base, field_name)[:12]})")


HEADER = (f"{'preset':<6} {'dtype':<7} {'T':>3} {'loss err':>9} {'grad err':>9} "
          f"{'worst tensor':<18} {'traj err':>9} {'grads':>12} {'busy':>7} {'s':>5}  status")


def format_row(r: RunRecord) -> str:
    busy = (f"{sum(1 for b in r.worker_batches if b)}/{len(r.worker_batches)}"
            if r.worker_batches else "n/a")
    status = "PASS" if r.passed else "FAIL"
    return (f"{r.preset:<6} {r.dtype:<7} {r.threads:>3} {r.loss_error:>9.2e} {r.grad_error:>9.2e} "
            f"{r.worst_tensor:<18} {r.trajectory_error:>9.2e} {r.grad_hash[:12]:>12} {busy:>7} "
            f"{r.seconds:>5.2f}  {status}")


def run_verify(configs: list[Config], dtypes: list[str], threads: list[int], *,
               trajectory_steps: int = 3, stall_timeout: float = 60.0, faults=None,
               out: Callable[[str], None] = print, live=None,
               traces: list | None = None, engine: str = "fast",
               require_bitwise: bool | None = None, locate: bool = False,
               report: VerifyReport | None = None) -> VerifyReport:
    """Run every gate on `engine`; prints a row per run as it goes; returns all figures.
    Bitwise identity across T is measured for every engine and gates when `require_bitwise`
    (default: only for `fast`, the engine that promises it). A signal stops the sweep between
    runs (`Stopped`); `report`, when given, then holds the runs done, marked interrupted.
    A bitwise failure is located (harness.verify.divergence); `locate` records fold digests in
    the gate runs themselves."""
    report = VerifyReport() if report is None else report
    report.planned += len(configs) * len(dtypes) * len(threads)
    report.planned_cases += [f"{cfg.preset} {dtype} T={T}" for cfg in configs for dtype in dtypes
                             for T in threads]
    start = time.perf_counter()
    try:
        _sweep(report, configs, dtypes, threads, trajectory_steps, stall_timeout, faults, out,
               live, traces, engine, engine == "fast" if require_bitwise is None
               else require_bitwise, locate)
    except Stopped as exc:
        report.interrupted = exc.name
        raise
    finally:
        report.seconds += time.perf_counter() - start
    return report


def _sweep(report: VerifyReport, configs, dtypes, threads, trajectory_steps, stall_timeout,
           faults, out, live, traces, engine, require_bitwise, locate: bool) -> None:
    out(HEADER)
    for cfg in configs:
        t_ref = time.perf_counter()
        check_stop(f"before the reference of preset {cfg.preset}")
        ref = _Reference(cfg, trajectory_steps)
        out(f"# {cfg.preset} (G={cfg.train.group_size}): reference gradient and "
            f"{trajectory_steps}-step trajectory in {time.perf_counter() - t_ref:.1f}s")
        for dtype in dtypes:
            records: list[RunRecord] = []
            digests = {} if locate else None
            try:
                _runs(report, records, cfg, dtype, threads, ref, stall_timeout, faults, out,
                      live, traces, engine, digests, require_bitwise)
            except BaseException:  # a stop or an engine's error: the runs done are kept
                report.records.extend(records)
                raise
            locate_records(records, cfg, dtype, ref.groups, digests=digests,
                           stall_timeout=stall_timeout, faults=faults, engine_name=engine)
            for r in records:
                if r.failures and all("bitwise" in f for f in r.failures):
                    out(f"  T={r.threads}: " + "; ".join(r.failures))
                for note in r.notes:
                    out(f"  T={r.threads}: measured, not gated (--require-bitwise gates it): "
                        f"{note}")
            if len(records) > 1:
                same = all(r.bitwise for r in records[1:])
                out(f"# {engine}: {cfg.preset} {dtype}: bitwise identical across T="
                    f"{','.join(str(r.threads) for r in records)}: {'yes' if same else 'NO'}"
                    f" ({'gated' if require_bitwise else 'measured, not gated'})")
            report.records.extend(records)


def _runs(report: VerifyReport, records: list[RunRecord], cfg: Config, dtype: str,
          threads: list[int], ref: _Reference, stall_timeout, faults, out, live, traces,
          engine: str, digests: dict | None, require_bitwise: bool) -> None:
    """Every thread count of one preset and dtype into `records`; a safe point before each;
    each run's row printed once all its gates (bitwise against the first T too) are in."""
    for T in threads:
        check_stop(f"after {len(report.records) + len(records)} of {report.planned} runs")
        if live is not None:  # harness.run.progress.LiveProgress: one unit per run
            live.begin(len(report.records) + len(records) + 1,
                       label=f"{cfg.preset} {dtype} T={T}")
        rec = verify_one(cfg, dtype, T, ref, stall_timeout=stall_timeout, faults=faults,
                         traces=traces, engine_name=engine, digests=digests)
        if records:
            check_bitwise_one(records[0], rec, require_bitwise)
        records.append(rec)
        if live is not None:
            live.end()
        out(format_row(rec))


def _status(report: VerifyReport) -> str:
    """PASS, FAIL (n), or INTERRUPTED, which is never a pass."""
    if report.interrupted:
        return (f"**INTERRUPTED** by {report.interrupted} after {len(report.records)} of "
                f"{report.planned} runs: incomplete, not a pass"
                + (f"; **FAIL** ({len(report.failures)})" if report.failures else ""))
    return "**PASS**" if report.passed else f"**FAIL** ({len(report.failures)})"


def markdown_summary(report: VerifyReport) -> str:
    facts = blas_facts()
    engines = sorted({r.engine for r in report.records})
    bitwise = [f"`{r.engine}` {r.preset} {r.dtype} T={r.threads}: "
               f"{'same bits' if r.bitwise else 'bits differ'} from the first T"
               for r in report.records if r.bitwise is not None]
    lines = ["# Equivalence gates", "", blas_line(facts) + ".", "",
             *[f"Warning: {w}\n" for w in facts.warnings],
             f"Engine(s) under test: {', '.join(engines)}.", "",
             "Bitwise across thread counts (measured for every engine): "
             + ("; ".join(bitwise) if bitwise else "one thread count only") + ".", "",
             f"{len(report.records) + len(report.ranks)} of "
             f"{len(report.planned_cases) or report.planned} runs asked for, in "
             f"{report.seconds:.1f}s: " + _status(report), "",
             "Tolerances (relative L2 against the float64 reference): gradients "
             + ", ".join(f"{k} {v:.0e}" for k, v in GRAD_TOL.items()) + "; loss "
             + ", ".join(f"{k} {v:.0e}" for k, v in LOSS_TOL.items()) + "; trajectory "
             + ", ".join(f"{k} {v:.0e}" for k, v in TRAJ_TOL.items()) + ".", "",
             "| preset | dtype | T | loss err | grad err | worst tensor | trajectory err "
             "| grads sha256 | busy workers | status |",
             "|---|---|---:|---:|---:|---|---:|---|---:|---|"]
    for r in report.records:
        busy = (f"{sum(1 for b in r.worker_batches if b)}/{len(r.worker_batches)}"
                if r.worker_batches else "n/a")
        lines.append(f"| {r.preset} | {r.dtype} | {r.threads} | {r.loss_error:.2e} | "
                     f"{r.grad_error:.2e} | `{r.worst_tensor}` | {r.trajectory_error:.2e} | "
                     f"`{r.grad_hash[:12]}` | {busy} | {'PASS' if r.passed else 'FAIL'} |")
    ranks = rank_markdown(report.ranks) if report.ranks else ""
    if report.failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in report.failures]
    return "\n".join(lines) + "\n" + ranks


def rank_markdown(records: list) -> str:
    """The --ranks records (harness.verify.ranks.RankRecord) as a markdown section."""
    lines = ["", "## Across ranks (bitwise against the single process)", "",
             "| preset | dtype | R | T | loss err | grad err | trajectory err | grads sha256 "
             "| same bits | status |", "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in records:
        same = "n/a" if r.bitwise is None else ("yes" if r.bitwise else "NO")
        lines.append(f"| {r.preset} | {r.dtype} | {r.ranks} | {r.threads} | "
                     f"{r.loss_error:.2e} | {r.grad_error:.2e} | {r.trajectory_error:.2e} | "
                     f"`{r.grad_hash[:12]}` | {same} | {'PASS' if not r.failures else 'FAIL'} |")
    return "\n".join(lines) + "\n"
