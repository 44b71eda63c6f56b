"""The heartbeat race (issue #10): a watchdog sample taken between the stores of a phase change
must never see a new working phase with the previous phase's start time (a false stall after a
long quiet phase). The interleaving is reproduced deterministically with sys.settrace: a sample
is taken at every line boundary of the writer, and a phase change at every line boundary of the
reader."""

from __future__ import annotations

import sys
import types

import pytest

import fast.heartbeat as heartbeat_mod
import fast.watchdog as watchdog_mod
from fast.heartbeat import Heartbeat, HeartbeatBoard, Phase
from fast.watchdog import Watchdog

QUIET = 100.0  # seconds spent idle before the phase change: far beyond the stall timeout
TIMEOUT = 1.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    for mod in (heartbeat_mod, watchdog_mod):
        shim = types.SimpleNamespace(monotonic=fake.monotonic, thread_time=lambda: 0.0,
                                     time=lambda: 0.0)
        monkeypatch.setattr(mod, "time", shim)
    return fake


def _setup(clock: FakeClock) -> tuple[Heartbeat, Watchdog]:
    clock.now = 0.0
    board = HeartbeatBoard()
    hb = board.add("worker", 0, "ks-worker-0")
    hb.start()  # idle since t=0
    dog = Watchdog(board, [], {0: "ks-worker-0"}, TIMEOUT, lambda: None, lambda e: None)
    clock.now = QUIET  # a long legitimately quiet phase (idle is not a working phase)
    assert dog.check(clock.now) is None
    return hb, dog


def _lines_of(func, action):
    """Run `func()`, calling `action()` at every line event inside the traced code object."""
    code = func.__code__ if hasattr(func, "__code__") else func.__func__.__code__

    def local(frame, event, arg):
        if event == "line":
            action()
        return local

    def global_(frame, event, arg):
        return local if frame.f_code is code else None

    return code, global_


def test_sample_between_the_writers_stores_sees_no_false_stall(clock):
    hb, dog = _setup(clock)
    seen = []
    code, tracer = _lines_of(Heartbeat.set, lambda: seen.append(dog.check(clock.now)))
    sys.settrace(tracer)
    try:
        hb.set(Phase.COMPUTING, step=0, batch=0)
    finally:
        sys.settrace(None)
    assert len(seen) >= 5  # a sample at every line of set()
    assert all(s is None for s in seen), [str(s) for s in seen if s is not None][0]
    assert dog.check(QUIET + 0.1) is None  # the sample that sees the phase change's tick
    assert dog.check(QUIET + TIMEOUT + 0.5) is not None  # a real stall is still caught


def test_phase_change_between_the_readers_loads_sees_no_false_stall(clock):
    n_lines = 0

    def count():
        nonlocal n_lines
        n_lines += 1

    hb, dog = _setup(clock)
    code, tracer = _lines_of(Watchdog.check, count)
    sys.settrace(tracer)
    try:
        dog.check(clock.now)
    finally:
        sys.settrace(None)
    assert n_lines >= 10
    for k in range(n_lines):  # the writer runs at the k-th line boundary of the reader
        hb, dog = _setup(clock)
        calls = 0

        def maybe_set(k: int = k, hb: Heartbeat = hb) -> None:
            nonlocal calls
            calls += 1
            if calls == k + 1:
                hb.set(Phase.COMPUTING, step=0, batch=0)

        code, tracer = _lines_of(Watchdog.check, maybe_set)
        sys.settrace(tracer)
        try:
            result = dog.check(clock.now)
        finally:
            sys.settrace(None)
        assert result is None, f"false stall with the phase change at line event {k}: {result}"
