"""fast.mpi_poll: polls back to back while a payload can be in flight, sleeps after, never
past the deadline. A fake request stands in for MPI (MPICH moves data only inside Test)."""

from __future__ import annotations

import time

import pytest

from fast import mpi_poll


class FakeRequest:
    """Completes once `after` seconds have passed; counts its Test calls."""

    def __init__(self, after: float) -> None:
        self.done_at = time.monotonic() + after
        self.calls = 0

    def Test(self) -> bool:  # noqa: N802 - mpi4py's name
        self.calls += 1
        return time.monotonic() >= self.done_at


@pytest.fixture
def sleeps(monkeypatch):
    """Every time.sleep of fast.mpi_poll, recorded (and really slept)."""
    seen: list[float] = []
    real = time.sleep

    def sleep(seconds: float) -> None:
        seen.append(seconds)
        real(seconds)
    monkeypatch.setattr(mpi_poll.time, "sleep", sleep)
    return seen


def test_a_payload_in_flight_is_polled_back_to_back(sleeps):
    """60 MB both ways: within its spin window (2 ms + 120 MB / 200 MB/s) no poll sleeps: a
    sleeping poll let MPICH move a few KB per ms (8.7 s for this payload instead of 29 ms)."""
    request = FakeRequest(after=0.05)
    taken = mpi_poll.complete(request.Test, 10.0, 120_000_000)
    assert 0.04 <= taken < 1.0
    assert sleeps == [] and request.calls > 100


def test_a_small_message_from_a_late_rank_is_waited_for_asleep(sleeps):
    """A 4 KB status from a rank still computing: after the 2 ms spin the wait sleeps, so a
    waiting rank leaves its core to the workers (back to back, ~10^6 polls in 0.3 s here)."""
    request = FakeRequest(after=0.3)
    mpi_poll.complete(request.Test, 10.0, 4096)
    assert len(sleeps) >= 100 and max(sleeps) == mpi_poll.POLL_MAX_SECONDS
    assert request.calls < 200_000  # the 2 ms spin's ~10^4 polls, then one per sleep


def test_a_large_payload_from_a_late_rank_keeps_polling_in_bursts(sleeps):
    """Past the spin window a large payload alternates sleeps with bursts of polls (its data
    keeps moving once the partner joins) instead of one poll per sleep."""
    nbytes = 2 * mpi_poll.BURST_BYTES
    request = FakeRequest(after=mpi_poll.spin_seconds(nbytes) + 0.3)
    mpi_poll.complete(request.Test, 10.0, nbytes)
    assert len(sleeps) >= 50
    assert request.calls > 10 * len(sleeps)


def test_the_deadline_ends_the_wait_and_is_never_overrun(sleeps):
    request = FakeRequest(after=3600.0)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="not complete after 0.2 s"):
        mpi_poll.complete(request.Test, 0.2, 120_000_000)  # inside its spin window
    assert 0.2 <= time.monotonic() - start < 0.5
