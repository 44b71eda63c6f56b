"""`--engine torch-ddp`: PyTorch DistributedDataParallel on CPU gloo, a world of W processes on
loopback, driven like any exec engine (docs/ENGINES.md section 3, SPEC 13).

The harness starts `python torch_engine/ddp.py --world W`: rank 0, the channel (stdin/stdout
frames) and the launcher, which starts ranks 1..W-1 as plain subprocesses in its own process
group (RANK, WORLD_SIZE, a FileStore rendezvous in rank 0's temporary folder, gloo bound to
`lo`: every socket of the world is on 127.0.0.1). Every rank is under the watchdog's deadline,
since rank 0 cannot reply before every rank has done its part of the collectives: the stall
timeout per request, and for the first, which starts the world, DDP_START_SECONDS_PER_RANK per
rank when that is longer. On close, a stall, a fault or a stop the harness kills that whole
group (ExecEngine), so no rank outlives the engine. `pids` reads the world from the operating
system (rank 0 and its children), for the tests that prove every one has ended.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import numpy as np
import psutil

from harness.figures.thresholds import DDP_START_SECONDS_PER_RANK
from harness.run.exec_engine import ExecEngine
from plumbing.errors import InputError
from reference.config import Config

MAX_WORLD = 12  # as many ranks as fast under MPI may use (the 12 symmetry positions, SPEC 10)


def rank_program() -> Path:
    """torch_engine/ddp.py of this installation (found without importing torch)."""
    spec = importlib.util.find_spec("torch_engine")
    if spec is None or spec.origin is None:
        raise InputError("engine 'torch-ddp' needs the torch_engine package: install the "
                         "extra with pip install -e '.[torch]'")
    return Path(spec.origin).resolve().parent / "ddp.py"


class DdpEngine(ExecEngine):
    """A gloo world of `world` ranks behind the Engine protocol."""

    def __init__(self, config: Config, *, world: int = 1, threads: int = 1,
                 dtype: str = "float64", params: dict[str, np.ndarray] | None = None,
                 stall_timeout: float = 60.0) -> None:
        if not 1 <= world <= MAX_WORLD:
            raise InputError(f"torch-ddp world size must be 1 to {MAX_WORLD}, got {world}")
        if importlib.util.find_spec("torch") is None:
            raise InputError("engine 'torch-ddp' needs torch: install it with "
                             "pip install -e '.[torch]'")
        self.world = int(world)
        command = shlex.join([sys.executable, str(rank_program()), "--world", str(world)])
        # the handshake starts the world (torch imported W times): its own deadline
        start_up = max(stall_timeout, DDP_START_SECONDS_PER_RANK * self.world)
        super().__init__(command, config, threads=threads, dtype=dtype, params=params,
                         stall_timeout=start_up)
        self.deadline = float(stall_timeout)  # every later request: the stall timeout
        self.name = f"torch-ddp (world {self.world}, pid {self.pid})"

    @property
    def pids(self) -> list[int]:
        """Every running process of the world, as the OS sees it: rank 0, then its children."""
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [self.pid, *(k.pid for k in kids)]


def build(config: Config, *, threads: int = 1, dtype: str = "float64",
          params: dict[str, np.ndarray] | None = None, stall_timeout: float = 60.0,
          world: int = 1) -> DdpEngine:
    """Entry point `torch-ddp` (docs/ENGINES.md factory signature, plus the world size)."""
    return DdpEngine(config, world=world, threads=threads, dtype=dtype, params=params,
                     stall_timeout=stall_timeout)
