"""SPEC 12 through the real command line in a subprocess: each test asserts the exit code, the
message and what is on disk afterwards (issue #10)."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.run.checkpoint import _checksum, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--synthetic-tokens", "3000"]  # 5 groups of the tiny preset


def spheres(*argv: str, cwd: Path | None = None, preexec=None, timeout: float = 120.0
            ) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=env, preexec_fn=preexec,
                          timeout=timeout)


def one_error(err: str, prefix: str = "spheres: error:") -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


# -- bad input at parse time and output paths: exit 2 before any work -------------------------

@pytest.mark.parametrize("extra, needle", [
    (["--lr", "inf"], "--lr: must be a finite number"),
    (["--lr", "nan"], "--lr: must be a finite number"),
    (["--lr", "-1"], "--lr: must be positive"),
    (["--checkpoint-every", "-1"], "--checkpoint-every: must lie in [0,"),
    (["--keep-checkpoints", "-2"], "--keep-checkpoints: must lie in [0,"),
    (["--steps", "-1"], "--steps: must lie in [0,"),
    (["--seed", "-3"], "--seed: must lie in [0,"),
    (["--stall-timeout", "inf"], "--stall-timeout: must be a finite number"),
])
def test_numbers_are_checked_at_parse_time(extra, needle, tmp_path):
    ck = tmp_path / "ck"
    r = spheres("train", *TINY, "--checkpoint-dir", str(ck), *extra)
    assert r.returncode == 2
    assert needle in r.stderr
    assert not ck.exists()


def test_output_paths_are_checked_before_any_work(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["train", "--checkpoint-dir", str(a_file / "ck")], "is under", "a file, not a folder"),
        (["train", "--checkpoint-dir", str(a_file)], "--checkpoint-dir", "a file, not a folder"),
        (["train", "--json", str(tmp_path)], "--json", "is a directory"),
        (["grads", "--out", str(tmp_path)], "--out", "is a directory"),
        (["verify", "--threads", "1", "--json", str(tmp_path)], "--json", "is a directory"),
    ]
    for argv, *needles in cases:
        t0 = time.monotonic()
        r = spheres(*argv, *(["--steps", "3"] if argv[0] == "train" else []))
        line = one_error(r.stderr)
        assert r.returncode == 2, (argv, r.stderr)
        assert all(n in line for n in needles), line
        assert "training" not in r.stderr and "data:" not in r.stderr  # no work started
        assert time.monotonic() - t0 < 30
    assert a_file.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_unexpected_exception_is_exit_5_with_traceback_file(tmp_path):
    code = ("import sys, harness.commands.train as c\n"
            "def boom(args): raise ZeroDivisionError('deliberate')\n"
            "c.run = boom\n"
            "from harness.cli import main\n"
            "sys.exit(main(['train']))\n")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=60)
    assert r.returncode == 5
    line = one_error(r.stderr, "spheres: internal error")
    assert "ZeroDivisionError: deliberate" in line
    crash = Path(line.rsplit("the traceback is in ", 1)[1])
    assert crash.parent == tmp_path and crash.is_file()
    assert "Traceback" in crash.read_text() and "boom" in crash.read_text()


def test_disk_full_while_checkpointing_is_exit_2_and_leaves_no_temp(tmp_path):
    ck = tmp_path / "ck"

    def limit():  # the file-size limit stands in for a full disk (EFBIG instead of ENOSPC)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    r = spheres("train", *TINY, "--engine", "reference", "--steps", "2",
                "--checkpoint-dir", str(ck), preexec=limit)
    assert r.returncode == 2, r.stderr
    line = one_error(r.stderr)
    assert "step-000002.npz" in line and "file-size limit" in line
    assert list(ck.iterdir()) == []  # no half-written checkpoint, no temp file


# -- early ends write the last consistent state; --resume continues bitwise -------------------

def _params(path: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(path).state.params


def test_fault_checkpoints_last_step_and_resume_is_bitwise(tmp_path):
    full, broken = tmp_path / "full", tmp_path / "broken"
    common = ["train", *TINY, "--threads", "2", "--keep-checkpoints", "0"]
    r = spheres(*common, "--steps", "5", "--checkpoint-dir", str(full))
    assert r.returncode == 0, r.stderr
    r = spheres(*common, "--steps", "5", "--checkpoint-dir", str(broken),
                "--inject", "raise:target=worker=1,step=3")
    assert r.returncode == 4, r.stderr
    assert "checkpointed the last completed step 3" in r.stderr
    assert sorted(p.name for p in broken.iterdir()) == ["step-000003.npz"]
    r = spheres(*common, "--steps", "2", "--checkpoint-dir", str(broken), "--resume", str(broken))
    assert r.returncode == 0, r.stderr
    a, b = _params(full / "step-000005.npz"), _params(broken / "step-000005.npz")
    assert all(np.array_equal(a[n], b[n]) for n in a)


def test_stall_checkpoints_last_step(tmp_path):
    ck = tmp_path / "ck"
    r = spheres("train", *TINY, "--threads", "2", "--steps", "5", "--checkpoint-dir", str(ck),
                "--stall-timeout", "1", "--inject", "hang:target=worker=0,step=2")
    assert r.returncode == 3, r.stderr
    assert "checkpointed the last completed step 2" in r.stderr
    assert load_checkpoint(ck / "step-000002.npz").state.step == 2


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_at_a_safe_point_and_checkpoints(sig, code, tmp_path):
    ck = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "train", *TINY, "--engine",
                             "reference", "--steps", "100000", "--checkpoint-dir", str(ck)],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # wait until training really runs
            if line.startswith("[step 3/"):
                break
        proc.send_signal(sig)
        t0 = time.monotonic()
        err = proc.stderr.read()
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert rc == code, err
    assert time.monotonic() - t0 < 30  # bounded: one step and one checkpoint
    name = signal.Signals(sig).name
    assert f"{name} received: stopping after the current step" in err
    assert f"spheres: stopped: {name}: stopped after step" in err
    files = sorted(ck.glob("step-*.npz"))
    assert len(files) == 1
    step = load_checkpoint(files[0]).state.step
    assert step >= 3 and f"checkpointed the last completed step {step}" in err


# -- checkpoint housekeeping: --keep-checkpoints, stale temps, umask ---------------------------

def test_keep_checkpoints_stale_temps_and_umask(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = ck / f".step-000001.npz.{dead.stdout.strip()}.abc123.tmp"  # a killed writer's
    stale.write_bytes(b"half")
    r = spheres("train", *TINY, "--engine", "reference", "--steps", "5", "--checkpoint-every",
                "1", "--keep-checkpoints", "2", "--checkpoint-dir", str(ck),
                preexec=lambda: os.umask(0o027))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in ck.iterdir()) == ["step-000004.npz", "step-000005.npz"]
    assert stat.S_IMODE((ck / "step-000005.npz").stat().st_mode) == 0o640


# -- checkpoints validated before use ---------------------------------------------------------

def _craft(src: Path, dst: Path, edit) -> Path:
    """A copy of `src` with its meta edited by `edit(meta)` and a valid, recomputed checksum."""
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "checksum"}
    meta = json.loads(str(arrays["meta"]))
    edit(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    arrays["checksum"] = np.array(_checksum(arrays))
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)
    return dst


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    ck = tmp_path_factory.mktemp("good")
    r = spheres("train", *TINY, "--engine", "reference", "--steps", "1", "--checkpoint-dir",
                str(ck))
    assert r.returncode == 0, r.stderr
    return ck / "step-000001.npz"


@pytest.mark.parametrize("name, edit, needle", [
    ("layers", lambda m: m["config"]["model"].update(n_layers=3), "parameter list"),
    ("shape", lambda m: m["config"]["model"].update(d_ff=64), "has shape"),
    ("seed", lambda m: m["config"]["train"].update(seed="x"), "seed='x'"),
    ("lr", lambda m: m["config"]["train"].update(lr=float("inf")), "lr=inf"),
    ("huge", lambda m: m["config"]["model"].update(vocab_size=10**12), "exceeds the limit"),
    ("step", lambda m: m.update(step=-4), "step -4"),
    ("truncated", None, "unreadable"),
])
def test_crafted_checkpoints_are_exit_2(name, edit, needle, good_checkpoint, tmp_path):
    bad = tmp_path / "step-000001.npz"
    if edit is None:
        bad.write_bytes(good_checkpoint.read_bytes()[:5000])
    else:
        _craft(good_checkpoint, bad, edit)
    r = spheres("train", *TINY, "--engine", "reference", "--steps", "1", "--resume", str(bad))
    assert r.returncode == 2, r.stderr
    assert needle in one_error(r.stderr)
    assert "ResourceWarning" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000001.npz"]


# -- --resume with a conflicting setting ------------------------------------------------------

@pytest.mark.parametrize("extra, ok", [
    (["--lr", "0.01"], False), (["--preset", "small"], False), (["--seed", "5"], False),
    (["--group-size", "4"], False), (["--total-steps", "77"], False),
    (["--last-group", "drop"], False), (["--no-shuffle"], False),
    (["--seed", "0", "--threads", "3"], True),  # same value / a free option
])
def test_resume_conflicts_are_named(extra, ok, good_checkpoint, tmp_path):
    r = spheres("train", "--synthetic-tokens", "3000", "--engine", "reference", "--steps", "1",
                "--resume", str(good_checkpoint), "--checkpoint-dir", str(tmp_path), *extra)
    if ok:
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "step-000002.npz").is_file()
    else:
        assert r.returncode == 2, r.stderr
        assert f"{' '.join(extra)} conflicts with the checkpoint's" in one_error(r.stderr)
        assert list(tmp_path.iterdir()) == []
