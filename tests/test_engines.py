"""Engines under test (SPEC 13): plug-ins, exec:COMMAND engines and the torch engine, each
judged through the real `spheres` command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from engine_plugins import WRONG_TENSOR
from support import processes_gone, run_cli

from harness.run.engines import make_engine
from reference.config import preset
from reference.engine import ReferenceEngine

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = f"exec:{sys.executable} {ROOT / 'examples' / 'numpy_engine.py'}"
FAKE = ROOT / "tests" / "fake_exec_engine.py"
TINY = ["--presets", "tiny", "--threads", "1,2", "--dtypes", "float64"]




def _fake(mode: str, tmp_path: Path) -> tuple[str, Path]:
    pidfile = tmp_path / f"{mode}.pids"
    return f"exec:{sys.executable} {FAKE} {mode} {pidfile}", pidfile


def test_engines_lists_every_registered_engine_and_its_origin(capsys):
    code, out, _ = run_cli(["engines"], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    for name, factory in (("reference", "harness.run.engines:build_reference"),
                          ("fast", "harness.run.engines:build_fast"),
                          ("torch", "torch_engine.engine:build")):
        assert factory in rows[name] and "kissing-spheres" in rows[name]
        assert rows[name].rstrip().endswith("ok")
    assert "exec:COMMAND" in rows


def test_unknown_engine_is_bad_input(capsys):
    code, _, err = run_cli(["verify", "--engine", "no-such-engine", *TINY], capsys)
    assert code == 2 and "unknown engine 'no-such-engine'" in err


def test_correct_plugin_passes_the_gates(capsys, no_thread_leak):
    code, out, err = run_cli(["verify", "--engine", "engine_plugins:correct", *TINY], capsys)
    assert code == 0, err
    assert out.count("PASS") == 3  # two rows and the verdict
    assert "bitwise identical across T=1,2: yes" in out


def test_wrong_gradient_plugin_fails_naming_the_tensor(capsys, no_thread_leak):
    code, _, err = run_cli(["verify", "--engine", "engine_plugins:wrong_gradient", *TINY], capsys)
    assert code == 1
    line = next(ln for ln in err.splitlines() if "grad-equivalence" in ln)
    assert f"worst tensor {WRONG_TENSOR}" in line and "engine_plugins:wrong_gradient" in line


def test_bitwise_is_measured_for_every_engine_and_gates_only_when_asked(capsys):
    argv = ["verify", "--engine", "engine_plugins:thread_dependent", *TINY]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "bitwise identical across T=1,2: NO (measured, not gated)" in out
    code, _, err = run_cli([*argv, "--require-bitwise"], capsys)
    assert code == 1 and "bitwise-grads" in err and "T=2 differs from T=1" in err


def test_example_exec_engine_passes_the_gates(capsys):
    code, out, err = run_cli(["verify", "--engine", EXAMPLE, "--presets", "tiny", "--threads",
                              "1,2", "--dtypes", "float64,float32"], capsys)
    assert code == 0, err
    assert out.count("PASS") == 5
    assert out.count("bitwise identical across T=1,2: yes") == 2


def test_exec_engine_grads_file_matches_the_reference(tmp_path, capsys):
    out_file = tmp_path / "g.npz"
    code, _, err = run_cli(["grads", "--engine", EXAMPLE, "--dtype", "float64", "--out",
                            str(out_file)], capsys)
    assert code == 0, err
    ref_file = tmp_path / "r.npz"
    assert run_cli(["grads", "--out", str(ref_file)], capsys)[0] == 0
    with np.load(out_file) as got, np.load(ref_file) as ref:
        assert sorted(got.files) == sorted(ref.files)
        for name in ref.files:
            if name.startswith("grad/"):
                np.testing.assert_allclose(got[name], ref[name], rtol=1e-9, atol=1e-15)


def test_exec_engine_trains_and_close_leaves_no_process():
    cfg = preset("tiny")
    engine = make_engine(EXAMPLE, cfg, dtype="float64", stall_timeout=30)
    ref = ReferenceEngine(cfg)
    rng = np.random.default_rng(1)
    tokens = rng.integers(4, 64, size=(8, 16))
    targets = rng.integers(0, 64, size=(8, 16))
    try:
        a, b = engine.step(tokens, targets), ref.step(tokens, targets)
        assert a.loss == pytest.approx(b.loss, rel=1e-12)
        state = engine.state()
        assert state.step == 1
        for name, p in ref.state().params.items():
            np.testing.assert_allclose(state.params[name], p, rtol=1e-9, atol=1e-12)
    finally:
        engine.close()
    assert processes_gone([engine.pid])
    engine.close()  # idempotent


@pytest.mark.parametrize("mode, says", [
    ("crash", "the engine process died (exit code 7)"),
    ("shape", "'grad/lnf.b' has shape (31,), expected (32,)"),
    ("nan", "'grad/wpe' holds non-finite values"),
    ("names", "array 'grad/lnf.g' is missing"),
    ("garbage", "frame starts b'hell'"),
    ("error", "the engine reported an error: out of memory on the device"),
])
def test_broken_exec_engine_is_a_fault_naming_engine_and_request(mode, says, tmp_path, capsys):
    spec, pidfile = _fake(mode, tmp_path)
    start = time.monotonic()
    code, _, err = run_cli(["verify", "--engine", spec, *TINY, "--stall-timeout", "30"], capsys)
    assert code == 4, err
    assert "request #2 'grads'" in err and f"fake_exec_engine.py {mode}" in err
    assert says in err
    assert time.monotonic() - start < 25  # reported at once, not at the stall timeout
    assert processes_gone([int(p) for p in pidfile.read_text().split()])


def test_hung_exec_engine_is_a_stall_and_leaves_no_process(tmp_path):
    spec, pidfile = _fake("hang", tmp_path)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness", "verify", "--engine", spec, *TINY,
                           "--stall-timeout", "6"], cwd=tmp_path, timeout=120,
                          capture_output=True, text=True)
    seconds = time.monotonic() - start
    assert proc.returncode == 3, proc.stderr
    assert "request #2 'grads': no reply within 6s" in proc.stderr
    assert "fake_exec_engine.py hang" in proc.stderr
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2 and processes_gone(pids)  # the engine and the child it started
    assert seconds < 60


def test_exec_engine_that_cannot_start_is_bad_input(capsys):
    code, _, err = run_cli(["verify", "--engine", "exec:/no/such/program", *TINY], capsys)
    assert code == 2 and "cannot start '/no/such/program'" in err


def test_torch_engine_passes_the_float64_gates_and_reports_bitwise(capsys):
    code, out, err = run_cli(["verify", "--engine", "torch", *TINY], capsys)
    assert code == 0, err
    verdict = next(ln for ln in out.splitlines() if "bitwise identical across T=1,2" in ln)
    assert verdict.split(": ")[-1].split()[0] in ("yes", "NO")  # measured, whatever it is
    rows = [ln for ln in out.splitlines() if ln.startswith("tiny ")]
    assert len(rows) == 2 and all(ln.endswith("PASS") for ln in rows)


def test_train_and_resume_through_an_exec_engine(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    code, _, err = run_cli(["train", "--engine", EXAMPLE, "--dtype", "float64", "--steps", "2",
                            "--total-steps", "3",  # the lr horizon of the whole 3-step run
                            "--checkpoint-dir", str(ckpt), "--json", str(tmp_path / "a.json")],
                           capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--engine", EXAMPLE, "--dtype", "float64", "--steps", "1",
                            "--resume", str(ckpt), "--json", str(tmp_path / "b.json")], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--engine", "reference", "--steps", "3",
                            "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    import json

    resumed = json.loads((tmp_path / "b.json").read_text())["losses"]
    ref = json.loads((tmp_path / "r.json").read_text())["losses"]
    assert resumed[0] == pytest.approx(ref[2], rel=1e-10)  # step 3 after a resume


def test_engines_measure_puts_every_engine_side_by_side(tmp_path, capsys):
    out = tmp_path / "engines.json"
    code, stdout, err = run_cli(["engines", "--measure", "--preset", "tiny", "--rounds", "1",
                                 "--threads", "2", "--engine", "reference", "--engine",
                                 "engine_plugins:wrong_gradient", "--engine", EXAMPLE,
                                 "--json", str(out), "--markdown", str(tmp_path / "e.md")],
                                capsys)
    assert code == 0, err
    import json

    rows = {r["engine"]: r for r in json.loads(out.read_text())["rows"]}
    assert all(not r["error"] for r in rows.values()), rows
    assert rows["reference"]["worst_error"] == 0.0 and rows["reference"]["bitwise"] is True
    wrong = rows["engine_plugins:wrong_gradient"]
    assert wrong["worst_tensor"] == WRONG_TENSOR and wrong["worst_error"] > 1e-3
    example = rows[EXAMPLE]
    assert example["worst_error"] < 1e-4 and example["bitwise"] is True
    for r in rows.values():
        assert r["tokens_per_s"] > 0 and 0 < r["sgemm_share"] and r["peak_rss_bytes"] > 2**20
    table = (tmp_path / "e.md").read_text()
    assert "| `exec:numpy_engine.py` | float32 | 2 |" in table


def test_a_plugin_that_cannot_load_is_listed_unavailable_and_refused(monkeypatch, capsys):
    from harness.run import plugins

    monkeypatch.setitem(plugins._BUILTIN, "broken", "no_such_module_ks:build")
    code, out, _ = run_cli(["engines"], capsys)
    assert code == 0
    row = next(ln for ln in out.splitlines() if ln.startswith("broken "))
    assert "unavailable: ModuleNotFoundError" in row and "no_such_module_ks" in row
    code, _, err = run_cli(["verify", "--engine", "broken", *TINY], capsys)
    assert code == 2 and "engine 'broken' (no_such_module_ks:build) cannot be loaded" in err


def test_a_stalled_grads_puts_its_diagnosis_beside_its_out_file(tmp_path):
    """Before: the diagnosis went into a folder made at the --out path (g.npz/stall-*.json), so
    the user's output path became a folder and the next `grads --out g.npz` was refused."""
    spec, pidfile = _fake("hang", tmp_path)
    out = tmp_path / "work" / "g.npz"
    out.parent.mkdir()
    proc = subprocess.run([sys.executable, "-m", "harness", "grads", "--engine", spec,
                           "--preset", "tiny", "--stall-timeout", "3", "--out", str(out)],
                          cwd=tmp_path, timeout=120, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3, proc.stderr
    assert not out.exists()  # neither a gradient file nor a folder in its place
    written = list(out.parent.glob("stall-*.json"))
    assert len(written) == 1 and f"stall diagnosis written to {written[0]}" in proc.stderr
    assert processes_gone([int(p) for p in pidfile.read_text().split()])
