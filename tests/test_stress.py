"""`spheres stress` (issue #10): a short seeded chaos run passes through the real CLI, a replayed
batch draws the same cases, and deliberately broken engines make its invariants FAIL."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fast.trainer
from harness.verify.stress import CaseRunner, InvariantFailed, StressCase, StressTotals, run_batch
from plumbing.errors import FaultError

ROOT = Path(__file__).resolve().parents[1]


def test_short_stress_run_passes_through_the_cli():
    r = subprocess.run([sys.executable, "-m", "harness", "stress", "--seconds", "20", "--seed",
                        "7"], capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"stress: (\d+) cases in \d+ s, (\d+) faults fired .* (\d+) invariants "
                  r"checked, [\d,]+ perturbed sync points, 0 failures", r.stdout)
    assert m, r.stdout
    cases, fired, invariants = (int(x) for x in m.groups())
    assert cases >= 5 and invariants >= 5 * cases
    assert "Traceback" not in r.stderr


def _case(**changes) -> StressCase:
    base = dict(threads=3, group_size=5, n_batches=7, trim=3, steps=2, dtype="float32",
                faults=(), perturb_seed=11, max_delay_us=200, yield_share=0.3)
    return StressCase(**{**base, **changes})


def test_a_case_without_faults_passes(tmp_path, no_thread_leak):
    totals = StressTotals()
    CaseRunner(totals, tmp_path).run(_case())
    assert totals.cases == 1 and totals.invariants >= 5 and totals.sync_points > 0


def test_thread_count_dependent_weights_are_caught(tmp_path, monkeypatch, no_thread_leak):
    real_step = fast.trainer.FastTrainer.step

    def drifting_step(self, tokens, targets):  # a reduction whose order depends on T
        result = real_step(self, tokens, targets)
        if self.threads > 1:
            self.shared.params[0] = np.nextafter(self.shared.params[0], np.inf)
        return result

    monkeypatch.setattr(fast.trainer.FastTrainer, "step", drifting_step)
    with pytest.raises(InvariantFailed, match="differ"):
        CaseRunner(StressTotals(), tmp_path).run(_case())


def test_half_applied_step_on_a_fault_is_caught(tmp_path, monkeypatch, no_thread_leak):
    real_step = fast.trainer.FastTrainer.step

    def leaky_step(self, tokens, targets):  # a failure that leaves the update half done
        try:
            return real_step(self, tokens, targets)
        except FaultError:
            self.shared.params[:10] += 1.0
            raise

    monkeypatch.setattr(fast.trainer.FastTrainer, "step", leaky_step)
    case = _case(faults=("raise:target=worker=1,step=1",))
    with pytest.raises(InvariantFailed, match="half-applied"):
        CaseRunner(StressTotals(), tmp_path).run(case)


def test_replay_draws_the_same_cases(tmp_path, monkeypatch):
    seen: list[list[str]] = [[], []]
    for run in seen:  # no engine needed to compare the drawn cases
        monkeypatch.setattr(CaseRunner, "run", lambda self, case: None)
        assert run_batch(CaseRunner(StressTotals(), tmp_path), 1234, None, show=run.append) == []
    assert seen[0] == seen[1] and len(seen[0]) >= 5
