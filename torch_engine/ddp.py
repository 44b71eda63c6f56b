"""One rank of the `torch-ddp` engine: the SPEC 1 model trained the way PyTorch users train it
across processes (`python torch_engine/ddp.py --world W`, started by harness/run/ddp_engine.py).

The process the harness starts is rank 0 and the launcher: it starts ranks 1..W-1 as plain
subprocesses in its own process group (the harness kills and reaps that whole group). Every
rank joins a `gloo` process group on 127.0.0.1 (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT in the environment, GLOO_SOCKET_IFNAME=lo), wraps the model in
`torch.nn.parallel.DistributedDataParallel` and takes its share of each group: batches
r, r + W, r + 2W, ... (DistributedSampler's striding, without its padding, so that no batch
counts twice). Each rank's loss is its share's cross-entropy sum times W / (the group's non-pad
count), so DDP's bucketed all-reduce, which averages over the W ranks, yields the group's mean
gradient (SPEC 3). Then `clip_grad_norm_` and `torch.optim.AdamW` (weight decay on 2-D
matrices only), on every rank alike.

Rank 0 speaks the out-of-process protocol of docs/ENGINES.md section 3 on stdin/stdout and
broadcasts each request to the other ranks (`broadcast_object_list`); their stdin and stdout
are not the channel. Logs go to stderr. Nothing here imports the harness.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tempfile
from datetime import timedelta
from typing import BinaryIO

if __name__ == "__main__" and not __package__:  # run as a file: the source tree's packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from plumbing.errors import InputError  # noqa: E402
from reference.config import Config  # noqa: E402
from reference.optim import lr_at  # noqa: E402
from reference.params import param_specs  # noqa: E402
from torch_engine.engine import PAD_ID, TORCH_DTYPES, loss_sum  # noqa: E402

HEADER = struct.Struct("<4sQ")
MAGIC = b"KSE1"
# how long a rank waits in a collective: the harness's per-request stall timeout ends a stuck
# world first (it kills the whole process group), so this only bounds an orphaned rank
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
LOOPBACK = "127.0.0.1"  # the only address the world uses (MASTER_ADDR, gloo on `lo`)
PEER_EXIT_SECONDS = 5.0  # after `close`, how long rank 0 waits for the others to leave


def read_frame(stream: BinaryIO) -> dict | None:
    """One request, or None at end of file (the harness is gone: leave)."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    magic, length = HEADER.unpack(head)
    if magic != MAGIC:
        raise InputError(f"bad frame magic {magic!r}")
    with np.load(io.BytesIO(stream.read(length)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_frame(stream: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    stream.write(HEADER.pack(MAGIC, len(buf.getvalue())) + buf.getvalue())
    stream.flush()


class Model(torch.nn.Module):
    """The SPEC 1 parameters as one module (names with '.' are stored with '__')."""

    def __init__(self, config: Config, params: dict[str, np.ndarray], dtype: torch.dtype):
        super().__init__()
        self.config = config
        self.names = [s.name for s in param_specs(config.model)]
        self.weights = torch.nn.ParameterDict({
            n.replace(".", "__"): torch.nn.Parameter(torch.tensor(params[n], dtype=dtype))
            for n in self.names})

    def by_name(self) -> dict[str, torch.nn.Parameter]:
        return {n: self.weights[n.replace(".", "__")] for n in self.names}

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss_sum(self.config.model, self.by_name(), tokens, targets)


class Rank:
    """This rank's model, DDP wrapper and optimizer; `handle` answers one request."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.model: Model | None = None

    def init(self, req: dict) -> dict:
        self.config = Config.from_json(str(req["config"]))
        dtype = str(req["dtype"])
        if dtype not in TORCH_DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; choose float32 or float64")
        torch.set_num_threads(int(req["threads"]))
        names = [s.name for s in param_specs(self.config.model)]
        self.model = Model(self.config, {n: req[f"param/{n}"] for n in names},
                           TORCH_DTYPES[dtype])
        self.ddp = DistributedDataParallel(self.model)  # broadcasts rank 0's parameters
        t = self.config.train
        params = self.model.by_name()
        decay = [p for p in params.values() if p.ndim == 2]
        rest = [p for p in params.values() if p.ndim != 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                      {"params": rest, "weight_decay": 0.0}],
                                     lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
        self.step_count = 0
        return {"name": np.array(f"torch-ddp (gloo, world {self.world})")}

    def _backward(self, req: dict) -> tuple[float, int]:
        """This rank's share forward and backward; DDP all-reduces the gradients."""
        tok = torch.as_tensor(np.asarray(req["tokens"], np.int64))
        tgt = torch.as_tensor(np.asarray(req["targets"], np.int64))
        B = self.config.train.batch_size
        n_total = int((tgt != PAD_ID).sum())
        if n_total == 0:
            raise InputError("the group has no non-pad targets; there is nothing to learn from")
        starts = range(self.rank * B, tok.shape[0], self.world * B)
        rows = [i for s in starts for i in range(s, min(s + B, tok.shape[0]))]
        share_tok, share_tgt = tok[rows], tgt[rows]
        self.opt.zero_grad(set_to_none=True)
        local = self.ddp(share_tok, share_tgt)
        (local * (self.world / n_total)).backward()
        total = torch.tensor([float(local.detach())], dtype=torch.float64)
        dist.all_reduce(total)  # the group's loss sum, for the reply
        return float(total[0]) / n_total, n_total

    def grads(self, req: dict) -> dict:
        loss, n = self._backward(req)
        out = {f"grad/{n_}": p.grad.detach().numpy().copy()
               for n_, p in self.model.by_name().items()}
        return out | {"loss": np.float64(loss), "n_targets": np.int64(n)}

    def step(self, req: dict) -> dict:
        loss, n = self._backward(req)
        params = list(self.model.by_name().values())
        for name, p in self.model.by_name().items():
            if not torch.isfinite(p.grad).all():
                raise FloatingPointError(f"non-finite gradient in {name} at step "
                                         f"{self.step_count}; nothing was applied")
        t = self.config.train
        norm = float(torch.nn.utils.clip_grad_norm_(params, t.clip_norm))
        lr = lr_at(self.step_count, t)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self.step_count += 1
        return {"loss": np.float64(loss), "n_targets": np.int64(n),
                "grad_norm": np.float64(norm), "lr": np.float64(lr)}

    def state(self, req: dict) -> dict:
        out: dict[str, np.ndarray] = {"step": np.int64(self.step_count)}
        for n, p in self.model.by_name().items():
            st = self.opt.state.get(p, {})
            zeros = torch.zeros_like(p)
            out[f"param/{n}"] = p.detach().numpy().copy()
            out[f"adam_m/{n}"] = st.get("exp_avg", zeros).detach().numpy().copy()
            out[f"adam_v/{n}"] = st.get("exp_avg_sq", zeros).detach().numpy().copy()
        return out

    def load_state(self, req: dict) -> dict:
        step = int(req["step"])
        with torch.no_grad():
            for n, p in self.model.by_name().items():
                p.copy_(torch.as_tensor(req[f"param/{n}"], dtype=p.dtype))
                self.opt.state[p] = {
                    "step": torch.tensor(float(step)),
                    "exp_avg": torch.as_tensor(req[f"adam_m/{n}"], dtype=p.dtype).clone(),
                    "exp_avg_sq": torch.as_tensor(req[f"adam_v/{n}"], dtype=p.dtype).clone()}
        self.step_count = step
        return {}

    def handle(self, req: dict) -> dict:
        op = str(req["op"])
        if op == "close":
            return {}
        if op != "init" and self.model is None:
            raise InputError(f"request {op!r} before init")
        return getattr(self, op)(req)


OPS = ("init", "grads", "step", "state", "load_state", "close")


def serve(rank: Rank, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Rank 0 reads each request and broadcasts it; every rank answers; rank 0 replies."""
    while True:
        box: list = [None]
        if rank.rank == 0:
            req = read_frame(stdin)
            box[0] = req if req is not None else {"op": np.array("close")}
        dist.broadcast_object_list(box, src=0)
        req = box[0]
        op = str(req["op"])
        try:
            if op not in OPS:
                raise InputError(f"unknown op {op!r}")
            reply = rank.handle(req)
        except Exception as exc:  # every rank sees the same request and data: all fail alike
            reply = {"error": np.array(f"rank {rank.rank}: {type(exc).__name__}: {exc}")}
        if rank.rank == 0 and op != "close":  # close: no reply, exit (docs/ENGINES.md)
            write_frame(stdout, reply)
        if op == "close" or "error" in reply:
            return


def start_peers(world: int, rendezvous: str) -> list[subprocess.Popen]:
    """Rank 0 as the launcher (like torchrun, but a plain subprocess): ranks 1..W-1 in its own
    process group; their stdout is our stderr, so only rank 0 owns the channel."""
    os.environ.update({"WORLD_SIZE": str(world), "KS_DDP_RENDEZVOUS": rendezvous,
                       "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": LOOPBACK, "RANK": "0"})
    return [subprocess.Popen([sys.executable, __file__], stdin=subprocess.DEVNULL,
                             stdout=sys.stderr.fileno(), env={**os.environ, "RANK": str(r)})
            for r in range(1, world)]


def reap(peers: list[subprocess.Popen]) -> None:
    """Wait for the other ranks to leave (they do after `close`), kill what does not."""
    for p in peers:
        try:
            p.wait(timeout=PEER_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    peers: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="ks-ddp-") as tmp:
        if "RANK" not in os.environ:  # started by the harness: rank 0, which starts the others
            world = int(args[args.index("--world") + 1]) if "--world" in args else 1
            peers = start_peers(world, os.path.join(tmp, "rendezvous"))
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        channel = os.fdopen(os.dup(1), "wb")  # the reply channel; fd 1 then goes to stderr,
        os.dup2(2, 1)  # so nothing a library prints can corrupt a frame
        try:
            # a file store, not a TCP store: its server would listen on every interface, and
            # this world talks on loopback only (gloo's own sockets: GLOO_SOCKET_IFNAME=lo)
            store = dist.FileStore(os.environ["KS_DDP_RENDEZVOUS"], world)
            dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                    timeout=COLLECTIVE_TIMEOUT)
            try:
                serve(Rank(rank, world), sys.stdin.buffer, channel)
            finally:
                dist.destroy_process_group()
        finally:
            reap(peers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
