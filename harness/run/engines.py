"""The one place that knows both engines: build either behind the `Engine` interface, from
the spellings of the command line (`--engine`, `--dtype`, `--inject`, `--threads 1-63`)."""

from __future__ import annotations

import numpy as np

from harness.figures.thresholds import MAX_THREADS_PER_CORE
from plumbing.cores import usable_cores
from plumbing.errors import InputError
from reference.config import Config
from reference.engine import Engine, InjectsFaults, ReferenceEngine

DTYPES = {"float32": np.float32, "float64": np.float64}


def parse_faults(specs: list[str]):
    """`--inject` strings -> fault objects (the fast engine's parser says what is wrong)."""
    if not specs:
        return None
    from fast.faults import parse_inject

    return [parse_inject(s) for s in specs]


def parse_dtype(name: str) -> type[np.floating]:
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; choose float32 or float64")
    return DTYPES[name]


def build_reference(config: Config, *, threads: int = 1, dtype: str = "float64",
                    params: dict[str, np.ndarray] | None = None,
                    stall_timeout: float = 60.0) -> Engine:
    """Entry point `reference`: float64 NumPy, one thread (threads and dtype do not apply)."""
    return ReferenceEngine(config, params=params)


def build_fast(config: Config, *, threads: int = 1, dtype: str = "float32",
               params: dict[str, np.ndarray] | None = None, stall_timeout: float = 60.0,
               faults=None) -> Engine:
    """Entry point `fast`: Numba kernels, Node Zero + `threads` workers."""
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    from fast.trainer import FastTrainer  # imported late: compiles Numba kernels

    return FastTrainer(config, threads, dtype=parse_dtype(dtype), params=params,
                       stall_timeout=stall_timeout, faults=faults)


def make_engine(kind: str, cfg: Config, *, threads: int = 1, dtype: str = "float32",
                params: dict[str, np.ndarray] | None = None, stall_timeout: float = 60.0,
                faults=None) -> Engine:
    """Any engine by its `--engine` spelling: a registered NAME (entry-point group
    `kissing_spheres.engines`), `exec:COMMAND` or `module:factory` (harness/run/plugins.py)."""
    from harness.run.plugins import EXEC_PREFIX, resolve_factory

    parse_dtype(dtype)
    if kind == "fast":
        return build_fast(cfg, threads=threads, dtype=dtype, params=params,
                          stall_timeout=stall_timeout, faults=faults)
    if kind == "mpi":  # `--mpi` on rank 0: the fast engine across every rank (SPEC 10)
        from harness.run.mpi_world import make_mpi_engine

        return make_mpi_engine(cfg, threads=threads, dtype=dtype, np_dtype=parse_dtype(dtype),
                               params=params, stall_timeout=stall_timeout, faults=faults)
    if faults:
        raise InputError(f"--inject needs the fast engine ({kind!r} has no Node Zero or workers)")
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    if kind.startswith(EXEC_PREFIX):
        from harness.run.exec_engine import ExecEngine

        return ExecEngine(kind[len(EXEC_PREFIX):], cfg, threads=threads, dtype=dtype,
                          params=params, stall_timeout=stall_timeout)
    factory = resolve_factory(kind)
    if kind == "reference":  # ours: its errors are ours
        return factory(cfg, threads=threads, dtype=dtype, params=params,
                       stall_timeout=stall_timeout)
    from harness.run.plugins import build_plugin

    return build_plugin(kind, factory, cfg, threads=threads, dtype=dtype, params=params,
                        stall_timeout=stall_timeout)


def unfired_faults(engine: Engine) -> list[str]:
    """Injected faults that never fired (the reference engine takes none)."""
    return [str(f) for f in engine.unfired_faults()] if isinstance(engine, InjectsFaults) else []


def parse_threads(text: str, cap: int | None = None) -> list[int]:
    """`1-63`, `1,2,4`, `1-4,8,16-18` -> sorted unique thread counts (each >= 1).

    `cap`: the largest count allowed (checked before a range is expanded); None: the thread
    cap, MAX_THREADS_PER_CORE per usable core. `--ranks` passes its own.
    """
    out: set[int] = set()
    cap = MAX_THREADS_PER_CORE * usable_cores() if cap is None else cap
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                _check_cap(text, hi, cap)
                out.update(range(lo, hi + 1))
            elif part:
                out.add(_check_cap(text, int(part), cap))
    except ValueError:
        raise InputError(
            f"--threads {text!r}: expected counts like 1-63 or 1,2,4 or 1-4,8") from None
    if not out or min(out) < 1:
        raise InputError(f"--threads {text!r}: thread counts must be >= 1")
    return sorted(out)


def _check_cap(text: str, n: int, cap: int) -> int:
    """`n` when at most MAX_THREADS_PER_CORE per usable core (its reason in thresholds.py)."""
    if n > cap:
        raise InputError(
            f"--threads {text}: {n} is more than {MAX_THREADS_PER_CORE} per usable core "
            f"({usable_cores()} cores: at most {cap}); past that every barrier hands each "
            "worker the GIL in turn (10000 on 2 cores: 25 s for one tiny step); use fewer")
    return n
