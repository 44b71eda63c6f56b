"""A gate that fails closed, inputs taken for what they are, sane timeouts (#24 classes 2, 4,
#20 classes 4, 5): each case as a user meets it, through the real command line."""

from __future__ import annotations

import sys

import pytest
from support import run_cli


@pytest.mark.parametrize("argv", [
    ["verify", "--stall-timeout", "0.001"],
    ["train", "--stall-timeout", "0.5"],
    ["analyze", "--stall-timeout", "0.2"],
    ["grads", "--stall-timeout", "0.01", "--out", "g.npz"],
    ["engines", "--measure", "--stall-timeout", "0.5"],
    ["train", "--progress-seconds", "0.001"],
])
def test_a_timeout_below_its_floor_is_refused_with_the_reason(argv, capsys, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "must be at least" in err
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_grads_takes_a_stall_timeout_and_passes_it_to_the_engine(tmp_path, capsys, monkeypatch):
    import harness.commands.grads as grads

    seen = {}
    real = grads.make_engine

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(grads, "make_engine", spy)
    code, out, err = run_cli(["grads", "--stall-timeout", "7", "--out",
                              str(tmp_path / "g.npz")], capsys)
    assert code == 0, err
    assert seen["stall_timeout"] == 7.0


VERIFY = ["verify", "--presets", "tiny", "--threads", "1,2", "--dtypes", "float64", "--quiet"]


def _junit(path):
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    return root.attrib, {n: (c.find("failure") is not None or c.find("error") is not None)
                         for n, c in cases.items()}


def test_the_console_row_carries_the_verdict_junit_gives(tmp_path, capsys):
    junit = tmp_path / "j.xml"
    code, out, err = run_cli([*VERIFY, "--engine", "engine_plugins:thread_dependent",
                              "--require-bitwise", "--junit", str(junit)], capsys)
    assert code == 1
    rows = {int(line.split()[2]): line.split()[-1] for line in out.splitlines()
            if line.startswith("tiny ")}
    _, failed = _junit(junit)
    assert rows == {1: "PASS", 2: "FAIL"}
    assert failed == {"tiny float64 T=1": False, "tiny float64 T=2": True}


def test_an_engine_claiming_zero_targets_fails_the_target_count_gate(tmp_path, capsys):
    code, out, err = run_cli([*VERIFY, "--engine", "engine_plugins:zero_targets"], capsys)
    assert code == 1
    assert "target-count: engine_plugins:zero_targets: preset tiny, float64, T=1: the engine " \
           "counted 0 targets" in err


def test_a_sweep_ended_by_an_engine_fault_writes_what_ran_and_that_it_ended(tmp_path, capsys):
    import json

    junit, js = tmp_path / "j.xml", tmp_path / "v.json"
    code, _, err = run_cli([*VERIFY, "--engine", "engine_plugins:fails_mid_sweep", "--junit",
                            str(junit), "--json", str(js)], capsys)
    assert code == 4, err
    counts, failed = _junit(junit)
    assert failed == {"tiny float64 T=1": False, "tiny float64 T=2": True, "ended-early": True}
    assert counts["errors"] == "1"
    doc = json.loads(js.read_text())
    assert doc["passed"] is False and "plug-in fault" in doc["error"]
    assert doc["not_run"] == ["tiny float64 T=2"]


def test_ranks_runs_reach_junit_and_a_killed_rank_fails_every_case(tmp_path, capsys,
                                                                  monkeypatch):
    import harness.verify.ranks as ranks

    def killed(R, cfg, dtypes, threads, **kw):
        raise RuntimeError(f"mpiexec -n {R} exited -9: rank 1 killed by SIGKILL")

    monkeypatch.setattr(ranks, "mpiexec_path", lambda: "/bin/true")
    monkeypatch.setattr(ranks, "launch_digest", killed)
    junit = tmp_path / "j.xml"
    code, out, err = run_cli([*VERIFY, "--engine", "fast", "--ranks", "2", "--junit",
                              str(junit)], capsys)
    assert code == 1
    counts, failed = _junit(junit)
    assert failed["tiny float64 R=2 T=1"] and failed["tiny float64 R=2 T=2"]
    assert not failed["tiny float64 T=1"]
    assert counts["tests"] == "4" and counts["failures"] == "2"
    assert "ranks-run: preset tiny, float64, R=2, T=2: mpiexec -n 2 exited -9" in err


def test_a_case_asked_for_with_no_record_is_a_failure():
    from harness.verify.gates import VerifyReport
    from harness.verify.junit import junit_xml

    report = VerifyReport(planned_cases=["tiny float64 T=1"])
    assert not report.passed
    assert report.failures == ["not-run: tiny float64 T=1: asked for, never ran"]
    assert 'failures="1"' in junit_xml(report) and 'type="not-run"' in junit_xml(report)


def test_a_plugin_factory_error_is_the_plugins_fault_named_and_cleaned(capsys):
    code, _, err = run_cli([*VERIFY, "--engine", "engine_plugins:factory_raises"], capsys)
    assert code == 4, err
    assert "internal error" not in err and "\x1b" not in err
    assert ("plug-in engine 'engine_plugins:factory_raises': its factory raised RuntimeError: "
            "CUDA device 7 not found") in err


def test_engines_measure_fails_when_an_engine_asked_for_was_not_measured(tmp_path, capsys):
    broken = f"exec:{sys.executable} -c 'import sys; sys.exit(3)'"
    js = tmp_path / "e.json"
    code, out, err = run_cli(["engines", "--measure", "--engine", "reference", "--engine",
                              broken, "--rounds", "1", "--threads", "1", "--json", str(js)],
                             capsys)
    assert code == 1, err
    assert "engines: FAIL: 1 of 2 engines not measured" in err and "exit code 3" in err
    assert js.exists()  # the figures measured are kept


# ------------------------------------------------------------------ compare: inputs by kind


def _write(path, data):
    import json

    path.write_text(json.dumps(data))
    return str(path)


def _results():
    from harness.figures.results import AnalysisResults

    return AnalysisResults(verdict="PASS").to_json()


def _bench_run(names):
    return {"machine_info": {"cpu": {"brand_raw": "x"}}, "commit_info": {"id": "a"},
            "datetime": "2026-12-01T10:00:00", "benchmarks": [
                {"name": n, "fullname": f"benchmarks/x.py::{n}",
                 "stats": {"min": 1.0, "max": 1.1, "mean": 1.05, "rounds": 3}}
                for n in names]}


@pytest.mark.parametrize("a, b, says", [
    ({"a": 1}, {"b": 2}, "a.json is not a document compare reads (keys: a)"),
    ({"final_loss": 4.0, "losses": [4.0], "tokens_per_s": 1.0, "steps": 1},
     {"final_loss": 3.0, "losses": [3.0], "tokens_per_s": 2.0, "steps": 1},
     "a.json is a `spheres train --json` summary, which compare does not read"),
    ("results", {"targets": [], "metrics": {}, "schema_version": 1},
     "a.json is an analyze results.json but"),
    ("results", "bench-run", "a.json is an analyze results.json but"),
])
def test_compare_identifies_each_input_by_its_kind(a, b, says, tmp_path, capsys):
    kinds = {"results": _results(), "bench-run": _bench_run(["x"])}
    pa = _write(tmp_path / "a.json", kinds.get(a, a) if isinstance(a, str) else a)
    pb = _write(tmp_path / "b.json", kinds.get(b, b) if isinstance(b, str) else b)
    code, out, err = run_cli(["compare", pa, pb], capsys)
    assert code == 2 and says in err, err
    assert "changed" not in out


def test_compare_of_a_run_whose_benchmarks_are_all_missing_fails(tmp_path, capsys):
    a = _write(tmp_path / "a.json", _bench_run(["t1", "t2"]))
    b = _write(tmp_path / "b.json", _bench_run([]))
    code, out, _ = run_cli(["compare", a, b], capsys)
    assert code == 1
    assert "hold(s) no benchmark" in out and "2 of 2 benchmarks of A are missing from B" in out
    code, out, _ = run_cli(["compare", a, a], capsys)
    assert code == 0


def test_a_schema_version_that_is_a_string_is_named_as_one(tmp_path, capsys):
    doc = dict(_results())
    doc["schema_version"] = str(doc["schema_version"])
    pa = _write(tmp_path / "a.json", doc)
    code, _, err = run_cli(["compare", pa, pa], capsys)
    assert code == 2
    assert f"schema_version '{doc['schema_version']}', a JSON string not a number," in err


# ------------------------------------------------------------------ options the run cannot honour


@pytest.mark.parametrize("argv, says", [
    (["verify", "--engine", "reference", "--trace", "t.json"], "--trace records the threads'"),
    (["verify", "--engine", "reference", "--locate"], "--locate records fold digests"),
    (["verify", "--engine", "reference", "--inject", "hang:target=worker=0,step=1"],
     "--inject injects faults"),
    (["grads", "--dtype", "float32", "--out", "g.npz"], "the reference engine computes in "
     "float64 only"),
    (["engines", "--json", "e.json"], "--json applies only with --measure"),
    (["engines", "--engine", "fast", "--rounds", "2"], "--engine, --rounds apply only with"),
])
def test_an_option_the_run_cannot_honour_is_refused_before_any_work(argv, says, capsys,
                                                                   tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and says in err, err
    assert list(tmp_path.iterdir()) == [] and "PASS" not in out


def test_a_rank_killed_by_a_signal_is_named_as_such():
    from harness.verify.ranks import launch_failure

    text = launch_failure(2, 9, "")
    assert text == ("mpiexec -n 2 exited 9 (mpiexec's report of a rank ended by signal 9, "
                    "SIGKILL): nothing on stderr")
    assert launch_failure(3, 1, "a\nb\n\x1b[31mc") == "mpiexec -n 3 exited 1: a | b | c"


def test_compare_of_a_bench_summary_missing_every_figure_fails(tmp_path, capsys):
    """A bench summary.json whose figures are all gone (B measured nothing A did): before,
    exit 0 with "N changed (0 verdicts, 0 worse)"."""
    import json
    from pathlib import Path

    committed = Path(__file__).resolve().parents[1] / "reports" / "bench" / "summary.json"
    doc = json.loads(committed.read_text())
    a = _write(tmp_path / "a.json", doc)
    b = _write(tmp_path / "b.json", {**doc, "metrics": {}})
    code, out, _ = run_cli(["compare", a, b], capsys)
    assert code == 1 and "figures of A are missing from B: metrics." in out, out
    code, out, _ = run_cli(["compare", b, a], capsys)  # B measured more than A: not a failure
    assert code == 0, out
