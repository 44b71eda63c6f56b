"""`spheres analyze`, the main job: measure everything the seed document only asserted.

Phases, each saying what it does as it goes: data (tokenise, count batches until the iterator
stops), structure (positions, spheres, barriers), training (with per-thread CPU and RSS
sampling and a py-spy flame graph), throughput against threads, equivalence gates, watchdog and
fault drills, memory (memray). Every figure lands in `results.json`;
`harness.analysis.checks` turns figures into verdicts and `harness.analysis.report` renders the
markdown from those typed results (`harness.figures.results.AnalysisResults`). The report
folder is built under a temporary name and renamed at the end: no half-written report.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

from harness.analysis.checks import build_checks, known_issues, recommendations
from harness.analysis.phases import (
    phase_data,
    phase_drills,
    phase_equivalence,
    phase_memory,
    phase_structure,
    phase_throughput,
    phase_training,
    record_stats,
    record_summary,
)
from harness.analysis.plan import Plan, Say, say
from harness.analysis.report import make_plots, render
from harness.figures.results import (
    AnalysisResults,
    MemoryResult,
    Performance,
    Profiles,
    RunMeta,
)
from harness.measure.machine import machine_facts
from harness.measure.process import cpu_use
from plumbing.errors import InputError
from reference.config import preset
from reference.params import param_count


def analyze(plan: Plan, out_dir: Path, say: Say = say) -> AnalysisResults:
    """Run every phase into `out_dir` and return the results (also written as JSON)."""
    cfg = preset(plan.preset, seed=plan.seed)
    started = time.perf_counter()
    corpus, data = phase_data(plan, cfg, say)
    run = phase_training(plan, cfg, corpus, out_dir, say)
    training, sampler, flame = run.result, run.sampler, run.flame
    throughput = [] if training.error else phase_throughput(plan, cfg, corpus, say)
    equivalence = phase_equivalence(plan, cfg, say)
    drills = phase_drills(say)
    from harness.bench.engine_compare import analyze_phase  # every engine side by side (SPEC 13)

    engines = analyze_phase(plan.preset, plan.threads, plan.engines, say)
    memray = None if training.error else phase_memory(plan, cfg, corpus, out_dir, say)
    cores = sampler.cores
    machine = machine_facts()
    results = AnalysisResults(
        meta=RunMeta(date=dt.datetime.now().isoformat(timespec="seconds"),
                     command=plan.command, preset=plan.preset, threads=plan.threads,
                     steps=plan.steps, quick=plan.quick, machine=machine,
                     commit=machine.git.commit if machine.git else None,
                     n_params=param_count(cfg.model), config=cfg.to_dict(),
                     config_json=json.dumps(cfg.to_dict(), indent=2), inject=list(plan.inject)),
        data=data,
        structure=phase_structure(run.record),
        training=training,
        threads=record_stats(run.record, run.cpu),
        # CPU use over the training steps only: the trainer threads' own CPU clocks against
        # the steps' wall time and every core (the seed divided CPU time by the wrong wall)
        performance=Performance(
            throughput=throughput, cores=cores, cpu_seconds=training.cpu_seconds,
            wall_seconds=training.seconds,
            cpu_utilisation=cpu_use(training.cpu_seconds, training.seconds, cores)
            if training.seconds else 0.0,
            sampled_thread_cpu_seconds=sampler.thread_cpu_seconds,
            sampled_cpu_use=sampler.cpu_use, sampled_wall_seconds=sampler.wall_seconds,
            utilisation_times=[t for t, _ in sampler.utilisation],
            utilisation=[u for _, u in sampler.utilisation]),
        memory=MemoryResult(peak_rss_bytes=sampler.peak_rss_bytes,
                            samples=len(sampler.rss_bytes), rss_times=sampler.rss_times,
                            rss_bytes=sampler.rss_bytes, memray=memray),
        equivalence=equivalence,
        drills=drills,
        engines=engines,
        profiles=Profiles(
            flamegraph="flamegraph.svg" if flame.get("svg") else None,
            error=(flame.get("error") or "").splitlines()[0] if flame.get("error")
            else ("training too short for a flame graph" if not flame else None)),
        record=record_summary(run.record, out_dir),
    )
    results.checks = build_checks(results)
    results.known_issues = known_issues(results)
    results.recommendations = recommendations(results)
    results.set_verdict()
    results.plots = make_plots(results, out_dir)
    if results.record.timeline:
        results.plots["timeline"] = results.record.timeline
    results.meta.seconds = time.perf_counter() - started
    return results


def write_results(results: AnalysisResults, path: Path) -> None:
    """`results.json`: the typed results' JSON under their schema version."""
    path.write_text(json.dumps(results.to_json(), indent=2))


def prepare_out(out: Path) -> Path:
    """Check the report folder can be written before any work; returns the temp build folder."""
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create {parent}: {exc.strerror}") from None
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder; choose another --out")
    if not os.access(parent, os.W_OK):
        raise InputError(f"--out {out}: {parent} is not writable; choose another --out")
    tmp = parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def analyze_into(plan: Plan, out: Path, *, ranks: int | None = None,
                 trace: Path | None = None, quiet: bool = False,
                 progress_seconds: float | None = None) -> AnalysisResults:
    """Run the analysis with live progress and write its report folder `out` whole (built under
    a temporary name, renamed at the end); `ranks` adds the Scale-out section (SPEC 10) and
    `trace` gets a copy of the report's trace.json."""
    tmp = prepare_out(out)
    say(f"analyze: preset {plan.preset}, {plan.threads} threads, {plan.steps} steps -> {out}")
    try:
        from harness.run.progress import PhaseLines, open_progress

        with open_progress("analyze", 0, quiet=quiet, seconds=progress_seconds,
                           unit_name="phase") as live:
            phases = PhaseLines(live)
            results = analyze(plan, tmp, say=phases)
            phases.finish()
            if ranks:  # SPEC 10: the Scale-out section
                from harness.analysis.scale_out import add_scale_out

                add_scale_out(results, plan.preset, ranks, plan.threads, plan.seed, phases)
        write_results(results, tmp / "results.json")
        (tmp / "analysis.md").write_text(render(results))
        if trace is not None and (tmp / "trace.json").exists():
            shutil.copyfile(tmp / "trace.json", trace)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return results
