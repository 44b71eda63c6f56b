"""fast.deadline: the one bounded wait behind barriers, position tickets and the workspace pool."""

from __future__ import annotations

import threading
import time

from fast.deadline import IdleDeadline


def test_an_expired_deadline_returns_false_without_waiting():
    cond = threading.Condition(threading.Lock())
    deadline = IdleDeadline(0.0)
    with cond:
        start = time.monotonic()
        assert deadline.wait(cond, poll=5.0) is False
    assert time.monotonic() - start < 1.0  # did not sleep the 5 s poll


def test_a_wait_never_sleeps_past_the_deadline_and_then_reports_it():
    cond = threading.Condition(threading.Lock())
    deadline = IdleDeadline(0.05)
    waits = 0
    with cond:
        while deadline.wait(cond, poll=5.0):  # nobody notifies: each wait ends at the deadline
            waits += 1
            assert waits < 100
    assert waits >= 1 and deadline.remaining() <= 0


def test_progress_moves_the_deadline_forward():
    counter = [0]
    deadline = IdleDeadline(0.05, ticks=lambda: counter[0])
    time.sleep(0.06)  # the deadline passes (a clock, not synchronisation)
    counter[0] += 1  # ... but a thread made progress meanwhile
    assert deadline.remaining() > 0
    assert IdleDeadline(None).remaining() is None


def test_no_timeout_waits_at_most_one_poll():
    cond = threading.Condition(threading.Lock())
    deadline = IdleDeadline(None)
    with cond:
        assert deadline.wait(cond, poll=0.01) is True

