"""`spheres simulate` (issue #18 item 4): the real protocol on simulated cores.

A small simulated run (c = 0.05 s per stand-in batch) computes more than 12 batches at once,
read from its run record (the old engine's 12-way chain never could), and its step lands near
the ideal ceil(G / min(T, N)) x c + fold and update. The command refuses option mixes that
would write nothing, and writes its JSON, Gantt and trace.
"""

from __future__ import annotations

import json

import pytest

from fast.record import IN_FLIGHT, peak_in_flight
from fast.standin import SleepKernel
from harness.cli import main
from harness.figures.thresholds import SIM_TEST_IDEAL_RATIO
from harness.run.simulate import simulate
from reference.config import preset


def test_a_simulated_run_computes_more_than_12_batches_at_once(no_thread_leak):
    cfg = preset("tiny", group_size=48)
    result, rec = simulate(cfg, cores=24, threads=24, group=48, compute_seconds=0.05, steps=2)
    assert result.peak_in_flight > 12
    assert peak_in_flight(rec, max(rec.steps())) == result.peak_in_flight  # from the record
    assert result.rounds == 2
    assert result.step_seconds <= SIM_TEST_IDEAL_RATIO * result.ideal_seconds, result
    assert result.step_seconds >= 2 * 0.05  # two rounds of batches cannot take less
    assert 0 < result.cores_busy <= 1.0


def test_the_cores_bound_batches_in_flight(no_thread_leak):
    """With 4 simulated cores, at most 4 batches compute at once (the workspace pool)."""
    cfg = preset("tiny", group_size=16)
    result, _ = simulate(cfg, cores=4, threads=16, group=16, compute_seconds=0.03, steps=1)
    assert result.peak_in_flight == 4 and result.rounds == 4


def test_the_stand_in_refuses_an_endless_batch():
    with pytest.raises(ValueError, match="finite"):
        SleepKernel(float("inf"))
    with pytest.raises(ValueError, match="finite"):
        SleepKernel(-1.0)


def test_the_command_writes_json_gantt_and_trace(tmp_path, capsys, no_thread_leak):
    out, gantt, trace = tmp_path / "r.json", tmp_path / "g.png", tmp_path / "t.json"
    code = main(["simulate", "--cores", "16", "--threads", "15", "--group-size", "30",
                 "--compute-seconds", "0.02", "--steps", "1", "--json", str(out),
                 "--gantt", str(gantt), "--trace", str(trace)])
    assert code == 0
    [r] = json.loads(out.read_text())
    assert r["threads"] == 15 and r["peak_in_flight"] > 12 and r["ratio"] > 0
    assert gantt.stat().st_size > 0
    events = json.loads(trace.read_text())["traceEvents"]
    assert max(e["args"]["batches"] for e in events
               if e["ph"] == "C" and e["name"] == IN_FLIGHT) > 12
    text = capsys.readouterr().out
    assert "critical path" in text and "ideal" in text


@pytest.mark.parametrize("argv,message", [
    (["--cores", "8", "--plot", "x.png"], "--plot draws the --sweep"),
    (["--cores", "8", "--sweep", "--threads", "4"], "drop --threads"),
    (["--cores", "0"], "--cores"),
    (["--cores", "8", "--compute-seconds", "inf"], "--compute-seconds"),
])
def test_bad_options_exit_2_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        code = main(["simulate", *argv])
        raise SystemExit(code)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_the_report_section_comes_from_a_quick_simulated_sweep(no_thread_leak):
    """analyze's "Scaling beyond this machine": measured rows, past 12 batches at once at
    T = 63, rendered, and kept through results.json."""
    from harness.analysis.report import render
    from harness.analysis.scaling import SIM_THREADS, phase_scaling, section_lines
    from harness.figures.results import AnalysisResults

    r = AnalysisResults(scaling=phase_scaling(lambda message: None))
    s = r.scaling
    assert s.error is None and [row.threads for row in s.rows] == list(SIM_THREADS)
    top = s.rows[-1]
    assert top.threads == 63 and top.peak_in_flight > 12 and top.rounds == 1
    assert top.step_seconds < s.rows[0].step_seconds  # 63 workers beat 4 on 64 cores
    lines = section_lines(r)
    assert any(line.startswith("| 63 |") for line in lines)
    assert "## Scaling beyond this machine" in render(r)
    again = AnalysisResults.from_json(r.to_json())
    assert again.scaling.rows == s.rows
