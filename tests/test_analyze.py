"""`spheres analyze --quick`: a complete report whose numbers are those of results.json; an
injected fault turns verdicts to FAIL; bad --out or --data leaves nothing behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import run_cli

from harness.analysis.report import SECTIONS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# quick_report: one `analyze --quick` report for the session (tests/conftest.py)


def test_report_has_every_section(quick_report: Path):
    text = (quick_report / "analysis.md").read_text()
    for section in SECTIONS:
        assert (f"## {section.heading}" in text) != section.optional, section.heading
    assert "PASS" in text and "CPU seconds / wall seconds / cores" in text


def test_plots_are_valid_pngs(quick_report: Path):
    results = json.loads((quick_report / "results.json").read_text())
    names = set(results["plots"].values())
    assert {"loss.png", "throughput.png", "cpu_per_thread.png", "cpu_over_time.png",
            "memory.png", "equivalence.png"} <= names
    for name in names:
        data = (quick_report / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name
        assert f"]({name})" in (quick_report / "analysis.md").read_text()


def test_report_numbers_come_from_results_json(quick_report: Path):
    results = json.loads((quick_report / "results.json").read_text())
    text = (quick_report / "analysis.md").read_text()
    assert results["checks"], "no checks were made"
    for check in results["checks"]:
        mark = "PASS" if check["passed"] else "FAIL"
        assert f"**{mark}** {check['title']}: {check['figure']}" in text, check["title"]
    for point in results["performance"]["throughput"]:
        assert f"| {point['threads']} | {point['tokens_per_s']:,.0f} |" in text
    tr = results["training"]
    assert f"{tr['tokens_per_s']:,.0f} tokens/s" in text
    perf = results["performance"]
    assert f"= {perf['cpu_utilisation']:.1%}" in text
    # CPU use is CPU seconds / wall seconds / cores, not the seed's arithmetic
    assert perf["cpu_utilisation"] == pytest.approx(
        perf["cpu_seconds"] / perf["wall_seconds"] / perf["cores"])
    assert results["verdict"] == "PASS", [c for c in results["checks"] if not c["passed"]]


def test_injected_fault_marks_fail_and_exits_nonzero(tmp_path, capsys):
    out = tmp_path / "faulty"
    code, stdout, _ = run_cli(["analyze", "--quick", "--threads", "2", "--out", str(out),
                           "--inject", "raise:target=worker=1,step=1"], capsys)
    assert code == 4
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "FAIL"
    failed = {c["title"] for c in results["checks"] if not c["passed"]}
    assert "every requested step finished" in failed
    assert "ks-worker-1" in results["training"]["error"]
    assert "**FAIL** every requested step finished" in (out / "analysis.md").read_text()
    # a failing report is still a true one: every claim, FAIL included, follows from its data
    code, stdout, _ = run_cli(["check", str(out)], capsys)
    assert code == 0, stdout


def test_unwritable_out_exits_2_and_leaves_nothing(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: use a file as parent
            target = tmp_path / "a-file"
            target.write_text("x")
            out = target / "report"
        else:
            out = locked / "report"
        code, _, err = run_cli(["analyze", "--quick", "--out", str(out)], capsys)
    finally:
        os.chmod(locked, 0o700)
    assert code == 2 and "spheres: error:" in err and "--out" in err
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*partial*")]


def test_bad_data_exits_2_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "report"
    code, _, err = run_cli(["analyze", "--quick", "--data", str(tmp_path / "missing.txt"),
                        "--out", str(out)], capsys)
    assert code == 2 and "missing.txt" in err
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_report_carries_the_heldout_loss(quick_report: Path):
    results = json.loads((quick_report / "results.json").read_text())
    tr = results["training"]
    assert tr["eval_losses"] and tr["eval_losses"][-1][0] == tr["steps"]
    assert tr["eval_tokens"] > 0
    step, value = tr["eval_losses"][-1]
    assert f"{value:.4f} after step {step}" in (quick_report / "analysis.md").read_text()


def test_report_carries_the_run_record(quick_report: Path):
    """trace.json and the timeline come from the same record as the thread verdicts."""
    results = json.loads((quick_report / "results.json").read_text())
    from harness.figures.results import SCHEMA_VERSION

    assert results["schema_version"] == SCHEMA_VERSION
    rec = results["record"]
    assert rec["findings"] and all(f["passed"] for f in rec["findings"].values())
    trace = json.loads((quick_report / rec["trace"]).read_text())
    batches = [e for e in trace["traceEvents"] if e.get("cat") == "batch"]
    ran = sum(w["batches"] for w in results["threads"]["workers"])
    assert len(batches) == ran > 0  # the trace and the thread table count the same batches
    assert (quick_report / rec["timeline"]).read_bytes().startswith(PNG_SIGNATURE)
    text = (quick_report / "analysis.md").read_text()
    assert f"]({rec['timeline']})" in text and "deciding (loss, norm" in text
    machine = results["meta"]["machine"]["blas"]
    assert "BLAS:" in text and isinstance(machine["libraries"], list)


def test_results_json_round_trips_to_the_same_typed_results(quick_report: Path):
    """results.json is the serialisation of AnalysisResults: reading it back gives an equal
    object, and the consumers (checks, report) work from that object alone."""
    from harness.analysis.checks import build_checks, known_issues
    from harness.analysis.report import render
    from harness.figures.results import AnalysisResults

    data = json.loads((quick_report / "results.json").read_text())
    results = AnalysisResults.from_json(data)
    assert isinstance(results.training.losses[0], float) and results.threads.workers
    # compared as JSON text: an engine that could not be measured carries NaN (nan != nan)
    again = AnalysisResults.from_json(results.to_json())
    assert json.dumps(again.to_json(), sort_keys=True) == json.dumps(data, sort_keys=True)
    assert again.threads == results.threads and again.checks == results.checks
    assert build_checks(results) == results.checks
    assert known_issues(results) == results.known_issues
    assert render(results) == (quick_report / "analysis.md").read_text()


def test_results_json_of_another_schema_version_is_refused(quick_report: Path):
    import dataclasses

    from harness.figures.results import SCHEMA_VERSION, AnalysisResults
    from plumbing.errors import InputError

    data = json.loads((quick_report / "results.json").read_text())
    with pytest.raises(InputError, match=f"schema_version 2 .* schema_version {SCHEMA_VERSION}"):
        AnalysisResults.from_json(dict(data, schema_version=2))
    with pytest.raises(InputError, match="unknown field"):
        AnalysisResults.from_json(dict(data, surprise=1))
    results = AnalysisResults.from_json(data)
    assert dataclasses.replace(results, verdict="FAIL") != results  # equality sees a change


def test_report_is_sealed_with_a_manifest_of_every_file_and_leaves_nothing_beside(
        quick_report: Path):
    from plumbing.report_folder import MANIFEST, foreign_entries, report_folder_problem

    manifest = json.loads((quick_report / MANIFEST).read_text())
    assert {"analysis.md", "results.json"} <= set(manifest["files"])
    assert foreign_entries(quick_report) == []  # every file listed, byte for byte
    assert report_folder_problem(quick_report) is None  # a rerun may replace it
    assert os.listdir(quick_report.parent) == ["report"]  # no partial folder, no lock file

    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")
    json.loads((quick_report / "results.json").read_text(), parse_constant=refuse)


def test_report_carries_the_reproducibility_table_measured(quick_report: Path):
    text = (quick_report / "analysis.md").read_text()
    results = json.loads((quick_report / "results.json").read_text())
    cells = results["repro"]["cells"]
    assert cells and all(not c["error"] for c in cells), [c["error"] for c in cells]
    engines = {c["engine"] for c in cells}
    assert engines == {"fast", "fast under MPI", "torch", "torch-ddp", "exec example"}
    assert {c["world"] for c in cells if c["engine"] == "torch-ddp"} == {1, 2}
    assert "| torch-ddp | 2 |" in text and "not measured" not in text.split(
        "## Reproducibility")[1].split("\n## ")[0]


def test_throughput_interleaves_rounds_and_counts_each_median_step(monkeypatch):
    """The sweep times one step per thread count per round, order alternating, so a slow
    spell of the machine hits every count, not the last one; and each count's median step is
    counted, so one outlier either way does not move it. Scripted: the machine runs 1.5x
    slower in the last sixth of the phase, and two threads' first step is a lucky 1.0 s.
    Before, 63 threads (last) ran all their steps in the slow spell and counted the fastest:
    3.0 s against 1.0 s, 0.33x two threads. Now both counts read 2.0 s. The report shows
    every timed step, in round order."""
    from harness.analysis import phases
    from harness.analysis.plan import make_plan
    from harness.analysis.report import _performance
    from harness.figures.results import AnalysisResults
    from harness.figures.thresholds import THROUGHPUT_ROUNDS
    from harness.run.corpus import load_corpus
    from reference.config import preset

    plan = make_plan(preset="tiny", quick=True, threads=2, steps=1, data=None, seed=0,
                     stall_timeout=60.0, inject=[])
    plan.throughput_threads = [2, 63]
    cfg = preset(plan.preset)
    corpus = load_corpus(cfg, None, synthetic_tokens=plan.synthetic_tokens)
    clock, order = [0.0], []
    lucky = {(2, 0): 1.0}  # (threads, visit): a step that had the machine to itself

    class Engine:
        def __init__(self, threads):
            self.threads, self.visit, self.n = threads, order.count(threads), 0
            self.slow = 1.5 if len(order) >= 5 else 1.0  # the last of 6 engines
            order.append(threads)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def step(self, tokens, targets):
            self.n += 1
            timed = self.n == 2  # burn-in first
            clock[0] += 9.0 if not timed else lucky.get((self.threads, self.visit),
                                                        2.0 * self.slow)
            return type("R", (), {"n_targets": 1000})()

    monkeypatch.setattr(phases, "make_engine", lambda name, cfg, threads, **kw: Engine(threads))
    monkeypatch.setattr(phases.time, "perf_counter", lambda: clock[0])
    points = phases.phase_throughput(plan, cfg, corpus, lambda line: None)
    assert THROUGHPUT_ROUNDS == 3
    assert order == [2, 63, 63, 2, 2, 63]
    by = {p.threads: p for p in points}
    assert by[2].step_seconds == pytest.approx([1.0, 2.0, 2.0]) and by[2].seconds == 2.0
    assert by[63].step_seconds == pytest.approx([2.0, 2.0, 3.0]) and by[63].seconds == 2.0
    assert by[63].tokens_per_s == by[2].tokens_per_s == 500.0
    assert by[63].speedup == 1.0
    results = AnalysisResults()
    results.performance.throughput = points
    results.performance.cores = 2
    assert "| 63 | 500 | 1.00x | 2.00, 2.00, 3.00 |" in "\n".join(_performance(results))
