"""`spheres verify --junit FILE`: the equivalence gates as JUnit XML for CI systems.

One `<testcase>` per (preset, dtype, thread count), the same rows as `--markdown` and the
printed table (both iterate `VerifyReport.records` in order). A failed run carries one
`<failure>` whose message is its first failed gate and whose text lists every failure with the
worst tensor and its error, so a CI page shows what broke without opening the log.
Only the elements and attributes every JUnit consumer requires (the common Jenkins/Ant schema):
testsuites > testsuite(name, tests, failures, errors, skipped, time) > testcase(name, classname,
time) > failure(message, type). A sweep stopped by a signal is written with the runs done and
one more case, `interrupted`, holding an `<error>` "interrupted by SIGTERM": incomplete, never
a pass.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from harness.verify.gates import RunRecord, VerifyReport

SUITE_NAME = "spheres.verify"


def case_name(r: RunRecord) -> str:
    """The row's identity, shared with the markdown table: preset, dtype, thread count."""
    return f"{r.preset} {r.dtype} T={r.threads}"


def _failure_text(r: RunRecord) -> str:
    lines = list(r.failures)
    lines.append(f"worst gradient tensor {r.worst_tensor}: relative L2 {r.grad_error:.3e}; "
                 f"loss relative error {r.loss_error:.3e}; worst trajectory tensor "
                 f"{r.trajectory_worst}: relative L2 {r.trajectory_error:.3e}")
    return "\n".join(lines)


def junit_xml(report: VerifyReport) -> str:
    """The whole report as one JUnit XML document (UTF-8 text with an XML declaration)."""
    failed = sum(1 for r in report.records if not r.passed)
    stopped = 1 if report.interrupted else 0  # an interrupted sweep: one error case says so
    counts = {"tests": str(len(report.records) + stopped), "failures": str(failed),
              "errors": str(stopped), "skipped": "0", "time": f"{report.seconds:.3f}"}
    root = ET.Element("testsuites", {"name": "spheres verify", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": SUITE_NAME, **counts})
    for r in report.records:
        case = ET.SubElement(suite, "testcase", {
            "name": case_name(r), "classname": f"{SUITE_NAME}.{r.preset}.{r.dtype}",
            "time": f"{r.seconds:.3f}"})
        if r.failures:
            check = r.failures[0].split(":", 1)[0]
            failure = ET.SubElement(case, "failure", {"message": r.failures[0], "type": check})
            failure.text = _failure_text(r)
    if report.interrupted:
        case = ET.SubElement(suite, "testcase", {"name": "interrupted",
                                                 "classname": f"{SUITE_NAME}.run", "time": "0"})
        error = ET.SubElement(case, "error", {
            "message": f"interrupted by {report.interrupted}", "type": "interrupted"})
        error.text = (f"interrupted by {report.interrupted} after {len(report.records)} of "
                      f"{report.planned} runs: this file is incomplete")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
