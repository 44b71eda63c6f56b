"""Benchmark history and `spheres compare`: an injected slowdown fails, noise does not."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from support import run_cli

from harness.bench import runner as bench_runner
from harness.bench import summary as bench_summary
from harness.bench.history import (
    compare_runs,
    markdown_table,
    previous_run,
    stored_runs,
    threshold,
)
from harness.figures.bench_metrics import BENCH_SCHEMA_VERSION
from harness.figures.results import (
    SCHEMA_VERSION,
    AnalysisResults,
    Check,
    MemoryResult,
    TrainingResult,
)
from harness.figures.thresholds import NOISE_FLOOR

MACHINE = {"cpu": {"brand_raw": "Test CPU", "count": 2, "arch": "X86_64"}}
SETTINGS = {"preset": "small", "rounds": 3}


def _run(times: dict[str, tuple[float, float]], when: str = "2026-11-28T10:00:00",
         commit: str = "a" * 40, settings=SETTINGS, machine=MACHINE) -> dict:
    """A pytest-benchmark JSON: name -> (best round, worst round) seconds."""
    return {"machine_info": copy.deepcopy(machine), "commit_info": {"id": commit},
            "datetime": when, "kissing_spheres": {"settings": dict(settings)},
            "benchmarks": [{"name": n, "fullname": f"benchmarks/x.py::{n}",
                            "stats": {"min": lo, "max": hi, "mean": (lo + hi) / 2,
                                      "rounds": 3}, "extra_info": {}}
                           for n, (lo, hi) in times.items()]}


BASE = {"test_fast_scaling[T1]": (10.0, 10.2), "test_fast_scaling[T2]": (5.0, 5.1),
        "test_seed_workload": (40.0, 40.4)}


def _slowed(factor: float, name: str = "test_fast_scaling[T2]", **kw) -> dict:
    times = dict(BASE)
    lo, hi = times[name]
    times[name] = (lo * factor, hi * factor)
    return _run(times, when="2026-11-28T11:00:00", commit="b" * 40, **kw)


def test_injected_slowdown_is_a_regression_and_none_passes():
    c = compare_runs(_run(BASE), _slowed(1.30))
    assert [d.name.split("::")[1] for d in c.regressions] == ["test_fast_scaling[T2]"]
    assert c.regressions[0].change == pytest.approx(0.30)
    assert c.failed
    same = compare_runs(_run(BASE), _slowed(1.0))
    assert not same.regressions and not same.failed
    faster = compare_runs(_run(BASE), _slowed(0.7))
    assert not faster.failed and faster.deltas[1].verdict == "faster"


def test_noise_across_rounds_widens_the_bound():
    noisy = dict(BASE, **{"test_fast_scaling[T2]": (5.0, 6.0)})  # rounds 20% apart
    assert threshold({"min": 5.0, "max": 6.0}, {"min": 5.0, "max": 5.0}) == pytest.approx(0.4)
    assert threshold({"min": 5.0, "max": 5.0}, {"min": 5.0, "max": 5.0}) == NOISE_FLOOR
    old = _run(noisy)
    new = copy.deepcopy(old)
    new["benchmarks"][1]["stats"].update(min=6.5, max=7.8)  # +30%: inside 2 x 20%
    assert not compare_runs(old, new).regressions


def test_other_machine_or_settings_is_shown_but_never_gates():
    other = {"cpu": {"brand_raw": "Other CPU", "count": 64, "arch": "X86_64"}}
    c = compare_runs(_run(BASE, machine=other), _slowed(2.0))
    assert c.regressions and not c.failed and "other machine" in c.note
    table = "\n".join(markdown_table(c))
    assert "slower (not gating)" in table and "REGRESSED" not in table
    c = compare_runs(_run(BASE, settings={"preset": "seed"}), _slowed(2.0))
    assert c.regressions and not c.failed and "other settings" in c.note


def _store(storage: Path, run: dict, name: str) -> Path:
    path = storage / "Linux-CPython-3.11-64bit" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run))
    return path


def test_previous_run_is_the_newest_earlier_comparable_one(tmp_path):
    old = _store(tmp_path, _run(BASE, when="2026-11-28T09:00:00"), "0001_a.json")
    prev = _store(tmp_path, _run(BASE, when="2026-11-28T10:00:00"), "0002_a.json")
    _store(tmp_path, _run(BASE, when="2026-11-28T10:30:00", settings={"preset": "seed"}),
           "0003_a.json")  # another preset: not comparable
    current = _slowed(1.3)
    _store(tmp_path, current, "0004_b.json")  # autosave already wrote the current run
    (tmp_path / "Linux-CPython-3.11-64bit" / "0005_broken.json").write_text("{")
    assert stored_runs(tmp_path)[0] == old
    assert previous_run(tmp_path, current) == prev
    assert previous_run(tmp_path, _run(BASE, when="2026-11-28T08:00:00")) is None


def test_pytest_command_stores_every_run_with_commit_and_machine(tmp_path):
    args = bench_runner.parse_args(["--quick", "--history", str(tmp_path)])
    cmd = bench_runner.pytest_command(tmp_path / "r.json", args)
    assert "--benchmark-autosave" in cmd and f"--benchmark-storage=file://{tmp_path}" in cmd
    real = bench_runner.parse_args([])
    assert real.history.endswith(".benchmarks") and real.baseline.endswith("baseline.json")
    assert bench_runner.parse_args(["--summarize", "x.json"]).history is None


@pytest.fixture
def no_targets(monkeypatch):
    """Only the history decides the exit code here (the fake runs carry no engine figures)."""
    monkeypatch.setattr(bench_summary, "TARGETS", [])


@pytest.mark.parametrize("factor, code", [(1.30, 1), (1.0, 0)])
def test_make_bench_fails_with_a_table_naming_the_regressed_benchmark(tmp_path, capsys,
                                                                      no_targets, factor,
                                                                      code):
    history, out = tmp_path / "history", tmp_path / "out"
    _store(history, _run(BASE), "0001_a.json")
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(_run(BASE, when="2026-11-27T10:00:00")))
    current = _slowed(factor)
    run_json = _store(history, current, "0002_b.json")
    rc = bench_runner.main(["--summarize", str(run_json), "--out-dir", str(out), "--history",
                     str(history), "--baseline", str(baseline)])
    printed = capsys.readouterr().out
    assert rc == code
    table = (out / "comparison.md").read_text()
    assert "Compared with the previous run" in table
    assert "Compared with the committed baseline" in table
    if factor > 1:
        assert "| test_fast_scaling[T2] | 5 | 6.5 | +30.0% | ±5.0% | **REGRESSED** |" in table
        assert printed.count("FAIL: slower than") == 2
        assert "test_fast_scaling[T2] +30.0%" in printed
    else:
        assert "REGRESSED" not in table and "FAIL" not in printed


def test_spheres_compare_bench_runs(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_run(BASE)))
    b.write_text(json.dumps(_slowed(1.5, name="test_seed_workload")))
    code, out, _ = run_cli(["compare", str(a), str(b)], capsys)
    assert code == 1
    assert "| test_seed_workload | 40 | 60 | +50.0% |" in out and "**REGRESSED**" in out
    assert "2 of 3 benchmarks within their noise bound" in out
    b.write_text(json.dumps(_slowed(1.0)))
    code, out, _ = run_cli(["compare", str(a), str(b)], capsys)
    assert code == 0 and "REGRESSED" not in out


def test_spheres_compare_results_lists_every_changed_figure_and_verdict(tmp_path, capsys):
    results = AnalysisResults(
        verdict="PASS", training=TrainingResult(tokens_per_s=1000.0, losses=[4.0, 3.0]),
        checks=[Check("bitwise-reduction", "spheres", "bitwise", True, "same bits"),
                Check("cpu-use", "performance", "cpu", True, "90%")],
        memory=MemoryResult(rss_bytes=list(range(100)))).to_json()
    later = copy.deepcopy(results)
    later["verdict"] = "FAIL"
    later["training"]["tokens_per_s"] = 800.0
    later["checks"][0].update(passed=False, figure="differs")
    later["memory"]["rss_bytes"] = list(range(200))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(results))
    b.write_text(json.dumps(later))
    code, out, _ = run_cli(["compare", str(a), str(b)], capsys)
    assert code == 1
    rows = [ln for ln in out.splitlines() if ln.startswith("| `")]
    assert rows[0] == "| `checks[title=bitwise].passed` | True | False | **WORSE** |"
    assert "| `verdict` | PASS | FAIL | **WORSE** |" in rows
    assert "| `training.tokens_per_s` | 1000 | 800 | -20.0% |" in rows
    assert "| `checks[title=bitwise].figure` | same bits | differs |  |" in rows
    assert "| `memory.rss_bytes[len]` | 100 | 200 | +100.0% |" in rows
    assert not any("cpu" in r for r in rows)  # unchanged records are not listed
    code, out, _ = run_cli(["compare", str(a), str(a)], capsys)
    assert code == 0 and "No figure or verdict changed." in out


def test_spheres_compare_refuses_bad_input(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_run(BASE)))
    b.write_text(json.dumps({"verdict": "PASS"}))
    code, _, err = run_cli(["compare", str(a), str(b)], capsys)
    assert code == 2 and "b.json is not a document compare reads" in err
    code, _, err = run_cli(["compare", str(a), str(tmp_path / "missing.json")], capsys)
    assert code == 2 and "cannot read" in err


def test_spheres_compare_refuses_another_schema_version(tmp_path, capsys):
    """A results.json or summary.json of another schema version: exit 2 naming both versions,
    not a key-by-key comparison of fields whose meaning changed."""
    results = AnalysisResults(verdict="PASS").to_json()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(results))
    b.write_text(json.dumps(dict(results, schema_version=SCHEMA_VERSION - 1)))
    code, _, err = run_cli(["compare", str(a), str(b)], capsys)
    assert code == 2
    assert f"schema_version {SCHEMA_VERSION - 1}" in err and f"schema_version {SCHEMA_VERSION}" \
        in err and "b.json" in err
    code, out, _ = run_cli(["compare", str(a), str(a)], capsys)
    assert code == 0 and "No figure or verdict changed" in out
    summary = {"targets": [], "metrics": {}, "schema_version": BENCH_SCHEMA_VERSION + 1}
    b.write_text(json.dumps(summary))
    code, _, err = run_cli(["compare", str(b), str(b)], capsys)
    assert code == 2 and f"schema_version {BENCH_SCHEMA_VERSION + 1}" in err


def _with_rounds(run: dict, name: str, rounds: list[float]) -> dict:
    run = copy.deepcopy(run)
    for b in run["benchmarks"]:
        if b["name"] == name:
            b["stats"].update(data=rounds, min=min(rounds), max=max(rounds))
    return run


def test_history_gate_judges_the_raw_rounds_with_the_statistics_of_spheres_ab():
    from harness.bench.significance import judge, ratio_estimate
    from harness.figures.thresholds import AB_ALPHA

    name = "test_fast_scaling[T2]"
    old_rounds, new_rounds = [5.0, 5.05, 5.1, 5.02], [6.0, 6.1, 6.05, 6.12]  # +20%
    old, new = _with_rounds(_run(BASE), name, old_rounds), _with_rounds(_slowed(1.0), name,
                                                                        new_rounds)
    delta = next(d for d in compare_runs(old, new).deltas if d.name.endswith(name))
    est = ratio_estimate(old_rounds, new_rounds, alpha=AB_ALPHA)
    assert (delta.change, delta.low, delta.high, delta.p_value) == pytest.approx(
        (est.ratio - 1, est.low - 1, est.high - 1, est.p_value))
    assert delta.p_value < AB_ALPHA  # 4 raw rounds each: the U test decides (2 cannot)
    assert delta.verdict == judge(est, delta.noise, alpha=AB_ALPHA, higher_is_better=False) \
        == "regressed"
    # the old rounds' best and worst alone (a run stored without raw rounds): 2 against 4
    lean = copy.deepcopy(old)
    for b in lean["benchmarks"]:
        b["stats"].pop("data", None)
    thin = next(d for d in compare_runs(lean, new).deltas if d.name.endswith(name))
    assert thin.p_value > delta.p_value and thin.verdict == "regressed"


def test_make_bench_stores_the_raw_rounds(tmp_path):
    args = bench_runner.parse_args(["--quick", "--history", str(tmp_path)])
    assert "--benchmark-save-data" in bench_runner.pytest_command(tmp_path / "r.json", args)
