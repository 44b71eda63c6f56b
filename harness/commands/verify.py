"""`spheres verify` as a command: options to gates, gates to files and an exit code.

Kept apart from `harness.verify.gates` (the gates) so that the renderers of a finished report
(`harness.verify.junit`, markdown) can import the report types without an import cycle.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable

from harness.figures.thresholds import GRAD_TOL
from harness.run.export import check_writable
from harness.verify.gates import markdown_summary, run_verify
from harness.verify.junit import junit_xml
from plumbing.atomic import atomic_write_text
from plumbing.errors import InputError
from reference.config import PRESETS, preset


def _split(text: str, allowed: Iterable[str], what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise InputError(f"--{what} {text!r}: choose from {', '.join(allowed)}")
    return items


def cmd_verify(args: argparse.Namespace) -> int:
    from harness.run.engines import parse_faults
    from harness.run.thread_counts import parse_threads

    threads = parse_threads(args.threads)
    presets = _split(args.presets, PRESETS, "presets")
    dtypes = _split(args.dtypes, GRAD_TOL, "dtypes")
    trace = getattr(args, "trace", None)
    for path in (args.json, args.markdown, getattr(args, "junit", None), trace):
        if path is not None:
            check_writable(path)
    traces: list | None = [] if trace is not None else None
    configs = [preset(name, seed=args.seed) for name in presets]
    from harness.run.progress import from_args

    with from_args(args, "verify", len(configs) * len(dtypes) * len(threads),
                   unit_name="case") as live:
        report = run_verify(configs, dtypes, threads,
                            trajectory_steps=args.trajectory_steps,
                            stall_timeout=args.stall_timeout, faults=parse_faults(args.inject),
                            out=live.write_out, live=live, traces=traces,
                            engine=args.engine, require_bitwise=args.require_bitwise)
    if trace is not None:
        from harness.measure.trace import write_traces

        write_traces(traces, trace)
    ranks, extra_json, extra_md = [], {}, ""
    if getattr(args, "ranks", None):  # SPEC 10: the same gates across MPI ranks
        from harness.verify.ranks import rank_markdown, to_dicts, verify_across_ranks

        ranks = verify_across_ranks(args.ranks, configs, dtypes, threads, report.records,
                                    steps=args.trajectory_steps,
                                    stall_timeout=args.stall_timeout,
                                    out=lambda line: print(line, flush=True))
        extra_json, extra_md = {"ranks": to_dicts(ranks)}, rank_markdown(ranks)
    failures = report.failures + [f for r in ranks for f in r.failures]
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(report.to_dict() | extra_json, indent=2))
    if args.markdown is not None:
        atomic_write_text(args.markdown, markdown_summary(report) + extra_md)
    if getattr(args, "junit", None) is not None:
        atomic_write_text(args.junit, junit_xml(report))
    if failures:
        print(f"verify: FAIL: {len(failures)} gate(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print(f"verify: PASS: {len(report.records) + len(ranks)} runs in {report.seconds:.1f}s",
          flush=True)
    return 0
