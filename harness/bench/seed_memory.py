"""The seed workload's peak RSS, measured in a process that runs nothing else.

The scaling benchmarks read VmHWM inside the bench process, whose window starts at whatever
that process already holds (by then torch, its compiled graphs and earlier benchmarks' heaps):
in one `make bench` run (2026-12-04, Intel Xeon) the seed workload (T = 63, G = 63) read
1,166 MB there and 718 MB in a process of its own. A user's `spheres train` process holds only
the workload, so the target reads this: a child Python that builds the trainer, runs a
one-batch warm-up step and one full group, and reports its own lifetime peak (VmHWM:
interpreter, imports, build and both steps). Not getrusage's ru_maxrss: Linux carries the
parent's high-water mark into a child across fork and exec (a child of a 757 MB process read
757 MB for a run that holds 200 MB).

Run as `python -m harness.bench.seed_memory --preset seed --threads 63 --group 63`: one JSON
line on stdout.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from harness.measure.machine import REPO_ROOT
from harness.measure.process import peak_rss_bytes
from harness.run.stop import run_child
from plumbing.errors import SpheresError
from reference.config import PRESETS, preset

CHILD_TIMEOUT_SECONDS = 1800  # the seed group takes 40-70 s here; 30 min means it is stuck
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class SeedMemory:
    """One own-process run of the seed workload."""

    preset: str
    threads: int
    group: int
    tokens: int  # tokens of the full group's step
    step_seconds: float  # the full group's step, after the warm-up step
    peak_rss_bytes: int  # the child's lifetime peak resident set (VmHWM)


def run_workload(preset_name: str, threads: int, group: int) -> SeedMemory:
    """In this process: build the trainer, warm up on one batch, run one full group."""
    from fast.trainer import FastTrainer
    from harness.bench.workload import random_group

    cfg = preset(preset_name).replace(group_size=group)
    tokens, targets = random_group(cfg, group)
    b = cfg.train.batch_size
    trainer = FastTrainer(cfg, threads)
    try:
        trainer.step(tokens[:b], targets[:b])
        start = time.perf_counter()
        trainer.step(tokens, targets)
        seconds = time.perf_counter() - start
    finally:
        trainer.close()
    peak = peak_rss_bytes()  # this process image's own high-water mark, from exec on
    if peak is None:
        raise RuntimeError("no VmHWM in /proc/self/status: peak RSS is measured on Linux only")
    return SeedMemory(preset_name, threads, group, int(tokens.size), seconds, peak)


def measure_in_own_process(preset_name: str, threads: int, group: int,
                           timeout: float = CHILD_TIMEOUT_SECONDS) -> SeedMemory:
    """`run_workload` in a fresh child Python; raises RuntimeError with the child's last
    error line when it fails or overruns `timeout`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "harness.bench.seed_memory", "--preset", preset_name,
           "--threads", str(threads), "--group", str(group), "--parent", str(os.getpid())]
    try:  # a process group of its own, ended with this call on any error or interrupt
        done = run_child(cmd, timeout=timeout, where="the seed workload's own process",
                         cwd=REPO_ROOT, env=env)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"the seed workload's own process ran past {timeout:.0f} s") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"the seed workload's own process exited {done.returncode}: {last}")
    return SeedMemory(**json.loads(done.stdout.strip().splitlines()[-1]))


def end_with_parent(parent: int) -> None:
    """SIGTERM to this process when `parent` dies (Linux): the child runs in a session of its
    own, so a bench killed by SIGTERM or SIGHUP would otherwise leave it computing."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the request took effect
        sys.exit(f"seed_memory: the process that started this one ({parent}) is gone")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench.seed_memory",
                                description="Run the seed workload once in this process and "
                                "print its peak RSS as one JSON line.")
    p.add_argument("--preset", default="seed", choices=list(PRESETS),
                   help="model and batch preset (default: seed)")
    p.add_argument("--threads", type=int, default=63, help="worker threads (default: 63)")
    p.add_argument("--group", type=int, default=63, help="batches in the group (default: 63)")
    p.add_argument("--parent", type=int, default=None,
                   help="pid of the process that started this one: end when it ends")
    args = p.parse_args(argv)
    if args.parent is not None:
        end_with_parent(args.parent)
    for name in ("threads", "group"):
        if getattr(args, name) < 1:
            p.error(f"--{name} {getattr(args, name)} must be at least 1")
    try:
        run = run_workload(args.preset, args.threads, args.group)
    except SpheresError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    print(json.dumps(asdict(run)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
