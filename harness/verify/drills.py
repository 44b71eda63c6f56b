"""Watchdog and fault drills for `spheres analyze`: inject each fault, check what happened.

Each drill runs the fast engine in-process on the tiny preset with one injected fault and
records the measured outcome: which exception, which thread it named, how long detection took,
whether the weights were left untouched, and whether every thread ended. A signal is never a
drill's outcome: `Stopped` is no SpheresError, and the drills stop between drills.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.figures.results import DrillResult
from harness.figures.thresholds import DETECT_SLACK
from harness.measure.process import live_ks_threads
from harness.run.corpus import load_corpus, one_group_tokens
from harness.run.engines import make_engine
from harness.run.stop import check_stop
from plumbing.errors import FaultError, NonFiniteGradientError, SpheresError, StallError
from reference.config import preset

STALL_TIMEOUT = 2.0  # short, so drills are quick; detection must come within it + a few seconds


@dataclass(frozen=True)
class Drill:
    name: str
    inject: str  # the --inject spec
    expect: type[BaseException] | None  # None: the run must complete
    culprit: str | None  # thread name the error must mention
    stall_timeout: float = STALL_TIMEOUT


DRILLS = [
    Drill("hang in a worker", "hang:target=worker=1,step=1", StallError, "ks-worker-1"),
    Drill("hang in Node Zero", "hang:target=node-zero,step=1", StallError, "ks-node-zero"),
    Drill("slow worker (3 s > stall timeout 1.5 s)", "slow:target=worker=0,step=1,seconds=3",
          None, None, stall_timeout=1.5),
    Drill("exception in a worker", "raise:target=worker=2,step=1", FaultError, "ks-worker-2"),
    Drill("exception in Node Zero", "raise:target=node-zero,step=2", FaultError, "ks-node-zero"),
    Drill("NaN gradient in a worker", "nan:target=worker=0,step=0", NonFiniteGradientError,
          "ks-worker-0"),
]


def run_drill(drill: Drill, threads: int = 4, steps: int = 3) -> DrillResult:
    """One drill; never raises for the expected failure, records everything measured."""
    from fast.faults import parse_inject

    cfg = preset("tiny")
    corpus = load_corpus(cfg, None, synthetic_tokens=one_group_tokens(cfg, steps))
    groups = corpus.groups(cfg)
    before = live_ks_threads()
    engine = make_engine("fast", cfg, threads=threads, stall_timeout=drill.stall_timeout,
                         faults=[parse_inject(drill.inject)])
    error: BaseException | None = None
    detect = 0.0
    unchanged = None
    t_start = time.perf_counter()
    try:
        for s in range(steps):
            params_before = {k: v.copy() for k, v in engine.state().params.items()}
            t0 = time.perf_counter()
            group = groups.group(s % len(groups))
            try:
                engine.step(group.tokens, group.targets)
            except SpheresError as exc:
                error, detect = exc, time.perf_counter() - t0
                after = engine.state().params
                unchanged = all(np.array_equal(params_before[k], after[k]) for k in after)
                break
    finally:
        engine.close()
    seconds = time.perf_counter() - t_start
    time.sleep(0.05)
    leaked = sorted(t.name for t in live_ks_threads() - before)
    message = str(error) if error else "completed"
    if isinstance(error, StallError):
        message += " | " + str(error.diagnosis.get("stuck", ""))
    ok_kind = (error is None) if drill.expect is None else isinstance(error, drill.expect)
    named = drill.culprit is None or drill.culprit in message
    in_time = error is None or detect <= drill.stall_timeout + DETECT_SLACK
    weights_ok = error is None or unchanged is True
    passed = ok_kind and named and in_time and weights_ok and not leaked
    expected = ("completes (slow is not a stall)" if drill.expect is None
                else f"{drill.expect.__name__} naming {drill.culprit}")
    outcome = type(error).__name__ if error else "completed"
    if error:
        outcome += f" after {detect:.1f}s" + ("" if named else f", {drill.culprit} NOT named")
        outcome += ", weights unchanged" if unchanged else ", WEIGHTS CHANGED"
    if leaked:
        outcome += f", threads left running: {leaked}"
    return DrillResult(name=drill.name, inject=drill.inject, expected=expected,
                       outcome=outcome, message=message[:500], seconds=seconds,
                       detect_seconds=detect, stall_timeout=drill.stall_timeout,
                       culprit_named=named, weights_unchanged=unchanged,
                       leaked_threads=leaked, passed=passed)


def run_drills(say: Callable[[str], None]) -> list[DrillResult]:
    results = []
    for drill in DRILLS:
        check_stop(f"before drill {drill.name!r} ({len(results)} of {len(DRILLS)} done)")
        result = run_drill(drill)
        say(f"[drill] {drill.name}: {result.outcome} -> "
            f"{'PASS' if result.passed else 'FAIL'}")
        results.append(result)
    return results
