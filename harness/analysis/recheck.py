"""A report re-checked from its own data: every claim of analysis.md must follow from the folder.

`spheres check DIR` (harness/commands/check.py) calls `recheck`, which proves four things and
names every claim that does not follow:

1. the files are what analyze wrote: each one listed in `.spheres-manifest.json` is there with
   its sha256, and nothing else is (`plumbing.report_folder.manifest_problems`);
2. the verdicts follow from the figures: `results.json` is read back into the typed results and
   `harness.analysis.checks.conclude` (the very functions analyze ran) recomputes every check,
   the known issues, the recommendations and the verdict, compared with what the file says.
   Whatever section a check belongs to, it comes from `build_checks`, so a new check is
   re-checked with no code here;
3. the run record's findings follow from the run record: `trace.json` is read back into a
   record (`harness.measure.trace_record`) and `harness.measure.evidence` re-derives the
   findings and the 12-fold structure the checks were built on;
4. analysis.md says what the data say: it is rendered again from the recomputed results
   (`harness.analysis.report.render`, as analyze did) and compared line by line, verdict lines
   first; every file it links to must exist.

Steps 2-4 do not trust the manifest: a report re-sealed after an edit is still caught when the
edit changes a claim, or when the run record contradicts it. A figure measured outside any
artifact (throughput, memory, an equivalence run's error) cannot be re-measured here: the
manifest's sha256 is all that guards it. A folder with no manifest (not a report, or one made
before reports were sealed with sha256) is refused with exit 2 before anything is compared.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.analysis.checks import conclude
from harness.analysis.report import render
from harness.figures.results import SCHEMA_VERSION, AnalysisResults, Check
from harness.figures.serial import check_schema, to_json
from plumbing.errors import InputError
from plumbing.report_folder import MANIFEST, manifest_problems, read_manifest

RESULTS, MARKDOWN = "results.json", "analysis.md"
MOST_LINES = 12  # markdown differences named one by one; the rest are counted
VERDICT_LINE = re.compile(r"^- (✅|❌) \*\*(PASS|FAIL)\*\* ")
LINK = re.compile(r"\]\(([^)\s]+)\)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class Recheck:
    """What `spheres check` found: the claims that do not follow, and what it re-derived."""

    folder: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be re-derived, and why
    files: int = 0  # files verified against the manifest
    checks: int = 0  # verdicts recomputed
    findings: int = 0  # run-record findings re-derived from trace.json
    lines: int = 0  # lines of analysis.md compared

    @property
    def passed(self) -> bool:
        return not self.problems


def require_report(folder: Path) -> None:
    """InputError (exit 2) unless `folder` is a sealed spheres report."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; give a report folder that "
                         "`spheres analyze --out` wrote")
    if read_manifest(folder) is not None:
        return
    if (folder / MANIFEST).exists():
        raise InputError(f"{folder}: {MANIFEST} is not a spheres report manifest (unreadable "
                         "or of another kind); re-run `spheres analyze --out` to re-create it")
    if (folder / RESULTS).exists():
        raise InputError(f"{folder}: has {RESULTS} but no {MANIFEST}: made by a spheres older "
                         "than sealed reports (or its manifest was deleted), so its files "
                         "cannot be proven; re-run `spheres analyze --out` to get a report "
                         "that can be re-checked")
    raise InputError(f"{folder}: not a spheres report (no {MANIFEST}, no {RESULTS}); give "
                     "the folder `spheres analyze --out` wrote")


def recheck(folder: Path) -> Recheck:
    """Re-derive every claim of the report in `folder` from its own files."""
    folder = Path(folder)
    require_report(folder)
    out = Recheck(folder)
    out.problems += manifest_problems(folder)
    out.files = len(read_manifest(folder) or {})
    stored = _load(folder, out)
    if stored is None:
        return out
    fresh = copy.deepcopy(stored)
    conclude(fresh)
    _compare_conclusions(stored, fresh, out)
    _compare_record(stored, folder, out)
    _compare_markdown(fresh, folder, out)
    return out


def _load(folder: Path, out: Recheck) -> AnalysisResults | None:
    """results.json as typed results; None (and a problem) when there is none to read."""
    path = folder / RESULTS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        out.problems.append(f"{RESULTS} is missing: no verdict of {MARKDOWN} can be re-derived")
        return None
    except (OSError, ValueError) as exc:
        out.problems.append(f"{RESULTS} is not readable JSON ({exc}): no verdict of "
                            f"{MARKDOWN} can be re-derived")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("schema_version"), int):
        out.problems.append(f"{RESULTS} is not analyze's results (no schema_version): no "
                            f"verdict of {MARKDOWN} can be re-derived")
        return None
    check_schema(data, SCHEMA_VERSION, str(path))  # another version's report: exit 2
    try:
        return AnalysisResults.from_json(data, str(path))
    except InputError as exc:
        out.problems.append(f"{RESULTS} does not read as analyze's results: {exc}")
        return None


def _mark(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _compare_checks(stored: list[Check], fresh: list[Check], out: Recheck) -> None:
    keys = [(c.id, c.title) for c in fresh]
    for c in stored:
        if (c.id, c.title) not in keys:
            out.problems.append(f"check `{c.id}` ({c.title}): in {RESULTS} but its figures "
                                "make no such check")
    mine = {(c.id, c.title): c for c in stored}
    for c in fresh:
        old = mine.get((c.id, c.title))
        if old is None:
            out.problems.append(f"check `{c.id}` ({c.title}): its figures make it "
                                f"({_mark(c.passed)}: {c.figure}) but {RESULTS} leaves it out")
        elif old.passed != c.passed or old.section != c.section:
            out.problems.append(f"check `{c.id}` ({c.title}): {RESULTS} says "
                                f"{_mark(old.passed)}, its figures give {_mark(c.passed)}: "
                                f"{c.figure}")
        elif old.figure != c.figure:
            out.problems.append(f"check `{c.id}` ({c.title}): {RESULTS} gives the figure "
                                f"'{old.figure}', its data give '{c.figure}'")
    out.checks = len(fresh)


def _compare_conclusions(stored: AnalysisResults, fresh: AnalysisResults, out: Recheck) -> None:
    """Checks, verdict, known issues and recommendations: as written against as recomputed."""
    _compare_checks(stored.checks, fresh.checks, out)
    if stored.verdict != fresh.verdict:
        out.problems.append(f"verdict: {RESULTS} says {stored.verdict}, its checks give "
                            f"{fresh.verdict}")
    for name in ("known_issues", "recommendations"):
        old, new = getattr(stored, name), getattr(fresh, name)
        for line in (x for x in old if x not in new):
            out.problems.append(f"{name.replace('_', ' ')}: {RESULTS} lists '{line}', which "
                                "its figures do not give")
        for line in (x for x in new if x not in old):
            out.problems.append(f"{name.replace('_', ' ')}: its figures give '{line}', which "
                                f"{RESULTS} leaves out")


def _same_figure(written: str, derived: str) -> bool:
    """Equal text, numbers within one unit of their last printed digit: trace.json keeps
    times to 0.001 us, so a derived microsecond figure may round the other way."""
    if written == derived:
        return True
    if NUMBER.split(written) != NUMBER.split(derived):
        return False
    for a, b in zip(NUMBER.findall(written), NUMBER.findall(derived), strict=True):
        unit = 10.0 ** -len(a.partition(".")[2])
        if abs(float(a.replace(",", "")) - float(b.replace(",", ""))) > unit * 1.001:
            return False
    return True


def _compare_record(stored: AnalysisResults, folder: Path, out: Recheck) -> None:
    """The findings and structure in results.json against those of trace.json's record."""
    from harness.measure import evidence
    from harness.measure.trace_record import read_trace

    name = stored.record.trace
    if name is None:
        out.notes.append("no run record in this report (training did not run): its findings "
                         "are not re-derived")
        return
    if not (folder / name).is_file():
        out.problems.append(f"{name} (the run record) is missing: the findings "
                            f"{', '.join(sorted(stored.record.findings))} cannot be re-derived")
        return
    trace = read_trace(folder / name)
    if trace.snapshot is None:
        out.notes.append(f"{name}: {trace.why_not}; its findings are taken from {RESULTS}, "
                         "not re-derived")
        return
    _compare_findings(stored, evidence.findings(trace.snapshot), name, out)
    if to_json(evidence.structure(trace.snapshot)) != to_json(stored.structure):
        out.problems.append(f"structure: the positions and sphere levels in {RESULTS} are not "
                            f"those of the run record in {name}")
    _compare_threads(stored, trace.snapshot, name, out)


def _compare_findings(stored: AnalysisResults, derived: dict, name: str, out: Recheck) -> None:
    for fid in sorted(set(derived) | set(stored.record.findings)):
        old, new = stored.record.findings.get(fid), derived.get(fid)
        if old is None or new is None:
            out.problems.append(f"finding `{fid}`: " + (f"{name} gives it, {RESULTS} leaves it "
                                "out" if old is None else f"in {RESULTS}, not a finding of "
                                "the run record"))
        elif old.passed != new.passed or not _same_figure(old.figure, new.figure):
            out.problems.append(f"finding `{fid}`: {RESULTS} says {_mark(old.passed)} "
                                f"({old.figure}), the run record in {name} gives "
                                f"{_mark(new.passed)} ({new.figure})")
    out.findings = len(derived)


def _compare_threads(stored: AnalysisResults, snapshot, name: str, out: Recheck) -> None:
    """Per-thread batches and seconds (the Workers, Node Zero and Synchronisation tables)
    against the run record's. CPU seconds come from each thread's clock, not the record, and
    a worker's position from what it said: both taken as written. Seconds are sums of spans
    whose ends trace.json rounds, so each may differ by that rounding times the spans."""
    from harness.analysis.phases import record_stats
    from harness.measure.trace_record import ROUNDING_S

    written = stored.threads.all_threads
    derived = record_stats(snapshot, {t.name: t.cpu_seconds for t in written}).all_threads
    if [t.name for t in derived] != [t.name for t in written]:
        out.problems.append(f"threads: {RESULTS} lists {[t.name for t in written]}, the run "
                            f"record in {name} {[t.name for t in derived]}")
        return
    spans = {log.name: len(log.spans) for log in snapshot.threads}
    for old, new in zip(written, derived, strict=True):
        slack = 2 * ROUNDING_S * (spans.get(new.name, 0) + 1)
        for key, value in to_json(new).items():
            was = getattr(old, key)
            if key in ("position", "cpu_seconds") or was == value:
                continue
            if isinstance(value, float) and isinstance(was, float) and abs(was - value) <= slack:
                continue
            out.problems.append(f"threads: {new.name} {key} is {_num(was)} in {RESULTS}, "
                                f"{_num(value)} in the run record in {name}")


def _num(value: object) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _shorten(line: str, most: int = 150) -> str:
    return line if len(line) <= most else line[:most - 3] + "..."


def _compare_markdown(fresh: AnalysisResults, folder: Path, out: Recheck) -> None:
    """analysis.md as written against as rendered from the recomputed results."""
    try:
        written = (folder / MARKDOWN).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        out.problems.append(f"{MARKDOWN} cannot be read ({type(exc).__name__}): none of its "
                            "claims can be compared")
        return
    expected = render(fresh).splitlines()
    out.lines = len(written)
    found = []
    matcher = difflib.SequenceMatcher(None, written, expected, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            old = written[i1 + k] if i1 + k < i2 else None
            new = expected[j1 + k] if j1 + k < j2 else None
            if not (old or "").strip() and not (new or "").strip():
                continue  # a blank line more or less: the claims around it are named
            found.append(_line_problem(i1 + k + 1 if old is not None else i2, old, new))
    verdicts = [p for p in found if p.startswith("verdict")]
    others = [p for p in found if not p.startswith("verdict")]
    out.problems += verdicts + others[:MOST_LINES]
    if len(others) > MOST_LINES:
        out.problems.append(f"{MARKDOWN}: {len(others) - MOST_LINES} more lines do not follow "
                            f"from {RESULTS}")
    for target in sorted({m for line in written for m in LINK.findall(line)}):
        if "://" not in target and not target.startswith("#") \
                and not (folder / target).is_file():
            out.problems.append(f"{MARKDOWN} links to {target}, which the folder does not hold")


def _line_problem(number: int, old: str | None, new: str | None) -> str:
    is_verdict = any(x is not None and VERDICT_LINE.match(x) for x in (old, new))
    kind = "verdict" if is_verdict else "figure"
    where = f"{kind} line {number} of {MARKDOWN}"
    if old is None:
        return f"{where}: missing; the data give '{_shorten(new or '')}'"
    if new is None:
        return f"{where}: '{_shorten(old)}' does not follow from the data (no such line)"
    return f"{where}: '{_shorten(old)}', but the data give '{_shorten(new)}'"
