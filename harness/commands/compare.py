"""`spheres compare`: a markdown table of what changed between two runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.preflight import Outputs
from plumbing.errors import ExitCode

DESCRIPTION = ("Compare two results.json (analyze), two bench summary.json or two "
               "pytest-benchmark JSON files (any other input, or two of different kinds: exit "
               "2); prints every figure and verdict that changed; exit 1 if a verdict got worse "
               "or a benchmark regressed beyond its noise or went missing.")
OUTPUTS: Outputs = ()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", type=Path, help="the earlier run")
    p.add_argument("b", type=Path, help="the later run")


def run(args: argparse.Namespace) -> int:
    from harness.bench.compare import compare_documents, load_pair

    old, new = load_pair(args.a, args.b)
    report = compare_documents(old, new, str(args.a), str(args.b))
    print("\n".join(report.lines), flush=True)
    return ExitCode.VERIFY_FAILED if report.failed else ExitCode.OK
