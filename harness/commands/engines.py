"""`spheres engines`: the installed engines, and with --measure every engine side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.commands import options as o
from harness.commands.preflight import Outputs
from plumbing.cores import usable_cores
from plumbing.errors import ExitCode, InputError
from plumbing.outputs import write_json, write_output
from reference.config import PRESETS, preset

DESCRIPTION = ("Every engine of the entry-point group kissing_spheres.engines: name, factory, "
               "distribution, and whether it loads here.")
OUTPUTS: Outputs = (("--json", "json", "file"), ("--markdown", "markdown", "file"))


MEASURE_OPTIONS = {"engine", "preset", "group_size", "threads", "dtype", "rounds", "json",
                   "markdown", "stall_timeout"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--measure", action="store_true",
                   help="also measure every available engine side by side on one workload: "
                        "tokens/s, share of the sgemm limit, error vs reference, bitwise, memory")
    p.add_argument("--engine", action="append", default=None, metavar="ENGINE",
                   help="with --measure: only these engines (repeatable; default: all available "
                        "plus the example exec engine)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="with --measure: workload preset (default: tiny)")
    p.add_argument("--group-size", type=o.positive_int, default=None,
                   help="with --measure: batches per step (default: min(G, 2))")
    p.add_argument("--threads", type=o.positive_int, default=None,
                   help="with --measure: threads (default: cores); bitwise compares 1 vs this")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="with --measure: precision of the engines under test (default: float32)")
    p.add_argument("--rounds", type=o.positive_int, default=3,
                   help="with --measure: timed steps per engine, best counts (default: 3)")
    p.add_argument("--json", type=Path, default=None, help="with --measure: write the figures")
    p.add_argument("--markdown", type=Path, default=None, help="with --measure: write a table")
    from harness.figures.thresholds import MIN_ENGINE_TIMEOUT

    p.add_argument("--stall-timeout", type=o.timeout_seconds(MIN_ENGINE_TIMEOUT), default=600.0,
                   help="seconds an engine may take to answer one request, at least "
                        f"{MIN_ENGINE_TIMEOUT:g} (default: 600)")


def run(args: argparse.Namespace) -> int:
    """The registry; with --measure, every engine side by side."""
    from harness.bench.engine_compare import available_specs, compare, markdown
    from harness.figures.bench_metrics import Workload
    from harness.run.plugins import format_engines, list_engines

    if not args.measure:  # the options of --measure mean nothing without it: refused
        given = sorted((MEASURE_OPTIONS & getattr(args, "explicit", set())) - {"engine"}
                       | ({"engine"} if args.engine else set()))  # an append: None unless given
        if given:
            names = ", ".join(f"--{d.replace('_', '-')}" for d in given)
            raise InputError(f"{names} {'apply' if len(given) > 1 else 'applies'} only with "
                             "--measure; add --measure or drop "
                             f"{'them' if len(given) > 1 else 'it'}")
    print(format_engines(list_engines()), flush=True)
    if not args.measure:
        return ExitCode.OK
    for path in (args.json, args.markdown):
        if path is not None and not path.parent.is_dir():
            raise InputError(f"output folder {path.parent} does not exist; create it first")
    cfg = preset(args.preset)
    work = Workload(args.preset, args.group_size or min(cfg.train.group_size, 2), args.dtype,
                    args.threads or usable_cores(), args.rounds)
    specs = args.engine or available_specs()
    from harness.run.stop import Stopped, deferred

    try:
        with deferred("the engine being measured is ended"):
            result = compare(specs, work, stall_timeout=args.stall_timeout,
                             say=lambda line: print(line, flush=True))
    except Stopped as exc:  # the child's process group was ended; nothing reads as finished
        print(f"engines: INTERRUPTED by {exc.name}: the measurement is incomplete; no --json "
              "or --markdown written", flush=True)
        raise
    if args.json is not None:
        write_json(args.json, result.to_json(), "--json", indent=2)
    if args.markdown is not None:
        write_output(args.markdown, "# Engines side by side\n\n" + markdown(result),
                     "--markdown")
    return _verdict(result)


def _verdict(result) -> int:
    """Asked to measure and did not: a failure (exit 1) naming each engine and why."""
    missing = [row for row in result.rows if row.error]
    if result.error or not result.rows or missing:
        why = result.error or "; ".join(f"{row.engine}: {row.error}" for row in missing) \
            or "no engine to measure"
        print(f"engines: FAIL: {len(missing) or len(result.rows) or 1} of "
              f"{max(len(result.rows), 1)} engines not measured: {why}", file=sys.stderr,
              flush=True)
        return ExitCode.VERIFY_FAILED
    print(f"engines: measured {len(result.rows)} of {len(result.rows)} engines", flush=True)
    return ExitCode.OK
