"""Machine facts behind every figure: the BLAS library, the kernel it runs, its threads, and any
environment variable that pins them, with a warning when a pin selects an older kernel than the
CPU supports (an AVX-512 CPU pinned to Haswell runs sgemm at about half speed)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from harness.figures.facts import BlasFacts, BlasLibrary, GitCommit, MachineFacts
from harness.figures.serial import to_json
from plumbing.cores import usable_cores

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (git commit, "our" frames)

PIN_PREFIXES = ("OPENBLAS_", "OMP_", "MKL_", "GOTO", "BLIS_")

# OpenBLAS x86 kernels (threadpoolctl's "architecture", OPENBLAS_CORETYPE), oldest to newest,
# each with the CPU flag its float32/float64 code path needs
KERNEL_FLAGS = {
    "prescott": "sse3", "core2": "ssse3", "nehalem": "sse4_2", "sandybridge": "avx",
    "haswell": "avx2", "skylakex": "avx512f",
}
_ORDER = list(KERNEL_FLAGS)
# same float32/float64 kernels as one above (newer ones add only bf16/AMX paths)
ALIASES = {"zen": "haswell", "cooperlake": "skylakex", "sapphirerapids": "skylakex"}


def _tier(kernel: str) -> int | None:
    k = ALIASES.get(kernel.lower(), kernel.lower())
    return _ORDER.index(k) if k in _ORDER else None


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (from /proc/cpuinfo; empty where it does not exist)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def best_kernel(flags: set[str]) -> str | None:
    """The newest kernel of KERNEL_FLAGS whose flag this CPU has."""
    best = None
    for kernel in _ORDER:
        if KERNEL_FLAGS[kernel] in flags:
            best = kernel
    return best


def pin_warnings(env: dict[str, str], flags: set[str], running: list[str]) -> list[str]:
    """A warning when OPENBLAS_CORETYPE (or the kernel running) is older than the CPU's best."""
    best = best_kernel(flags)
    if best is None:
        return []
    out = []
    pinned = env.get("OPENBLAS_CORETYPE")
    for kernel, what in [(pinned, "OPENBLAS_CORETYPE pins"), *[(k, "BLAS runs") for k in running]]:
        tier = _tier(kernel) if kernel else None
        if tier is not None and tier < _ORDER.index(best):
            out.append(f"{what} the {kernel} kernel but this CPU supports {best} "
                       f"({KERNEL_FLAGS[best]}): BLAS-bound figures are understated; unset the "
                       f"pin for benchmarks (env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...)")
    return list(dict.fromkeys(out))


def blas_facts(env: dict[str, str] | None = None, cpuinfo: str | None = None) -> BlasFacts:
    """BLAS libraries (threadpoolctl), their kernel and threads, pins, and warnings."""
    env = dict(os.environ if env is None else env)
    try:
        import numpy  # noqa: F401  (threadpoolctl sees only loaded libraries: load numpy's BLAS)
        from threadpoolctl import threadpool_info

        libs = [BlasLibrary(library=p.get("internal_api"), version=p.get("version"),
                            kernel=p.get("architecture"), threads=p.get("num_threads"),
                            file=os.path.basename(p.get("filepath") or ""))
                for p in threadpool_info() if p.get("user_api") == "blas"]
    except Exception as exc:  # threadpoolctl missing or broken: say so, never fail the run
        libs = [BlasLibrary(library=None, error=f"{type(exc).__name__}: {exc}")]
    pins = {k: v for k, v in sorted(env.items()) if k.startswith(PIN_PREFIXES)}
    flags = cpu_flags(cpuinfo)
    running = [lib.kernel for lib in libs if lib.kernel]
    return BlasFacts(libraries=libs, pins=pins, cpu_best_kernel=best_kernel(flags),
                     warnings=pin_warnings(env, flags, running))


def blas_line(facts: BlasFacts) -> str:
    """One line for a report or bench summary."""
    libs = ", ".join(f"{lib.library} {lib.version} kernel {lib.kernel} "
                     f"({lib.threads} threads)" for lib in facts.libraries)
    pins = ", ".join(f"{k}={v}" for k, v in facts.pins.items()) or "none"
    return f"BLAS: {libs or 'none found'}; pinned by environment: {pins}"


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: str | Path = REPO_ROOT) -> GitCommit | None:
    """HEAD commit and whether the tree has uncommitted changes (None outside a git repo)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo, capture_output=True, text=True, timeout=10)
        return GitCommit(commit=head.stdout.strip(), dirty=bool(status.stdout.strip()))
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_facts() -> MachineFacts:
    """The machine and software behind a measurement, for reports and bench summaries."""
    import numba
    import numpy as np

    return MachineFacts(
        cores=usable_cores(), logical_cpus=os.cpu_count(),
        physical_cores=psutil.cpu_count(logical=False), cpu_model=_cpu_model(),
        memory_total_bytes=psutil.virtual_memory().total, platform=platform.platform(),
        python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
        git=git_commit(), blas=blas_facts())


def machine_info() -> dict[str, Any]:
    """`machine_facts()` as JSON data, for writers of plain JSON (pytest-benchmark's file)."""
    return to_json(machine_facts())
