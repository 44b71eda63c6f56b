"""Live progress: estimates from counts, a tqdm bar on a terminal, plain lines in a pipe,
nothing with --quiet; the engine's batch counter is polled, never pushed into the engine."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import run_cli

from harness.run.progress import LiveProgress, choose_mode, estimate, format_seconds

ROOT = Path(__file__).resolve().parent.parent
# worker 0 sleeps (making progress) at its first batch of step 1; worker 1 finishes its 4
# batches of the 8-batch group meanwhile, so "batch 4/8" must be on screen during the drill
SLOW_TRAIN = ["train", "--threads", "2", "--steps", "3", "--inject",
              "slow:target=worker=0,step=1,seconds=2"]


def test_estimate_from_batches_and_from_whole_units():
    # 2 steps of 8 batches took 4 s; the third has 2 of 8 batches after 1 s: 18 batches / 5 s
    e = estimate(unit=3, units=5, done_units=2, done_seconds=4.0, done_inner=16,
                 done_tokens=1600, inner_done=2, inner_total=8, unit_elapsed=1.0,
                 tokens_per_inner=100.0)
    assert e.unit_eta == pytest.approx(6 / 3.6)
    assert e.run_eta == pytest.approx(6 / 3.6 + 2 * 8 / 3.6)
    assert e.tokens_per_s == pytest.approx((1600 + 200) / 5.0)
    # units without inner work (verify cases, analyze phases): the mean unit time
    e = estimate(unit=3, units=4, done_units=2, done_seconds=10.0, done_inner=0, done_tokens=0,
                 inner_done=None, inner_total=None, unit_elapsed=1.0, tokens_per_inner=None)
    assert e.unit_eta == pytest.approx(4.0) and e.run_eta == pytest.approx(9.0)
    assert e.tokens_per_s is None
    # a unit that outlasts the mean disproves it: no frozen ETA, its running time instead,
    # and the run ETA a lower bound (the unit after it at the mean), never "?" nor "0s"
    e = estimate(unit=3, units=4, done_units=2, done_seconds=10.0, done_inner=0, done_tokens=0,
                 inner_done=None, inner_total=None, unit_elapsed=41.0, tokens_per_inner=None)
    assert e.unit_eta is None and e.run_eta == pytest.approx(5.0) and e.at_least
    line = LiveProgress("analyze", 4, mode="lines", unit_name="phase").describe(e)
    assert "phase running 41s" in line and "run ETA >= 5s" in line
    # every batch done but the step still busy (reduction, update): not "step ETA 0s"
    e = estimate(unit=3, units=5, done_units=2, done_seconds=4.0, done_inner=16,
                 done_tokens=1600, inner_done=8, inner_total=8, unit_elapsed=25.0,
                 tokens_per_inner=100.0)
    assert e.unit_eta is None and e.run_eta == pytest.approx(4.0) and e.at_least
    line = LiveProgress("train", 5, mode="lines").describe(e)
    assert "step ETA" not in line and "step running 25s (all batches done" in line
    assert "run ETA >= 4s" in line
    # nothing done yet: unknown, shown as "?"
    e = estimate(unit=1, units=4, done_units=0, done_seconds=0.0, done_inner=0, done_tokens=0,
                 inner_done=0, inner_total=8, unit_elapsed=0.0, tokens_per_inner=100.0)
    assert e.unit_eta is None and format_seconds(e.run_eta) == "?"
    assert format_seconds(125) == "2m05s" and format_seconds(3720) == "1h02m"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_come_every_interval_with_the_polled_batch_count():
    stream, clock = io.StringIO(), _Clock()
    state = {"progress": (3, 8)}
    live = LiveProgress("train", 2, mode="lines", stream=stream, poll=lambda: state["progress"],
                        tokens_per_inner=64, line_seconds=5.0, clock=clock)
    live.begin(1, 8)
    clock.now = 1.0
    live.tick()
    assert stream.getvalue() == ""  # not due yet
    clock.now = 5.5
    live.tick()
    line = stream.getvalue()
    assert line.startswith("train: step 1/2 | batch 3/8 |") and line.endswith("\n")
    assert "tok/s" in line and "step ETA" in line and "run ETA" in line
    assert "\r" not in line
    state["progress"] = None  # between engine calls: the last count stays
    clock.now = 11.0
    live.tick()
    assert stream.getvalue().count("batch 3/8") == 2
    live.end(tokens=500, loss=3.25)
    live.set_eval(3.5)
    clock.now = 17.0
    live.tick()
    assert "loss 3.2500 | eval 3.5000" in stream.getvalue().splitlines()[-1]


def test_off_writes_nothing_and_mode_follows_the_stream():
    stream = io.StringIO()
    with LiveProgress("train", 3, mode="off", stream=stream, line_seconds=0.0) as live:
        live.begin(1, 8)
        live.write("a message")
        live.tick()
        live.end(10, 1.0)
    assert stream.getvalue() == ""
    assert choose_mode(True, sys.stderr) == "off"
    assert choose_mode(False, io.StringIO()) == "lines"


def test_fast_trainer_reports_no_group_when_idle(no_thread_leak):
    from fast.trainer import FastTrainer
    from reference.config import preset

    with FastTrainer(preset("tiny"), 2) as trainer:
        assert trainer.batches_done() is None


def _spheres(args: list[str], stderr) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=stderr, timeout=240)


def test_pipe_gets_flushed_plain_lines_inside_a_step():
    proc = _spheres(SLOW_TRAIN + ["--progress-seconds", "0.3"], subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr.decode()
    err = proc.stderr.decode()
    assert "\r" not in err and "\x1b" not in err
    inside = [ln for ln in err.splitlines() if ln.startswith("train: step 2/3 | batch 4/8")]
    assert inside, err
    assert all("tok/s" in ln and "run ETA" in ln for ln in inside)


def test_terminal_gets_a_tqdm_bar():
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "harness", *SLOW_TRAIN], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=240) == 0
        proc.stdout.close()
    finally:
        os.close(master)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert "\r" in out  # redrawn in place
    bars = [seg for seg in out.split("\r") if seg.startswith("train:") and "%|" in seg]
    assert any("batch 4/8" in seg for seg in bars), out[-2000:]
    assert any(seg.startswith("train: 100%|") for seg in bars)
    assert "[step 3/3]" in out  # the per-step lines are still printed, above the bar


def test_quiet_prints_no_progress(capsys, no_thread_leak):
    code, out, err = run_cli(["train", "--threads", "2", "--steps", "2", "--quiet"], capsys)
    assert code == 0
    assert "[step" not in err and "train:" not in err and "data:" not in err
    assert out.startswith("done: 2 steps")
    code, _, err = run_cli(["train", "--threads", "2", "--steps", "2"], capsys)
    assert sum(ln.startswith("[step ") for ln in err.splitlines()) == 2


class _Recorder:
    """Stands in for LiveProgress: records the units it was told about."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def begin(self, unit, inner_total=None, label=""):
        self.calls.append(("begin", unit, label))

    def end(self, tokens=0, loss=None):
        self.calls.append(("end",))


def test_verify_sweep_reports_one_unit_per_case(no_thread_leak):
    from harness.verify.gates import run_verify
    from reference.config import preset

    rec = _Recorder()
    report = run_verify([preset("tiny")], ["float32"], [1, 2], trajectory_steps=3,
                        out=lambda line: None, live=rec)
    assert len(report.records) == 2
    assert rec.calls == [("begin", 1, "tiny float32 T=1"), ("end",),
                         ("begin", 2, "tiny float32 T=2"), ("end",)]


def test_analyze_phases_advance_on_tagged_lines(capsys):
    from harness.run.progress import PhaseLines

    stream, clock = io.StringIO(), _Clock()
    live = LiveProgress("analyze", 0, mode="lines", stream=stream, line_seconds=1.0,
                        unit_name="phase", clock=clock)
    phases = PhaseLines(live)
    phases("[data] 4,800,000 tokens")
    clock.now = 2.0
    phases("[train] step 1/3")
    phases("[train] step 2/3")  # same phase: no new unit
    clock.now = 10.0
    phases("[verify] gates")  # throughput skipped (e.g. after a training error)
    live.tick()
    assert live.done_units == 2 and live.unit == 4 and live.unit_label == "verify"
    assert stream.getvalue().splitlines()[-1].startswith("analyze: phase 4/9 verify |")
    assert capsys.readouterr().out.count("\n") == 4  # every line still printed, on stdout
    phases.finish()
    assert live.done_units == 3


def test_an_engine_without_a_batch_counter_gets_whole_step_progress():
    stream, clock = io.StringIO(), _Clock()
    live = LiveProgress("train", 3, mode="lines", stream=stream, poll=None, line_seconds=1.0,
                        clock=clock)
    live.begin_step(1, 8)
    clock.now = 4.0
    live.end_step(256, 4.0)
    live.begin_step(2, 8)
    clock.now = 5.0
    live.tick()
    line = stream.getvalue().splitlines()[-1]
    assert "batch" not in line  # no invented batch count
    assert "64 tok/s" in line and "run ETA 7s" in line  # 256 tokens / 4 s; 3 + 4 s left


class _TimedEngine:
    """An engine whose steps take a known schedule of seconds on a deterministic clock, and
    report their batches as the fast engine does (half the group halfway through a step)."""

    def __init__(self, clock, seconds: list[float], live_ref: list) -> None:
        self.clock, self.seconds, self.live_ref, self.i = clock, seconds, live_ref, 0
        self.inner: tuple[int, int] | None = None

    def batches_done(self):
        return self.inner

    def step(self, tokens, targets):
        from reference.engine import StepResult

        n = tokens.shape[0] // 4
        d = self.seconds[self.i]
        self.clock.now += d / 2
        self.inner = (n // 2, n)
        self.live_ref[0].tick()  # the poller's view mid-step
        self.clock.now += d / 2
        self.inner, self.i = None, self.i + 1
        return StepResult(loss=4.0, n_targets=int((targets != 0).sum()), grad_norm=1.0, lr=1e-3)


@pytest.mark.parametrize("poll", [True, False])
def test_train_run_eta_after_the_first_step_is_within_25_percent(poll):
    """The run ETA shown once the first step has ended, against the schedule's true rest."""
    from harness.run.corpus import load_corpus, one_group_tokens
    from harness.run.train import run_training
    from harness.run.train_plan import TrainPlan
    from reference.config import preset

    cfg = preset("tiny")
    # a noisy but steady rate; the first step 15% slower than the mean of the rest
    seconds = [2.3, 2.2, 1.8, 2.1, 1.9, 2.3, 1.7, 2.0, 2.2, 1.8]
    clock, ref = _Clock(), [None]
    engine = _TimedEngine(clock, seconds, ref)
    live = LiveProgress("train", 0, mode="off", clock=clock,
                        poll=engine.batches_done if poll else None,
                        tokens_per_inner=cfg.train.batch_size * cfg.model.seq_len)
    ref[0] = live
    seen: dict[int, float | None] = {}
    begin = live.begin_step

    def spy(step: int, n_batches: int) -> None:
        begin(step, n_batches)
        seen[step] = live.estimate().run_eta

    live.begin_step = spy
    corpus = load_corpus(cfg, None, synthetic_tokens=one_group_tokens(cfg, 4))
    plan = TrainPlan(cfg=cfg.replace(total_steps=len(seconds)), corpus=corpus,
                     steps=len(seconds))
    run_training(plan, engine, say=lambda line: None, live=live)
    truth = sum(seconds[1:])
    print(f"run ETA after step 1: {seen[2]:.2f}s, truth {truth:.2f}s")
    assert seen[2] is not None and abs(seen[2] - truth) <= 0.25 * truth, (seen[2], truth)


def test_a_phase_shows_its_work_tokens_and_eta_from_the_measured_rate():
    """Before: analyze showed "phase 2/6 train | phase running 2m36s | run ETA ?" for the
    whole training phase."""
    from harness.run.progress import PhaseLines, report_work

    stream, clock = io.StringIO(), _Clock()
    live = LiveProgress("analyze", 0, mode="lines", stream=stream, line_seconds=1.0,
                        unit_name="phase", clock=clock)
    phases = PhaseLines(live)
    phases("[train] 2 workers + Node Zero started")
    report_work(phases, "step", 0, 10)
    for k in range(1, 3):
        clock.now += 4.0
        report_work(phases, "step", k, 10, tokens=512 * k)
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("analyze: phase 2/9 train | step 2/10 | 128 tok/s | phase ETA 32s")
    assert "run ETA >= 32s (7 more phases)" in line
    clock.now += 6.0  # step 3 outlasts the 4 s mean: a lower bound, never "0s" or "?"
    live.tick()
    line = stream.getvalue().splitlines()[-1]
    assert "step 3 running 6s | phase ETA >= 28s" in line


def test_every_analyze_phase_that_loops_reports_its_work():
    """Each looping phase tells the progress its units (train steps, throughput runs, verify
    cases, drills), so none shows only "phase running"."""
    import ast

    source = (ROOT / "harness" / "analysis" / "phases.py").read_text()
    tree = ast.parse(source)
    kinds = {node.args[1].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "report_work"
             and isinstance(node.args[1], ast.Constant)}
    assert {"step", "eval", "run", "case", "drill"} <= kinds


def test_stress_progress_counts_cases_and_the_time_left_of_its_budget():
    from harness.commands.stress import stress_progress
    from harness.verify.stress import StressTotals

    totals, clock, stream = StressTotals(), _Clock(), io.StringIO()
    live = stress_progress(totals, 60.0, clock=clock)
    live.stream, live.mode = stream, "lines"
    clock.now, totals.cases, totals.faults_fired = 20.0, 40, 3
    line = live.describe(live.estimate())
    assert "case 40 | 2.0 cases/s | 3 faults fired, 0 failures | 20s of 1m00s, run ETA 40s" \
        in line
    clock.now = 65.0
    assert "past the 1m00s budget: finishing the last batch" in live.describe(live.estimate())


# phases whose work reaches report_work (repro and scaling report none: their model stands)
_REPORTED = {"train", "throughput", "verify", "drill", "engines", "memory"}


def test_analyze_run_eta_after_the_first_step_is_within_25_percent():
    """Before: "run ETA >= <phase ETA> (N more phases)" until the last phase. A tiny run whose
    every stage takes its planned size at a true seconds per FLOP, each off by up to 20% (the
    first step 15% slow): after the first step the run ETA is a figure within 25% of the rest,
    and so at each later phase's start."""
    from harness.analysis.phases import phase_costs
    from harness.analysis.plan import make_plan
    from harness.run.corpus import load_corpus
    from harness.run.progress import PhaseLines, enter_phase, plan_phases, report_work
    from reference.config import preset

    plan = make_plan(preset="tiny", quick=True, threads=2, steps=None, data=None, seed=0,
                     stall_timeout=60.0, inject=[])
    cfg = preset(plan.preset)
    corpus = load_corpus(cfg, None, synthetic_tokens=plan.synthetic_tokens)
    costs = phase_costs(plan, cfg, corpus)
    assert set(costs) == set(PhaseLines.__init__.__defaults__[0])  # every phase has sizes
    step_flops = costs["train"][0].flops / plan.steps
    per_flop = 2.0 / step_flops  # the truth: a 2 s step
    # the steps define the rate (the first of them 15% slow); every later stage is off it
    factors = [1.0, 0.8, 1.2, 0.9, 1.15, 0.85, 1.1, 0.95, 1.2, 0.8]
    clock = _Clock()
    live = LiveProgress("analyze", 0, mode="off", unit_name="phase", clock=clock)
    phases = PhaseLines(live)
    phases("[data] loading")
    clock.now += 3.0
    plan_phases(phases, costs)
    schedule: list[tuple[str, str | None, int, float]] = []  # (phase, kind, units, seconds)
    i = 0
    for tag in phases.phases[1:]:
        for stage in costs[tag]:
            units = plan.steps if stage.kind == "step" and tag == "train" else 4
            true = stage.estimate(per_flop) * factors[i % len(factors)]
            schedule.append((tag, stage.kind if tag in _REPORTED else None, units, true))
            i += 1
    checks: list[tuple[float, float, float]] = []  # (clock, shown ETA, when it ends)
    current = None
    for tag, kind, units, seconds in schedule:
        if tag != current:
            enter_phase(phases, tag)
            current = tag
            if tag != "train":
                got = phases.modelled_eta(clock.now)
                checks.append((clock.now, got[0] if got else None, tag))
        if kind is None:
            clock.now += seconds
            continue
        report_work(phases, kind, 0, units)
        for k in range(1, units + 1):
            # the first training step is 15% slower than the rest, which share its stage
            if tag == "train" and kind == "step":
                first = seconds / units * 1.15
                clock.now += first if k == 1 else (seconds - first) / (units - 1)
            else:
                clock.now += seconds / units
            report_work(phases, kind, k, units)
            if tag == "train" and kind == "step" and k == 1:
                got = phases.modelled_eta(clock.now)
                line = live.describe(live.estimate())
                assert got is not None and ">=" not in line, line
                assert f"run ETA {format_seconds(got[0])}" in line
                checks.append((clock.now, got[0], "after step 1"))
    end = clock.now
    phases.finish()
    for at, shown, where in checks:
        truth = end - at
        print(f"{where}: run ETA {shown:.1f}s, truth {truth:.1f}s")
        assert shown is not None and abs(shown - truth) <= 0.25 * truth, (where, shown, truth)
    assert checks[0][2] == "after step 1" and len(checks) == len(phases.phases) - 1


def test_run_eta_stays_a_lower_bound_without_every_phase_sized():
    """No sizes for a later phase: no figure is invented for it."""
    from harness.run.progress import PhaseLines, Stage, plan_phases, report_work

    clock = _Clock()
    live = LiveProgress("analyze", 0, mode="off", unit_name="phase", clock=clock)
    phases = PhaseLines(live, ("train", "verify"))
    plan_phases(phases, {"train": (Stage("step", 10.0),)})
    phases("[train] go")
    report_work(phases, "step", 0, 10)
    clock.now += 4.0
    report_work(phases, "step", 1, 10)
    assert phases.modelled_eta(clock.now) is None
    assert "run ETA >= 36s (1 more phases)" in live.describe(live.estimate())
    plan_phases(phases, {"train": (Stage("step", 10.0),), "verify": (Stage("case", 5.0, 3.0),)})
    # 9 steps at 4 s, then verify's 5 FLOPs at 4 s per FLOP (a step is 1 FLOP) plus 3 s
    assert phases.modelled_eta(clock.now) == (pytest.approx(36.0 + 20.0 + 3.0), False)
    for k in range(2, 11):
        clock.now += 4.0
        report_work(phases, "step", k, 10)
    phases("[verify] go")
    report_work(phases, "case", 0, 4)
    clock.now += 30.0  # its first case outlasts the whole stage's 23 s: a bound, not "0s"
    assert phases.modelled_eta(clock.now) == (0.0, True)
    assert "run ETA >= 0s" in live.describe(live.estimate())


def test_simulate_sweep_eta_times_the_rest_by_the_runs_sizes():
    """Before: a sweep printed its rows and nothing between them, and a mean-per-run ETA would
    price T=256 like T=1 (63 rounds against 1). Runs taking their size at a steady rate, each off
    by up to 20%: after the first run the ETA is within 25% of the rest."""
    from harness.run.progress import SizedRuns
    from harness.run.simulate import SWEEP_THREADS, run_size

    sizes = [run_size(64, t, 63, 0.05, 1) for t in SWEEP_THREADS]
    assert sizes[0] == pytest.approx(2 * 63 * 0.05) and sizes[-1] == pytest.approx(2 * 0.05)
    factors = [1.0, 1.2, 0.8, 1.1, 0.9] * 3
    true = [s * 1.3 * f for s, f in zip(sizes, factors, strict=True)]
    stream, clock = io.StringIO(), _Clock()
    live = LiveProgress("simulate", 0, mode="lines", stream=stream, unit_name="run",
                        line_seconds=0.0, clock=clock)
    runs = SizedRuns(live, sizes, [f"T={t}" for t in SWEEP_THREADS])
    for i, d in enumerate(true):
        runs.begin(i)
        clock.now += d / 2
        live.tick()
        if i == 1:
            line = stream.getvalue().splitlines()[-1]
            assert line.startswith(f"simulate: run 2/{len(sizes)} T=2 | run running")
            eta, bound = runs.eta()
            rest = d / 2 + sum(true[2:])
            assert not bound and abs(eta - rest) <= 0.25 * rest, (eta, rest)
            assert f"run ETA {format_seconds(eta)}" in line
        clock.now += d / 2
        runs.end()
    clock.now += 1.0
    assert runs.eta() == (0.0, False)
    live = LiveProgress("simulate", 0, mode="off", unit_name="run", clock=clock)
    runs = SizedRuns(live, [2.0, 1.0, 1.0], ["a", "b", "c"])
    runs.begin(0)
    clock.now += 4.0  # 2 s per size unit
    runs.end()
    runs.begin(1)
    clock.now += 5.0  # past its 2 s share: the run after it only, as a lower bound
    assert runs.eta() == (pytest.approx(2.0), True)
    assert "run ETA >= 2s" in live.describe(live.estimate())


def test_sweep_tells_its_progress_each_run(no_thread_leak):
    from harness.run.simulate import sweep
    from reference.config import preset

    rec = _Recorder()

    class Runs:
        def begin(self, i):
            rec.begin(i + 1)

        def end(self):
            rec.end()

    out = sweep(preset("tiny", group_size=4), 4, 4, 0.001, threads=(1, 2), live=Runs())
    assert [r.threads for r in out] == [1, 2]
    assert rec.calls == [("begin", 1, ""), ("end",), ("begin", 2, ""), ("end",)]


def test_make_bench_prints_a_line_per_benchmark_with_elapsed_and_eta():
    """Before: `make bench` ran pytest -q, a dot per benchmark after minutes each."""
    from harness.bench import progress_plugin, runner

    lines, clock = [], _Clock()
    bench = progress_plugin.BenchLines(lines.append, clock=clock)
    bench.collected(3)
    bench.begin("test_a")
    clock.now += 10.0
    bench.end()
    bench.begin("test_b")
    clock.now += 20.0
    bench.end()
    bench.begin("test_c")
    clock.now += 3.0
    bench.end()
    assert lines == ["bench 1/3 test_a | elapsed 0s | ETA ?",
                     "bench 2/3 test_b | elapsed 10s | ETA 20s",
                     "bench 3/3 test_c | elapsed 30s | ETA 15s",
                     "bench 3/3 done in 33s"]
    cmd = runner.pytest_command(Path("r.json"), runner.parse_args(["--quick"]))
    plugin = "harness.bench.progress_plugin"
    assert cmd[cmd.index(plugin) - 1:cmd.index(plugin) + 1] == ["-p", plugin]
    quiet = runner.pytest_command(Path("r.json"), runner.parse_args(["--quick", "--quiet"]))
    assert plugin not in quiet


def test_the_bench_plugin_writes_its_lines_in_a_pytest_run(tmp_path):
    """The hooks as the benchmark child loads them (`-p harness.bench.progress_plugin`)."""
    (tmp_path / "test_two.py").write_text("def test_one():\n    pass\n\n"
                                          "def test_two():\n    pass\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "harness.bench.progress_plugin", str(tmp_path)], cwd=tmp_path,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out
    assert "bench 1/2 test_one | elapsed 0s | ETA ?" in out
    assert "bench 2/2 test_two | elapsed" in out and "bench 2/2 done in" in out
