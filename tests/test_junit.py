"""`spheres verify --junit`: the required JUnit elements, counts that match, failures named."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from support import run_cli

from harness.verify.gates import RunRecord, VerifyReport, markdown_summary
from harness.verify.junit import junit_xml


def _record(threads: int, failures: list[str]) -> RunRecord:
    return RunRecord("tiny", "float32", threads, 1e-7, 2e-6, "h.0.mlp.w_fc", "a" * 64, "b" * 64,
                     "c" * 64, 3e-6, "wte", [4, 4], 0, 0.25, list(failures))


def _check_schema(root: ET.Element) -> ET.Element:
    """The elements and attributes JUnit consumers require; returns the one testsuite."""
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    for attr in ("name", "tests", "failures", "errors", "skipped", "time"):
        assert attr in suite.attrib, attr
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases)
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failed)
    for case in cases:
        for attr in ("name", "classname", "time"):
            assert case.get(attr), attr
        float(case.get("time"))
    for case in failed:
        assert case.find("failure").get("message")
    return suite


def test_junit_counts_and_failure_carry_the_worst_tensor():
    report = VerifyReport([_record(1, []),
                           _record(2, ["grad-equivalence: preset tiny, float32, T=2: worst "
                                       "tensor h.0.mlp.w_fc relative L2 2.000e-06 > 1e-12"])],
                          seconds=1.5)
    suite = _check_schema(ET.fromstring(junit_xml(report)))
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = suite.find("testcase[@name='tiny float32 T=2']/failure")
    assert failure.get("type") == "grad-equivalence"
    assert "h.0.mlp.w_fc" in failure.get("message") and "2.000e-06" in failure.text
    assert suite.find("testcase[@name='tiny float32 T=1']/failure") is None


def test_verify_junit_counts_a_failing_gate_and_matches_markdown_rows(capsys, monkeypatch,
                                                                      tmp_path, no_thread_leak):
    import harness.verify.gates as verify

    # float32 gradients cannot match float64 ones to 1e-12: every float32 case must fail
    monkeypatch.setitem(verify.GRAD_TOL, "float32", 1e-12)
    junit, md = tmp_path / "v.xml", tmp_path / "v.md"
    code, _, _ = run_cli(["verify", "--presets", "tiny", "--threads", "1,3", "--dtypes",
                          "float64,float32", "--junit", str(junit),
                          "--markdown", str(md)], capsys)
    assert code == 1
    suite = _check_schema(ET.parse(junit).getroot())
    assert suite.get("tests") == "4" and suite.get("failures") == "2"
    failing = {c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None}
    assert failing == {"tiny float32 T=1", "tiny float32 T=3"}
    for case in suite.findall("testcase"):
        failure = case.find("failure")
        if failure is not None:
            assert failure.get("message").startswith("grad-equivalence")
            assert "worst tensor" in failure.get("message")
    # markdown has the same rows, with the same verdicts
    rows = [ln for ln in md.read_text().splitlines() if ln.startswith("| tiny |")]
    assert len(rows) == 4
    assert sum(ln.rstrip().endswith("FAIL |") for ln in rows) == 2


def test_markdown_and_junit_iterate_the_same_records():
    report = VerifyReport([_record(t, [] if t % 2 else ["bitwise-grads: x"]) for t in (1, 2, 3)])
    names = [c.get("name") for c in ET.fromstring(junit_xml(report)).iter("testcase")]
    rows = [ln for ln in markdown_summary(report).splitlines() if ln.startswith("| tiny |")]
    assert [n.split("T=")[1] for n in names] == [r.split("|")[3].strip() for r in rows]
