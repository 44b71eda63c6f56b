"""The command line: bad input gives exit 2 and one line naming the problem; grads and train
write what SPEC 6 says; --resume continues bitwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import run_cli

from harness.run.engines import parse_threads
from plumbing.errors import InputError
from reference.config import preset
from reference.model import group_loss_and_grads
from reference.params import param_specs


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("spheres: error:")]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    return lines[0]


@pytest.fixture
def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    squad = tmp_path / "squad.json"
    squad.write_text('{"data": [{"paragraphs": [{"qas": []}]}]}')  # no "context"
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [')
    return {
        "missing": (tmp_path / "nope.txt", "does not exist"),
        "empty": (empty, "empty"),
        "undecodable": (binary, "binary.txt"),
        "squad-missing-key": (squad, "context"),
        "squad-bad-json": (broken, "broken.json"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "undecodable", "squad-missing-key",
                                  "squad-bad-json"])
def test_bad_data_exits_2_with_one_line(case, bad_inputs, capsys, tmp_path):
    path, needle = bad_inputs[case]
    out = tmp_path / "g.npz"
    code, _, err = run_cli(["grads", "--data", str(path), "--out", str(out)], capsys)
    assert code == 2
    assert needle in error_line(err)
    assert not out.exists(), "nothing may be written on bad input"


@pytest.mark.parametrize("argv, needle", [
    (["grads", "--preset", "huge", "--out", "x.npz"], "invalid choice"),
    (["train", "--group-size", "0"], "at least 1"),
    (["train", "--threads", "-3"], "at least 1"),
    (["train", "--stall-timeout", "0"], "at least 1"),
    (["verify", "--threads", "5-2"], "5-2"),
    (["verify", "--presets", "tiny,nope"], "nope"),
    (["train", "--engine", "fast", "--inject", "explode:target=worker=0,step=1"], "explode"),
])
def test_bad_usage_exits_2(argv, needle, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert needle in err


def test_unwritable_output_exits_2(capsys, tmp_path):
    code, _, err = run_cli(["grads", "--out", str(tmp_path / "no" / "such" / "g.npz")], capsys)
    assert code == 2 and "does not exist" in error_line(err)


def test_parse_threads_ranges_and_lists():
    assert parse_threads("1-4,8,3") == [1, 2, 3, 4, 8]
    assert parse_threads("63") == [63]
    with pytest.raises(InputError):
        parse_threads("0-3")
    with pytest.raises(InputError):
        parse_threads("a,b")


def test_each_command_is_one_module_imported_only_when_it_runs_or_shows_its_help():
    import subprocess
    import sys

    from harness.cli import COMMANDS

    root = Path(__file__).resolve().parents[1]
    for name in COMMANDS:
        code = ("import sys\n"
                "from harness.cli import COMMANDS, build_parser\n"
                f"build_parser({name!r})\n"
                "print(sorted(n for n, c in COMMANDS.items() if c.module in sys.modules))\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=root, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == repr([name])
    import importlib

    for name, command in COMMANDS.items():
        module = importlib.import_module(command.module)
        assert command.module == f"harness.commands.{name}"
        for attribute in ("DESCRIPTION", "OUTPUTS", "add_arguments", "run"):
            assert hasattr(module, attribute), (name, attribute)


def test_grads_npz_matches_reference_model(capsys, tmp_path):
    out = tmp_path / "ref.npz"
    code, stdout, _ = run_cli(["grads", "--engine", "reference", "--seed", "3", "--out", str(out)],
                          capsys)
    assert code == 0 and "loss" in stdout
    z = np.load(out)
    cfg = preset("tiny", seed=3)
    assert json.loads(str(z["config"]))["model"]["vocab_size"] == cfg.model.vocab_size
    G, B, S = cfg.train.group_size, cfg.train.batch_size, cfg.model.seq_len
    assert z["tokens"].shape == (G * B, S) and z["tokens"].dtype == np.int64
    assert z["targets"].shape == (G * B, S) and z["targets"].dtype == np.int64
    # targets are the inputs shifted by one inside the stream
    assert np.array_equal(z["tokens"][0, 1:], z["targets"][0, :-1])
    params = {s.name: z[f"param/{s.name}"] for s in param_specs(cfg.model)}
    loss, n, grads = group_loss_and_grads(params, cfg.model, z["tokens"], z["targets"], B)
    assert float(z["loss"]) == loss
    for s in param_specs(cfg.model):
        assert np.array_equal(z[f"grad/{s.name}"], grads[s.name]), s.name


def test_grads_fast_engine_agrees_with_reference(capsys, tmp_path, no_thread_leak):
    ref, fast = tmp_path / "ref.npz", tmp_path / "fast.npz"
    assert run_cli(["grads", "--engine", "reference", "--out", str(ref)], capsys)[0] == 0
    assert run_cli(["grads", "--engine", "fast", "--threads", "3", "--dtype", "float64", "--out",
                str(fast)], capsys)[0] == 0
    a, b = np.load(ref), np.load(fast)
    assert np.array_equal(a["tokens"], b["tokens"])
    for s in param_specs(preset("tiny").model):
        g_ref, g_fast = a[f"grad/{s.name}"], b[f"grad/{s.name}"]
        err = np.linalg.norm(g_fast - g_ref) / max(np.linalg.norm(g_ref), 1e-300)
        assert err <= 1e-10, (s.name, err)


def _final_params(folder: Path) -> dict[str, np.ndarray]:
    from harness.run.checkpoint import latest_checkpoint, load_checkpoint

    return load_checkpoint(latest_checkpoint(folder)).state.params


def test_resume_is_bitwise(capsys, tmp_path, no_thread_leak):
    common = ["train", "--engine", "fast", "--threads", "2", "--preset", "tiny"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    summary = tmp_path / "summary.json"
    assert run_cli(common + ["--steps", "4", "--checkpoint-dir", str(straight), "--json",
                         str(summary)], capsys)[0] == 0
    # the lr horizon defaults to the planned run: the split run plans the same 4 steps
    assert run_cli(common + ["--steps", "2", "--total-steps", "4", "--checkpoint-dir",
                             str(split)], capsys)[0] == 0
    code, _, err = run_cli(common + ["--steps", "2", "--resume", str(split), "--checkpoint-dir",
                                 str(split)], capsys)
    assert code == 0, err
    a, b = _final_params(straight), _final_params(split)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    s = json.loads(summary.read_text())
    for key in ("steps", "tokens", "seconds", "tokens_per_s", "compile_seconds",
                "peak_rss_bytes", "final_loss"):
        assert key in s
    assert s["steps"] == 4 and s["tokens"] > 0 and s["tokens_per_s"] > 0


def test_train_progress_is_printed_per_step(capsys, tmp_path, no_thread_leak):
    code, _, err = run_cli(["train", "--engine", "fast", "--threads", "2", "--steps", "3"], capsys)
    assert code == 0
    assert sum("[step " in ln and "tok/s" in ln for ln in err.splitlines()) == 3


def test_verify_full_tiny_sweep_passes_and_writes_json_and_markdown(capsys, tmp_path,
                                                                    no_thread_leak):
    js, md = tmp_path / "v.json", tmp_path / "v.md"
    code, out, _ = run_cli(["verify", "--presets", "tiny", "--threads", "1-63", "--json",
                            str(js), "--markdown", str(md)], capsys)
    assert code == 0, out
    report = json.loads(js.read_text())
    assert report["passed"] and len(report["records"]) == 2 * 63
    assert {r["threads"] for r in report["records"]} == set(range(1, 64))
    assert len({r["grad_hash"] for r in report["records"] if r["dtype"] == "float32"}) == 1
    assert "| tiny | float32 | 63 |" in md.read_text()
    assert sum(ln.startswith("tiny ") for ln in out.splitlines()) == 126  # a row per run


def test_verify_exits_1_naming_check_preset_dtype_threads_and_tensor(capsys, monkeypatch,
                                                                     no_thread_leak):
    import harness.verify.gates as verify

    # a gate that cannot be met (float32 gradients equal to float64 ones to 1e-12) must fail
    monkeypatch.setitem(verify.GRAD_TOL, "float32", 1e-12)
    code, _, err = run_cli(["verify", "--presets", "tiny", "--threads", "1,3",
                            "--dtypes", "float32"], capsys)
    assert code == 1
    line = next(ln for ln in err.splitlines() if "grad-equivalence" in ln)
    assert "preset tiny" in line and "float32" in line and "T=1" in line
    assert "worst tensor" in line


def _spheres(args: list[str], cwd: Path, timeout: float) -> tuple[int, str, float]:
    """The real command in its own process (the stall path ends it with os._exit)."""
    import subprocess
    import sys
    import time

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, timeout=timeout,
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


def test_hang_ends_the_process_with_exit_3_and_a_diagnosis(tmp_path):
    ckpt = tmp_path / "ckpt"
    code, out, seconds = _spheres(
        ["train", "--threads", "2", "--steps", "3", "--stall-timeout", "2", "--checkpoint-dir",
         str(ckpt), "--inject", "hang:target=worker=1,step=1"], tmp_path, timeout=120)
    assert code == 3, out
    assert "ks-worker-1" in out and "STALL" in out
    diagnosis = json.loads(next(ckpt.glob("stall-*.json")).read_text())
    assert any(t["name"] == "ks-worker-1" for t in diagnosis["stuck"])
    assert "ks-worker-1" in json.dumps(diagnosis["stacks"])
    assert seconds < 60  # start-up + 1 step + stall timeout + a few seconds, never a hang


@pytest.mark.parametrize("inject, needle", [
    ("raise:target=worker=0,step=1", "ks-worker-0"),
    ("nan:target=worker=1,step=0", "non-finite gradient"),
])
def test_faults_exit_4_naming_the_culprit(tmp_path, inject, needle):
    code, out, _ = _spheres(["train", "--threads", "2", "--steps", "3", "--inject", inject],
                            tmp_path, timeout=120)
    assert code == 4, out
    assert needle in out and "step" in out


def test_unfired_fault_is_a_warning(capsys, no_thread_leak):
    code, _, err = run_cli(["train", "--threads", "2", "--steps", "1", "--inject",
                            "raise:target=worker=0,step=5"], capsys)
    assert code == 0
    assert "never fired" in err and "step=5" in err
