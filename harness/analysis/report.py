"""Render `results.json` as the markdown analysis (SPEC section 7), and draw its PNGs.

Every number in the report is read from the typed results (`AnalysisResults`), never computed
here, so the report and `results.json` cannot disagree. Sections follow the seed document's;
each verdict line names its check and the measured figure behind it, and a failed check reads
FAIL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from harness.figures import plots
from harness.figures.facts import MachineFacts
from harness.figures.results import AnalysisResults, Check
from harness.figures.thresholds import (
    GB,
    GRAD_TOL,
    MB,
    SEED_PEAK_BYTES,
    SEED_TOKENIZE_PEAK_BYTES,
)
from harness.measure.evidence import NODE_ZERO_PHASES
from harness.measure.machine import blas_line


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.1f} MiB"


def verdict_line(check: Check) -> str:
    mark = "PASS" if check.passed else "FAIL"
    icon = "✅" if check.passed else "❌"
    return f"- {icon} **{mark}** {check.title}: {check.figure}"


def _checks_for(results: AnalysisResults, section: str) -> list[str]:
    return [verdict_line(c) for c in results.checks if c.section == section]


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _image(results: AnalysisResults, key: str, alt: str) -> list[str]:
    path = results.plots.get(key)
    return [f"![{alt}]({path})", ""] if path else []


def _blas(machine: MachineFacts) -> list[str]:
    facts = machine.blas
    if facts is None:
        return ["**BLAS**: not recorded  "]
    return [f"**{blas_line(facts)}**  "] + [f"**Warning**: {w}  " for w in facts.warnings]


def _summary(r: AnalysisResults) -> list[str]:
    meta, data, machine = r.meta, r.data, r.meta.machine
    lines: list[str] = []
    passed = sum(c.passed for c in r.checks)
    lines += [f"**Date**: {meta.date}  ",
              f"**Command**: `{meta.command}`  ",
              f"**Commit**: `{meta.commit or 'n/a'}`  ",
              f"**Machine**: {machine.cpu_model}, {machine.cores} cores, "
              f"{_mib(machine.memory_total_bytes)}  ",
              *_blas(machine),
              f"**Preset**: `{meta.preset}` ({meta.n_params:,} parameters); "
              f"**threads**: {meta.threads} workers + Node Zero  ",
              f"**Dataset**: {data.source} ({data.n_tokens:,} tokens)  ",
              f"**Verdict**: **{r.verdict}**: {passed} of {len(r.checks)} checks passed",
              "", "Config (written into every checkpoint):", "",
              "```json", meta.config_json, "```"]
    return lines


def _initialisation(r: AnalysisResults) -> list[str]:
    return [f"Numba compilation and thread start-up took {r.training.compile_seconds:.2f} s "
            "(reported apart from training time).", ""]


def _symmetry(r: AnalysisResults) -> list[str]:
    lines = _table(["position", "workers", "batches per group"],
                   [[p.position, p.workers, p.batches] for p in r.structure.positions])
    lines.append("")
    return lines


def _spheres(r: AnalysisResults) -> list[str]:
    st = r.structure
    return [f"Levels: {' + '.join(str(n) for n in st.level_sizes)} = "
            f"{st.total_spheres} spheres. Level 0 is Node Zero, level 1 the 12 "
            "positions, level 2 the spheres that batches map to by index "
            f"({st.occupied_spheres} occupied by a {r.data.group_size}-batch group).", ""]


def _node_zero(r: AnalysisResults) -> list[str]:
    lines: list[str] = []
    nz = r.threads.node_zero
    if nz is not None:
        lines += [f"Node Zero (run record): {nz.batches} batches computed, "
                  f"{nz.cpu_seconds:.2f} CPU s. Seconds per phase, named by what it "
                  "does (the workers reduce and update; Node Zero waits meanwhile):", ""]
        lines += _table(["phase", "seconds"],
                        [[label, f"{getattr(nz, key):.3f}"] for key, label in NODE_ZERO_PHASES])
        lines.append("")
    return lines


def _workers(r: AnalysisResults) -> list[str]:
    lines = _table(["thread", "position", "batches", "CPU s", "wait A s", "wait B s"],
                   [[w.name, "-" if w.position is None else w.position, w.batches,
                     f"{w.cpu_seconds:.2f}", f"{w.wait_a_seconds:.2f}",
                     f"{w.wait_b_seconds:.2f}"] for w in r.threads.workers])
    lines.append("")
    lines += _image(r, "cpu_per_thread", "CPU seconds per thread")
    return lines


def _batch_loading(r: AnalysisResults) -> list[str]:
    data = r.data
    return [f"Tokenisation and vocabulary: {data.tokenize_seconds:.2f} s, peak "
            f"{_mib(data.tokenize_peak_bytes)} (the original needed "
            f"{SEED_TOKENIZE_PEAK_BYTES / MB:.0f} MB).  ",
            f"{data.batches_per_epoch} batches per epoch = ceil(({data.n_tokens:,} - 1)"
            f" / ({data.batch_size} x {data.seq_len})); {data.groups_per_epoch} "
            f"groups of up to {data.group_size}; the last group has "
            f"{data.last_group_batches} batches and its last batch "
            f"{data.last_batch_pad_targets} padded targets.", ""]


def _batch_processing(r: AnalysisResults) -> list[str]:
    tr = r.training
    lines = [f"{tr.steps} steps, {tr.tokens:,} tokens in {tr.seconds:.2f} s "
             f"({tr.tokens_per_s:,.0f} tokens/s); loss {tr.losses[0]:.4f} -> "
             f"{tr.losses[-1]:.4f}." if tr.losses else "No step completed.", ""]
    if tr.eval_losses:
        step, value = tr.eval_losses[-1]
        lines += [f"Held-out loss (forward only, on the workers, over the last "
                  f"{tr.eval_tokens:,} tokens of the stream, never trained on): "
                  f"{value:.4f} after step {step}.", ""]
    if tr.error:
        lines += [f"Training stopped with an error: `{tr.error}`", ""]
    lines += _image(r, "loss_curve", "loss curve")
    return lines


def _performance(r: AnalysisResults) -> list[str]:
    perf = r.performance
    timed = [p for p in perf.throughput if p.step_seconds]
    if timed and len(timed) == len(perf.throughput):  # results.json before step_seconds: no column
        lines = _table(["threads", "tokens/s", "speed-up vs 1", "timed steps s"],
                       [[p.threads, f"{p.tokens_per_s:,.0f}", f"{p.speedup:.2f}x",
                         ", ".join(f"{s:.2f}" for s in p.step_seconds)]
                        for p in perf.throughput])
        lines += ["", f"{len(timed[0].step_seconds)} rounds over the thread counts (order "
                  "alternating), each time a fresh engine, one burn-in step and one timed step "
                  f"of the same group of {timed[0].group_size} batches; tokens/s of each "
                  "count's median step (one step that lost a core to another process, or ran "
                  "alone on the machine, does not move it, and a machine drifting slower moves "
                  "every count alike)."]
    else:
        lines = _table(["threads", "tokens/s", "speed-up vs 1"],
                       [[p.threads, f"{p.tokens_per_s:,.0f}", f"{p.speedup:.2f}x"]
                        for p in perf.throughput])
    lines += ["", f"CPU use during training = CPU seconds / wall seconds / cores = "
              f"{perf.cpu_seconds:.1f} / {perf.wall_seconds:.1f} / {perf.cores} = "
              f"{perf.cpu_utilisation:.1%}.", ""]
    lines += _image(r, "throughput", "throughput against threads")
    lines += [f"Sampled with psutil over the training phase (thread start-up included): "
              f"{perf.sampled_cpu_use:.1%} of all cores on average over "
              f"{perf.sampled_wall_seconds:.1f} s.", ""]
    lines += _image(r, "cpu_over_time", "CPU use over time")
    fg = r.profiles.flamegraph
    lines += [f"py-spy flame graph of the training phase: [{fg}]({fg})" if fg else
              f"py-spy flame graph: not available ({r.profiles.error})", ""]
    return lines


def _memory(r: AnalysisResults) -> list[str]:
    mem = r.memory
    lines = [f"Peak RSS {_mib(mem.peak_rss_bytes)} (sampled {mem.samples} times); "
             f"the seed run peaked at {SEED_PEAK_BYTES / GB} GB.", ""]
    mr = mem.memray
    if mr is not None and mr.top:
        lines += [f"memray (native traces) over one step: peak {_mib(mr.peak_bytes)}; "
                  "top allocation sites at the high-water mark:", ""]
        lines += _table(["bytes", "function", "location"],
                        [[f"{_mib(t.bytes)}", f"`{t.function}`", f"{t.file}:{t.line}"]
                         for t in mr.top])
        lines.append("")
    elif mr is not None and mr.error:
        lines += [f"memray: not available ({mr.error})", ""]
    lines += _image(r, "memory", "memory over time")
    return lines


_WAITS = ("ticket_wait_seconds", "wait_a_seconds", "wait_reduced_seconds",
          "wait_decided_seconds", "wait_b_seconds")


def _synchronisation(r: AnalysisResults) -> list[str]:
    lines: list[str] = []
    if r.threads.workers:
        lines += ["Seconds each thread waited, from the run record (the same record as the "
                  "timeline and `trace.json`):", ""]
        lines += _table(["thread", "ticket", "Point A", "reduced", "decided", "Point B"],
                        [[w.name, *(f"{getattr(w, k):.3f}" for k in _WAITS)]
                         for w in r.threads.all_threads])
        lines.append("")
    rec = r.record
    if rec.timeline:
        lines += [f"Timeline of step {rec.timeline_step} (the median step), threads down, "
                  f"time across; the whole run opens in Perfetto from "
                  f"[{rec.trace}]({rec.trace}):", ""]
    lines += _image(r, "timeline", "timeline of one step")
    lines += _table(["drill", "expected", "outcome", "seconds", "verdict"],
                    [[d.name, d.expected, d.outcome, f"{d.seconds:.1f}",
                      "PASS" if d.passed else "FAIL"] for d in r.drills])
    lines.append("")
    return lines


def _architecture(r: AnalysisResults) -> list[str]:
    eq = r.equivalence
    lines = [f"Equivalence gates: {eq.runs} runs over presets {', '.join(eq.presets)}, "
             f"thread counts ({eq.threads_label}), dtypes {', '.join(eq.dtypes)} in "
             f"{eq.seconds:.1f} s.", ""]
    lines += _image(r, "equivalence", "equivalence error against threads")
    return lines


def _engines(r: AnalysisResults) -> list[str]:
    lines: list[str] = []
    from harness.bench.engine_compare import markdown as engines_table

    eng = r.engines
    if eng is None or eng.error:
        return [f"Not measured: {eng.error if eng else 'not run'}", ""]
    lines += ([engines_table(eng).rstrip(), "", "Each engine ran in its own process "
               "(`spheres engines --measure`); bitwise compares the gradient bits of two "
               "thread counts and is measured, not gated, for engines other than fast."])
    lines.append("")
    return lines


def _repro(r: AnalysisResults) -> list[str]:
    from harness.bench.repro import markdown as repro_table

    if r.repro is None or r.repro.error:
        return [f"Not measured: {r.repro.error if r.repro else 'not run'}", ""]
    body = repro_table(r.repro).split("\n", 2)[2]  # the section heading is ours
    return [body.rstrip(), "", "Each cell trained the same seeded weights for the same "
            "steps; `reports/bench/repro.md` (`make bench`) holds the full grid on its own.", ""]


def _known_issues(r: AnalysisResults) -> list[str]:
    lines = [f"- {i}" for i in r.known_issues] or ["- None found by the checks above."]
    lines.append("")
    return lines


def _recommendations(r: AnalysisResults) -> list[str]:
    lines = [f"- {i}" for i in r.recommendations] or ["- None."]
    lines.append("")
    return lines


def _conclusion(r: AnalysisResults) -> list[str]:
    lines: list[str] = []
    failed = [c for c in r.checks if not c.passed]
    lines += [f"**{r.verdict}**: {len(r.checks) - len(failed)} of {len(r.checks)} "
              "checks passed."]
    if failed:
        lines += ["", "Failed checks:"] + [verdict_line(c) for c in failed]
    lines.append("")
    return lines


def _scale_out(r: AnalysisResults) -> list[str]:
    from harness.analysis.scale_out import section_lines

    return section_lines(r.scale_out) if r.scale_out is not None else []


def _scaling(r: AnalysisResults) -> list[str]:
    from harness.analysis.scaling import section_lines

    return section_lines(r)


class Section(NamedTuple):
    """One report section: the `section` of its checks, its heading, its renderer."""

    key: str
    heading: str
    render: Callable[[AnalysisResults], list[str]]
    optional: bool = False  # present only when results has `key` (`analyze --ranks R`, SPEC 10)


# The seed document's sections in its order; each renderer writes one section's body.
SECTIONS: list[Section] = [
    Section("summary", "Test Execution Summary", _summary),
    Section("initialisation", "System Initialisation", _initialisation),
    Section("symmetry", "12-Fold Symmetry Structure", _symmetry),
    Section("spheres", "Kissing Spheres Architecture", _spheres),
    Section("node_zero", "Node Zero (Control Thread)", _node_zero),
    Section("workers", "Worker Threads", _workers),
    Section("batch_loading", "Batch Loading", _batch_loading),
    Section("batch_processing", "Batch Processing", _batch_processing),
    Section("performance", "Performance", _performance),
    Section("memory", "Memory", _memory),
    Section("synchronisation", "Thread Synchronisation", _synchronisation),
    Section("architecture", "Architecture Verification", _architecture),
    Section("engines", "Engines Side by Side", _engines),
    Section("repro", "Reproducibility Across Threads and Processes", _repro),
    Section("scaling", "Scaling beyond this machine", _scaling),  # a quick simulated sweep
    Section("scale_out", "Scale-out (MPI ranks)", _scale_out, optional=True),  # --ranks R
    Section("known_issues", "Known Issues", _known_issues),
    Section("recommendations", "Recommendations", _recommendations),
    Section("conclusion", "Conclusion", _conclusion),
]


def render(results: AnalysisResults) -> str:
    """The whole analysis as markdown: per section its heading, its verdict lines, its body."""
    title = f"# Kissing Spheres analysis: `{results.meta.preset}` preset"
    lines = [title, ""]
    for section in SECTIONS:
        if section.optional and getattr(results, section.key, None) is None:
            continue
        lines += [f"## {section.heading}", ""]
        checks = _checks_for(results, section.key)
        if checks:
            lines += checks + [""]
        lines += section.render(results)
    return "\n".join(lines).rstrip() + "\n"


def make_plots(results: AnalysisResults, out_dir: Path) -> dict[str, str]:
    """The report's PNGs in `out_dir`, drawn from the finished typed results (never from live
    objects); returns each image's file name by its key (`AnalysisResults.plots`)."""
    paths: dict[str, str] = {}
    tr, perf = results.training, results.performance
    if tr.losses:
        held = tr.eval_losses
        plots.plot_loss(list(range(1, len(tr.losses) + 1)), tr.losses, out_dir / "loss.png",
                        eval_steps=[s for s, _ in held], eval_losses=[v for _, v in held])
        paths["loss_curve"] = "loss.png"
    if perf.throughput:
        plots.plot_throughput([p.threads for p in perf.throughput],
                              [p.tokens_per_s for p in perf.throughput],
                              out_dir / "throughput.png", cores=perf.cores)
        paths["throughput"] = "throughput.png"
    cpu = {w.name: w.cpu_seconds for w in results.threads.all_threads}
    if cpu:
        plots.plot_thread_cpu(cpu, out_dir / "cpu_per_thread.png",
                              wall_seconds=perf.wall_seconds)
        paths["cpu_per_thread"] = "cpu_per_thread.png"
    if perf.utilisation:
        plots.plot_utilisation(perf.utilisation_times, perf.utilisation,
                               out_dir / "cpu_over_time.png")
        paths["cpu_over_time"] = "cpu_over_time.png"
    mem = results.memory
    if mem.rss_times:
        plots.plot_memory(mem.rss_times, mem.rss_bytes, out_dir / "memory.png",
                          limit_bytes=SEED_PEAK_BYTES)
        paths["memory"] = "memory.png"
    by_t: dict[int, float] = {}
    for r in results.equivalence.records:
        if r.preset == "tiny" and r.dtype == "float32":
            by_t[r.threads] = max(r.grad_error, r.loss_error)
    if by_t:
        ts = sorted(by_t)
        plots.plot_equivalence(ts, [by_t[t] for t in ts], out_dir / "equivalence.png",
                               tolerance=GRAD_TOL["float32"],
                               label="float32 max relative error (tiny)")
        paths["equivalence"] = "equivalence.png"
    return paths
