"""Checks made before any work starts: every output path the command will write can take it.

SPEC 12: a run must not train for an hour and then fail to write its result. Each command
module lists every output option it has in `OUTPUTS` (tests/test_outputs.py checks that none is
missing); `check_outputs` runs before the command's body and raises InputError (exit 2) with a
one-line message naming the option and the fix: a missing or read-only folder, a folder where
a file is expected, a device or FIFO, a report folder holding files spheres did not write
(plumbing/report_folder.py), two outputs naming the same file, or an output naming an input.
A Path-typed option is an output (inputs such as --data and --resume are str). The engines the
command names (`--engine`) are checked too: a registered name or module:factory that loads, an
exec: command line that splits, so a typo never surfaces after the work.
Resources too (#20 class 2): `estimate_resources` adds up the big arrays a run will make from
the sizes it is given (parameters, Adam state, gradient segments, the workspace pool, token
arrays, thread stacks) and `check_resources` refuses (exit 2, with the numbers) a run whose
estimate exceeds a share of the available memory, or whose threads exceed the OS limit
(plumbing/thread_limits.py) or a sane number per core; each bound's reason is in
harness/figures/thresholds.py.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.figures import thresholds as th
from plumbing.cores import usable_cores
from plumbing.errors import InputError
from plumbing.folder_lock import lock_beside
from plumbing.outputs import check_output_dir, check_output_file
from plumbing.report_folder import check_report_folder
from plumbing.thread_limits import ThreadLimit, thread_limit
from reference.config import Config

__all__ = ["Outputs", "ResourceEstimate", "check_output_dir", "check_output_file",
           "check_outputs", "check_resources", "check_writable", "estimate_resources",
           "lock_outputs"]

Kind = Literal["file", "folder", "report"]  # a report folder is replaced whole (analyze --out)

# A command's output options: (option, argparse dest, kind). Checked before any work.
Outputs = tuple[tuple[str, str, Kind], ...]

INPUTS = (("--data", "data"), ("--resume", "resume"))  # never overwritten by an output


def check_writable(path: Path, option: str = "output") -> None:
    """Fail before any work when the output file cannot be written (exit 2)."""
    check_output_file(Path(path), option)


def check_outputs(args: argparse.Namespace, outputs: Outputs) -> None:
    """Every output path the command will write can take it now (SPEC 12), else exit 2."""
    seen: dict[Path, str] = {}
    files: dict[Path, str] = {}  # file outputs: never an input (a folder may be --resume's)
    reports: list[tuple[Path, str]] = []
    folders: list[tuple[Path, str]] = []  # checkpoint folders: their step-N.npz are the run's
    for option, dest, kind in outputs:
        value = getattr(args, dest, None)
        if value is None:
            continue
        path = Path(value)
        {"file": check_output_file, "folder": check_output_dir,
         "report": check_report_folder}[kind](path, option)
        _refuse_collision(path, option, seen)
        if kind == "file":
            files[path.resolve()] = option
        if kind == "report":
            reports.append((path.resolve(), option))
        if kind == "folder":
            folders.append((path.resolve(), option))
    from harness.run.checkpoint import is_checkpoint_name  # numpy: only once outputs are named

    for path, option in seen.items():
        for report, report_option in reports:
            if report in path.parents:
                raise _inside(option, path, report_option, report)
        for folder, folder_option in folders:
            if path.parent == folder and is_checkpoint_name(path.name):
                raise InputError(f"{option} {path} is a checkpoint's name inside "
                                 f"{folder_option} {folder}, where the run writes its "
                                 "checkpoints; choose another name")
    for option, dest in INPUTS:
        value = getattr(args, dest, None)
        if isinstance(value, str | Path) and Path(value).resolve() in files:
            raise _input_clash(files[Path(value).resolve()], option, value)
    check_engine_specs(getattr(args, "engine", None))


def lock_outputs(args: argparse.Namespace, outputs: Outputs) -> contextlib.ExitStack:
    """Every file output held for the command's life, like --checkpoint-dir and analyze --out
    (plumbing/folder_lock.py): a second run given the same file is refused (exit 2) naming the
    owner, instead of the last writer silently replacing the other's result. MPI followers
    write no output and take no lock."""
    from fast.mpi_topology import launcher_world

    stack = contextlib.ExitStack()
    world = launcher_world()
    if world is not None and world[0] != 0:
        return stack
    try:
        for option, dest, kind in outputs:
            value = getattr(args, dest, None)
            if value is not None and kind == "file":
                stack.enter_context(lock_beside(Path(value), f"{option} {value}"))
    except BaseException:
        stack.close()
        raise
    return stack


BUILT_IN = ("fast", "mpi")  # built by harness/run/engines.py itself, not by a factory


def check_engine_specs(specs: str | list[str] | None) -> None:
    """Every `--engine` spec can be built: InputError (exit 2) naming the first that cannot."""
    import shlex

    from harness.run.plugins import EXEC_PREFIX, resolve_factory

    for spec in [specs] if isinstance(specs, str) else specs or []:
        if spec in BUILT_IN:
            continue
        if spec.startswith(EXEC_PREFIX):
            command = spec[len(EXEC_PREFIX):]
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise InputError(f"--engine {spec!r}: the command line cannot be split ({exc});"
                                 " check its quotes") from None
            if not argv:
                raise InputError(f"--engine {spec!r}: no command after exec:; give one, e.g. "
                                 "exec:'python my_engine.py'")
            continue
        resolve_factory(spec)


def _refuse_collision(path: Path, option: str, seen: dict[Path, str]) -> None:
    key = path.resolve()
    if key in seen:
        raise InputError(f"{seen[key]} and {option} both name {path}; give each output its "
                         "own path")
    seen[key] = option


def _inside(option: str, path: Path, report_option: str, report: Path) -> InputError:
    return InputError(f"{option} {path} lies inside {report_option} {report}, which is "
                      "replaced whole by the report; put it elsewhere")


def _input_clash(output: str, option: str, value: object) -> InputError:
    return InputError(f"{output} would overwrite the input {option} {value}; choose another "
                      "output path")


# -- resources: memory and threads, estimated from the sizes given (#20 class 2) ---------------

@dataclass(frozen=True)
class ResourceEstimate:
    """The big allocations a run will make, in bytes by part, and the threads it starts."""

    parts: dict[str, int]
    threads: int  # threads the engine starts (workers, Node Zero, watchdog)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        big = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {_size(n)}" for name, n in big if n)


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def data_bytes(data: str | None) -> int:
    """Bytes of text behind --data (a file, or every file under a folder); 0 when unreadable
    (the reader then names the problem itself)."""
    if data is None:
        return 0
    p = Path(data)
    try:
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size
    except OSError:
        return 0


def spans(cfg: Config, threads: int, steps: int) -> int:
    """Spans the fast engine's run record holds after `steps` steps: a batch span each, and
    a wait at each of the 4 barriers for every worker and Node Zero."""
    return steps * (cfg.train.group_size + 4 * (threads + 1))


def estimate_resources(cfg: Config, *, threads: int, dtype: str, engine: str,
                       synthetic_tokens: int | None, text_bytes: int = 0,
                       steps: int = 0) -> ResourceEstimate:
    """Memory and threads of one training run from its sizes alone (nothing allocated);
    `steps` adds the run record that grows with every step of the fast engine."""
    from fast.model import FastModel
    from fast.spheres import POSITIONS
    from fast.workspace_pool import pool_size

    fast = engine in ("fast", "mpi")  # other engines: the model in float64 and the tokens
    model = FastModel(cfg.model, dtype if fast else "float64", cfg.train.micro_batch)
    item, P = model.dtype.itemsize, model.n_params
    t = cfg.train
    group_ids = 2 * t.group_size * t.batch_size * cfg.model.seq_len * 8  # int64 inputs, targets
    parts = {
        "parameters": P * item,
        "optimizer state (Adam m, v)": 2 * P * item,
        "gradient segments": (POSITIONS + 1) * P * item if fast else P * 8,
        f"workspaces ({pool_size(threads) if fast else 1} in the pool)":
            (pool_size(threads) if fast else 1) * model.workspace_nbytes(),
        "checkpoint copies (float64)": 3 * P * 8,
        "token arrays": (synthetic_tokens or 0) * th.SYNTHETIC_BYTES_PER_TOKEN
                        + text_bytes * th.TEXT_BYTES_PER_BYTE + group_ids,
        f"thread stacks ({threads + 2 if fast else 1} threads)":
            (threads + 2 if fast else 1) * th.THREAD_BYTES,
        f"run record ({steps:,} steps)":
            spans(cfg, threads, steps) * th.RECORD_BYTES_PER_SPAN if fast else 0,
    }
    return ResourceEstimate(parts, threads + 2 if fast else 0)


def max_threads() -> int:
    """The most --threads accepted: MAX_THREADS_PER_CORE per usable core (reason there)."""
    return th.MAX_THREADS_PER_CORE * usable_cores()


def check_resources(need: ResourceEstimate, *, fix: str,
                    available: int | None = None, limit: ThreadLimit | None = None) -> None:
    """InputError (exit 2) with the numbers when the machine cannot hold the run (SPEC 12)."""
    import psutil

    workers = need.threads - 2
    if workers > max_threads():
        raise InputError(
            f"--threads {workers} is more than {th.MAX_THREADS_PER_CORE} per usable core "
            f"({usable_cores()} cores: at most {max_threads()}); past that every barrier hands "
            "each worker the GIL in turn (10000 on 2 cores: 25 s for one tiny step); use "
            "fewer --threads")
    limit = limit if limit is not None else thread_limit()
    if limit.room is not None and need.threads > limit.room:
        raise InputError(f"--threads {workers} needs {need.threads} threads but the OS lets this "
                         f"process start {limit.room} more ({limit.name}); use fewer --threads")
    available = available if available is not None else psutil.virtual_memory().available
    budget = th.MEMORY_AVAILABLE_FRACTION * available
    if need.total > budget:
        raise InputError(
            f"the run needs an estimated {_size(need.total)} of memory ({need.describe()}), "
            f"more than {th.MEMORY_AVAILABLE_FRACTION:.0%} of the {_size(available)} available "
            f"({_size(budget)}); {fix}")


def checkpoint_bytes(cfg: Config) -> int:
    """An upper bound on one checkpoint file: parameters and both Adam moments in float64,
    plus the vocabulary and config (a few bytes per id)."""
    from reference.params import param_specs

    P = sum(s.size for s in param_specs(cfg.model))
    return 3 * P * 8 + 64 * cfg.model.vocab_size + 65536


def checkpoints_kept(steps: int, every: int, keep: int) -> int:
    """Checkpoint files on disk at once: every `every` steps and at the end, `keep` newest
    (0: all), plus the one being written."""
    written = (steps // every if every else 0) + 1
    return min(written, keep) + 1 if keep else written + 1


def check_disk(folder: Path, need: int, what: str, free: int | None = None,
               fix: str = "raise --checkpoint-every, lower --keep-checkpoints (0 keeps all) or "
                          "choose another --checkpoint-dir") -> None:
    """InputError (exit 2) with the numbers when `need` bytes will not fit in `folder`'s disk."""
    import shutil

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = free if free is not None else shutil.disk_usage(probe).free
    if need > th.DISK_FREE_FRACTION * free:
        raise InputError(f"{what} need an estimated {_size(need)} on disk, more than "
                         f"{th.DISK_FREE_FRACTION:.0%} of the {_size(free)} free under {probe}; "
                         f"{fix}")
