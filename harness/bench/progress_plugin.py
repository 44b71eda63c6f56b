"""`make bench`'s progress: a pytest plugin the benchmark child loads (`-p
harness.bench.progress_plugin`, from harness/bench/runner.py unless `--quiet`), printing a
flushed line as each benchmark starts, with elapsed time and ETA."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.run.progress import format_seconds


class BenchLines:
    """A flushed line as each benchmark starts, `bench 3/12 <name> | elapsed 1m02s | ETA
    2m04s`, and one when the last ends; the ETA is the finished benchmarks' mean time the
    ones left (they differ in size, but nothing sizes them before they run)."""

    def __init__(self, write: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.clock = write, clock
        self.total, self.done, self.started, self.spent = 0, 0, clock(), 0.0
        self._begun: float | None = None

    def collected(self, total: int) -> None:
        self.total, self.started = total, self.clock()

    def begin(self, name: str) -> None:
        self._begun = now = self.clock()
        mean = self.spent / self.done if self.done else None
        eta = mean * (self.total - self.done) if mean is not None else None
        self.write(f"bench {self.done + 1}/{self.total} {name} | elapsed "
                   f"{format_seconds(now - self.started)} | ETA {format_seconds(eta)}")

    def end(self) -> None:
        if self._begun is None:
            return
        self.done += 1
        self.spent += self.clock() - self._begun
        self._begun = None
        if self.done == self.total:
            self.write(f"bench {self.done}/{self.total} done in "
                       f"{format_seconds(self.clock() - self.started)}")


_LINES: BenchLines | None = None  # `-p harness.bench.runner` in the pytest child loads these


def pytest_collection_finish(session) -> None:
    global _LINES
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def write(line: str) -> None:
        if reporter is not None:  # on a line of its own, after pytest's dots
            reporter.ensure_newline()
            reporter.write(line + "\n", flush=True)
        else:
            print(line, flush=True)

    _LINES = BenchLines(write)
    _LINES.collected(len(session.items))


def pytest_runtest_logstart(nodeid: str, location) -> None:
    if _LINES is not None:
        _LINES.begin(nodeid.split("::")[-1])


def pytest_runtest_logfinish(nodeid: str, location) -> None:
    if _LINES is not None:
        _LINES.end()
