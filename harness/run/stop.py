"""SIGINT, SIGTERM and SIGHUP: stop at the next safe point, then exit 130, 143 or 129.

`GracefulStop` is installed by the CLI for every command; it is the one place that decides
what a signal does. Outside a deferring block a signal stops at once (raises `Stopped`:
nothing is in flight that could be saved). Inside `deferred()` (the training loop, verify's
cases, analyze's phases and drills, stress's cases, engines --measure's children) the first
signal only sets a flag: the loop finishes the unit in flight and calls `check_stop()` at its
next safe point, which raises `Stopped`; the caller keeps what is done (a checkpoint, a partial
JUnit file marked interrupted) and the run ends with 128 + N. A second signal stops at once.

`Stopped` is a BaseException, like KeyboardInterrupt: no `except Exception` (a drill, a case, a
gate) can mistake a stop for a failure of what it was running. A stop "at once" is bounded: if
the cleanup it triggers (joining threads mid-kernel, ending children) has not ended the
process within STOP_AT_ONCE_SECONDS, the process ends anyway with the same code. A signal that
was ignored when the command started (`nohup` ignores SIGHUP) stays ignored. Children started
through `run_child` run in their own process group, are polled for a stop, and get the signal
(then SIGKILL) when the parent stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from types import FrameType
from typing import Any

from harness.figures.thresholds import (
    CHILD_STOP_SECONDS,
    STOP_AT_ONCE_SECONDS,
    STOP_POLL_SECONDS,
)
from plumbing.errors import ExitCode

SIGNAL_EXIT = {signal.SIGINT: ExitCode.SIGINT, signal.SIGTERM: ExitCode.SIGTERM,
               signal.SIGHUP: ExitCode.SIGHUP}  # 128 + N


class Stopped(BaseException):
    """The run was stopped by a signal; exit 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP).

    A BaseException, never caught by `except Exception`: a stop is not a failure."""

    def __init__(self, signum: int, message: str, *, consistent: bool) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = SIGNAL_EXIT.get(signal.Signals(signum), 128 + signum)
        self.consistent = consistent  # True: stopped between steps, the weights are whole

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class GracefulStop:
    """Installs the handlers for the duration of a `with` block (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._until: list[str] = []  # what each open deferring block finishes first
        self._previous: dict[int, Any] = {}
        self._children: set[subprocess.Popen] = set()

    def __enter__(self) -> GracefulStop:
        global _active
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNAL_EXIT:
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # ignored by whoever started us (nohup): keep it ignored
                self._previous[sig] = signal.signal(sig, self._handle)
            _active = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _active
        for sig, handler in self._previous.items():
            # after a stop the process is ending with its code: one more signal ends it at
            # once with that code, never as a KeyboardInterrupt or a kill (-2) on the way out
            signal.signal(sig, handler if self.signum is None else self._exit_now)
        if _active is self:
            _active = None
        self._previous.clear()

    @contextmanager
    def deferred(self, until: str = "the current step") -> Iterator[GracefulStop]:
        """Within this block the first signal waits for the next safe point (`requested`,
        `check_stop`); `until` names what is finished first, in the message."""
        self._until.append(until)
        try:
            yield self
        finally:
            self._until.pop()

    @contextmanager
    def at_once(self) -> Iterator[GracefulStop]:
        """Within a deferring block, a stretch with nothing to save and no safe point (reading
        a corpus): a signal stops at once there, one already received stops on entry."""
        saved, self._until = self._until, []
        try:
            check_stop("before reading the data")
            yield self
        finally:
            self._until = saved

    def requested(self) -> int | None:
        """The signal received, or None: polled by the training loop between steps."""
        return self.signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self._until:
            self.signum = signum
            self._stop_at_once(signum)
            raise Stopped(signum, f"{name} received: stopped", consistent=False)
        if self.signum is not None:
            print(f"spheres: {name} received twice: stopping at once, mid-step; no checkpoint "
                  "written", file=sys.stderr, flush=True)
            self._stop_at_once(signum)
            raise Stopped(signum, f"{name} received twice: stopped at once, mid-step; "
                                  "no checkpoint written", consistent=False)
        self.signum = signum
        print(f"spheres: {name} received: stopping after {self._until[-1]} "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def _exit_now(self, signum: int, frame: FrameType | None) -> None:
        assert self.signum is not None
        _hard_exit(SIGNAL_EXIT.get(signal.Signals(self.signum), 128 + self.signum), 0.0)

    def _stop_at_once(self, signum: int) -> None:
        """Bound the cleanup of a stop at once: end the children now and the process within
        STOP_AT_ONCE_SECONDS, whatever the cleanup is still waiting for."""
        for proc in list(self._children):
            _signal_group(proc, signal.SIGKILL)
        code = SIGNAL_EXIT.get(signal.Signals(signum), 128 + signum)
        timer = threading.Timer(STOP_AT_ONCE_SECONDS, _hard_exit,
                                args=(code, STOP_AT_ONCE_SECONDS))
        timer.daemon = True
        timer.name = "ks-stop-deadline"
        timer.start()


def _hard_exit(code: int, after: float) -> None:
    print(f"spheres: stopped at once: cleanup still running after {after:g}s was abandoned; "
          f"exit {code}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


_active: GracefulStop | None = None


def active() -> GracefulStop | None:
    """The handler the CLI installed, if any (None in library use and in worker threads)."""
    return _active


def deferred(until: str):
    """`active().deferred(until)`, or nothing in library use (no handler installed)."""
    stop = _active
    return stop.deferred(until) if stop is not None else nullcontext()


def at_once():
    """`active().at_once()`, or nothing in library use."""
    stop = _active
    return stop.at_once() if stop is not None else nullcontext()


def check_stop(where: str) -> None:
    """A safe point: raise `Stopped` (consistent) when a signal asked for a stop."""
    stop = _active
    if stop is not None and stop.signum is not None:
        raise Stopped(stop.signum, f"{signal.Signals(stop.signum).name}: stopped {where}",
                      consistent=True)


def track_child(proc: subprocess.Popen) -> None:
    """A child in a process group of its own that a stop at once kills at once (an exec
    engine): its group gets SIGKILL before the stop's cleanup starts."""
    if _active is not None:
        _active._children.add(proc)


def untrack_child(proc: subprocess.Popen) -> None:
    if _active is not None:
        _active._children.discard(proc)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def end_child(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's whole process group, SIGKILL after CHILD_STOP_SECONDS; reaped."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=CHILD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc, signal.SIGKILL)  # also whatever the child left in its group
    proc.wait()


def run_child(cmd: Sequence[str], *, timeout: float, where: str,
              **popen: Any) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True, timeout=...)` in a process group
    of its own, looking for a stop every STOP_POLL_SECONDS: on a stop (or any error) the group
    is ended (`end_child`) and `Stopped` raised, naming `where`."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **popen)
    track_child(proc)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=STOP_POLL_SECONDS)
                return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                check_stop(where)
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(proc.args, timeout) from None
    finally:
        if proc.returncode is None:
            end_child(proc)
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
        untrack_child(proc)
