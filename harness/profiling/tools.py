"""Measure what the seed only asserted: per-thread CPU, memory, stacks and the machine.

Four tools, each returning plain data so reports and `make bench` can print the figure behind
every verdict:
- `ThreadCpuSampler`: a background thread sampling every native thread's CPU time (named by
  the Python thread that owns it) and the process RSS.
- `memray_profile`: peak memory and the allocation sites alive at the high-water mark.
- `pyspy_flamegraph` / `pyspy_dump`: sampled flame graphs and stack dumps of a live process.
- `machine_info`: cores, CPU model, memory, library versions and git commit.
CPU use is always CPU seconds / wall seconds / cores (`cpu_use`); the seed divided wrongly.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]


def cpu_use(cpu_seconds: float, wall_seconds: float, cores: int | None = None) -> float:
    """Fraction of the machine busy: CPU seconds / wall seconds / cores (1.0 = every core).

    `cores` defaults to the cores this process may run on.
    """
    cores = cores or available_cores()
    if wall_seconds <= 0:
        raise ValueError(f"wall_seconds={wall_seconds!r} must be positive to compute CPU use")
    if cores <= 0:
        raise ValueError(f"cores={cores!r} must be positive")
    return cpu_seconds / wall_seconds / cores


def available_cores() -> int:
    """Cores this process may use (CPU affinity when the OS reports it, else os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- peak RSS (Linux)


def release_free_memory() -> None:
    """Collect garbage and hand free heap pages back to the OS (glibc malloc_trim, all arenas).

    Call before `reset_peak_rss()` so a window's peak is not inflated or hidden by memory an
    earlier measurement freed but the allocator kept.
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def reset_peak_rss() -> bool:
    """Reset this process's kernel high-water mark (VmHWM) so the next read covers a window.

    Linux only (writing 5 to /proc/self/clear_refs); returns False where unsupported.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int:
    """This process's resident set size now (psutil)."""
    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int | None:
    """This process's peak RSS since start or the last `reset_peak_rss()` (None if unknown)."""
    try:
        with open("/proc/self/status") as fh:
            match = re.search(r"VmHWM:\s+(\d+)\s+kB", fh.read())
        return int(match.group(1)) * 1024 if match else None
    except OSError:
        return None


# --------------------------------------------------------------------------- thread sampler


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
        cores = cores or available_cores()
        out = []
        for prev, cur in zip(samples, samples[1:], strict=False):
            dt = cur.t - prev.t
            if dt <= 0:
                continue
            d_cpu = sum(cpu - prev.cpu.get(tid, 0.0) for tid, cpu in cur.cpu.items())
            out.append((cur.t, cpu_use(max(0.0, d_cpu), dt, cores)))
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

    def summary(self, cores: int | None = None) -> dict[str, Any]:
        """Everything above as JSON-ready data, for reports and bench results."""
        cores = cores or available_cores()
        per_thread = self.thread_cpu_seconds()
        wall = self.wall_seconds
        total = sum(per_thread.values())
        times, rss = self.rss_series()
        return {
            "wall_seconds": wall,
            "cores": cores,
            "cpu_seconds_total": total,
            "cpu_use": cpu_use(total, wall, cores) if wall > 0 else float("nan"),
            "thread_cpu_seconds": per_thread,
            "utilisation": self.utilisation(cores),
            "rss_times": times,
            "rss_bytes": rss,
            "peak_rss_bytes": self.peak_rss,
        }


# --------------------------------------------------------------------------- memray


def _site_frame(stack: list[tuple[str, str, int]]) -> tuple[str, str, int]:
    """The allocation's most telling frame: the first one in our code, else the innermost."""
    for function, filename, line in stack:
        ours = filename.startswith(str(REPO_ROOT)) and "site-packages" not in filename
        if ours and filename != __file__:
            return function, filename, line
    return stack[0] if stack else ("<unknown>", "<unknown>", 0)


def _quiet_exit(tracker: Any) -> None:
    """Stops a tracker while fn's own exception is on its way out (that one matters more)."""
    try:
        tracker.__exit__(None, None, None)
    except Exception:
        pass


def memray_profile(
    fn: Callable[[], Any], out_dir: str | Path, top: int = 10, name: str = "memray"
) -> dict[str, Any]:
    """Runs fn() under memray and reports peak memory and the top sites at the high-water mark.

    The capture is `out_dir/<name>.bin` (replaced if present). Returns peak_bytes,
    total_allocations, capture path, `top_sites` (function, file, line, bytes, allocations;
    sites are the first frame in this repository, else the innermost Python frame) and `result`
    (fn's return value). A memray failure never reaches the caller: the dict then has `error`
    (and fn still runs untracked if the tracker could not start). Exceptions of fn propagate.
    """
    out_dir = Path(out_dir)
    path = out_dir / f"{name}.bin"
    try:
        import memray

        out_dir.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        tracker = memray.Tracker(str(path), native_traces=True)
        tracker.__enter__()
    except Exception as exc:  # memray missing, unsupported platform, another tracker active
        return {"error": f"memray could not start: {exc!r}", "result": fn(), "capture": None}
    try:
        result = fn()
    except BaseException:
        _quiet_exit(tracker)
        raise
    try:
        tracker.__exit__(None, None, None)
    except Exception as exc:
        return {"error": f"memray could not stop: {exc!r}", "result": result,
                "capture": str(path)}
    try:
        reader = memray.FileReader(str(path))
        sites: dict[tuple[str, str, int], list[int]] = {}
        for record in reader.get_high_watermark_allocation_records(merge_threads=True):
            key = _site_frame(record.stack_trace())
            acc = sites.setdefault(key, [0, 0])
            acc[0] += record.size
            acc[1] += record.n_allocations
        ranked = sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]
        meta = reader.metadata
        return {
            "peak_bytes": int(meta.peak_memory),
            "total_allocations": int(meta.total_allocations),
            "capture": str(path),
            "top_sites": [
                {"function": f, "file": fname, "line": line, "bytes": b, "allocations": n}
                for (f, fname, line), (b, n) in ranked
            ],
            "result": result,
        }
    except Exception as exc:
        return {"error": f"memray capture {path} unreadable: {exc!r}", "result": result,
                "capture": str(path)}


# --------------------------------------------------------------------------- py-spy


def find_pyspy() -> str | None:
    """The py-spy executable beside this interpreter (the venv), else on PATH, else None."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


_PYSPY_MISSING = "py-spy not found beside {exe} or on PATH; install it with `make install`"


def pyspy_flamegraph(
    pid: int, seconds: float, out_svg: str | Path, native: bool = False
) -> dict[str, Any]:
    """Records a flame graph of a live process with py-spy; returns what happened, never raises.

    Default is `--nonblocking` (the profiled run is not paused, so timings stay honest).
    py-spy cannot combine that with `--native` ("Can't get native stack traces with the
    --nonblocking option"), so `native=True` records in blocking mode with `--native` instead,
    which shows frames inside Numba/BLAS but pauses the target for each sample.
    Keys: ok, svg, command, returncode, output, and error when not ok.
    """
    exe = find_pyspy()
    if exe is None:
        return {"ok": False, "error": _PYSPY_MISSING.format(exe=sys.executable), "svg": None}
    out_svg = Path(out_svg)
    out_svg.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
           "--format", "flamegraph", "-o", str(out_svg)]
    cmd += ["--native"] if native else ["--nonblocking"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        return {"ok": False, "command": cmd, "svg": None,
                "error": f"py-spy record did not finish within {seconds + 30:.0f} s"}
    except OSError as exc:
        return {"ok": False, "command": cmd, "svg": None, "error": f"py-spy failed: {exc}"}
    ok = proc.returncode == 0 and out_svg.is_file() and out_svg.stat().st_size > 0
    result = {"ok": ok, "command": cmd, "returncode": proc.returncode,
              "output": (proc.stdout + proc.stderr)[-4000:], "svg": str(out_svg) if ok else None}
    if not ok:
        result["error"] = (f"py-spy record exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()[:500]} (py-spy needs ptrace "
                           "permission: run as root or set kernel.yama.ptrace_scope=0)")
    return result


def pyspy_dump(pid: int, timeout: float = 20.0) -> str:
    """Every thread's stack of a live process (`py-spy dump --native`, else without --native).

    Works on this process too (the watchdog's stack dumps). Never raises: on failure the text
    says why, starting with "py-spy dump unavailable".
    """
    exe = find_pyspy()
    if exe is None:
        return "py-spy dump unavailable: " + _PYSPY_MISSING.format(exe=sys.executable)
    errors = []
    for extra in (["--native"], []):
        cmd = [exe, "dump", "--pid", str(pid), *extra]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (subprocess.TimeoutExpired, OSError) as exc:
            errors.append(f"{' '.join(cmd)}: {exc}")
            continue
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout
        errors.append(f"{' '.join(cmd)} exited {proc.returncode}: "
                      f"{proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else ''}")
    return "py-spy dump unavailable: " + "; ".join(errors)


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: str | Path = REPO_ROOT) -> dict[str, Any] | None:
    """HEAD commit and whether the tree has uncommitted changes (None outside a git repo)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo, capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_info() -> dict[str, Any]:
    """The machine and software behind a measurement, for reports and bench JSON."""
    import numba
    import numpy as np

    info: dict[str, Any] = {
        "cores": available_cores(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu_model": _cpu_model(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "git": git_commit(),
    }
    from harness.profiling.machine import blas_facts

    info["blas"] = blas_facts()
    return info
