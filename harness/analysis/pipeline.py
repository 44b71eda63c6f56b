"""`spheres analyze`, the main job: measure everything the seed document only asserted.

Phases, each printing progress as it goes: data (tokenise, count batches until the iterator
stops), structure (positions, spheres, barriers), training (with per-thread CPU and RSS
sampling and a py-spy flame graph), throughput against threads, equivalence gates, watchdog and
fault drills, memory (memray). Every figure lands in `results.json`;
`harness.analysis.checks` turns figures into verdicts and `harness.analysis.report` renders the
markdown from that one dict. The report folder is built under a temporary name and renamed at
the end: no half-written report.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.checks import build_checks, known_issues, recommendations
from harness.analysis.report import render
from harness.figures import plots
from harness.figures.results import SCHEMA_VERSION, ThroughputPoint
from harness.figures.thresholds import SEED_PEAK_BYTES
from harness.profiling.tools import (
    REPO_ROOT,
    ThreadCpuSampler,
    cpu_use,
    current_rss_bytes,
    machine_info,
    memray_profile,
    peak_rss_bytes,
    pyspy_flamegraph,
    reset_peak_rss,
)
from harness.record import evidence
from harness.record.threadstats import live_ks_threads, thread_stats
from harness.record.timeline import plot_gantt
from harness.record.trace import representative_step, write_trace
from harness.run.corpus import load_corpus, one_group_tokens
from harness.run.engines import default_threads, make_engine, unfired_faults
from harness.run.export import check_writable
from harness.run.heldout import evaluate, split_heldout
from harness.verify.gates import GRAD_TOL, run_verify
from reference.batches import n_batches
from reference.config import Config, preset
from reference.errors import InputError, SpheresError, StallError
from reference.params import param_count

SEED_DATASET_TOKENS = 4_800_000  # the seed's 24 MB SQuAD set held about 4.8M tokens
Progress = Callable[[str], None]


def say(line: str) -> None:
    print(line, flush=True)


@dataclass
class Plan:
    """What one analysis measures; the defaults are the main job's, `--quick` shrinks them."""

    preset: str
    data: str | None
    threads: int
    steps: int
    seed: int
    stall_timeout: float
    inject: list[str]
    quick: bool
    synthetic_tokens: int
    sweep_threads: list[int]  # equivalence gates at the tiny preset
    throughput_threads: list[int]
    throughput_group: int  # batches per group in the throughput sweep
    command: str = ""
    extra_verify: list[str] = field(default_factory=list)  # more presets for the gates
    extra_threads: list[int] = field(default_factory=list)  # their (shorter) thread sweep
    engines: list[str] = field(default_factory=list)  # --engine: more engines side by side


def make_plan(args: argparse.Namespace) -> Plan:
    name = "tiny" if args.quick else args.preset
    cfg = preset(name)
    threads = args.threads or default_threads()
    if args.quick:
        steps = args.steps or 6
        synth = one_group_tokens(cfg, 3)
        sweep = [1, 2, 3, 5, 7, 11, 12, 13, 24, 63]
        tput = sorted({1, 2, threads, 4, 63})
        tput_g = cfg.train.group_size
    else:
        steps = args.steps or (3 if name == "seed" else 10)
        synth = SEED_DATASET_TOKENS if name == "seed" else one_group_tokens(cfg, 20)
        sweep = list(range(1, 64))
        tput = sorted({1, 2, threads, 4, 12, 63})
        tput_g = min(cfg.train.group_size, 4 if name == "seed" else 12)
    return Plan(preset=name, data=args.data, threads=threads, steps=steps, seed=args.seed,
                stall_timeout=args.stall_timeout, inject=list(args.inject), quick=args.quick,
                synthetic_tokens=synth, sweep_threads=sweep, throughput_threads=tput,
                throughput_group=tput_g, command="spheres " + " ".join(sys.argv[1:]),
                extra_verify=[] if args.quick else ["small"],
                extra_threads=sorted({1, 2, threads, 13, 63}),
                engines=list(getattr(args, "engine", None) or []))


def default_out(plan: Plan) -> Path:
    suffix = "-quick" if plan.quick else ""
    return Path("reports") / f"{dt.date.today().isoformat()}-{plan.preset}{suffix}"


# --------------------------------------------------------------------------- phases


def phase_data(plan: Plan, cfg: Config, say: Progress) -> tuple[Any, dict]:
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
    info = {
        "source": corpus.source, "n_documents": corpus.n_documents, "n_tokens": n,
        "vocab_size": len(corpus.vocab), "tokenize_seconds": seconds,
        "tokenize_peak_bytes": peak, "batch_size": cfg.train.batch_size,
        "seq_len": cfg.model.seq_len, "group_size": cfg.train.group_size,
        "batches_per_epoch": counted_batches, "expected_batches": expected,
        "groups_per_epoch": counted_groups,
        "expected_groups": math.ceil(expected / cfg.train.group_size),
        "last_group_batches": last.tokens.shape[0] // cfg.train.batch_size if last else 0,
        "last_batch_pad_targets": int((last.targets[-cfg.train.batch_size:] == 0).sum())
        if last else 0,
    }
    say(f"[data] {n:,} tokens in {seconds:.2f}s; {counted_batches} batches "
        f"(formula {expected}); {counted_groups} groups per epoch")
    return corpus, info


def phase_structure(record) -> dict:
    """The symmetry positions and sphere levels as the run record saw them (not the plan)."""
    d = evidence.structure(record) if record is not None else {
        "positions": [{"position": p, "workers": 0, "batches": 0} for p in range(12)],
        "level_sizes": [0, 0, 0], "total_spheres": 0, "tree": [1, 12, 144],
        "occupied_spheres": 0, "barrier_parties": 0}
    return d


def record_stats(record, heartbeat_stats: dict | None) -> dict:
    """Per-thread figures from the run record, with each thread's CPU clock (heartbeats)."""
    if record is None:
        return {"node_zero": {}, "workers": [], "all": []}
    cpu = {t["name"]: t["cpu_seconds"] for t in (heartbeat_stats or {}).get("all", [])}
    rows = [asdict(t) for t in evidence.thread_stats(record, cpu) if t.role != "caller"]
    node_zero = next((t for t in rows if t["role"] == "node-zero"), {})
    if node_zero:
        node_zero["position"] = "-"
    workers = [t for t in rows if t["role"] == "worker"]
    return {"node_zero": node_zero, "workers": workers, "all": rows}


def record_summary(record, out_dir: Path) -> dict:
    """The record's findings, and its trace and timeline files in the report folder."""
    if record is None:
        return {"findings": {}}
    out = {"findings": evidence.findings(record), "steps": len(record.steps()),
           "trace": write_trace(record, out_dir / "trace.json").name}
    step = representative_step(record)
    if step is not None:
        out["timeline_step"] = step
        out["timeline"] = plot_gantt(record, step, out_dir / "timeline.png").name
    return out


def phase_training(plan: Plan, cfg: Config, corpus, out_dir: Path, say: Progress) -> dict:
    """Train `plan.steps` steps under the samplers; an engine error is recorded, not raised."""
    from harness.commands.train_grads import parse_faults

    corpus, heldout = split_heldout(corpus, cfg, analyze_eval_fraction(cfg, corpus))
    eval_every = max(1, plan.steps // 10)
    snapshots: list[tuple[int, Any]] = []  # (step, parameters) to evaluate after training
    groups = corpus.groups(cfg)
    info: dict[str, Any] = {"steps": 0, "losses": [], "step_seconds": [], "tokens": 0,
                            "eval_losses": [], "eval_tokens": heldout.n_tokens,
                            "seconds": 0.0, "tokens_per_s": 0.0, "compile_seconds": 0.0,
                            "error": None, "error_kind": None, "exit_code": 0,
                            "unfired_faults": [], "threads_alive_after_close": None,
                            "cpu_seconds": 0.0}
    sampler = ThreadCpuSampler(interval=0.1 if plan.quick else 0.25)
    flame: dict[str, Any] = {}
    flame_thread = None
    threads_before = live_ks_threads()
    sampler.start()
    t0 = time.perf_counter()
    engine = None
    try:
        engine = make_engine("fast", cfg, threads=plan.threads, stall_timeout=plan.stall_timeout,
                             faults=parse_faults(plan.inject))
        info["compile_seconds"] = time.perf_counter() - t0
        say(f"[train] {plan.threads} workers + Node Zero started in "
            f"{info['compile_seconds']:.2f}s")
        cpu_before = _engine_cpu(engine)
        for s in range(plan.steps):
            group = groups.group(s % len(groups))
            ts = time.perf_counter()
            result = engine.step(group.tokens, group.targets)
            dts = time.perf_counter() - ts
            info["steps"] += 1
            info["losses"].append(result.loss)
            info["step_seconds"].append(dts)
            info["tokens"] += result.n_targets
            engine.record.counter("tokens/s", result.n_targets / dts)
            engine.record.counter("RSS MB", current_rss_bytes() / 1e6)
            say(f"[train] step {s + 1}/{plan.steps}: loss {result.loss:.4f}, "
                f"{result.n_targets / dts:,.0f} tokens/s, {dts:.2f}s")
            if (s + 1) % eval_every == 0 or s + 1 == plan.steps:
                snapshots.append((s + 1, engine.state().params))  # evaluated after training
            if s == 0 and plan.steps > 1 and flame_thread is None:
                secs = max(1.0, dts * (plan.steps - 1) * 0.9)
                flame_thread = threading.Thread(
                    target=lambda s=secs: flame.update(
                        pyspy_flamegraph(os.getpid(), s, out_dir / "flamegraph.svg")),
                    name="ks-pyspy", daemon=True)
                flame_thread.start()
        info["stats"] = thread_stats(engine)
        info["cpu_seconds"] = _engine_cpu(engine) - cpu_before
        info["unfired_faults"] = unfired_faults(engine)
        # held-out loss after the thread statistics were taken, so evaluation work never
        # counts as training CPU or compute time; the weights of each eval step are restored
        final = engine.state() if snapshots else None
        for step, params in snapshots:
            engine.load_state(dataclasses.replace(final, params=params))
            held = evaluate(engine, heldout)
            info["eval_losses"].append([step, held.loss])
            say(f"[train] held-out loss after step {step}: {held.loss:.4f} over "
                f"{held.n_targets:,} targets")
    except SpheresError as exc:
        info["error"] = str(exc)
        info["error_kind"] = type(exc).__name__
        info["exit_code"] = exc.exit_code
        if isinstance(exc, StallError):
            info["diagnosis"] = exc.diagnosis
        say(f"[train] FAILED ({type(exc).__name__}): {exc}")
        if engine is not None:
            info["stats"] = thread_stats(engine)
    finally:
        if engine is not None:
            engine.close()
            info["record"] = engine.record.snapshot()  # complete: every thread joined
        sampler.stop()
        if flame_thread is not None:
            flame_thread.join(timeout=120)
    info["seconds"] = float(sum(info["step_seconds"]))
    info["tokens_per_s"] = info["tokens"] / info["seconds"] if info["seconds"] else 0.0
    # close() joined every thread it started: any ks- thread still alive here is a leak
    info["threads_alive_after_close"] = sorted(
        t.name for t in live_ks_threads() - threads_before if t.name != "ks-pyspy")
    info["sampler"] = sampler.summary()
    info["flamegraph"] = flame
    return info


def analyze_eval_fraction(cfg: Config, corpus) -> float:
    """About one batch group of held-out tokens, at most 5% of the corpus: a stable mean that
    costs a forward pass over one group, not a large share of the run."""
    t = cfg.train
    group_tokens = t.group_size * t.batch_size * cfg.model.seq_len
    return min(0.05, max(group_tokens / max(corpus.stream.size, 1), 0.01))


def _engine_cpu(engine) -> float:
    """CPU seconds used so far by Node Zero and every worker (each thread's own clock)."""
    return sum(s["cpu_seconds"] for s in thread_stats(engine)["all"])


def phase_throughput(plan: Plan, cfg: Config, corpus, say: Progress) -> list[dict]:
    """Tokens/s for each thread count on the same group, measured side by side in one run."""
    small = cfg.replace(group_size=plan.throughput_group)
    group = corpus.groups(small).group(0)
    points = []
    for T in plan.throughput_threads:
        with make_engine("fast", small, threads=T, stall_timeout=plan.stall_timeout) as engine:
            engine.step(group.tokens, group.targets)  # burn-in: caches, first-touch pages
            t0 = time.perf_counter()
            result = engine.step(group.tokens, group.targets)
            seconds = time.perf_counter() - t0
        points.append(ThroughputPoint(T, result.n_targets / seconds, seconds,
                                      plan.throughput_group))
        say(f"[throughput] T={T}: {points[-1].tokens_per_s:,.0f} tokens/s")
    for p in points:
        p.speedup = p.tokens_per_s / points[0].tokens_per_s
    return [asdict(p) for p in points]


def phase_equivalence(plan: Plan, cfg: Config, say: Progress) -> dict:
    t0 = time.perf_counter()
    report = run_verify([preset("tiny", seed=plan.seed)], ["float64", "float32"],
                        plan.sweep_threads, trajectory_steps=3,
                        out=lambda line: say(f"[verify] {line}"))
    records = [dict(vars(r), passed=r.passed) for r in report.records]
    if plan.extra_verify:  # larger presets cost seconds per run: a shorter thread sweep
        extra = run_verify([preset(p, seed=plan.seed) for p in plan.extra_verify],
                           ["float64", "float32"], plan.extra_threads, trajectory_steps=3,
                           out=lambda line: say(f"[verify] {line}"))
        records += [dict(vars(r), passed=r.passed) for r in extra.records]
    if cfg.preset not in {"tiny", *plan.extra_verify}:
        # the analysed preset itself, on a 2-batch group so the float64 reference stays short
        small = cfg.replace(group_size=2)
        extra = run_verify([small], ["float64", "float32"],
                           sorted({1, 2, plan.threads}), trajectory_steps=2,
                           out=lambda line: say(f"[verify] {line}"))
        records += [dict(vars(r), passed=r.passed) for r in extra.records]
    return {"records": records, "seconds": time.perf_counter() - t0,
            "presets": sorted({r["preset"] for r in records}),
            "dtypes": ["float64", "float32"], "runs": len(records),
            "threads_label": "; ".join(
                f"{name} {_label(sorted({r['threads'] for r in records if r['preset'] == name}))}"
                for name in dict.fromkeys(r["preset"] for r in records)),
            "failures": [f for r in records for f in r["failures"]]}


def _label(threads: list[int]) -> str:
    if threads == list(range(threads[0], threads[-1] + 1)) and len(threads) > 2:
        return f"{threads[0]}-{threads[-1]}"
    return ",".join(str(t) for t in threads)


def phase_drills(say: Progress) -> list[dict]:
    from harness.verify.drills import run_drills

    return run_drills(say)


def phase_memory(plan: Plan, cfg: Config, corpus, out_dir: Path, say: Progress) -> dict:
    """memray's native view of one training step (group capped so the capture stays small)."""
    small = cfg.replace(group_size=min(cfg.train.group_size, 12))
    group = corpus.groups(small).group(0)

    def one_step() -> float:
        with make_engine("fast", small, threads=plan.threads) as engine:
            return engine.step(group.tokens, group.targets).loss

    say(f"[memory] memray over one {small.train.group_size}-batch step")
    res = memray_profile(one_step, out_dir, top=8)
    capture = res.get("capture")
    if capture:
        Path(capture).unlink(missing_ok=True)  # large binary: the figures are in the report
    out = {"peak_bytes": res.get("peak_bytes"), "error": res.get("error"),
           "group_size": small.train.group_size,
           "top": [{"function": t["function"], "file": _short(t["file"]), "line": t["line"],
                    "bytes": t["bytes"]} for t in res.get("top_sites", [])]}
    return out


def _short(path: str) -> str:
    """A site-packages or repository file named relative to its root (no machine's path)."""
    for marker in ("site-packages/", f"{REPO_ROOT}/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# --------------------------------------------------------------------------- assembly


def make_plots(results: dict, out_dir: Path) -> dict[str, str]:
    paths: dict[str, str] = {}
    tr, perf = results["training"], results["performance"]
    if tr["losses"]:
        held = tr.get("eval_losses") or []
        plots.plot_loss(list(range(1, len(tr["losses"]) + 1)), tr["losses"], out_dir / "loss.png",
                        eval_steps=[s for s, _ in held], eval_losses=[v for _, v in held])
        paths["loss_curve"] = "loss.png"
    if perf["throughput"]:
        plots.plot_throughput([p["threads"] for p in perf["throughput"]],
                              [p["tokens_per_s"] for p in perf["throughput"]],
                              out_dir / "throughput.png", cores=perf["cores"])
        paths["throughput"] = "throughput.png"
    cpu = {w["name"]: w["cpu_seconds"] for w in results["threads"]["all"]}
    if cpu:
        plots.plot_thread_cpu(cpu, out_dir / "cpu_per_thread.png",
                              wall_seconds=perf["wall_seconds"])
        paths["cpu_per_thread"] = "cpu_per_thread.png"
    if perf["utilisation"]:
        plots.plot_utilisation(perf["utilisation_times"], perf["utilisation"],
                               out_dir / "cpu_over_time.png")
        paths["cpu_over_time"] = "cpu_over_time.png"
    mem = results["memory"]
    if mem["rss_times"]:
        plots.plot_memory(mem["rss_times"], mem["rss_bytes"], out_dir / "memory.png",
                          limit_bytes=SEED_PEAK_BYTES)
        paths["memory"] = "memory.png"
    by_t: dict[int, float] = {}
    for r in results["equivalence"]["records"]:
        if r["preset"] == "tiny" and r["dtype"] == "float32":
            by_t[r["threads"]] = max(r["grad_error"], r["loss_error"])
    if by_t:
        ts = sorted(by_t)
        plots.plot_equivalence(ts, [by_t[t] for t in ts], out_dir / "equivalence.png",
                               tolerance=GRAD_TOL["float32"],
                               label="float32 max relative error (tiny)")
        paths["equivalence"] = "equivalence.png"
    return paths


def analyze(plan: Plan, out_dir: Path, say: Progress = say) -> dict:
    """Run every phase into `out_dir` and return the results dict (also written as JSON)."""
    cfg = preset(plan.preset, seed=plan.seed)
    started = time.perf_counter()
    corpus, data = phase_data(plan, cfg, say)
    training = phase_training(plan, cfg, corpus, out_dir, say)
    record = training.pop("record", None)
    structure = phase_structure(record)
    stats = record_stats(record, training.get("stats"))
    sampler = training.pop("sampler")
    flame = training.pop("flamegraph")
    throughput = [] if training["error"] else phase_throughput(plan, cfg, corpus, say)
    equivalence = phase_equivalence(plan, cfg, say)
    drills = phase_drills(say)
    from harness.bench.engine_compare import analyze_phase  # every engine side by side (SPEC 13)

    engines = analyze_phase(plan.preset, plan.threads, plan.engines, say)
    memray = {} if training["error"] else phase_memory(plan, cfg, corpus, out_dir, say)
    cores = sampler["cores"]
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "meta": {"date": dt.datetime.now().isoformat(timespec="seconds"),
                 "command": plan.command, "preset": plan.preset, "threads": plan.threads,
                 "steps": plan.steps, "quick": plan.quick, "machine": machine_info(),
                 "commit": (machine_info().get("git") or {}).get("commit"),
                 "n_params": param_count(cfg.model), "config": cfg.to_dict(),
                 "config_json": json.dumps(cfg.to_dict(), indent=2), "inject": plan.inject},
        "data": data,
        "structure": structure,
        "training": training,
        "threads": stats,
        # CPU use over the training steps only: the trainer threads' own CPU clocks against
        # the steps' wall time and every core (the seed divided CPU time by the wrong wall)
        "performance": {"throughput": throughput, "cores": cores,
                        "cpu_seconds": training["cpu_seconds"],
                        "wall_seconds": training["seconds"],
                        "cpu_utilisation": cpu_use(training["cpu_seconds"], training["seconds"],
                                                   cores) if training["seconds"] else 0.0,
                        "sampled_thread_cpu_seconds": sampler["thread_cpu_seconds"],
                        "sampled_cpu_use": sampler["cpu_use"],
                        "sampled_wall_seconds": sampler["wall_seconds"],
                        "utilisation_times": [t for t, _ in sampler["utilisation"]],
                        "utilisation": [u for _, u in sampler["utilisation"]]},
        "memory": {"peak_rss_bytes": sampler["peak_rss_bytes"],
                   "samples": len(sampler["rss_bytes"]), "rss_times": sampler["rss_times"],
                   "rss_bytes": sampler["rss_bytes"], "memray": memray,
                   "seed_peak_bytes": SEED_PEAK_BYTES},
        "equivalence": equivalence,
        "drills": drills,
        "engines": engines,
        "profiles": {"flamegraph": "flamegraph.svg" if flame.get("svg") else None,
                     "error": (flame.get("error") or "").splitlines()[0] if flame.get("error")
                     else ("training too short for a flame graph" if not flame else None)},
    }
    results["record"] = record_summary(record, out_dir)
    results["checks"] = [asdict(c) for c in build_checks(results)]
    results["known_issues"] = known_issues(results)
    results["recommendations"] = recommendations(results)
    results["verdict"] = "PASS" if all(c["passed"] for c in results["checks"]) else "FAIL"
    results["plots"] = make_plots(results, out_dir)
    if results["record"].get("timeline"):
        results["plots"]["timeline"] = results["record"]["timeline"]
    results["meta"]["seconds"] = time.perf_counter() - started
    return results


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


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


def cmd_analyze(args: argparse.Namespace) -> int:
    plan = make_plan(args)
    if plan.data is not None and not Path(plan.data).exists():
        raise InputError(f"--data {plan.data}: no such file or folder")
    out = args.out or default_out(plan)
    trace = getattr(args, "trace", None)
    if trace is not None:
        check_writable(trace)
    tmp = prepare_out(out)
    say(f"analyze: preset {plan.preset}, {plan.threads} threads, {plan.steps} steps -> {out}")
    try:
        from harness.run.progress import PhaseLines, from_args

        with from_args(args, "analyze", 0, unit_name="phase") as live:
            phases = PhaseLines(live)
            results = analyze(plan, tmp, say=phases)
            phases.finish()
            if getattr(args, "ranks", None):  # SPEC 10: the Scale-out section
                from harness.mpi.scale_out import add_scale_out

                add_scale_out(results, plan.preset, args.ranks, plan.threads, plan.seed, phases)
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
        (tmp / "analysis.md").write_text(render(results))
        if trace is not None and (tmp / "trace.json").exists():
            shutil.copyfile(tmp / "trace.json", trace)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    failed = [c for c in results["checks"] if not c["passed"]]
    say(f"analyze: {results['verdict']}: {len(results['checks']) - len(failed)} of "
        f"{len(results['checks'])} checks passed in {results['meta']['seconds']:.0f}s; "
        f"report: {out / 'analysis.md'}")
    for c in failed:
        say(f"  FAIL {c['title']}: {c['figure']}")
    code = results["training"]["exit_code"]
    if code:
        return code
    return 0 if not failed else 1

