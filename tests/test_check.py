"""`spheres check REPORT_DIR`: an untouched report passes; every kind of tampering is named.

Each tampering is made on a copy of the session's one `analyze --quick` report, both as is (the
manifest catches it) and re-sealed with a fresh manifest where that matters (the recomputed
claims catch it without the manifest's help).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
from support import run_cli

from harness.figures.results import Check
from plumbing.report_folder import MANIFEST, seal

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "reports" / "2026-11-28-seed"  # written before reports were sealed
CURRENT = ROOT / "reports" / "2026-12-03-seed"  # the committed seed analysis, sealed


@pytest.fixture
def report(quick_report: Path, tmp_path: Path) -> Path:
    """A private copy of the quick report to tamper with."""
    copy = tmp_path / "report"
    shutil.copytree(quick_report, copy)
    return copy


def check(folder: Path, capsys) -> tuple[int, str]:
    code, out, err = run_cli(["check", str(folder)], capsys)
    return code, out + err


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def test_untouched_quick_report_passes(quick_report: Path, capsys):
    code, out = check(quick_report, capsys)
    assert code == 0, out
    assert "OK: every claim follows from the data" in out
    assert " 0 verdicts" not in out and " 0 run-record findings" not in out


@pytest.mark.parametrize("reseal", [False, True], ids=["as-is", "resealed"])
def test_a_figure_edited_in_results_json_is_caught(report: Path, capsys, reseal: bool):
    edit_json(report / "results.json", lambda d: d["training"].update(steps=d["meta"]["steps"] - 1))
    if reseal:
        seal(report)
    code, out = check(report, capsys)
    assert code == 1, out
    assert "check `steps-finished` (every requested step finished): results.json says PASS, " \
           "its figures give FAIL" in out
    assert "verdict: results.json says PASS, its checks give FAIL" in out
    assert ("results.json: changed since analyze wrote it" in out) != reseal


@pytest.mark.parametrize("reseal", [False, True], ids=["as-is", "resealed"])
def test_a_verdict_line_edited_in_analysis_md_is_caught(report: Path, capsys, reseal: bool):
    md = report / "analysis.md"
    text = md.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("- ✅ **PASS** every requested"))
    md.write_text(text.replace(line, line.replace("✅ **PASS**", "❌ **FAIL**")))
    if reseal:
        seal(report)
    code, out = check(report, capsys)
    assert code == 1, out
    assert "verdict line" in out and "'- ❌ **FAIL** every requested step finished" in out
    assert ("analysis.md: changed since analyze wrote it" in out) != reseal


def test_a_figure_line_edited_in_analysis_md_is_caught(report: Path, capsys):
    md = report / "analysis.md"
    text = md.read_text()
    line = next(ln for ln in text.splitlines() if "tokens/s); loss" in ln)
    md.write_text(text.replace(line, line.replace(" steps, ", " steps (all good), ", 1)))
    seal(report)
    code, out = check(report, capsys)
    assert code == 1 and "figure line" in out and "(all good)" in out, out


@pytest.mark.parametrize("name", ["timeline.png", "results.json", "trace.json", "analysis.md"])
def test_a_deleted_artifact_is_caught(report: Path, capsys, name: str):
    (report / name).unlink()
    code, out = check(report, capsys)
    assert code == 1, out
    assert f"{name}: listed in the manifest but missing" in out


def test_a_deleted_run_record_leaves_its_findings_unproven(report: Path, capsys):
    (report / "trace.json").unlink()
    seal(report)  # even a manifest that no longer lists it does not make the findings follow
    code, out = check(report, capsys)
    assert code == 1 and "trace.json (the run record) is missing" in out, out


def test_a_report_of_another_schema_version_exits_2(report: Path, capsys):
    edit_json(report / "results.json", lambda d: d.update(schema_version=2))
    seal(report)
    code, out = check(report, capsys)
    assert code == 2 and "schema_version 2" in out and "regenerate" in out, out
    (report / "results.json").write_text("[]")
    code, out = check(report, capsys)  # tampered into something else: a claim, not a version
    assert code == 1 and "results.json is not analyze's results" in out, out


def test_a_stray_file_is_caught(report: Path, capsys):
    (report / "notes.txt").write_text("added by hand\n")
    code, out = check(report, capsys)
    assert code == 1 and "notes.txt: not in the manifest" in out, out


def test_an_edited_run_record_is_caught(report: Path, capsys):
    """One batch span removed from trace.json, manifest re-sealed: the findings results.json
    states no longer follow from the record."""
    def drop_batch(data):
        events = data["traceEvents"]
        del events[next(i for i, e in enumerate(events) if e.get("cat") == "batch")]
    edit_json(report / "trace.json", drop_batch)
    seal(report)
    code, out = check(report, capsys)
    assert code == 1, out
    assert "finding `every-batch-once`: results.json says PASS" in out
    assert "the run record in trace.json gives FAIL" in out


def forge(report: Path, change) -> None:
    """A consistent forgery: results.json edited, analysis.md rendered again from it, the
    folder re-sealed. Only what the run record says can still catch it."""
    from harness.analysis.checks import conclude
    from harness.analysis.report import render
    from harness.figures.results import AnalysisResults

    edit_json(report / "results.json", change)
    results = AnalysisResults.from_json(json.loads((report / "results.json").read_text()))
    conclude(results)
    (report / "results.json").write_text(json.dumps(results.to_json(), indent=2))
    (report / "analysis.md").write_text(render(results))
    seal(report)


def test_a_consistent_forgery_of_the_waits_is_caught_by_the_run_record(report: Path, capsys):
    forge(report, lambda d: d["threads"]["workers"][0].update(wait_a_seconds=9.0))
    code, out = check(report, capsys)
    assert code == 1, out
    assert "threads: ks-worker-0 wait_a_seconds is 9.000000 in results.json" in out
    assert "FAIL: 1 claim does not follow" in out  # consistent: only the record disagrees


def test_a_consistent_forgery_of_a_finding_is_caught_by_the_run_record(report: Path, capsys):
    forge(report, lambda d: d["record"]["findings"]["barriers"].update(passed=False))
    code, out = check(report, capsys)
    assert code == 1, out
    assert "finding `barriers`: results.json says FAIL" in out
    assert "the run record in trace.json gives PASS" in out


def test_a_check_no_check_function_makes_is_caught(report: Path, capsys):
    """A verdict appended to results.json (and its line to analysis.md) outside build_checks
    does not follow from anything: check names it."""
    bogus = Check("made-up", "performance", "a claim no check makes", True, "42")
    edit_json(report / "results.json", lambda d: d["checks"].append(asdict(bogus)))
    seal(report)
    code, out = check(report, capsys)
    assert code == 1 and "check `made-up` (a claim no check makes): in results.json but its " \
                         "figures make no such check" in out, out


def test_a_new_check_is_rechecked_without_code_in_recheck(quick_report: Path, capsys,
                                                          monkeypatch):
    """check re-runs whatever build_checks makes: a check added to one of its sections now
    is demanded of the (older) report, which does not hold it."""
    from harness.analysis import checks

    drills = checks._drill_checks
    extra = Check("new-check", "synchronisation", "a check added after the report", True, "1")
    monkeypatch.setattr(checks, "_drill_checks", lambda r: drills(r) + [extra])
    code, out = check(quick_report, capsys)
    assert code == 1, out
    assert "check `new-check` (a check added after the report): its figures make it" in out


def test_not_a_report_exits_2(tmp_path: Path, capsys):
    code, out = check(tmp_path / "missing", capsys)
    assert code == 2 and "no such folder" in out, out
    code, out = check(tmp_path, capsys)
    assert code == 2 and "not a spheres report" in out, out
    assert len(out.strip().splitlines()) == 1


def test_a_report_without_manifest_exits_2(report: Path, capsys):
    (report / MANIFEST).unlink()
    code, out = check(report, capsys)
    assert code == 2 and "no .spheres-manifest.json" in out and "re-run" in out, out
    (report / MANIFEST).write_text("{not json")
    code, out = check(report, capsys)
    assert code == 2 and "not a spheres report manifest" in out, out


def test_committed_seed_report_predates_the_manifest(capsys):
    """reports/2026-11-28-seed was written before reports were sealed (and before the checks
    added since): refused with exit 2, naming the fix, never re-checked as if it were current."""
    code, out = check(COMMITTED, capsys)
    assert code == 2 and "no .spheres-manifest.json" in out and "re-run" in out, out


def test_committed_seed_analysis_rechecks_from_its_own_data(capsys):
    """The committed seed analysis (a full `spheres analyze`, sealed by it): every file against
    its manifest, every verdict, finding and line of analysis.md follows from its data."""
    code, out = check(CURRENT, capsys)
    assert code == 0 and "every claim follows" in out, out


def test_a_consistent_forgery_of_a_gradient_error_is_caught_by_its_tolerance(
        report: Path, capsys, monkeypatch):
    """A float64 gradient error raised past its tolerance with the run's failure list left
    empty, every claim re-derived as the old check did (the failure list alone: PASS) and
    re-sealed: the check judges the figure itself (before: "OK")."""
    from harness.analysis import checks

    def change(d):
        row = next(x for x in d["equivalence"]["records"] if x["dtype"] == "float64")
        row["grad_error"] = 4.18e-06
    with monkeypatch.context() as m:
        m.setattr(checks, "_beyond_tolerance", lambda x: False)
        forge(report, change)
    stored = json.loads((report / "results.json").read_text())["checks"]
    assert all(c["passed"] for c in stored if c["id"] == "fast-equals-reference")  # forged PASS
    code, out = check(report, capsys)
    assert code == 1, out
    assert "check `fast-equals-reference`" in out and "results.json says PASS" in out


def test_a_consistent_forgery_of_a_digest_is_caught_by_the_other_runs(report: Path, capsys,
                                                                     monkeypatch):
    """One run's gradient digest changed, no bitwise failure written, claims re-derived from
    the failure lists alone and re-sealed: the digests themselves disagree."""
    from harness.analysis import checks

    def change(d):
        d["equivalence"]["records"][-1]["grad_hash"] = "0" * 64
    with monkeypatch.context() as m:
        m.setattr(checks, "_hash_mismatches", lambda records: [])
        forge(report, change)
    code, out = check(report, capsys)
    assert code == 1, out
    assert "check `bitwise-reduction`" in out and "results.json says PASS" in out
