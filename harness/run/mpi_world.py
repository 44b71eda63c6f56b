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
