"""Shared fixtures: every test that starts threads proves they all ended; one quick report."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest


def _live_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


@pytest.fixture
def no_thread_leak():
    """Fails the test if any thread it started is still alive shortly after it returns."""
    before = _live_threads()
    yield
    deadline = time.monotonic() + 10.0
    while True:
        leaked = [t for t in _live_threads() - before if t is not threading.main_thread()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"threads still running after the test: {[t.name for t in leaked]}"


@pytest.fixture(scope="session")
def quick_report(tmp_path_factory) -> Path:
    """One `spheres analyze --quick` report for the whole session (it takes minutes on a loaded
    machine): tests read it, or tamper with a copy of it, never with it."""
    from harness.cli import main

    out = tmp_path_factory.mktemp("analyze") / "report"
    code = main(["analyze", "--quick", "--threads", "2", "--out", str(out)])
    assert code == 0, f"analyze --quick failed with exit {code}"
    return out
