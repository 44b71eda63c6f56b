"""`--engine exec:COMMAND`: an engine in another process, in any language (docs/ENGINES.md).

The harness starts COMMAND in its own process group and talks to it over its stdin/stdout in
frames: 4 bytes `KSE1`, an 8-byte little-endian length, then that many bytes of `.npz` (the
`grads` file format of SPEC 6). One request, one reply, in order. Every request has a deadline
(the watchdog's stall timeout): no reply in time -> StallError (exit 3); the process dying, an
`error` reply, or a malformed reply (wrong names, shapes, dtypes, non-finite values) -> FaultError
(exit 4); each message names the engine, the request number and its op. A reply whose first
bytes are not the frame magic is malformed at once, not after the timeout. What the engine
sends as text (an `error` reply, its stderr) is cut and cleaned (harness/run/engine_text.py).
On any of these, and on close(), the engine's whole process tree is killed and reaped, even a
grandchild that left the group with setsid() (harness/run/contain.py): no orphan is left.
"""

from __future__ import annotations

import io
import os
import re
import selectors
import shlex
import signal
import struct
import subprocess
import tempfile
import time
import weakref

import numpy as np

from harness.run import contain
from harness.run.engine_text import engine_text
from harness.run.stop import active, track_child, untrack_child
from plumbing.errors import FaultError, InputError, StallError
from reference.config import Config
from reference.engine import StepResult, TrainState
from reference.layers import PAD_ID
from reference.params import init_params, param_specs

MAGIC = b"KSE1"
HEADER = struct.Struct("<4sQ")  # magic, payload length
MAX_FRAME = 1 << 34  # 16 GiB: a length past this is garbage on the channel, not a reply
CLOSE_SECONDS = 5.0  # close(): how long the engine may take to exit after the close request
EXIT_GRACE_SECONDS = 1.0  # an engine whose channel closed: how long it may take to exit alone
FLOAT_KINDS = (np.dtype(np.float32), np.dtype(np.float64))


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    """One frame: header + npz bytes."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    return HEADER.pack(MAGIC, len(payload)) + payload


class ExecEngine:
    """The `Engine` protocol spoken to a child process; see the module docstring."""

    def __init__(self, command: str, config: Config, *, threads: int = 1,
                 dtype: str = "float64", params: dict[str, np.ndarray] | None = None,
                 stall_timeout: float = 60.0) -> None:
        self.config = config.validate()
        self.command = command.strip()
        self.name = f"exec:{self.command}"
        self.threads = int(threads)
        self.dtype = dtype
        self.deadline = float(stall_timeout)
        self.names = [s.name for s in param_specs(config.model)]
        self.shapes = {s.name: s.shape for s in param_specs(config.model)}
        self._requests = 0
        self._closed = False
        try:
            argv = shlex.split(self.command)
        except ValueError as exc:
            raise InputError(f"--engine {self.name!r}: the command line cannot be split "
                             f"({exc}); check its quotes") from None
        if not argv:
            raise InputError("--engine exec: needs a command, e.g. exec:'python engine.py'")
        self._stderr = tempfile.TemporaryFile()
        self._ended_by: str | None = None  # why the harness killed the engine, once it did
        self._token = contain.new_token()
        contain.become_subreaper()  # orphans of its tree come to us, not to init
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr, start_new_session=True,
                                         env=contain.tree_env(self._token))
        except OSError as exc:
            self._stderr.close()
            raise InputError(f"engine {self.name}: cannot start {argv[0]!r}: {exc}; give a "
                             "command that runs, e.g. exec:'python examples/numpy_engine.py'"
                             ) from None
        self.pid = self.proc.pid
        # the process group dies with us even if nobody calls close()
        self._finalizer = weakref.finalize(self, _kill_tree, self.proc, self._token)
        track_child(self.proc)  # a stop at once kills its group at once (harness/run/stop.py)
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stdout.fileno(), False)
        start = params if params is not None else init_params(config.model, config.train.seed)
        request = {"config": np.array(config.to_json()), "threads": np.int64(self.threads),
                   "dtype": np.array(dtype)}
        request.update({f"param/{n}": np.asarray(start[n], np.float64) for n in self.names})
        try:
            reply = self._call("init", request)
        except BaseException:  # a failed or stopped handshake leaves no process, no file
            self._closed = True
            self._ended_by = self._ended_by or "the handshake failed"
            self._finalizer()
            untrack_child(self.proc)
            self._stderr.close()
            raise
        self.engine_name = engine_text(reply["name"], 80) if "name" in reply else self.command
        self.step_count = 0

    # ------------------------------------------------------------------ Engine protocol

    def group_grads(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        reply = self._call("grads", _batch(tokens, targets),
                           floats={f"grad/{n}": self.shapes[n] for n in self.names},
                           scalars=("loss",), ints=("n_targets",))
        self._check_targets("grads", reply, targets)
        grads = {n: np.asarray(reply[f"grad/{n}"], np.float64) for n in self.names}
        total = sum(float(np.sum(g * g)) for g in grads.values())
        return StepResult(loss=float(reply["loss"]), n_targets=int(reply["n_targets"]),
                          grad_norm=total ** 0.5, grads=grads)

    def step(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        reply = self._call("step", _batch(tokens, targets), scalars=("loss",),
                           ints=("n_targets",), optional=("grad_norm", "lr"))
        self._check_targets("step", reply, targets)
        self.step_count += 1
        return StepResult(loss=float(reply["loss"]), n_targets=int(reply["n_targets"]),
                          grad_norm=float(reply.get("grad_norm", np.nan)),
                          lr=float(reply.get("lr", np.nan)))

    def state(self) -> TrainState:
        floats = {f"{kind}/{n}": self.shapes[n] for kind in ("param", "adam_m", "adam_v")
                  for n in self.names}
        reply = self._call("state", {}, floats=floats, ints=("step",))
        pick = {kind: {n: np.array(reply[f"{kind}/{n}"]) for n in self.names}
                for kind in ("param", "adam_m", "adam_v")}
        self.step_count = int(reply["step"])
        return TrainState(params=pick["param"], adam_m=pick["adam_m"], adam_v=pick["adam_v"],
                          step=self.step_count)

    def load_state(self, state: TrainState) -> None:
        request: dict[str, np.ndarray] = {"step": np.int64(state.step)}
        for kind, tensors in (("param", state.params), ("adam_m", state.adam_m),
                              ("adam_v", state.adam_v)):
            request.update({f"{kind}/{n}": np.asarray(tensors[n], np.float64)
                            for n in self.names})
        self._call("load_state", request)
        self.step_count = int(state.step)

    def close(self) -> None:
        """Ask the engine to exit, then kill its process group whatever it did; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.proc.poll() is None:
                self._send(encode({"op": np.array("close")}), time.monotonic() + CLOSE_SECONDS)
                self.proc.wait(timeout=CLOSE_SECONDS)
        except (OSError, TimeoutError, subprocess.TimeoutExpired):
            pass  # it did not leave politely: the tree is killed below
        finally:
            self._ended_by = self._ended_by or "the run closed it"
            self._finalizer()
            untrack_child(self.proc)
            self._stderr.close()

    def _check_targets(self, op: str, reply: dict, targets: np.ndarray) -> None:
        """A reply's n_targets must be the batch's non-pad targets: 0 targets claimed for a
        batch that has them is an engine that did not compute what it was sent."""
        want = int(np.count_nonzero(np.asarray(targets) != PAD_ID))
        got = int(reply["n_targets"])
        if got != want:
            self._abort(f"its '{op}' reply was malformed")
            raise FaultError(f"engine {self.name} (pid {self.pid}), request #{self._requests} "
                             f"'{op}': malformed reply: n_targets {got}, but the batch holds "
                             f"{want} non-pad targets")

    def child_peak_rss_bytes(self) -> int | None:
        """The engine process's own peak RSS (kernel VmHWM) while it runs; None if unknown."""
        try:
            with open(f"/proc/{self.pid}/status") as fh:
                match = re.search(r"VmHWM:\s+(\d+)\s+kB", fh.read())
        except OSError:
            return None
        return int(match.group(1)) * 1024 if match else None

    def __enter__(self) -> ExecEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the channel

    def _call(self, op: str, arrays: dict[str, np.ndarray], *,
              floats: dict[str, tuple[int, ...]] | None = None, scalars: tuple[str, ...] = (),
              ints: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict:
        """Send one request and return its validated reply; on any failure kill the tree."""
        if self._closed:
            raise FaultError(f"engine {self.name}: {op} called after close()")
        self._requests += 1
        where = f"engine {self.name} (pid {self.pid}), request #{self._requests} '{op}'"
        deadline = time.monotonic() + self.deadline
        try:
            self._send(encode({"op": np.array(op), **arrays}), deadline)
            reply = self._receive(deadline, where)
        except TimeoutError:
            self._abort(f"no reply within the {self.deadline:g}s stall timeout")
            raise StallError(f"{where}: no reply within {self.deadline:g}s (the stall timeout); "
                             "the harness killed the engine's process tree",
                             {"engine": self.name, "pid": self.pid, "request": self._requests,
                              "op": op, "timeout_s": self.deadline}) from None
        except (BrokenPipeError, ConnectionError, EOFError) as exc:
            how = self._exit_text()  # before the tree is killed: what the engine itself did
            self._abort("its channel closed")
            raise FaultError(f"{where}: the engine process {how}; {exc}{self._stderr_tail()}"
                             ) from None
        if "error" in reply:
            self._abort("it replied with an error")
            raise FaultError(f"{where}: the engine reported an error: "
                             f"{engine_text(reply['error'])}")
        problem = _check_reply(reply, floats or {}, scalars, ints, optional)
        if problem:
            self._abort("its reply was malformed")
            raise FaultError(f"{where}: malformed reply: {problem}")
        return reply

    def _send(self, frame: bytes, deadline: float) -> None:
        fd = self.proc.stdin.fileno()
        view = memoryview(frame)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_WRITE)
            while view:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise TimeoutError
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    continue

    def _read_exact(self, n: int, deadline: float, sel: selectors.BaseSelector,
                    prefix: bytes = b"") -> bytes:
        """`n` bytes; with `prefix`, bytes that must begin with it are checked as they come,
        so a reply that is not a frame is malformed at once (MalformedFrame), not a stall."""
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise TimeoutError
            try:
                chunk = os.read(fd, min(n - len(buf), 1 << 22))
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError(f"its stdout closed after {len(buf)} of {n} bytes")
            buf += chunk
            head = bytes(buf[:len(prefix)])
            if prefix and not prefix.startswith(head):
                raise _MalformedFrame(f"frame starts {head!r}, not {prefix!r} (the engine must "
                                      "log to stderr, never stdout)")
        return bytes(buf)

    def _receive(self, deadline: float, where: str) -> dict:
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ)
            try:
                magic, length = HEADER.unpack(self._read_exact(HEADER.size, deadline, sel,
                                                               prefix=MAGIC))
                if length > MAX_FRAME:
                    raise _MalformedFrame(f"frame length {length:,} bytes is past the "
                                          f"{MAX_FRAME >> 30} GiB limit of a reply (garbage "
                                          "on the channel, or a broken writer)")
            except _MalformedFrame as exc:
                self._abort("its reply was not a frame")
                raise FaultError(f"{where}: malformed reply: {exc}") from None
            payload = self._read_exact(length, deadline, sel)
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as exc:
            self._abort("its reply was not a readable .npz")
            raise FaultError(f"{where}: malformed reply: not a readable .npz "
                             f"({engine_text(exc)})") from None

    def _abort(self, why: str) -> None:
        """Kill the engine's tree, remembering why (so its death is never blamed on it)."""
        self._ended_by = self._ended_by or why
        self._closed = True
        if not self._stderr.closed:
            self._stderr_cache = self._stderr_tail()
        self._finalizer()
        if not self._stderr.closed:
            self._stderr.close()

    def _exit_text(self) -> str:
        """How the engine ended, told apart from the harness killing it."""
        try:
            code = self.proc.wait(timeout=EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            return (f"closed its channel but was still running after {EXIT_GRACE_SECONDS:g}s "
                    "(the harness then killed it)")
        if code >= 0:
            return f"died (exit code {code})"
        name = signal.Signals(-code).name
        stop = active()
        if self._ended_by:
            return f"was killed by the harness ({name}) because {self._ended_by}"
        if stop is not None and stop.requested() is not None:
            return (f"was killed by the harness ({name}) stopping on "
                    f"{signal.Signals(stop.requested()).name}")
        return (f"died (killed by {name}, not sent by the harness: another process or the "
                "kernel, e.g. its out-of-memory killer)")

    def _stderr_tail(self, lines: int = 5) -> str:
        if self._stderr.closed:
            return getattr(self, "_stderr_cache", "")
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - 64 * 1024))  # the tail only: never a 2 MB log
        tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-lines:]
        return ("; its stderr ends: " + engine_text(" | ".join(tail))) if tail else ""


class _MalformedFrame(Exception):
    """A reply that is not a frame (bad magic, absurd length): a fault at once."""


def _kill_tree(proc: subprocess.Popen, token: str) -> None:
    """SIGKILL the engine's whole process tree and reap it (idempotent)."""
    contain.end_tree(proc, token)
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


def _batch(tokens: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    return {"tokens": np.ascontiguousarray(tokens, np.int64),
            "targets": np.ascontiguousarray(targets, np.int64)}


def _check_reply(reply: dict, floats: dict[str, tuple[int, ...]], scalars: tuple[str, ...],
                 ints: tuple[str, ...], optional: tuple[str, ...]) -> str:
    """'' if the reply has exactly the expected names, shapes, dtypes and finite values; else
    the first problem, naming the array."""
    expected = set(floats) | set(scalars) | set(ints)
    missing = sorted(expected - set(reply))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"array {missing[0]!r} is missing{more}"
    extra = sorted(set(reply) - expected - set(optional) - {"name"})
    if extra:
        return f"unexpected array {extra[0]!r} (names are part of the protocol)"
    for key, shape in floats.items():
        a = reply[key]
        if a.dtype not in FLOAT_KINDS:
            return f"{key!r} has dtype {a.dtype}, expected float32 or float64"
        if a.shape != shape:
            return f"{key!r} has shape {a.shape}, expected {shape}"
        if not np.all(np.isfinite(a)):
            return f"{key!r} holds non-finite values (NaN or Inf)"
    for key in (*scalars, *[o for o in optional if o in reply]):
        a = reply[key]
        if a.shape != () or a.dtype not in FLOAT_KINDS:
            return f"{key!r} must be a float scalar, got dtype {a.dtype} shape {a.shape}"
        if not np.isfinite(a):
            return f"{key!r} is not finite ({float(a)})"
    for key in ints:
        a = reply[key]
        if a.shape != () or not np.issubdtype(a.dtype, np.integer):
            return f"{key!r} must be an integer scalar, got dtype {a.dtype} shape {a.shape}"
    return ""
