"""The CI recipe (docs/CI.md, examples/ci/) run end to end: the shell script the workflow calls,
with tiny settings through the environment variables it honours; not the CI service itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "ci" / "spheres-ci.sh"
WORKFLOW = ROOT / "examples" / "ci" / "github-actions.yml"
RECIPE_TIMEOUT_S = 1800.0  # a quick analyze and a 2-run verify: minutes on a loaded machine


def run_recipe(tmp: Path, **settings: str) -> tuple[int, str]:
    """The script in its own process group, every child ended before this returns."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SPHERES_CI_") and k != "GITHUB_STEP_SUMMARY"}
    env.update(PYTHONPATH=str(ROOT), SPHERES_CI_PYTHON=sys.executable, SPHERES_CI_INSTALL="0",
               SPHERES_CI_OUT=str(tmp / "out"), SPHERES_CI_SUMMARY=str(tmp / "summary.md"),
               SPHERES_CI_VERIFY_THREADS="1-2", SPHERES_CI_VERIFY_PRESETS="tiny",
               SPHERES_CI_VERIFY_DTYPES="float32", SPHERES_CI_ANALYZE_THREADS="2")
    env.update(settings)
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, cwd=tmp, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=RECIPE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out


def test_recipe_runs_every_step_and_writes_the_artifacts(tmp_path: Path, quick_report: Path):
    code, log = run_recipe(tmp_path, SPHERES_CI_BASELINE=str(quick_report / "results.json"))
    assert code == 0, log[-3000:]
    out = tmp_path / "out"
    for step in ("verify", "analyze", "check", "compare"):
        assert f"ci: {step}: exit 0" in log, log[-3000:]
    junit = ET.parse(out / "verify.xml").getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) >= 2 and not junit.findall(".//failure"), ET.tostring(junit)[:500]
    assert (out / "report" / ".spheres-manifest.json").is_file()
    assert "OK: every claim follows from the data" in log
    summary = (tmp_path / "summary.md").read_text()
    assert "| verify | 0 |" in summary and "| check | 0 |" in summary
    assert "**Verdict**: **PASS**" in summary
    assert f"# Comparison: `{quick_report / 'results.json'}`" in summary  # the compare table
    assert "| figure | A | B | change |" in summary


def test_recipe_runs_on_after_a_failure_and_exits_with_its_code(tmp_path: Path):
    """Bad settings: every step is still tried and reported, the first failure's code wins."""
    code, log = run_recipe(tmp_path, SPHERES_CI_VERIFY_PRESETS="no-such-preset",
                           SPHERES_CI_ANALYZE_THREADS="0")
    assert code == 2, log
    for step in ("verify", "analyze", "check"):
        assert f"ci: {step}: exit 2" in log, log
    summary = (tmp_path / "summary.md").read_text()
    assert "| verify | 2 |" in summary and "| check | 2 |" in summary
    assert "No baseline results.json" in summary


def _script_settings() -> set[str]:
    return set(re.findall(r"SPHERES_CI_[A-Z_]+", SCRIPT.read_text()))


def test_workflow_calls_the_tested_script_and_keeps_the_artifacts():
    text = WORKFLOW.read_text()
    assert "run: bash examples/ci/spheres-ci.sh" in text
    assert re.search(r"if: always\(\)\s+uses: actions/upload-artifact", text)
    assert "include-hidden-files: true" in text  # else the manifest is left out: check exits 2
    assert set(re.findall(r"SPHERES_CI_[A-Z_]+", text)) <= _script_settings()


def test_ci_doc_names_every_setting_and_step():
    doc = (ROOT / "docs" / "CI.md").read_text()
    missing = sorted(s for s in _script_settings() if s not in doc)
    assert not missing, missing
    for command in ("spheres verify", "--junit", "spheres analyze --quick", "spheres check",
                    "spheres compare", "examples/ci/spheres-ci.sh",
                    "examples/ci/github-actions.yml"):
        assert command in doc, command
