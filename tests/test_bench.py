"""`make bench` bookkeeping: FLOP count, targets, summary and exit code (no benchmark is run)."""

from __future__ import annotations

import json
import math

import pytest

from harness.bench import render as bench_render
from harness.bench import runner as bench_runner
from harness.bench import summary as bench_summary
from harness.bench import targets as bench_targets
from harness.figures.bench_metrics import BENCH_SCHEMA_VERSION, BenchMetrics, BenchSummary
from reference.config import preset
from reference.params import param_specs


def _matmul_weights_from_registry(m) -> int:
    """Independent count: every 2-D weight except the embeddings, plus the tied output V*d."""
    hidden = sum(s.size for s in param_specs(m) if len(s.shape) == 2 and ".w_" in s.name)
    return hidden + m.vocab_size * m.d_model


@pytest.mark.parametrize("name", ["tiny", "small", "seed"])
def test_flops_per_token_matches_the_registry(name):
    m = preset(name).model
    expected = 6 * _matmul_weights_from_registry(m) + 12 * m.n_layers * m.seq_len * m.d_model
    assert bench_summary.flops_per_token(m) == expected


def test_seed_flops_per_token_is_about_32_million():
    # 6 * (6 * 786432 + 788 * 256) + 12 * 6 * 128 * 256, worked by hand
    assert bench_summary.flops_per_token(preset("seed").model) == 31_881_216


def test_ratio_target_pass_fail_missing_and_skip():
    t = bench_targets.RatioTarget("two vs one", "traced_tokens_per_s", "untraced_tokens_per_s",
                                  1.8)
    ok = t.check(BenchMetrics(traced_tokens_per_s=190.0, untraced_tokens_per_s=100.0))
    assert (ok.status, ok.measured) == ("pass", pytest.approx(1.9))
    bad = t.check(BenchMetrics(traced_tokens_per_s=162.0, untraced_tokens_per_s=100.0))
    assert bad.status == "fail"
    assert "1.62x" in bad.message and "short by 0.18x" in bad.message and "10%" in bad.message
    missing = t.check(BenchMetrics(traced_tokens_per_s=162.0))
    assert missing.status == "fail" and "no measurement of untraced_tokens_per_s" in missing.message
    skipped = bench_targets.RatioTarget("torch", "torch_tokens_per_s", "reference_tokens_per_s",
                                        1.5, skip_unless="torch_available",
                                        skip_message="skipped: torch not importable")
    verdict = skipped.check(BenchMetrics(torch_tokens_per_s=1.0, reference_tokens_per_s=1.0))
    assert verdict.status == "skipped" and verdict.message == "skipped: torch not importable"


def test_limit_target_in_units():
    t = bench_targets.LimitTarget("rss", "seed_peak_rss_bytes", 1.32, "GB", 1e9)
    assert t.check(BenchMetrics(seed_peak_rss_bytes=1.0e9)).status == "pass"
    over = t.check(BenchMetrics(seed_peak_rss_bytes=1.5e9))
    assert over.status == "fail" and "over by 0.18 GB" in over.message
    assert "14%" in over.message
    exists = bench_targets.LimitTarget("runs", "seed_seconds")
    assert exists.check(BenchMetrics(seed_seconds=123.0)).status == "pass"
    assert exists.check(BenchMetrics(seed_seconds=float("nan"))).status == "fail"


def test_stats_delta_subtracts_nested_numbers():
    before = {"ks-node-zero": {"batches": 0, "reduce_seconds": 1.0, "role": "node-zero"},
              "list": [1, 2.5]}
    after = {"ks-node-zero": {"batches": 0, "reduce_seconds": 1.75, "role": "node-zero"},
             "list": [4, 3.0]}
    assert bench_summary.stats_delta(before, after) == {
        "ks-node-zero": {"batches": 0, "reduce_seconds": 0.75, "role": "node-zero"},
        "list": [3, 0.5]}


def test_node_zero_seconds_reads_its_own_work():
    nz = {"role": "node-zero", "name": "ks-node-zero", "reduce_seconds": 0.0,
          "decide_seconds": 0.5, "phase_seconds": {"DISPATCHING": 0.25, "WAITING_A": 9.0},
          "update_seconds": 0.0, "wait_a_seconds": 9.0, "cpu_seconds": 3.0}
    worker = {"role": "worker", "name": "ks-worker-0", "reduce_seconds": 7.0,
              "update_seconds": 7.0}
    stats = {"workers": [worker], "node_zero": nz, "steps": 3}
    assert bench_summary.node_zero_seconds(stats) == pytest.approx(0.75)
    assert bench_summary.node_zero_seconds({"nothing": 1}) is None


def _fake_bench(seed_rss=0.9e9, t2_seconds=5.0, with_torch=False, mpi_ratio=1.0,
                compile_seconds=8.0,
                seed_at_cores_seconds=None):
    """A pytest-benchmark JSON as the suites write it, with chosen times."""
    fpt = bench_summary.flops_per_token(preset("seed").model)
    tokens = 8 * 32 * 128

    def entry(name, best, **extra):
        return {"name": name, "fullname": f"benchmarks/x.py::{name}",
                "stats": {"min": best, "mean": best * 1.1}, "extra_info": extra}

    nz = {"node_zero": {"decide_seconds": 0.2, "phase_seconds": {"DISPATCHING": 0.05}}}
    benchmarks = [
        entry("test_matmul_peak[all]", 0.1, kind="matmul_peak", cores="all",
              flops_per_round=fpt * tokens),  # peak = fpt * tokens / 0.1
        entry("test_matmul_peak[one]", 0.2, kind="matmul_peak", cores="one",
              flops_per_round=fpt * tokens),
        entry("test_fast_scaling[T1]", 10.0, kind="scaling", engine="fast", threads=1, group=8,
              tokens_per_round=tokens, rounds=1, trainer_stats=nz, cpu_use=0.5,
              thread_cpu_seconds={"ks-worker-0": 9.9, "ks-node-zero": 0.1},
              peak_rss_bytes=4e8),
        entry("test_fast_scaling[T2]", t2_seconds, kind="scaling", engine="fast", threads=2,
              group=8, tokens_per_round=tokens, rounds=1, trainer_stats=nz, cpu_use=1.0,
              thread_cpu_seconds={"ks-worker-0": 5.0, "ks-worker-1": 4.9}, peak_rss_bytes=5e8),
        entry("test_seed_workload", 63 / 8 * 5.2, kind="seed_workload", engine="fast",
              threads=63, group=63, tokens_per_round=63 * 32 * 128, rounds=1,
              trainer_stats=nz, cpu_use=0.99, thread_cpu_seconds={},
              peak_rss_bytes=1.5e9),  # the bench process's, not what the target reads
        entry("test_seed_workload_memory", 60.0, kind="seed_memory", threads=63, group=63,
              tokens=63 * 32 * 128, step_seconds=50.0, peak_rss_bytes=seed_rss),
        entry("test_trace_overhead", 3.0, kind="trace_overhead", engine="fast", threads=2,
              traced_tokens_per_s=995.0, untraced_tokens_per_s=1000.0),
        entry("test_mpi_ranks_vs_threads", 9.0, kind="mpi_ratio",
              mpi={"tokens_per_s": 1000.0 * mpi_ratio}, single={"tokens_per_s": 1000.0}),
        entry("test_mpi_bytes_per_step[tiny-2]", 1.0, kind="mpi_bytes", preset="tiny",
              group=12, threads=1, dtype="float32", step_seconds=[0.01], tokens=100,
              tokens_per_s=1e4, params=100, ranks=2, best_step_s=0.01,
              per_rank=[{"rank": r, "steps": 1, "compute_s": 0.1, "wait_s": 0.0, "comm_s": 0.0,
                         "reduce_s": 0.0, "last_sent_bytes": sent, "last_received_bytes": got}
                        for r, sent, got in ((0, 400, 2400), (1, 2400, 400))]),
        entry("test_seed_workload_at_core_count",
              seed_at_cores_seconds if seed_at_cores_seconds else 63 / 8 * 5.2,
              kind="seed_at_cores", engine="fast", threads=2, group=63,
              tokens_per_round=63 * 32 * 128, rounds=1, trainer_stats=nz, cpu_use=0.99,
              thread_cpu_seconds={}, peak_rss_bytes=5e8),
        entry("test_kernel_table", 1.0, kind="kernel_table", threads=1, micro_batch=2,
              tokens_per_round=32 * 128, groups=["gemm fc", "attention", "gelu"],
              cycles=[600, 300, 100], blas=[{"internal_api": "openblas", "version": "0.3",
                                             "architecture": "SkylakeX"}],
              rounds=1, cycles_per_second=1e9,  # fc 6827 GFLOP/s in place, attention 136533
              group_flops_per_token={"gemm fc": 1000, "attention": 10000},
              gflops_alone={"gemm fc": 6000.0, "attention": 1000.0}),
        entry("test_vocab_and_encode", 4.5, seconds=4.0, peak_mb=300.0),
    ]
    benchmarks[-1]["fullname"] = "benchmarks/test_bench_tokenize.py::t"
    if with_torch:
        benchmarks.append(entry("test_torch_eager", 20.0, kind="engine", engine="torch",
                                threads=2, group=8, tokens_per_round=tokens))
        benchmarks.append(entry("test_torch_compile", compile_seconds, kind="engine",
                                engine="torch.compile", threads=2, group=8,
                                tokens_per_round=tokens))
    return {"benchmarks": benchmarks,
            "kissing_spheres": {"machine": {"cores": 2}, "settings": {"preset": "seed"},
                                "config": preset("seed").to_dict()}}


def test_summary_figures_are_computed_from_the_json():
    s = bench_summary.summarize(_fake_bench(), torch_available=False)
    m = s.metrics
    tokens = 8 * 32 * 128
    assert m.fast_tokens_per_s_T1 == pytest.approx(tokens / 10.0)
    assert m.fast_tokens_per_s_T2 == pytest.approx(tokens / 5.0)
    assert m.matmul_peak_flops == pytest.approx(s.flops_per_token * tokens / 0.1)
    rows = {r.name: r for r in s.engines}
    t2 = rows["test_fast_scaling[T2]"]
    assert t2.speedup == pytest.approx(2.0) and t2.efficiency == pytest.approx(1.0)
    assert t2.node_zero_share == pytest.approx(0.25 / (5.0 * 1.1))  # over the mean round
    # best fast rate is T2 (tokens/5 s): its model FLOP/s over the peak (tokens/0.1 s)
    assert m.model_flops_per_s / m.matmul_peak_flops == pytest.approx(0.1 / 5.0)
    assert m.tokenize_seconds == 4.0 and m.tokenize_peak_bytes == pytest.approx(300e6)
    verdicts = {v.name: v for v in s.targets}
    assert verdicts["2 threads vs 1 thread tokens/s"].status == "pass"
    assert verdicts["seed workload peak RSS"].status == "pass"
    assert verdicts["model FLOP/s at 2 threads vs float32 sgemm peak (same run)"].status \
        == "fail"
    assert verdicts["seed group: 63 threads vs one thread per core tokens/s"].status == "pass"
    assert verdicts["fast vs PyTorch eager tokens/s (same threads)"].status == "skipped"
    assert not s.passed


def test_seed_rss_target_reads_the_own_process_run_and_fails_without_it():
    bench = _fake_bench(seed_rss=0.9e9)
    s = bench_summary.summarize(bench, torch_available=False)
    assert s.metrics.seed_peak_rss_bytes == 0.9e9  # not the 1.5e9 of the bench-process row
    assert {v.name: v for v in s.targets}["seed workload peak RSS"].status == "pass"
    bench["benchmarks"] = [b for b in bench["benchmarks"]
                           if b["extra_info"].get("kind") != "seed_memory"]
    verdict = {v.name: v for v in bench_summary.summarize(bench, torch_available=False)
               .targets}["seed workload peak RSS"]
    assert verdict.status == "fail" and "no measurement" in verdict.message


def test_torch_comparison_uses_the_same_thread_count():
    s = bench_summary.summarize(_fake_bench(with_torch=True, compile_seconds=6.0),
                                torch_available=True)
    verdict = next(v for v in s.targets if "PyTorch" in v.name)
    assert verdict.status == "pass" and verdict.measured == pytest.approx(20.0 / 5.0)
    compiled = next(v for v in s.targets if "torch.compile" in v.name)
    assert compiled.status == "fail" and compiled.measured == pytest.approx(6.0 / 5.0)


def test_main_writes_summary_and_exits_1_on_a_missed_target(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_fake_bench(seed_rss=2.0e9, t2_seconds=8.0)))
    code = bench_runner.main(["--summarize", str(path), "--out-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 1
    assert "seed workload peak RSS: missed: 2 GB" in out
    assert "2 threads vs 1 thread tokens/s: missed: 1.25x" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["bench_json"] == str(path) and not summary["passed"]
    assert summary["schema_version"] == BENCH_SCHEMA_VERSION
    md = (tmp_path / "out" / "summary.md").read_text()
    # summary.json is the BenchSummary's serialisation: read back, it renders the same report
    typed = BenchSummary.from_json(summary)
    assert typed.metrics.fast_tokens_per_s == {1: pytest.approx(8 * 32 * 128 / 10.0),
                                               2: pytest.approx(8 * 32 * 128 / 8.0)}
    assert BenchSummary.from_json(typed.to_json()) == typed
    assert bench_render.render_markdown(typed) == md
    assert "| seed workload peak RSS | < 1 GB |" in md and "FAIL |" in md
    assert "| gemm fc | 60.0% |" in md and "openblas 0.3 (SkylakeX kernel)" in md
    assert "![throughput](throughput.png)" in md
    assert (tmp_path / "out" / "throughput.png").read_bytes()[:4] == b"\x89PNG"


def test_main_exits_0_when_every_target_is_met(tmp_path, monkeypatch):
    """With the torch row present, so the verdict does not depend on torch being installed."""
    # the fake run holds no FLOP/s-vs-peak figures: those targets are left out by name
    kept = tuple(t for t in bench_targets.TARGETS if not t.name.startswith("model FLOP/s"))
    monkeypatch.setattr(bench_summary, "TARGETS", kept)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_fake_bench(with_torch=True)))
    assert bench_runner.main(["--summarize", str(path), "--out-dir", str(tmp_path)]) == 0


def test_mpi_ratio_target_reads_the_two_runs():
    passed = {v.name: v for v in bench_summary.summarize(_fake_bench(mpi_ratio=0.9)).targets}
    failed = {v.name: v for v in bench_summary.summarize(_fake_bench(mpi_ratio=0.5)).targets}
    name = next(n for n in passed if n.startswith("MPI R=2"))
    assert passed[name].status == "pass" and passed[name].measured == pytest.approx(0.9)
    assert failed[name].status == "fail" and failed[name].measured == pytest.approx(0.5)


def test_mpi_bytes_table_lists_each_run():
    s = bench_summary.summarize(_fake_bench())
    table = "\n".join(bench_render.mpi_bytes_table(s.mpi_bytes))
    assert "| tiny | 100 | 2 | 2,800 | 2,800 | 800 |" in table


def test_main_fails_clearly_without_results(tmp_path, capsys):
    code = bench_runner.main(["--summarize", str(tmp_path / "absent.json"), "--out-dir",
                       str(tmp_path)])
    assert code == 1 and "no benchmark results" in capsys.readouterr().out


def test_pytest_command_enables_benchmarks_and_json(tmp_path):
    args = bench_runner.parse_args(["--quick"])
    cmd = bench_runner.pytest_command(tmp_path / "r.json", args)
    for flag in ("--benchmark-enable", f"--benchmark-json={tmp_path / 'r.json'}", "-m",
                 "bench", "-p", "no:cacheprovider", "--ks-preset=small"):
        assert flag in cmd
    assert math.isfinite(args.scaling_group)


def test_busy_machine_matmul_peak_falls_back_to_one_core_with_a_warning():
    data = _fake_bench()
    data["benchmarks"][0]["stats"]["min"] = 0.4  # all cores slower than one core (0.2 s)
    s = bench_summary.summarize(data, torch_available=False)
    assert s.metrics.matmul_peak_flops == pytest.approx(
        s.metrics.matmul_peak_flops_one_core)
    assert s.warnings and "machine was busy" in s.warnings[0]


def test_cpu_starved_benchmark_is_flagged():
    data = _fake_bench()
    data["benchmarks"][3]["extra_info"]["cpu_use"] = 0.41  # 2 threads on 2 cores, 41% busy
    warnings = bench_summary.summarize(data, torch_available=False).warnings
    assert len(warnings) == 1 and warnings[0].startswith("test_fast_scaling[T2]: CPU use 41%")


def test_oversubscription_target_fails_when_63_threads_lose_to_2():
    slow = bench_summary.summarize(_fake_bench(seed_at_cores_seconds=63 / 8 * 5.2 * 0.9),
                           torch_available=False)
    v = next(v for v in slow.targets if v.name.startswith("seed group: 63 threads"))
    assert v.status == "fail" and v.measured == pytest.approx(0.9)


def test_kernel_table_splits_compute_by_cycles_and_adds_step_phases():
    kernels = {"groups": ["gemm fc", "attention", "gelu"], "cycles": [600, 300, 100]}
    phases = {"COMPUTING": 8.0, "REDUCING": 0.5, "UPDATING": 0.5, "WAITING_A": 1.0,
              "IDLE": 100.0}  # idle time between steps is not step time
    stats = {"workers": [{"phase_seconds": phases}, {"phase_seconds": phases}]}
    rows = {r.name: r.share for r in bench_summary.kernel_table(kernels, stats)}
    assert rows["gemm fc"] == pytest.approx(0.8 * 0.6)
    assert rows["attention"] == pytest.approx(0.8 * 0.3)
    assert rows["reduction (segment sum + norms)"] == pytest.approx(0.05)
    assert rows["AdamW update"] == pytest.approx(0.05)
    assert rows["waits: barrier Point A"] == pytest.approx(0.1)
    assert sum(rows.values()) == pytest.approx(1.0)
    # without phase times the table is the shares of one batch's compute
    alone = {r.name: r.share for r in bench_summary.kernel_table(kernels, None)}
    assert alone["gemm fc"] == pytest.approx(0.6) and len(alone) == 3
    assert bench_summary.kernel_table(None, stats) == []


def test_kernel_table_gives_product_groups_gflops_in_place_and_alone():
    """In place = the group's model FLOPs over the rounds / its cycles at the counter's rate;
    the worst linear group's pair and attention's rate reach the targets, which can fail."""
    kernels = {"groups": ["gemm fc", "gemm qkv", "attention", "gelu"],
               "cycles": [2_000_000, 1_000_000, 4_000_000, 100], "rounds": 2,
               "cycles_per_second": 1e9, "tokens_per_round": 1000,
               "group_flops_per_token": {"gemm fc": 1_000_000, "gemm qkv": 400_000,
                                         "attention": 100_000},
               "gflops_alone": {"gemm fc": 1100.0, "gemm qkv": 700.0, "attention": 60.0}}
    rows = {r.name: r for r in bench_summary.kernel_table(kernels, None)}
    # fc: 1e6 FLOPs/token * 1000 tokens * 2 rounds / 2e-3 s = 1e12 FLOP/s
    assert rows["gemm fc"].gflops == pytest.approx(1000.0)
    assert rows["gemm qkv"].gflops == pytest.approx(800.0)
    assert rows["attention"].gflops == pytest.approx(50.0)
    assert rows["gelu"].gflops is None and rows["gemm fc"].gflops_alone == 1100.0
    metrics = BenchMetrics(matmul_peak_flops_one_core=90e9)
    bench_summary.gemm_group_metrics(list(rows.values()), metrics)
    assert metrics.gemm_worst_group == "gemm fc"  # 0.91 of alone; qkv runs at 1.14
    verdicts = {v.name: v for v in (t.check(metrics) for t in bench_targets.TARGETS)}
    gemm = next(v for n, v in verdicts.items() if n.startswith("linear GEMM groups"))
    assert gemm.status == "fail" and gemm.measured == pytest.approx(1000 / 1100)
    att = next(v for n, v in verdicts.items() if n.startswith("attention FLOP/s"))
    assert att.status == "pass" and att.measured == pytest.approx(50 / 90)
    lines = bench_render.kernel_table_lines(BenchSummary(
        created="", machine=None, settings={}, config={}, flops_per_token=1, flops_formula="",
        kernel_table=list(rows.values())))
    assert any(line.startswith("| gemm fc |") and "| 1000.0 | 1100.0 | 0.91 |" in line
               for line in lines)


def test_seed_memory_runs_in_a_process_of_its_own():
    """The RSS target's figure is the child's own peak: this process holds 600 MB more than
    the child ever does, and the child's figure stays below what this process holds."""
    import numpy as np

    from harness.bench.seed_memory import measure_in_own_process
    from harness.measure.process import current_rss_bytes

    ballast = np.ones(150_000_000, np.float32)  # 600 MB resident here, never in the child
    run = measure_in_own_process("tiny", threads=3, group=4, timeout=300)
    assert run.tokens == 4 * 4 * 16 and run.step_seconds > 0
    assert 50e6 < run.peak_rss_bytes < current_rss_bytes() - 0.5 * ballast.nbytes


def test_seed_memory_child_failure_is_one_line():
    from harness.bench.seed_memory import measure_in_own_process

    with pytest.raises(RuntimeError, match=r"exited 2: .*invalid choice: 'nope'"):
        measure_in_own_process("nope", threads=1, group=1, timeout=120)


def test_seed_memory_child_ends_when_its_parent_is_killed():
    """The child runs in a session of its own (no terminal signal reaches it): a bench killed
    by SIGTERM must not leave a seed workload computing (`end_with_parent`)."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from harness.measure.machine import REPO_ROOT

    parent = subprocess.Popen(
        [sys.executable, "-c", "from harness.bench.seed_memory import measure_in_own_process\n"
         "measure_in_own_process('seed', 2, 63)"], cwd=REPO_ROOT)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline and parent.poll() is None:
            children = psutil.Process(parent.pid).children()
            time.sleep(0.1)
        assert children, "the measuring child never started"
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == -signal.SIGTERM
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"child {[p.pid for p in alive]} outlived its parent"
    finally:  # only what this test started: the parent and the child it saw
        for p in children:
            if p.is_running():
                p.kill()
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
