"""`spheres verify --junit FILE`: the equivalence gates as JUnit XML for CI systems.

One `<testcase>` per (preset, dtype, thread count), the same rows as `--markdown` and the
printed table (all read `VerifyReport`: its records, then its `--ranks` records, one case per
(preset, dtype, R, T)). A failed run carries one `<failure>` whose message is its first failed
gate and whose text lists every failure with the worst tensor and its error, so a CI page shows
what broke without opening the log. A case asked for that never ran is a `<failure>`
(`not-run`), and a sweep ended early by an engine's error holds one more case with an `<error>`:
what did not happen is never missing from the count.
Only the elements and attributes every JUnit consumer requires (the common Jenkins/Ant schema):
testsuites > testsuite(name, tests, failures, errors, skipped, time) > testcase(name, classname,
time) > failure(message, type). A sweep stopped by a signal is written with the runs done and
one more case, `interrupted`, holding an `<error>` "interrupted by SIGTERM": incomplete, never
a pass.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from harness.verify.gates import RunRecord, VerifyReport, case_name

SUITE_NAME = "spheres.verify"


def _failure_text(r: RunRecord) -> str:
    lines = list(r.failures)
    if hasattr(r, "worst_tensor"):
        lines.append(f"worst gradient tensor {r.worst_tensor}: relative L2 {r.grad_error:.3e}; "
                     f"loss relative error {r.loss_error:.3e}; worst trajectory tensor "
                     f"{r.trajectory_worst}: relative L2 {r.trajectory_error:.3e}")
    return "\n".join(lines)


def _case(suite: ET.Element, name: str, classname: str, seconds: float) -> ET.Element:
    return ET.SubElement(suite, "testcase", {"name": name, "classname": classname,
                                             "time": f"{seconds:.3f}"})


def junit_xml(report: VerifyReport) -> str:
    """The whole report as one JUnit XML document (UTF-8 text with an XML declaration)."""
    runs = [*report.records, *report.ranks]
    not_run = [] if report.interrupted else report.not_run
    ended = [why for why in (report.error and f"ended early: {report.error}",
                             report.interrupted and f"interrupted by {report.interrupted}")
             if why]
    failed = sum(1 for r in runs if r.failures) + len(not_run)
    counts = {"tests": str(len(runs) + len(not_run) + len(ended)), "failures": str(failed),
              "errors": str(len(ended)), "skipped": "0", "time": f"{report.seconds:.3f}"}
    root = ET.Element("testsuites", {"name": "spheres verify", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": SUITE_NAME, **counts})
    for r in runs:
        kind = ".ranks" if hasattr(r, "ranks") else ""
        case = _case(suite, case_name(r), f"{SUITE_NAME}{kind}.{r.preset}.{r.dtype}", r.seconds)
        if r.failures:
            check = r.failures[0].split(":", 1)[0]
            failure = ET.SubElement(case, "failure", {"message": r.failures[0], "type": check})
            failure.text = _failure_text(r)
    for name in not_run:
        case = _case(suite, name, f"{SUITE_NAME}.{name.split()[0]}.{name.split()[1]}", 0.0)
        ET.SubElement(case, "failure", {"message": f"not-run: {name}: asked for, never ran",
                                        "type": "not-run"})
    for why in ended:
        kind = "interrupted" if why.startswith("interrupted") else "ended-early"
        case = _case(suite, kind, f"{SUITE_NAME}.run", 0.0)
        error = ET.SubElement(case, "error", {"message": why.split("\n")[0], "type": kind})
        error.text = (f"{why} after {len(runs)} of {len(report.planned_cases) or report.planned}"
                      " runs: this file is incomplete")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
