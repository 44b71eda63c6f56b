"""`ThreadCpuSampler`: a background thread sampling every native thread's CPU time (named by
the Python thread that owns it) and the process RSS."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from harness.figures.facts import SamplerSummary
from harness.figures.serial import to_json
from harness.measure.process import cpu_use
from plumbing.cores import usable_cores


@dataclass
class Sample:
    """One observation: wall time, RSS and cumulative CPU seconds per native thread id."""

    t: float  # seconds since the sampler started (time.monotonic based)
    rss: int  # process resident set size, bytes
    cpu: dict[int, float]  # native thread id -> user + system CPU seconds so far


@dataclass
class ThreadCpuSampler:
    """Samples per-thread CPU seconds and process RSS every `interval` seconds.

    Runs as the daemon-free thread `ks-profiler`; use as a context manager or start()/stop().
    Native threads are named by `threading.enumerate()` (native_id -> name); threads that no
    Python object owns (BLAS, Numba, memray) are named `native-<tid>`. A thread's CPU seconds
    are counted from its first observation (or 0 if it started after the sampler) to its last,
    so a thread that exits loses at most one interval of CPU time.
    """

    interval: float = 0.25  # seconds between samples: fine enough for a ~1 s step, cheap
    pid: int | None = None  # process to sample; None = this process
    samples: list[Sample] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # native id -> thread name

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"interval={self.interval!r} must be positive seconds")
        self._process = psutil.Process(self.pid)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._lock = threading.Lock()  # guards samples/names against a concurrent reader
        self._initial_tids: set[int] = set()

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> ThreadCpuSampler:
        if self._thread is not None:
            raise RuntimeError("ThreadCpuSampler already started; create a new one per run")
        self._t0 = time.monotonic()
        self.sample()
        with self._lock:
            self._initial_tids = set(self.samples[0].cpu)
        self._thread = threading.Thread(target=self._run, name="ks-profiler", daemon=False)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops sampling, joins `ks-profiler` and takes a final sample (idempotent)."""
        if self._thread is None or self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self.sample()

    def __enter__(self) -> ThreadCpuSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except psutil.Error:  # the sampled process ended: nothing more to see
                return

    # sampling --------------------------------------------------------------------------
    def sample(self) -> None:
        """Takes one observation now (also called at start and stop)."""
        threads = self._process.threads()
        rss = self._process.memory_info().rss
        now = time.monotonic() - self._t0
        if self.pid in (None, os.getpid()):
            py_names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
        else:
            py_names = {}
        with self._lock:
            for tid, name in py_names.items():
                self.names[tid] = name
            for th in threads:
                self.names.setdefault(th.id, f"native-{th.id}")
            self.samples.append(
                Sample(now, rss, {th.id: th.user_time + th.system_time for th in threads})
            )

    # results ---------------------------------------------------------------------------
    def _snapshot(self) -> tuple[list[Sample], dict[int, str]]:
        with self._lock:
            return list(self.samples), dict(self.names)

    @property
    def wall_seconds(self) -> float:
        samples, _ = self._snapshot()
        return samples[-1].t - samples[0].t if samples else 0.0

    def thread_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds each thread spent during sampling, by thread name (summed per name)."""
        samples, names = self._snapshot()
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        for s in samples:
            for tid, cpu in s.cpu.items():
                first.setdefault(tid, cpu if tid in self._initial_tids else 0.0)
                last[tid] = cpu
        out: dict[str, float] = {}
        for tid, cpu in last.items():
            name = names.get(tid, f"native-{tid}")
            out[name] = out.get(name, 0.0) + max(0.0, cpu - first[tid])
        return out

    def utilisation(self, cores: int | None = None) -> list[tuple[float, float]]:
        """(time, CPU use) per interval: process CPU seconds / wall seconds / cores."""
        samples, _ = self._snapshot()
        cores = cores or usable_cores()
        out = []
        # each thread's CPU when last seen (as thread_cpu_seconds counts it): a thread missing
        # from one sample and listed again adds only what it used since, not its whole history
        # (one CI run under load read 6.9 cores of 2 in one interval; this is one way to get it)
        seen = dict(samples[0].cpu) if samples else {}
        for prev, cur in zip(samples, samples[1:], strict=False):
            dt = cur.t - prev.t
            d_cpu = sum(max(0.0, cpu - seen.get(tid, cpu if tid in self._initial_tids else 0.0))
                        for tid, cpu in cur.cpu.items())
            seen.update(cur.cpu)
            if dt > 0:
                out.append((cur.t, cpu_use(d_cpu, dt, cores)))
        return out

    def rss_series(self) -> tuple[list[float], list[int]]:
        """(times in seconds, RSS in bytes) of every sample."""
        samples, _ = self._snapshot()
        return [s.t for s in samples], [s.rss for s in samples]

    @property
    def peak_rss(self) -> int:
        """Largest sampled RSS in bytes (0 before the first sample)."""
        samples, _ = self._snapshot()
        return max((s.rss for s in samples), default=0)

    def result(self, cores: int | None = None) -> SamplerSummary:
        """Everything above, typed, for reports."""
        cores = cores or usable_cores()
        per_thread = self.thread_cpu_seconds()
        wall = self.wall_seconds
        total = sum(per_thread.values())
        times, rss = self.rss_series()
        return SamplerSummary(
            wall_seconds=wall, cores=cores, cpu_seconds_total=total,
            cpu_use=cpu_use(total, wall, cores) if wall > 0 else float("nan"),
            thread_cpu_seconds=per_thread, utilisation=self.utilisation(cores),
            rss_times=times, rss_bytes=rss, peak_rss_bytes=self.peak_rss)

    def summary(self, cores: int | None = None) -> dict[str, Any]:
        """`result()` as JSON-ready data (the bench suites store it in their extra_info)."""
        return to_json(self.result(cores))
