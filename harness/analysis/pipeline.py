"""`spheres analyze`, the main job: measure everything the seed document only asserted.

Phases, each saying what it does as it goes: data (tokenise, count batches until the iterator
stops), structure (positions, spheres, barriers), training (with per-thread CPU and RSS
sampling and a py-spy flame graph), throughput against threads, equivalence gates, watchdog and
fault drills, memory (memray). Every figure lands in `results.json`;
`harness.analysis.checks` turns figures into verdicts and `harness.analysis.report` renders the
markdown from those typed results (`harness.figures.results.AnalysisResults`). The report
folder is built under a temporary name, sealed with a manifest of every file in it and renamed
at the end: no half-written report, and an existing --out is replaced only when it is one of
our reports and holds nothing else (plumbing/report_folder.py); the folder is locked for the
run (plumbing/folder_lock.py), so a second analyze into it is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from harness.analysis.checks import conclude
from harness.analysis.phases import (
    phase_costs,
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
from harness.run.progress import enter_phase, plan_phases
from harness.run.stop import at_once, check_stop
from plumbing.errors import InputError
from plumbing.folder_lock import lock_beside
from plumbing.outputs import json_text, write_output
from plumbing.report_folder import build_folder, check_report_folder, install, seal
from reference.config import preset
from reference.params import param_count


def analyze(plan: Plan, out_dir: Path, say: Say = say) -> AnalysisResults:
    """Run every phase into `out_dir` and return the results (also written as JSON)."""
    cfg = preset(plan.preset, seed=plan.seed)
    started = time.perf_counter()
    with at_once():  # no safe point inside: a signal while reading the data stops at once
        corpus, data = phase_data(plan, cfg, say)
    plan_phases(say, phase_costs(plan, cfg, corpus))  # the run ETA's sizes of every phase
    run = phase_training(plan, cfg, corpus, out_dir, say)
    training, sampler, flame = run.result, run.sampler, run.flame
    check_stop("after phase train")  # a signal stops between phases (and inside them)
    throughput = [] if training.error else phase_throughput(plan, cfg, corpus, say)
    check_stop("after phase throughput")
    equivalence = phase_equivalence(plan, cfg, say)
    check_stop("after phase verify")
    drills = phase_drills(say)
    check_stop("after phase drills")
    from harness.bench.engine_compare import analyze_phase  # every engine side by side (SPEC 13)

    enter_phase(say, "engines")
    engines = analyze_phase(plan.preset, plan.threads, plan.engines, say)
    check_stop("after phase engines")
    from harness.bench.repro import analyze_phase as repro_phase  # issue 23

    enter_phase(say, "repro")
    repro = repro_phase(plan.repro_threads, plan.repro_worlds, plan.repro_dtypes,
                        plan.stall_timeout, say)
    check_stop("after phase reproducibility")
    memray = None if training.error else phase_memory(plan, cfg, corpus, out_dir, say)
    check_stop("after phase memory")
    from harness.analysis.scaling import phase_scaling, scaling_plot

    enter_phase(say, "scaling")
    scaling = phase_scaling(say)  # the protocol on 64 simulated cores (a few seconds)
    check_stop("after phase scaling")
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
        repro=repro,
        profiles=Profiles(
            flamegraph="flamegraph.svg" if flame.get("svg") else None,
            error=(flame.get("error") or "").splitlines()[0] if flame.get("error")
            else ("training too short for a flame graph" if not flame else None)),
        record=record_summary(run.record, out_dir),
        scaling=scaling,
    )
    conclude(results)
    results.plots = make_plots(results, out_dir)
    results.plots.update(scaling_plot(results, out_dir))
    if results.record.timeline:
        results.plots["timeline"] = results.record.timeline
    results.meta.seconds = time.perf_counter() - started
    return results


def write_results(results: AnalysisResults, path: Path) -> None:
    """`results.json`: the typed results' JSON under their schema version."""
    write_output(path, json_text(results.to_json(), indent=2))


def prepare_out(out: Path) -> Path:
    """Check the report folder can be written before any work; returns the temp build folder."""
    check_report_folder(out, "--out")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create {parent}: {exc.strerror}") from None
    return build_folder(out)


def analyze_into(plan: Plan, out: Path, *, ranks: int | None = None,
                 trace: Path | None = None, quiet: bool = False,
                 progress_seconds: float | None = None) -> AnalysisResults:
    """Run the analysis with live progress and write its report folder `out` whole (built under
    a temporary name, renamed at the end); `ranks` adds the Scale-out section (SPEC 10) and
    `trace` gets a copy of the report's trace.json."""
    check_report_folder(out, "--out")
    with lock_beside(out, f"--out {out}"):
        return _analyze_locked(plan, out, ranks=ranks, trace=trace, quiet=quiet,
                               progress_seconds=progress_seconds)


def _analyze_locked(plan: Plan, out: Path, *, ranks: int | None, trace: Path | None,
                    quiet: bool, progress_seconds: float | None) -> AnalysisResults:
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
                conclude(results)  # issues and recommendations with it, as check derives them
        write_results(results, tmp / "results.json")
        write_output(tmp / "analysis.md", render(results))
        seal(tmp)
        if trace is not None and (tmp / "trace.json").exists():
            write_output(trace, (tmp / "trace.json").read_bytes(), "--trace")
        leftover = install(tmp, out)
    except BaseException:
        discard(tmp)
        raise
    if leftover is not None:
        say(f"analyze: the old report's folder kept files added while this run built the new "
            f"one; they are in {leftover}")
    return results


def discard(tmp: Path) -> None:
    """Remove our unfinished build folder (every file in it is ours: we made the folder)."""
    import shutil

    if tmp.exists() and tmp.name.startswith(".") and ".partial-" in tmp.name:
        shutil.rmtree(tmp, ignore_errors=True)
