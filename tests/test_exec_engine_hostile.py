"""Hostile out-of-process engines (#24 classes 5 and 6, #20 class 5): what an exec engine starts
is ended (proved by pid), a reply that is not a frame is malformed at once, what it sends as
text is cleaned and cut, and its death is never blamed on it when the harness killed it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from support import run_cli

from harness.run.engine_text import MAX_ENGINE_TEXT, engine_text
from harness.run.engines import make_engine
from plumbing.errors import FaultError
from reference.config import preset

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "fake_exec_engine.py"
TINY = ["--presets", "tiny", "--threads", "1", "--dtypes", "float64"]


def _fake(mode: str, tmp_path: Path) -> tuple[str, Path]:
    pidfile = tmp_path / f"{mode}.pids"
    return f"exec:{sys.executable} {FAKE} {mode} {pidfile}", pidfile


def _alive(pid: int) -> bool:
    """Running, or a zombie nobody reaped (both are left behind)."""
    try:
        psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    return True


def _batch(cfg):
    rng = np.random.default_rng(0)
    shape = (cfg.train.batch_size, cfg.model.seq_len)
    return rng.integers(4, 60, size=shape), rng.integers(1, 60, size=shape)


def test_a_grandchild_that_calls_setsid_is_ended_and_reaped_on_close(tmp_path):
    spec, pidfile = _fake("escape", tmp_path)
    cfg = preset("tiny")
    engine = make_engine(spec, cfg, dtype="float64", stall_timeout=30)
    try:
        engine.group_grads(*_batch(cfg))
        pids = [int(p) for p in pidfile.read_text().split()]
        assert len(pids) == 3 and all(_alive(p) for p in pids[1:])  # they did escape the group
    finally:
        engine.close()
    left = [p for p in pids if _alive(p)]
    assert left == [], f"left behind: {left}"


def test_the_escaped_grandchild_is_gone_after_the_command(tmp_path):
    spec, pidfile = _fake("escape", tmp_path)
    proc = subprocess.run([sys.executable, "-m", "harness", "verify", "--engine", spec, *TINY,
                           "--stall-timeout", "30"], cwd=tmp_path, timeout=300,
                          capture_output=True, text=True)
    pids = [int(p) for p in pidfile.read_text().split()]
    try:
        assert proc.returncode == 0, proc.stderr
        assert [p for p in pids if _alive(p)] == []
    finally:
        for p in pids:  # never leave a sleeper behind, even when the test fails
            try:
                psutil.Process(p).kill()
            except psutil.NoSuchProcess:
                pass


@pytest.mark.parametrize("mode, says", [
    ("short-garbage", "malformed reply: frame starts b'ok\\n', not b'KSE1'"),
    ("huge-length", "frame length 18,446,744,073,709,551,615 bytes is past the 16 GiB limit"),
    ("zero-targets", "n_targets 0, but the batch holds"),
    ("close-stdout", "closed its channel but was still running"),
    ("self-kill", "killed by SIGKILL, not sent by the harness"),
])
def test_a_broken_reply_is_a_fault_at_once_with_its_real_cause(mode, says, tmp_path, capsys):
    spec, pidfile = _fake(mode, tmp_path)
    start = time.monotonic()
    code, _, err = run_cli(["verify", "--engine", spec, *TINY, "--stall-timeout", "60"], capsys)
    assert code == 4, err
    assert says in err and "request #2 'grads'" in err
    assert time.monotonic() - start < 50  # at once, not after the 60 s timeout
    assert [p for p in map(int, pidfile.read_text().split()) if _alive(p)] == []


def test_an_error_reply_is_cleaned_and_cut(tmp_path, capsys):
    spec, _ = _fake("big-error", tmp_path)
    code, _, err = run_cli(["verify", "--engine", spec, *TINY, "--stall-timeout", "60"], capsys)
    assert code == 4
    line = next(x for x in err.splitlines() if "reported an error" in x)
    assert "\x1b" not in err and "\x07" not in err
    assert "boomxxx" in line and "more characters cut" in line
    assert len(line) < MAX_ENGINE_TEXT + 400


def test_engine_text_strips_escapes_and_controls_and_counts_the_cut():
    assert engine_text("\x1b[31mred\x1b[0m \x1b]0;title\x07ok\x00") == "red ok\\x00"
    assert engine_text(b"caf\xc3\xa9\xff") == "caf\u00e9\ufffd"
    assert engine_text("a\nb\r\n\tc") == "a b c"
    cut = engine_text("y" * 5000, limit=10)
    assert cut.startswith("y" * 10 + " ...") and "4,990 more characters cut" in cut
    assert "\u202e" not in engine_text("evil\u202etxt")  # bidi override shown, not obeyed


def test_a_harness_kill_is_not_blamed_on_the_engine(tmp_path):
    spec, _ = _fake("hang", tmp_path)
    cfg = preset("tiny")
    engine = make_engine(spec, cfg, dtype="float64", stall_timeout=30)
    engine._abort("the test ended it")  # noqa: SLF001 - what a stall or a stop does
    with pytest.raises(FaultError, match="after close"):
        engine.group_grads(*_batch(cfg))
    assert "killed by the harness" in engine._exit_text()  # noqa: SLF001
