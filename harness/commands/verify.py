"""`spheres verify`: its options; options to gates, gates to files and an exit code.

Kept apart from `harness.verify.gates` (the gates) so that the renderers of a finished report
(`harness.verify.junit`, markdown) can import the report types without an import cycle.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from harness.commands import options as o
from harness.commands.preflight import Outputs, check_writable
from harness.figures.thresholds import GRAD_TOL
from harness.verify.gates import VerifyReport, markdown_summary, run_verify
from harness.verify.junit import junit_xml
from plumbing.errors import ExitCode, InputError, SpheresError
from plumbing.outputs import write_json, write_output
from reference.config import PRESETS, preset

DESCRIPTION = ("Fast vs reference within tolerance, bitwise identity across thread counts, a "
               "multi-step trajectory, per-thread work.")
OUTPUTS: Outputs = (("--json", "json", "file"), ("--markdown", "markdown", "file"),
                    ("--junit", "junit", "file"), ("--trace", "trace", "file"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=o.thread_counts, default="1-63",
                   help="thread counts: 1-63, 1,2,4 or 1-4,8")
    p.add_argument("--presets", default="tiny,small", help="comma-separated presets")
    p.add_argument("--dtypes", default="float64,float32", help="comma-separated dtypes")
    p.add_argument("--group-size", type=o.positive_int, default=None,
                   help="batches per step G for every preset (default: each preset's; above 12 "
                        "a position folds several batches from their own gradient buffers)")
    p.add_argument("--seed", type=o.int_in_range(0, o.MAX_SEED), default=0,
                   help="initialisation and corpus seed")
    p.add_argument("--trajectory-steps", type=o.positive_int, default=3,
                   help="steps of the trajectory check (default: 3)")
    p.add_argument("--json", type=Path, default=None, help="write every result as JSON")
    p.add_argument("--markdown", type=Path, default=None, help="write a markdown summary")
    p.add_argument("--junit", type=Path, default=None,
                   help="write JUnit XML for CI: one test case per preset, dtype and threads")
    o.add_progress(p)
    o.add_trace(p)
    p.add_argument("--ranks", type=o.rank_counts, default=None,
                   help="also gate across MPI ranks, e.g. 1,2,3,5,12: one mpiexec launch per R "
                        "(needs the [mpi] extra)")
    p.add_argument("--engine", default="fast", metavar="ENGINE",
                   help="engine under test: a name from `spheres engines`, exec:COMMAND or "
                        "module:factory (default: fast)")
    p.add_argument("--require-bitwise", action=argparse.BooleanOptionalAction, default=None,
                   help="fail when thread counts differ in any bit (default: on for fast; "
                        "measured and reported for every engine)")
    p.add_argument("--locate", action="store_true",
                   help="record a digest of every partial sum of the reduction tree in every "
                        "run, so a bitwise failure is located from the runs that failed "
                        "(without it, a failed pair is repeated with recording on)")
    o.add_faults(p)


def _split(text: str, allowed: Iterable[str], what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise InputError(f"--{what} {text!r}: choose from {', '.join(allowed)}")
    return items


def check_honoured(args: argparse.Namespace) -> None:
    """Options the engine under test cannot honour are refused before any work, never left to
    an empty file or a message at the end: --inject, --trace and --locate need the threads and
    run record of the fast engine."""
    if args.engine == "fast":
        return
    for given, option, why in ((args.inject, "--inject", "injects faults into Node Zero and "
                                "the workers"),
                               (args.trace is not None, "--trace", "records the threads' "
                                "timeline"),
                               (args.locate, "--locate", "records fold digests of the "
                                "reduction tree")):
        if given:
            raise InputError(f"{option} {why} of the fast engine; {args.engine!r} has none: "
                             f"drop {option} or use --engine fast")


def run(args: argparse.Namespace) -> int:
    from harness.run.engines import parse_faults, parse_threads

    check_honoured(args)
    threads = parse_threads(args.threads)
    presets = _split(args.presets, PRESETS, "presets")
    dtypes = _split(args.dtypes, GRAD_TOL, "dtypes")
    trace = args.trace
    for option, path in (("--json", args.json), ("--markdown", args.markdown),
                         ("--junit", args.junit), ("--trace", trace)):
        if path is not None:
            check_writable(path, option)
    if args.ranks:  # before the sweep: an engine --ranks can launch, and mpiexec for fast
        from harness.verify.ranks import mpiexec_path, rank_launcher

        rank_launcher(args.engine)
        if args.engine == "fast":
            mpiexec_path()
    traces: list | None = [] if trace is not None else None
    sizes = {"group_size": args.group_size} if args.group_size else {}
    configs = [preset(name, seed=args.seed, **sizes) for name in presets]
    from harness.run.progress import open_progress
    from harness.run.stop import Stopped, deferred

    report = VerifyReport()
    try:
        with deferred("the current run"):
            with open_progress("verify", len(configs) * len(dtypes) * len(threads),
                               quiet=args.quiet, seconds=args.progress_seconds,
                               unit_name="case") as live:
                run_verify(configs, dtypes, threads, trajectory_steps=args.trajectory_steps,
                           stall_timeout=args.stall_timeout, faults=parse_faults(args.inject),
                           out=live.write_out, live=live, traces=traces, engine=args.engine,
                           require_bitwise=args.require_bitwise, locate=args.locate,
                           report=report)
            if args.ranks:  # SPEC 10: the same gates across MPI ranks
                from harness.verify.ranks import verify_across_ranks

                verify_across_ranks(args.ranks, configs, dtypes, threads, report,
                                    steps=args.trajectory_steps,
                                    stall_timeout=args.stall_timeout,
                                    out=lambda line: print(line, flush=True),
                                    engine=args.engine, require_bitwise=args.require_bitwise)
    except SpheresError as exc:  # an engine's fault or stall: what ran, and that it ended
        report.error = f"{type(exc).__name__}: {exc}"
        _write(args, report, traces)
        raise
    except Stopped as exc:  # keep the runs done, marked interrupted, then exit 128 + N
        report.interrupted = exc.name
        _write(args, report, traces)
        files = [str(p) for p in (args.json, args.markdown, args.junit) if p is not None]
        print(f"verify: INTERRUPTED by {exc.name} after {len(report.records)} of "
              f"{report.planned} runs: not a pass" + (f"; the runs done, marked interrupted, "
                                                      f"are in {', '.join(files)}" if files
                                                      else ""), file=sys.stderr, flush=True)
        raise
    failures = report.failures
    _write(args, report, traces)
    if failures:
        print(f"verify: FAIL: {len(failures)} gate(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return ExitCode.VERIFY_FAILED
    print(f"verify: PASS: {len(report.records) + len(report.ranks)} of "
          f"{len(report.planned_cases)} runs asked for, in {report.seconds:.1f}s", flush=True)
    return ExitCode.OK


def _write(args: argparse.Namespace, report: VerifyReport, traces: list | None) -> None:
    """--trace, --json, --markdown and --junit of the report (--ranks runs included)."""
    if args.trace is not None:
        from harness.measure.trace import write_traces

        write_traces(traces, args.trace)
    if args.json is not None:
        write_json(args.json, report.to_dict(), "--json", indent=2)
    if args.markdown is not None:
        write_output(args.markdown, markdown_summary(report), "--markdown")
    if args.junit is not None:
        write_output(args.junit, junit_xml(report), "--junit")
