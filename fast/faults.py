"""Fault injection for drills and tests (`--inject`), and the errors a failed thread turns into.

A spec reads `KIND:target=T,step=N[,batch=B][,seconds=X]` (SPEC 5), e.g.
`hang:target=worker=1,step=2`, `slow:target=node-zero,step=0,seconds=3`, `nan:worker=0,step=0`.
A fault fires once, at its target's progress point (`FaultPlan.fire`): a worker as it starts its
first batch of step N (or at Point A if it got no batch), or as it starts batch B when `batch=B`
is given; Node Zero as it starts handing out step N. A fault that never fired is listed by
`unfired()` so the run can warn about it instead of silently passing a drill that never ran.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from plumbing.errors import FaultError, InputError

SPEC_FORM = ("KIND:target=T,step=N[,batch=B][,seconds=X][,rank=R] with KIND hang|raise|nan|slow "
             "and T worker=I or node-zero, e.g. hang:target=worker=1,step=2 or "
             "slow:target=node-zero,step=0,seconds=3")
SLOW_TICK_SECONDS = 0.05  # a `slow` fault sleeps in steps this long, advancing its counter each


class FaultKind(enum.Enum):
    HANG = "hang"  # block without progress until the trainer is aborted (a stall drill)
    RAISE = "raise"  # raise InjectedFault (an exception drill)
    NAN = "nan"  # poison the worker's gradient with NaN (a non-finite drill)
    SLOW = "slow"  # sleep `seconds` while ticking its tick counter (slow work is not a stall)


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    role: str  # "worker" or "node-zero"
    worker: int | None  # worker index for role "worker"
    step: int
    batch: int | None = None
    seconds: float | None = None
    rank: int = 0  # MPI rank whose threads it targets (SPEC 10); 0 in a single process

    def __str__(self) -> str:
        target = "node-zero" if self.role == "node-zero" else f"worker={self.worker}"
        text = f"{self.kind.value}:target={target},step={self.step}"
        if self.batch is not None:
            text += f",batch={self.batch}"
        if self.seconds is not None:
            text += f",seconds={self.seconds:g}"
        if self.rank:
            text += f",rank={self.rank}"
        return text

    @property
    def thread_name(self) -> str:
        return "ks-node-zero" if self.role == "node-zero" else f"ks-worker-{self.worker}"


class InjectedFault(FaultError):
    """The exception a `raise` fault throws inside its target thread."""


class FaultAborted(RuntimeError):
    """A `hang` fault was released because the trainer aborted (secondary, never the cause)."""


class ThreadFault(FaultError):
    """A worker or Node Zero failed; names the thread, step and batch (exit code 4)."""

    def __init__(self, thread: str, step: int | None, batch: int | None,
                 cause: BaseException) -> None:
        self.thread = thread
        self.step = step
        self.batch = batch
        self.cause = cause
        where = [f"thread {thread}"]
        if step is not None:
            where.append(f"step {step}")
        if batch is not None:
            where.append(f"batch {batch}")
        super().__init__(
            f"{', '.join(where)} failed: {type(cause).__name__}: {cause}; the step was not "
            "applied (weights unchanged). Close this trainer and resume from its state() or "
            "the last checkpoint.")


def parse_inject(spec: str) -> Fault:
    """Parse one `--inject` spec; InputError showing the expected form when it is malformed."""

    def bad(why: str) -> InputError:
        return InputError(f"bad --inject {spec!r}: {why}; expected {SPEC_FORM}")

    kind_text, sep, rest = spec.strip().partition(":")
    try:
        kind = FaultKind(kind_text.strip().lower())
    except ValueError:
        raise bad(f"unknown kind {kind_text!r}") from None
    if not sep or not rest.strip():
        raise bad("missing target and step")
    role, worker, fields = None, None, {}
    for item in rest.split(","):
        item = item.strip()
        if item.startswith("target="):
            item = item[len("target="):]
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key in ("node-zero", "node_zero", "nodezero") and not value:
            role = _once(role, "node-zero", bad)
        elif key == "worker":
            role = _once(role, "worker", bad)
            worker = _int(value, "worker", bad)
        elif key in ("step", "batch", "rank"):
            if key in fields:
                raise bad(f"{key} given twice")
            fields[key] = _int(value, key, bad)
        elif key == "seconds":
            try:
                fields["seconds"] = float(value)
            except ValueError:
                raise bad(f"seconds={value!r} is not a number") from None
            if not fields["seconds"] > 0:
                raise bad("seconds must be positive")
        else:
            raise bad(f"unknown field {item!r}")
    if role is None:
        raise bad("missing target (worker=I or node-zero)")
    if "step" not in fields:
        raise bad("missing step=N")
    if kind is FaultKind.SLOW and "seconds" not in fields:
        raise bad("slow needs seconds=X")
    if kind is not FaultKind.SLOW and "seconds" in fields:
        raise bad(f"seconds= applies to slow only, not {kind.value}")
    if role == "node-zero" and "batch" in fields:
        raise bad("batch= applies to worker targets only (Node Zero never computes a batch)")
    if role == "node-zero" and kind is FaultKind.NAN:
        raise bad("nan targets a worker's gradient; Node Zero computes none")
    return Fault(kind, role, worker, fields["step"], fields.get("batch"), fields.get("seconds"),
                 fields.get("rank", 0))


def _once(current: str | None, new: str, bad) -> str:
    if current is not None:
        raise bad("target given twice")
    return new


def _int(value: str, key: str, bad) -> int:
    try:
        number = int(value)
    except ValueError:
        raise bad(f"{key}={value!r} is not an integer") from None
    if number < 0:
        raise bad(f"{key} must be >= 0")
    return number


class FaultPlan:
    """The faults of one run and their firing; thread-safe, each fault fires at most once."""

    def __init__(self, faults: Iterable[Fault | str] | None = None) -> None:
        self.faults = [parse_inject(f) if isinstance(f, str) else f for f in (faults or [])]
        self._fired: set[int] = set()
        self._lock = threading.Lock()  # guards _fired: each fault fires at most once
        self._abort = threading.Event()
        self._ticks = np.zeros(1, dtype=np.int64)
        self.rank = 0  # this process's MPI rank: only faults aimed at it fire here

    def attach(self, abort: threading.Event, ticks: np.ndarray) -> None:
        """Bind the trainer's abort flag (releases `hang`) and tick counters (`slow` ticks)."""
        self._abort = abort
        self._ticks = ticks

    def check_threads(self, threads: int) -> None:
        """A fault aimed at a worker that does not exist can never fire: say so up front."""
        for f in self.faults:
            if f.role == "worker" and f.worker >= threads:
                raise InputError(f"--inject {f} targets worker {f.worker} but there are only "
                                 f"{threads} workers (0..{threads - 1}); pick a smaller index")

    def fire(self, role: str, ident: int | None, step: int, batch: int | None, slot: int, *,
             first: bool) -> bool:
        """The target thread's progress point; returns True when its gradient must be poisoned.

        `batch` is the batch being started (None at Point A without a batch); `first` says it
        is the thread's first progress point of the step.
        """
        due = self._due(role, ident, step, batch, first)
        poison = False
        for fault in due:
            if fault.kind is FaultKind.HANG:
                while not self._abort.wait(0.1):
                    pass  # no progress on purpose: the watchdog must find this thread
                raise FaultAborted(f"{fault} released by the trainer's abort")
            if fault.kind is FaultKind.RAISE:
                raise InjectedFault(f"injected fault {fault}")
            if fault.kind is FaultKind.SLOW:
                self._sleep_advancing(fault.seconds or 0.0, slot)
            if fault.kind is FaultKind.NAN:
                poison = True
        return poison

    def unfired(self) -> list[Fault]:
        with self._lock:
            return [f for i, f in enumerate(self.faults) if i not in self._fired]

    def fired(self) -> list[Fault]:
        with self._lock:
            return [f for i, f in enumerate(self.faults) if i in self._fired]

    def _due(self, role: str, ident: int | None, step: int, batch: int | None,
             first: bool) -> list[Fault]:
        due = []
        with self._lock:
            for i, f in enumerate(self.faults):
                if (i in self._fired or f.role != role or f.step != step
                        or f.rank != self.rank):
                    continue
                if role == "worker" and f.worker != ident:
                    continue
                if f.batch is not None:
                    hit = batch == f.batch
                else:
                    hit = first
                if f.kind is FaultKind.NAN and batch is None:
                    hit = False  # no gradient to poison at Point A: stays unfired, reported
                if hit:
                    self._fired.add(i)
                    due.append(f)
        return due

    def _sleep_advancing(self, seconds: float, slot: int) -> None:
        end = time.monotonic() + seconds
        while not self._abort.is_set():
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(SLOW_TICK_SECONDS, left))
            self._ticks[slot] += 1  # slow, not stuck
