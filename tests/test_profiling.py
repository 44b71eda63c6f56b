"""Profiling tools measure what they claim, checked against independent measurements."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from harness.measure import machine, memray_profile, process, pyspy
from harness.measure.process import cpu_use
from harness.measure.sampler import ThreadCpuSampler
from plumbing.cores import usable_cores


def _spin(cpu_seconds: float, done: list[float]) -> None:
    start = time.thread_time()
    while time.thread_time() - start < cpu_seconds:
        pass
    done.append(time.thread_time() - start)


def test_cpu_use_is_cpu_seconds_over_wall_over_cores():
    assert cpu_use(4.0, 2.0, 2) == pytest.approx(1.0)
    assert cpu_use(1.0, 2.0, 4) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="wall_seconds"):
        cpu_use(1.0, 0.0, 2)


def test_usable_cores_is_the_affinity_mask():
    assert usable_cores() == len(os.sched_getaffinity(0))
    assert cpu_use(3.0, 1.0) == pytest.approx(3.0 / len(os.sched_getaffinity(0)))


def test_sampler_attributes_cpu_to_named_threads(no_thread_leak):
    spun: list[float] = []
    spun_done, release = threading.Event(), threading.Event()

    def busy_then_wait() -> None:
        _spin(0.4, spun)
        spun_done.set()
        release.wait(30)  # alive (and idle) until the sampler has seen its final CPU time

    with ThreadCpuSampler(interval=0.05) as sampler:
        busy = threading.Thread(target=busy_then_wait, name="ks-test-busy")
        idle = threading.Thread(target=time.sleep, args=(0.4,), name="ks-test-idle")
        busy.start()
        idle.start()
        assert spun_done.wait(60)
        # a loaded machine may starve the sampler: wait (bounded) for two samples taken after
        # the spin ended, so the last sample of the busy thread holds all of its CPU time
        seen = len(sampler.rss_series()[0])
        deadline = time.monotonic() + 30
        while len(sampler.rss_series()[0]) < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        busy.join()
        idle.join()
        assert any(t.name == "ks-profiler" for t in threading.enumerate())
    per_thread = sampler.thread_cpu_seconds()
    # the thread's own clock is the independent truth; allow one sampling interval of loss
    assert per_thread["ks-test-busy"] == pytest.approx(spun[0], abs=0.08)
    assert per_thread["ks-test-idle"] < 0.05
    summary = sampler.summary(cores=2)
    json.dumps(summary)  # JSON-ready for reports and bench results
    assert summary["cpu_seconds_total"] >= per_thread["ks-test-busy"]
    assert summary["cpu_use"] == pytest.approx(
        summary["cpu_seconds_total"] / summary["wall_seconds"] / 2)
    for _, use in sampler.utilisation(cores=2):
        assert 0.0 <= use <= 1.5  # one busy thread of two cores: about 0.5 per interval
    # the per-interval series accounts for the busy thread's CPU (whatever the machine's load):
    # integrated over time it holds at least what that thread's own clock measured
    times, _ = sampler.rss_series()
    dts = dict(zip(times[1:], (b - a for a, b in zip(times, times[1:], strict=False)),
                   strict=True))
    area = sum(use * dts[t] * 2 for t, use in sampler.utilisation(cores=2))
    assert area >= per_thread["ks-test-busy"] - 1e-6
    assert not any(t.name == "ks-profiler" for t in threading.enumerate())


def test_sampler_sees_memory_rise_and_stops_idempotently(no_thread_leak):
    size = 200 * 2**20
    with ThreadCpuSampler(interval=0.02) as sampler:
        base = sampler.samples[0].rss
        block = np.ones(size // 8)  # touched pages count in RSS
        time.sleep(0.15)
        del block
        time.sleep(0.05)
    sampler.stop()  # second stop is a no-op
    times, rss = sampler.rss_series()
    assert len(times) == len(rss) >= 3
    assert times == sorted(times)
    assert sampler.peak_rss >= base + 0.9 * size
    assert sampler.peak_rss == max(rss)


def test_peak_rss_window_reset():
    if not process.reset_peak_rss():
        pytest.skip("this kernel cannot reset VmHWM (/proc/self/clear_refs)")
    block = np.ones(150 * 2**20 // 8)
    high = process.peak_rss_bytes()
    del block
    assert process.reset_peak_rss()
    low = process.peak_rss_bytes()
    assert high - low >= 0.9 * 150 * 2**20


def test_release_free_memory_returns_freed_heap_to_the_os():
    import psutil

    proc = psutil.Process()
    blocks = [bytearray(4000) for _ in range(50_000)]  # 200 MB of small heap chunks
    pin = bytearray(4000)  # keeps the heap top in use, so free() alone cannot shrink it
    del blocks
    held = proc.memory_info().rss
    process.release_free_memory()
    assert held - proc.memory_info().rss >= 100 * 2**20
    del pin


def _allocate_known_block() -> float:
    block = np.ones(5_000_000)  # 40 MB, the largest allocation alive at the peak
    return float(block.sum())


def test_memray_reports_peak_and_the_allocating_line(tmp_path):
    result = memray_profile.memray_profile(_allocate_known_block, tmp_path)
    assert "error" not in result, result.get("error")
    assert result["result"] == 5_000_000.0
    assert result["peak_bytes"] >= 40_000_000
    top = result["top_sites"][0]
    lines, first = inspect.getsourcelines(_allocate_known_block)
    block_line = first + next(i for i, line in enumerate(lines) if "np.ones" in line)
    assert (top["function"], top["file"], top["line"]) == (
        "_allocate_known_block", __file__, block_line)
    assert top["bytes"] >= 40_000_000
    assert (tmp_path / "memray.bin").is_file()


def test_memray_failure_is_reported_not_raised(tmp_path):
    import memray

    with memray.Tracker(str(tmp_path / "outer.bin")):  # a second tracker cannot start
        result = memray_profile.memray_profile(lambda: 7, tmp_path / "inner")
    assert "error" in result and "memray" in result["error"]
    assert result["result"] == 7  # fn still ran


def test_memray_lets_the_functions_own_error_through(tmp_path):
    def boom():
        raise KeyError("from fn")

    with pytest.raises(KeyError, match="from fn"):
        memray_profile.memray_profile(boom, tmp_path)
    assert memray_profile.memray_profile(lambda: 1, tmp_path)["result"] == 1  # tracker was released


def test_pyspy_dump_of_this_process_names_this_test():
    text = pyspy.pyspy_dump(os.getpid())
    assert "test_pyspy_dump_of_this_process_names_this_test" in text, text[:2000]


@pytest.mark.parametrize("native", [False, True])
def test_pyspy_flamegraph_of_a_busy_child(tmp_path, native):
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.time()\nwhile time.time() - t < 6: pass"])
    try:
        time.sleep(0.5)
        result = pyspy.pyspy_flamegraph(child.pid, 1, tmp_path / "fg.svg", native=native)
    finally:
        child.kill()
        child.wait()
    assert result["ok"], result
    assert ("--native" if native else "--nonblocking") in result["command"]
    svg = (tmp_path / "fg.svg").read_text()
    assert "<svg" in svg and "&lt;module&gt; (&lt;string&gt;:3)" in svg  # the busy loop line


def test_pyspy_missing_gives_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(pyspy, "find_pyspy", lambda: None)
    assert pyspy.pyspy_dump(os.getpid()).startswith("py-spy dump unavailable: py-spy not")
    result = pyspy.pyspy_flamegraph(os.getpid(), 1, tmp_path / "fg.svg")
    assert not result["ok"] and "py-spy not found" in result["error"]


def test_pyspy_is_found_beside_the_interpreter():
    exe = pyspy.find_pyspy()
    assert exe is not None and os.path.dirname(exe) == os.path.dirname(sys.executable)


def test_machine_info_describes_this_machine():
    import numba

    info = machine.machine_info()
    json.dumps(info)
    assert info["cores"] == len(os.sched_getaffinity(0))
    assert info["numpy"] == np.__version__ and info["numba"] == numba.__version__
    assert info["memory_total_bytes"] > 2**28
    # the checkout itself (a module move once left it one folder too deep, unnoticed)
    assert (machine.REPO_ROOT / "pyproject.toml").is_file()
    assert (machine.REPO_ROOT / "examples" / "numpy_engine.py").is_file()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=machine.REPO_ROOT,
                          capture_output=True, text=True)
    if head.returncode == 0:
        assert info["git"]["commit"] == head.stdout.strip()


def test_a_thread_missing_from_one_sample_adds_only_its_increment():
    """Thread 7 (10 s of CPU before sampling) is missing from the second sample and listed
    again in the third, 0.1 s later: that interval used 0.1 s, not 10 s of one core (before:
    its whole history counted again, 50 cores' worth on 2)."""
    from harness.measure.sampler import Sample

    sampler = ThreadCpuSampler(interval=0.1)
    sampler._initial_tids = {7}  # noqa: SLF001 - the tids seen when sampling began
    sampler.samples = [Sample(0.0, 1, {7: 10.0}), Sample(0.1, 1, {}),
                       Sample(0.2, 1, {7: 10.1})]
    uses = [use for _, use in sampler.utilisation(cores=2)]
    assert uses == pytest.approx([0.0, 0.5])
