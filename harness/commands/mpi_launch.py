"""`spheres train --mpi` / `spheres grads --mpi`: the command line across MPI ranks (SPEC 10).

Rank 0 runs the ordinary command (commands/train.py, grads.py) with the `mpi` engine
(fast.mpi_engine.MpiEngine): it alone reads data, prints the log and writes checkpoints. The
other ranks wait for rank 0's setup (config, threads, dtype, stall timeout, faults) and then
follow its commands. Any error ends the WHOLE job with the error's exit code through
MPI_Abort, after the rank that saw it printed the diagnosis (rank, thread, phase); mpiexec exits
with that code and no process is left behind.

This module never imports mpi4py at import time, so the CLI can call `mpi_entry` on every run:
a process started by mpiexec without `--mpi` is refused (exit 2) before MPI is touched.
"""

from __future__ import annotations

import argparse
import os
import sys

from fast.mpi_topology import MAX_RANKS, launcher_world
from harness.run.mpi_world import STARTUP_SECONDS, name_silent_ranks, start_mpi
from harness.run.mpi_world import channel as current_channel
from harness.run.stop import Stopped
from plumbing.errors import ExitCode, InputError, SpheresError, StallError

MPI_COMMANDS = ("train", "grads")

def mpi_entry(args: argparse.Namespace) -> int | None:
    """Run an `--mpi` command and return its exit code; None for an ordinary run.

    Refuses (InputError, exit 2) a command started by mpiexec with R > 1 without `--mpi`, which
    would otherwise run R independent copies that each train alone; every rank exits 2, and
    only rank 0 prints the message (not once per rank).
    """
    wants = bool(getattr(args, "mpi", False))
    world = launcher_world()
    if not wants:
        if world is not None and world[1] > 1:
            if world[0] != 0:  # every rank refuses alike; rank 0 alone says so, once
                return InputError.exit_code
            fix = ("add --mpi: mpiexec -n R spheres train --mpi ..." if args.command in
                   MPI_COMMANDS else f"run `spheres {args.command}` without mpiexec")
            raise InputError(f"started by an MPI launcher with {world[1]} ranks but without "
                             f"--mpi: each rank would run alone; {fix}")
        return None
    if args.command not in MPI_COMMANDS:
        raise InputError(f"--mpi applies to train and grads, not {args.command}")
    channel = start_mpi()
    problem = None  # every rank sees the same size and flags, so every rank refuses alike
    if channel.size > MAX_RANKS:
        problem = (f"mpiexec -n {channel.size}: the {MAX_RANKS} level-2 spheres allow 1 to "
                   f"{MAX_RANKS} ranks; use mpiexec -n {MAX_RANKS} (or fewer) and --threads for "
                   "more workers per rank")
    elif args.command == "train" and args.engine != "fast":
        problem = "--mpi runs the fast engine; drop --engine or use --engine fast"
    if problem is not None:
        if channel.rank == 0:
            print(f"spheres: error: {problem}", file=sys.stderr, flush=True)
        return InputError.exit_code
    if channel.rank == 0:
        return _root(args)
    return _follower(args, channel)


# -- private ----------------------------------------------------------------------------------

def _root(args: argparse.Namespace) -> int:
    """Rank 0: the ordinary command with the mpi engine; any failure aborts the job."""
    from harness.commands import grads, train

    args.engine = "mpi"
    try:
        return train.run(args) if args.command == "train" else grads.run(args)
    except StallError as exc:
        from harness.commands.failures import report_stall

        world = current_channel()
        if world is not None and "another rank is stuck or gone" in str(exc):
            name_silent_ranks(exc, world.size)  # which rank, when this host can see it
        report_stall(exc, getattr(args, "checkpoint_dir", None))
        _abort(exc.exit_code)
    except SpheresError as exc:
        print(f"spheres: error: {exc}", file=sys.stderr, flush=True)
        _abort(exc.exit_code)
    except KeyboardInterrupt:
        print("spheres: interrupted", file=sys.stderr, flush=True)
        _abort(ExitCode.SIGINT)
    except Stopped as exc:  # a signal (harness/run/stop.py): its own code, on every rank
        print(f"spheres: stopped: {exc}", file=sys.stderr, flush=True)
        _abort(exc.exit_code)
    except BaseException as exc:
        print(f"spheres: rank 0: internal error: {type(exc).__name__}: {exc}", file=sys.stderr,
              flush=True)
        _abort(ExitCode.INTERNAL)
    return ExitCode.INTERNAL  # not reached: Abort ends the process


def _follower(args: argparse.Namespace, channel) -> int:
    """Ranks 1..R-1: take rank 0's setup, then follow its commands until it says stop."""
    from fast.mpi_engine import follow
    from harness.run.engines import parse_dtype
    from reference.config import Config

    try:
        setup = channel.bcast_json(None, STARTUP_SECONDS, "setup")
        return follow(channel, Config.from_json(setup["config"]), int(setup["threads"]),
                      parse_dtype(setup["dtype"]), float(setup["stall_timeout"]),
                      setup["faults"])
    except SpheresError as exc:
        print(f"spheres: rank {channel.rank}: error: {exc}", file=sys.stderr, flush=True)
        _abort(exc.exit_code)
    except Stopped as exc:
        print(f"spheres: rank {channel.rank}: stopped: {exc}", file=sys.stderr, flush=True)
        _abort(exc.exit_code)
    except BaseException as exc:
        print(f"spheres: rank {channel.rank}: internal error: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        _abort(ExitCode.INTERNAL)
    return ExitCode.INTERNAL


def _abort(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    world = current_channel()
    if world is not None and world.size > 1:
        world.abort(code)
    os._exit(code)  # one rank: nobody else to end; threads stuck in kernels cannot be joined
