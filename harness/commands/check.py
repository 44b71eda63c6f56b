"""`spheres check REPORT_DIR`: re-derive every claim of a report from the files in its folder.

The work is harness/analysis/recheck.py; this module prints what it found, one line per claim
that does not follow, and turns it into the exit code: 0 every claim follows, 1 one or more do
not, 2 the folder is not a sealed spheres report (no manifest, another schema version).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.preflight import Outputs
from plumbing.errors import ExitCode

DESCRIPTION = ("Re-check a report folder written by `spheres analyze`: every file against its "
               "SHA-256 manifest, every verdict recomputed from results.json by the checks "
               "analyze ran, the run record's findings re-derived from trace.json, and "
               "analysis.md rendered again and compared line by line; exit 1 naming every "
               "claim that does not follow.")
OUTPUTS: Outputs = ()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("report", type=Path, metavar="REPORT_DIR",
                   help="the folder `spheres analyze --out` wrote")


def run(args: argparse.Namespace) -> int:
    from harness.analysis.recheck import recheck

    found = recheck(args.report)
    where = f"check: {args.report}"
    for note in found.notes:
        print(f"{where}: note: {note}", flush=True)
    done = (f"{found.files} files against the manifest, {found.checks} verdicts, "
            f"{found.findings} run-record findings, {found.lines} lines of analysis.md")
    if found.passed:
        print(f"{where}: OK: every claim follows from the data ({done} re-checked)", flush=True)
        return ExitCode.OK
    n = len(found.problems)
    print(f"{where}: FAIL: {n} claim{'s' if n > 1 else ''} do{'' if n > 1 else 'es'} not "
          "follow from the data "
          f"({done} re-checked):", flush=True)
    for problem in found.problems:
        print(f"  - {problem}", flush=True)
    return ExitCode.VERIFY_FAILED
