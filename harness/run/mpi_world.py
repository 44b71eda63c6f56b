"""This process's MPI world once `--mpi` started it, and rank 0's engine over it (SPEC 10).

Kept apart from `harness.commands.mpi_launch` (the command line across ranks) so that
`harness.run.engines` can build the `mpi` engine without importing the commands. mpi4py is
imported only when `start_mpi()` runs.
"""

from __future__ import annotations

import sys

from harness.run.stop import Stopped
from plumbing.errors import ExitCode, InputError, SpheresError

STARTUP_SECONDS = 600.0  # followers wait this long for rank 0's setup (it reads the corpus first)

_channel = None  # this process's Channel once `--mpi` started MPI


def channel():
    """The world channel, or None when MPI was not started."""
    return _channel


def start_mpi():
    """Import mpi4py (initialises MPI) and open the world channel; exit 2 if it cannot start."""
    global _channel
    try:
        from fast.mpi_comm import Channel

        _channel = Channel()
    except Exception as exc:  # ImportError, or MPI_Init failing (no launcher, broken library)
        raise InputError(f"--mpi: MPI cannot start here ({type(exc).__name__}: {exc}); "
                         "install the extra with pip install -e '.[mpi]' and launch with "
                         "mpiexec -n R spheres ... --mpi") from None
    return _channel



def make_mpi_engine(cfg, *, threads: int, dtype: str, np_dtype, params=None,
                    stall_timeout: float, faults=None):
    """Rank 0's engine: sends the followers their setup, then starts every rank's trainer."""
    from fast.mpi_engine import MpiEngine

    ch = _channel
    if ch is None or ch.rank != 0:
        raise InputError("the mpi engine needs `--mpi` under mpiexec (rank 0)")
    for f in faults or []:
        if f.rank >= ch.size:
            raise InputError(f"--inject {f} targets rank {f.rank} but the job has {ch.size} "
                             f"ranks (0..{ch.size - 1}); pick a smaller rank or more ranks")
    setup = {"config": cfg.to_json(), "threads": threads, "dtype": dtype,
             "stall_timeout": stall_timeout, "faults": [str(f) for f in (faults or [])]}
    ch.bcast_json(setup, STARTUP_SECONDS, "setup")
    engine = MpiEngine(ch, cfg, threads, np_dtype, stall_timeout, faults, params)
    engine.load_state(engine.state())  # every rank starts from rank 0's exact weights
    return engine


def run_or_abort(main) -> int:
    """Run a tool's main() under mpiexec: a failure on any rank ends every rank (MPI_Abort)."""
    try:
        return main()
    except BaseException as exc:
        code = exc.exit_code if isinstance(exc, (SpheresError, Stopped)) else ExitCode.INTERNAL
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        mpi = sys.modules.get("mpi4py.MPI")
        if mpi is not None and mpi.COMM_WORLD.Get_size() > 1:
            mpi.COMM_WORLD.Abort(code)
        return code


_RANK_ENV = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")  # as fast/mpi_topology.py reads


def silent_ranks(size: int, me: int = 0) -> list[str]:
    """Why the other ranks on this host may not answer: each one found suspended (SIGSTOP,
    Ctrl-Z), ended, or not on this host at all, named with its pid. The launcher starts the
    ranks of one host as siblings (Hydra's proxy, Open MPI's orted), each with its rank in its
    environment; ranks on other hosts cannot be seen from here and are said to be elsewhere."""
    import psutil

    found: dict[int, psutil.Process] = {}
    try:
        siblings = psutil.Process().parent().children()
    except (psutil.Error, AttributeError):
        siblings = []
    for proc in siblings:
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        rank = next((env[v] for v in _RANK_ENV if env.get(v, "").isdigit()), None)
        if rank is not None:
            found[int(rank)] = proc
    out = []
    for rank in range(size):
        if rank == me:
            continue
        proc = found.get(rank)
        if proc is None:
            out.append(f"rank {rank} is not on this host or has ended")
            continue
        try:
            status = proc.status()
        except psutil.Error:
            status = psutil.STATUS_DEAD
        if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
            out.append(f"rank {rank} (pid {proc.pid}) is suspended (SIGSTOP or Ctrl-Z; "
                       f"kill -CONT {proc.pid} resumes it)")
        elif status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            out.append(f"rank {rank} (pid {proc.pid}) has ended")
    return out


def name_silent_ranks(exc: SpheresError, size: int) -> SpheresError:
    """`exc` (a collective past its deadline) with the ranks that are why, when they can be
    seen from here: "another rank is stuck or gone" becomes "rank 1 (pid ...) is suspended"."""
    try:
        why = silent_ranks(size)
    except Exception:  # a diagnosis must never hide the stall itself
        return exc
    seen = [w for w in why if "not on this host" not in w] or why
    if seen and exc.args:
        exc.args = (f"{exc.args[0]}: {'; '.join(seen)}", *exc.args[1:])
    return exc
