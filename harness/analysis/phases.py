"""The phases of `spheres analyze`, each measuring one part into the typed results
(`harness.figures.results`) that `results.json` serialises.

Data (tokenise, count batches until the iterator stops), structure (positions, spheres,
barriers) and per-thread statistics from the run record, training (per-thread CPU and RSS
sampling, a py-spy flame graph), throughput against threads, equivalence gates, watchdog and
fault drills, memory (memray). Each reports what it does through `say` as it goes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.plan import Plan, Say
from harness.figures.facts import SamplerSummary, ThreadTable
from harness.figures.results import (
    AllocationSite,
    DataSummary,
    DrillResult,
    EquivalenceResult,
    MemrayResult,
    PositionRow,
    RecordSummary,
    Structure,
    ThroughputPoint,
    TrainingResult,
)
from harness.figures.thresholds import THROUGHPUT_ROUNDS
from harness.measure import evidence
from harness.measure.machine import REPO_ROOT
from harness.measure.memray_profile import memray_profile
from harness.measure.process import (
    cpu_by_thread,
    current_rss_bytes,
    live_ks_threads,
    peak_rss_bytes,
    reset_peak_rss,
)
from harness.measure.pyspy import pyspy_flamegraph
from harness.measure.sampler import ThreadCpuSampler
from harness.measure.timeline import plot_gantt
from harness.measure.trace import representative_step, write_trace
from harness.run.corpus import load_corpus
from harness.run.engines import make_engine, unfired_faults
from harness.run.heldout import evaluate, split_heldout
from harness.run.progress import PhaseCosts, Stage, report_work
from harness.run.stop import Stopped, check_stop
from harness.verify.gates import run_verify
from plumbing.errors import SpheresError, StallError
from reference.batches import n_batches
from reference.config import Config, preset


def phase_data(plan: Plan, cfg: Config, say: Say) -> tuple[Any, DataSummary]:
    say(f"[data] loading {plan.data or f'the synthetic corpus ({plan.synthetic_tokens:,} tokens)'}")
    reset_peak_rss()
    t0 = time.perf_counter()
    corpus = load_corpus(cfg, plan.data, synthetic_tokens=plan.synthetic_tokens)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    groups = corpus.groups(cfg)
    counted_batches = counted_groups = 0
    last = None
    for group in groups:  # iterate to the end: the original's iterator never stopped
        counted_groups += 1
        counted_batches += group.tokens.shape[0] // cfg.train.batch_size
        last = group
        if counted_groups > len(groups) + 1:
            break
    n = int(corpus.stream.size)
    expected = n_batches(n, cfg.train.batch_size, cfg.model.seq_len)
    info = DataSummary(
        source=corpus.source, n_documents=corpus.n_documents, n_tokens=n,
        vocab_size=len(corpus.vocab), tokenize_seconds=seconds,
        tokenize_peak_bytes=peak, batch_size=cfg.train.batch_size,
        seq_len=cfg.model.seq_len, group_size=cfg.train.group_size,
        batches_per_epoch=counted_batches, expected_batches=expected,
        groups_per_epoch=counted_groups,
        expected_groups=math.ceil(expected / cfg.train.group_size),
        last_group_batches=last.tokens.shape[0] // cfg.train.batch_size if last else 0,
        last_batch_pad_targets=int((last.targets[-cfg.train.batch_size:] == 0).sum())
        if last else 0,
    )
    say(f"[data] {n:,} tokens in {seconds:.2f}s; {counted_batches} batches "
        f"(formula {expected}); {counted_groups} groups per epoch")
    return corpus, info


def phase_structure(record) -> Structure:
    """The symmetry positions and sphere levels as the run record saw them (not the plan)."""
    if record is None:
        return Structure(positions=[PositionRow(p, 0, 0) for p in range(12)])
    return evidence.structure(record)


def record_stats(record, cpu: dict[str, float] | None) -> ThreadTable:
    """Per-thread figures from the run record, with each thread's CPU clock (heartbeats)."""
    if record is None:
        return ThreadTable()
    rows = evidence.thread_stats(record, cpu or {})
    return ThreadTable(node_zero=next((t for t in rows if t.role == "node-zero"), None),
                       workers=[t for t in rows if t.role == "worker"])


def record_summary(record, out_dir: Path) -> RecordSummary:
    """The record's findings, and its trace and timeline files in the report folder."""
    if record is None:
        return RecordSummary()
    out = RecordSummary(findings=evidence.findings(record), steps=len(record.steps()),
                        trace=write_trace(record, out_dir / "trace.json").name)
    step = representative_step(record)
    if step is not None:
        out.timeline_step = step
        out.timeline = plot_gantt(record, step, out_dir / "timeline.png").name
    return out


@dataclass
class TrainingPhase:
    """The training phase's results and what the later phases need from it (not serialised):
    the run record, each thread's CPU clock, the sampler's summary and the flame graph."""

    result: TrainingResult
    record: Any = None
    cpu: dict[str, float] = field(default_factory=dict)
    sampler: SamplerSummary | None = None
    flame: dict[str, Any] = field(default_factory=dict)


@dataclass
class _FlameGraph:
    """py-spy's flame graph of this process, sampled on its own thread (`ks-pyspy`)."""

    path: Path
    result: dict[str, Any] = field(default_factory=dict)
    thread: threading.Thread | None = None

    def start(self, seconds: float) -> None:
        if self.thread is None:
            self.thread = threading.Thread(
                target=lambda s=seconds: self.result.update(
                    pyspy_flamegraph(os.getpid(), s, self.path)),
                name="ks-pyspy", daemon=True)
            self.thread.start()

    def join(self, timeout: float = 120.0) -> None:
        if self.thread is not None:
            self.thread.join(timeout=timeout)


def _train_steps(engine, plan: Plan, groups, info: TrainingResult, flame: _FlameGraph,
                 say: Say) -> list[tuple[int, Any]]:
    """`plan.steps` optimiser steps, timed one by one into `info`; the flame graph starts
    after the first step and covers the rest. Returns the (step, parameters) snapshots to
    evaluate after training."""
    eval_every = max(1, plan.steps // 10)
    snapshots: list[tuple[int, Any]] = []  # (step, parameters) to evaluate after training
    report_work(say, "step", 0, plan.steps)
    for s in range(plan.steps):
        check_stop(f"in phase train after step {s} of {plan.steps}")
        group = groups.group(s % len(groups))
        ts = time.perf_counter()
        result = engine.step(group.tokens, group.targets)
        dts = time.perf_counter() - ts
        info.steps += 1
        info.losses.append(result.loss)
        info.step_seconds.append(dts)
        info.tokens += result.n_targets
        engine.record.counter("tokens/s", result.n_targets / dts)
        engine.record.counter("RSS MB", current_rss_bytes() / 1e6)
        say(f"[train] step {s + 1}/{plan.steps}: loss {result.loss:.4f}, "
            f"{result.n_targets / dts:,.0f} tokens/s, {dts:.2f}s")
        report_work(say, "step", s + 1, plan.steps, info.tokens)
        if (s + 1) % eval_every == 0 or s + 1 == plan.steps:
            snapshots.append((s + 1, engine.state().params))  # evaluated after training
        if s == 0 and plan.steps > 1:
            flame.start(max(1.0, dts * (plan.steps - 1) * 0.9))
    return snapshots


def _evaluate_snapshots(engine, snapshots: list[tuple[int, Any]], heldout,
                        info: TrainingResult, say: Say) -> None:
    """The held-out loss of each snapshot's parameters (the optimiser state of the last step
    kept), into `info.eval_losses`."""
    final = engine.state() if snapshots else None
    report_work(say, "eval", 0, len(snapshots))
    for i, (step, params) in enumerate(snapshots):
        engine.load_state(dataclasses.replace(final, params=params))
        held = evaluate(engine, heldout)
        info.eval_losses.append((step, held.loss))
        say(f"[train] held-out loss after step {step}: {held.loss:.4f} over "
            f"{held.n_targets:,} targets")
        report_work(say, "eval", i + 1, len(snapshots))


def _record_error(info: TrainingResult, exc: SpheresError, say: Say) -> None:
    """An engine error as the training result's verdict (it is reported, not raised)."""
    info.error = str(exc)
    info.error_kind = type(exc).__name__
    info.exit_code = exc.exit_code
    if isinstance(exc, StallError):
        info.diagnosis = exc.diagnosis
    say(f"[train] FAILED ({type(exc).__name__}): {exc}")


def phase_training(plan: Plan, cfg: Config, corpus, out_dir: Path,
                   say: Say) -> TrainingPhase:
    """Train `plan.steps` steps under the samplers; an engine error is recorded, not raised."""
    from harness.run.engines import parse_faults

    corpus, heldout = split_heldout(corpus, cfg, analyze_eval_fraction(cfg, corpus))
    groups = corpus.groups(cfg)
    info = TrainingResult(eval_tokens=heldout.n_tokens)
    phase = TrainingPhase(info)
    sampler = ThreadCpuSampler(interval=0.1 if plan.quick else 0.25)
    flame = _FlameGraph(out_dir / "flamegraph.svg")
    threads_before = live_ks_threads()
    sampler.start()
    t0 = time.perf_counter()
    engine = None
    flame_wait = 120.0
    try:
        engine = make_engine("fast", cfg, threads=plan.threads, stall_timeout=plan.stall_timeout,
                             faults=parse_faults(plan.inject))
        info.compile_seconds = time.perf_counter() - t0
        say(f"[train] {plan.threads} workers + Node Zero started in "
            f"{info.compile_seconds:.2f}s")
        cpu_before = _engine_cpu(engine)
        snapshots = _train_steps(engine, plan, groups, info, flame, say)
        phase.cpu = cpu_by_thread(engine)
        info.cpu_seconds = _engine_cpu(engine) - cpu_before
        info.unfired_faults = unfired_faults(engine)
        # held-out loss after the thread statistics were taken, so evaluation work never
        # counts as training CPU or compute time; the weights of each eval step are restored
        _evaluate_snapshots(engine, snapshots, heldout, info, say)
    except SpheresError as exc:
        _record_error(info, exc, say)
        if engine is not None:
            phase.cpu = cpu_by_thread(engine)
    except Stopped:  # a signal: py-spy's recording (minutes at the seed preset) is abandoned;
        flame_wait = 0.0  # it ends with this process
        raise
    finally:
        if engine is not None:
            engine.close()
            phase.record = engine.record.snapshot()  # complete: every thread joined
        sampler.stop()
        flame.join(flame_wait)
    info.seconds = float(sum(info.step_seconds))
    info.tokens_per_s = info.tokens / info.seconds if info.seconds else 0.0
    # close() joined every thread it started: any ks- thread still alive here is a leak
    info.threads_alive_after_close = sorted(
        t.name for t in live_ks_threads() - threads_before if t.name != "ks-pyspy")
    phase.sampler = sampler.result()
    phase.flame = flame.result
    return phase


def analyze_eval_fraction(cfg: Config, corpus) -> float:
    """About one batch group of held-out tokens, at most 5% of the corpus: a stable mean that
    costs a forward pass over one group, not a large share of the run."""
    t = cfg.train
    group_tokens = t.group_size * t.batch_size * cfg.model.seq_len
    return min(0.05, max(group_tokens / max(corpus.stream.size, 1), 0.01))


def _engine_cpu(engine) -> float:
    """CPU seconds used so far by Node Zero and every worker (each thread's own clock)."""
    return sum(cpu_by_thread(engine).values())


def phase_throughput(plan: Plan, cfg: Config, corpus, say: Say) -> list[ThroughputPoint]:
    """Tokens/s for each thread count on the same group, measured side by side in one run:
    THROUGHPUT_ROUNDS rounds, each timing one step of every thread count (a fresh engine,
    one burn-in step first) in alternating order, so a machine that drifts slower or faster
    during the phase moves every thread count alike; the median step of each is counted."""
    small = cfg.replace(group_size=plan.throughput_group)
    group = corpus.groups(small).group(0)
    threads = plan.throughput_threads
    steps: dict[int, list[float]] = {T: [] for T in threads}
    total = THROUGHPUT_ROUNDS * len(threads)
    say(f"[throughput] {THROUGHPUT_ROUNDS} rounds of T={','.join(str(T) for T in threads)}, "
        "each a fresh engine, 1 burn-in + 1 timed step, order alternating")
    report_work(say, "run", 0, total)
    done = tokens = 0
    for r in range(THROUGHPUT_ROUNDS):
        for T in (threads if r % 2 == 0 else threads[::-1]):
            check_stop(f"in phase throughput before round {r + 1} T={T}")
            with make_engine("fast", small, threads=T, stall_timeout=plan.stall_timeout) as engine:
                engine.step(group.tokens, group.targets)  # burn-in: caches, first-touch pages
                t0 = time.perf_counter()
                result = engine.step(group.tokens, group.targets)
                steps[T].append(time.perf_counter() - t0)
            say(f"[throughput] round {r + 1}/{THROUGHPUT_ROUNDS} T={T}: "
                f"{result.n_targets / steps[T][-1]:,.0f} tokens/s ({steps[T][-1]:.2f} s)")
            done, tokens = done + 1, tokens + 2 * result.n_targets
            report_work(say, "run", done, total, tokens)
    points = [ThroughputPoint(T, result.n_targets / statistics.median(steps[T]),
                              statistics.median(steps[T]), plan.throughput_group,
                              step_seconds=steps[T]) for T in threads]
    for p in points:
        p.speedup = p.tokens_per_s / points[0].tokens_per_s
    return points


class _Cases:
    """verify's `live` inside analyze: each run it finishes is one case of the phase."""

    def __init__(self, say: Say, total: int) -> None:
        self.say, self.total, self.done = say, total, 0

    def begin(self, *_args, **_kwargs) -> None:
        if self.done == 0:
            report_work(self.say, "case", 0, self.total)

    def end(self, *_args, **_kwargs) -> None:
        self.done += 1
        report_work(self.say, "case", self.done, self.total)


def phase_equivalence(plan: Plan, cfg: Config, say: Say) -> EquivalenceResult:
    t0 = time.perf_counter()
    dtypes = ["float64", "float32"]
    sweeps = [([preset("tiny", seed=plan.seed)], plan.sweep_threads, 3)]
    if plan.extra_verify:  # larger presets cost seconds per run: a shorter thread sweep
        sweeps.append(([preset(p, seed=plan.seed) for p in plan.extra_verify],
                       plan.extra_threads, 3))
    if cfg.preset not in {"tiny", *plan.extra_verify}:
        # the analysed preset itself, on a 2-batch group so the float64 reference stays short
        sweeps.append(([cfg.replace(group_size=2)], sorted({1, 2, plan.threads}), 2))
    cases = _Cases(say, sum(len(c) * len(dtypes) * len(t) for c, t, _ in sweeps))
    say(f"[verify] {cases.total} cases (presets x dtypes x thread counts)")
    records = []
    for configs, threads, steps in sweeps:
        report = run_verify(configs, dtypes, threads, trajectory_steps=steps,
                            out=lambda line: say(f"[verify] {line}"), live=cases)
        records += report.records
    return EquivalenceResult(
        records=records, seconds=time.perf_counter() - t0,
        presets=sorted({r.preset for r in records}), dtypes=["float64", "float32"],
        runs=len(records),
        threads_label="; ".join(
            f"{name} {_label(sorted({r.threads for r in records if r.preset == name}))}"
            for name in dict.fromkeys(r.preset for r in records)),
        failures=[f for r in records for f in r.failures])


def _label(threads: list[int]) -> str:
    if threads == list(range(threads[0], threads[-1] + 1)) and len(threads) > 2:
        return f"{threads[0]}-{threads[-1]}"
    return ",".join(str(t) for t in threads)


def phase_drills(say: Say) -> list[DrillResult]:
    from harness.verify.drills import DRILLS, run_drills

    say(f"[drill] {len(DRILLS)} watchdog and fault drills")
    done = [0]
    report_work(say, "drill", 0, len(DRILLS))

    def counted(line: str) -> None:
        say(line)
        if line.startswith("[drill] "):
            done[0] += 1
            report_work(say, "drill", done[0], len(DRILLS))

    return run_drills(counted)


def phase_memory(plan: Plan, cfg: Config, corpus, out_dir: Path,
                 say: Say) -> MemrayResult:
    """memray's native view of one training step (group capped so the capture stays small)."""
    small = cfg.replace(group_size=min(cfg.train.group_size, 12))
    group = corpus.groups(small).group(0)

    def one_step() -> float:
        with make_engine("fast", small, threads=plan.threads) as engine:
            return engine.step(group.tokens, group.targets).loss

    say(f"[memory] memray over one {small.train.group_size}-batch step")
    report_work(say, "step", 0, 1)
    res = memray_profile(one_step, out_dir, top=8)
    report_work(say, "step", 1, 1)
    capture = res.get("capture")
    if capture:
        Path(capture).unlink(missing_ok=True)  # large binary: the figures are in the report
    return MemrayResult(
        peak_bytes=res.get("peak_bytes"), error=res.get("error"),
        group_size=small.train.group_size,
        top=[AllocationSite(t["function"], _short(t["file"]), t["line"], t["bytes"])
             for t in res.get("top_sites", [])])


# The run ETA's model (harness/run/progress.py PhaseLines): each later phase's FLOPs timed at
# the training steps' measured seconds per FLOP, plus the fixed seconds FLOPs do not show.
# The figures are this machine's (AMD EPYC, 2 cores), from reports/2026-11-28-seed.
REFERENCE_SLOWDOWN = 12.0  # the float64 NumPy reference per FLOP against the fast engine:
# 67.9 s against 7.75 s in that report's engines table (same workload, same 4 group passes)
CASE_SECONDS = 0.65  # one verify case at tiny/small, where Python overheads, not FLOPs, rule:
# that report's 138 cases took 130 s, of which ~41 s were the 4 seed-preset cases' FLOPs
CHILD_SECONDS = 3.0  # one engine child: interpreter, imports, 6 sgemm rounds (fast: 7.75 s,
# of which ~1.3 s per group pass x 4 are FLOPs)
MEMRAY_SLOWDOWN = 2.0  # memray tracks every allocation of the step it records
EVAL_SHARE = 1.0 / 3.0  # a forward pass is about a third of a training step's FLOPs


def _group_flops(cfg: Config, batches: int | None = None) -> float:
    from harness.bench.summary import flops_per_token

    g = cfg.train.group_size if batches is None else batches
    return float(flops_per_token(cfg.model) * g * cfg.train.batch_size * cfg.model.seq_len)


def _drill_seconds() -> float:
    """What the drills wait for by design: each hang its stall timeout, each slow its sleep."""
    from fast.faults import FaultKind, parse_inject
    from harness.verify.drills import DRILLS

    waits = 0.0
    for d in DRILLS:
        fault = parse_inject(d.inject)
        waits += {FaultKind.HANG: d.stall_timeout,
                  FaultKind.SLOW: fault.seconds or 0.0}.get(fault.kind, 0.0)
    return waits


def _verify_stage(plan: Plan, cfg: Config) -> Stage:
    """phase_equivalence's sweeps: each case's trajectory, one float64 reference per preset."""
    flops = seconds = 0.0
    sweeps = [([preset("tiny")], plan.sweep_threads, 3)]
    if plan.extra_verify:
        sweeps.append(([preset(p) for p in plan.extra_verify], plan.extra_threads, 3))
    if cfg.preset not in {"tiny", *plan.extra_verify}:
        sweeps.append(([cfg.replace(group_size=2)], sorted({1, 2, plan.threads}), 2))
    for configs, threads, steps in sweeps:
        for c in configs:
            cases = 2 * len(threads)  # float64 and float32
            flops += steps * _group_flops(c) * (cases + REFERENCE_SLOWDOWN)
            seconds += cases * CASE_SECONDS
    return Stage("case", flops, seconds)


def _engines_stage(plan: Plan, cfg: Config) -> Stage:
    """analyze_phase of harness/bench/engine_compare.py: per engine two bitwise passes, one
    warm-up and `rounds` timed steps on a 2-batch group, in a child process each."""
    from harness.bench.engine_compare import available_specs

    specs = available_specs(plan.engines)
    passes = 3 + 2  # 2 bitwise group passes + 1 warm-up + 2 timed rounds
    group = _group_flops(cfg, min(cfg.train.group_size, 2))
    flops = sum(passes * group * (REFERENCE_SLOWDOWN if s == "reference" else 1.0)
                for s in specs)
    return Stage("engine", flops + group * REFERENCE_SLOWDOWN,  # the parent's reference answer
                 len(specs) * CHILD_SECONDS)


def _repro_stage(plan: Plan) -> Stage:
    """The reproducibility grid at tiny: every run a verify trajectory; each distributed
    engine's world a launch of its own."""
    from harness.bench.repro import ENGINES, STEPS

    dist = sum(1 for e in ENGINES if e[2])
    runs = ((len(ENGINES) - dist) + dist * len(plan.repro_worlds)) * len(plan.repro_threads) \
        * len(plan.repro_dtypes)
    return Stage("run", runs * STEPS * _group_flops(preset("tiny")),
                 runs * CASE_SECONDS + dist * len(plan.repro_worlds) * CHILD_SECONDS)


def phase_costs(plan: Plan, cfg: Config, corpus) -> PhaseCosts:
    """Every phase's size, known before it starts, for the run ETA (see the constants above)."""
    from harness.analysis.scaling import SIM_COMPUTE_SECONDS, SIM_GROUP, SIM_THREADS

    step = _group_flops(cfg)
    eval_every = max(1, plan.steps // 10)
    snapshots = sum(1 for s in range(1, plan.steps + 1)
                    if s % eval_every == 0 or s == plan.steps)
    held = analyze_eval_fraction(cfg, corpus) * corpus.stream.size
    fpt = step / (cfg.train.group_size * cfg.train.batch_size * cfg.model.seq_len)
    tput = len(plan.throughput_threads)
    return {
        "data": (),
        "train": (Stage("step", plan.steps * step),
                  Stage("eval", snapshots * held * fpt * EVAL_SHARE)),
        "throughput": (Stage("run", tput * THROUGHPUT_ROUNDS * 2
                             * _group_flops(cfg, plan.throughput_group)),),
        "verify": (_verify_stage(plan, cfg),),
        "drill": (Stage("drill", 3 * len(_drills()) * _group_flops(preset("tiny")),
                        _drill_seconds()),),
        "engines": (_engines_stage(plan, cfg),),
        "repro": (_repro_stage(plan),),
        "memory": (Stage("step", MEMRAY_SLOWDOWN * _group_flops(
            cfg, min(cfg.train.group_size, 12)), CHILD_SECONDS),),
        "scaling": (Stage("run", 0.0, sum(math.ceil(SIM_GROUP / t) * SIM_COMPUTE_SECONDS
                                          for t in SIM_THREADS)),),
    }


def _drills() -> list:
    from harness.verify.drills import DRILLS

    return list(DRILLS)


def _short(path: str) -> str:
    """A site-packages or repository file named relative to its root (no machine's path)."""
    for marker in ("site-packages/", f"{REPO_ROOT}/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path
