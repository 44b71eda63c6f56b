"""Numbers the machine cannot hold, data that trains on nothing, messages that mislead (#20
classes 2, 7 and 8): each refused or warned before any work, with the numbers and the fix."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support import run_cli

from fast.trainer import FastTrainer
from harness.commands.preflight import check_resources, estimate_resources, max_threads
from harness.figures import thresholds as th
from plumbing.errors import ExitCode, InputError
from plumbing.thread_limits import ThreadLimit, thread_limit
from reference.config import preset

CFG = preset("tiny")


def _ks_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ks-") and t.is_alive()]


def test_a_thread_the_os_refuses_is_exit_2_naming_the_limit_and_nothing_is_left(monkeypatch):
    """Before: close() joined the threads that never started and raised "cannot join thread
    before it is started" (exit 5), hiding the cause."""
    real_start = threading.Thread.start
    calls = {"n": 0}

    def start(self):
        if self.name.startswith("ks-"):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(InputError) as info:
        FastTrainer(CFG, threads=4)
    assert info.value.exit_code == ExitCode.USAGE
    message = str(info.value)
    assert "could not start thread 3 of 6" in message and "can't start new thread" in message
    assert "the OS limit is" in message and "--threads" in message
    assert _ks_threads() == []  # the two that started were ended


def test_thread_limit_names_a_limit_with_room():
    limit = thread_limit()
    assert limit.room is None or limit.room > 0
    assert limit.name


def _need(**kw):
    args = {"threads": 2, "dtype": "float32", "engine": "fast", "synthetic_tokens": 2049}
    return estimate_resources(CFG, **{**args, **kw})


def test_a_corpus_the_memory_cannot_hold_is_refused_before_any_work(capsys):
    """Before: --synthetic-tokens 1e12 allocated until MemoryError, exit 5 (931 GiB)."""
    code, out, err = run_cli(["train", "--synthetic-tokens", "1000000000000", "--steps", "1"],
                             capsys)
    assert code == ExitCode.USAGE
    assert "token arrays 80.0 TB" in err and "available" in err and "--synthetic-tokens" in err
    assert "training" not in err and out == ""


def test_the_memory_estimate_adds_up_its_parts_and_refuses_past_the_budget():
    need = _need(synthetic_tokens=10**6)
    assert need.parts["token arrays"] >= 10**6 * th.SYNTHETIC_BYTES_PER_TOKEN
    check_resources(need, fix="x", available=int(need.total / th.MEMORY_AVAILABLE_FRACTION) + 1,
                    limit=ThreadLimit(100, "test"))
    with pytest.raises(InputError, match=r"needs an estimated .* more than 80% .*; fix it"):
        check_resources(need, fix="fix it", available=need.total, limit=ThreadLimit(100, "t"))


def test_threads_past_the_os_limit_are_refused_naming_it():
    need = _need(threads=8)
    with pytest.raises(InputError, match=r"needs 10 threads .* start 9 more \(vm.max_map_count"):
        check_resources(need, fix="x", available=10**12,
                        limit=ThreadLimit(9, "vm.max_map_count=30"))


@pytest.mark.parametrize("threads", ["10000", "100000"])
def test_threads_past_the_per_core_cap_are_refused_up_front(threads, capsys):
    """Before: 10000 threads were accepted (25 s per tiny step, "step ETA 0s", SIGTERM outlived)
    and 100000 ended in exit 5 "cannot join thread before it is started"."""
    code, out, err = run_cli(["train", "--threads", threads, "--steps", "1"], capsys)
    assert code == ExitCode.USAGE
    assert f"--threads {threads} is more than {th.MAX_THREADS_PER_CORE} per usable core" in err
    assert f"at most {max_threads()}" in err and "training" not in err


@pytest.mark.parametrize("content, needle", [
    (b"not a checkpoint\n", "not an .npz archive"),
    (None, "holds Python objects"),
])
def test_a_non_checkpoint_for_resume_is_named_without_numpys_pickle_advice(content, needle,
                                                                           tmp_path, capsys):
    """Before: a text file given to --resume repeated numpy's advice to pass allow_pickle."""
    import numpy as np

    path = tmp_path / "step-000001.npz"
    if content is None:
        np.savez(path, meta=np.array([{"step": 1}], dtype=object))
    else:
        path.write_bytes(content)
    code, out, err = run_cli(["train", "--steps", "1", "--resume", str(path)], capsys)
    assert code == ExitCode.USAGE
    assert needle in err and "pickle" not in err and str(path) in err


def test_a_resumed_run_counts_steps_as_its_checkpoints_do(tmp_path, capsys, no_thread_leak):
    """Before: resumed from step 2 for 2 more, the progress said step 1/2 and wrote step 4."""
    common = ["train", "--threads", "2", "--checkpoint-dir", str(tmp_path), "--steps", "2"]
    assert run_cli(common + ["--total-steps", "4"], capsys)[0] == 0
    code, _, err = run_cli(common + ["--resume", str(tmp_path)], capsys)
    assert code == 0, err
    steps = [ln.split("]")[0] + "]" for ln in err.splitlines() if ln.startswith("[step ")]
    assert steps == ["[step 3/4]", "[step 4/4]"]
    assert (tmp_path / "step-000004.npz").exists()


def test_live_progress_shows_the_resumed_offset():
    import io

    from harness.run.progress import LiveProgress

    live = LiveProgress("train", 0, mode="lines", stream=io.StringIO())
    live.set_units(20, offset=40)
    live.begin(1, 8)
    assert live.describe(live.estimate()).startswith("step 41/60 | batch 0/8")


def test_the_readme_resume_example_continues_one_schedule():
    """Before: the example's first part planned its own 20-step horizon, so the resumed 20
    steps all ran at the floor learning rate."""
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = [ln.split("#")[0] for ln in readme.splitlines() if ln.startswith("spheres train ")]
    first = next(shlex.split(ln) for ln in lines if "--checkpoint-dir" in ln and "--resume"
                 not in ln)
    second = next(shlex.split(ln) for ln in lines if "--resume" in ln)

    def value(argv, option):
        return int(argv[argv.index(option) + 1]) if option in argv else None

    horizon = value(first, "--total-steps") or value(first, "--steps")
    assert value(first, "--steps") + value(second, "--steps") == horizon


def test_a_corpus_smaller_than_one_batch_is_warned_with_its_share(tmp_path, capsys):
    """Before: a 3-token file trained on 3 of 512 target slots without a word."""
    data = tmp_path / "three.txt"
    data.write_text("a b c")
    code, _, err = run_cli(["train", "--data", str(data), "--steps", "1"], capsys)
    assert code == 0
    assert ("warning: the corpus holds 3 training targets, less than one batch (4x16 = 64)"
            in err and "3 of its 512 target slots (0.6%)" in err)


def test_a_corpus_of_a_few_groups_is_not_warned(capsys):
    code, _, err = run_cli(["train", "--steps", "1", "--eval-every", "1"], capsys)
    assert code == 0 and "warning" not in err


def test_a_held_out_tail_below_one_batch_is_warned(capsys):
    code, _, err = run_cli(["train", "--steps", "1", "--eval-fraction", "0.001"], capsys)
    assert code == 0
    assert "warning: the held-out tail holds 2 targets, less than one batch (64)" in err


def test_checkpoints_the_disk_cannot_hold_are_refused_before_any_work(tmp_path, capsys):
    """Before: --checkpoint-every 1 --keep-checkpoints 0 for 10^9 steps started writing
    0.4 MB per step until the disk was full."""
    folder = tmp_path / "ck"
    code, out, err = run_cli(["train", "--engine", "reference", "--steps", "1000000000",
                              "--checkpoint-every", "1", "--keep-checkpoints", "0",
                              "--checkpoint-dir", str(folder)], capsys)
    assert code == ExitCode.USAGE
    assert "1,000,000,002 checkpoints of" in err and "free under" in err
    assert not folder.exists() and "training" not in err


def test_the_kept_checkpoints_are_counted_with_the_one_being_written():
    from harness.commands.preflight import check_disk, checkpoints_kept

    assert checkpoints_kept(10, 0, 3) == 2  # only the end, plus the temp file
    assert checkpoints_kept(10, 1, 3) == 4
    assert checkpoints_kept(10, 1, 0) == 12
    check_disk(Path("."), 89, "x", free=100)
    with pytest.raises(InputError, match="x need an estimated 91 B on disk"):
        check_disk(Path("."), 91, "x", free=100)


@pytest.mark.parametrize("rank, printed", [("0", True), ("1", False), ("3", False)])
def test_mpiexec_without_mpi_is_refused_by_every_rank_and_said_once(rank, printed, monkeypatch,
                                                                     capsys):
    """Before: each of the R ranks printed the same error line."""
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setenv("PMI_RANK", rank)
    code, out, err = run_cli(["train", "--steps", "1"], capsys)
    assert code == ExitCode.USAGE and out == ""
    assert (err.count("without --mpi") == 1) if printed else err == ""


LAUNCHER = r"""
import os, signal, subprocess, sys
env = dict(os.environ, PMI_SIZE="3")
r1 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                      env={**env, "PMI_RANK": "1"})
try:
    os.kill(r1.pid, signal.SIGSTOP)
    r0 = subprocess.run([sys.executable, "-c",
                         "from harness.run.mpi_world import silent_ranks; "
                         "print(silent_ranks(3))"], env={**env, "PMI_RANK": "0"},
                        capture_output=True, text=True, timeout=60)
    print(r1.pid)
    print(r0.stdout.strip() or r0.stderr)
finally:
    r1.kill()
    r1.wait()
"""


def test_rank_0_names_a_suspended_rank_by_rank_and_pid():
    """Before: a SIGSTOPped rank 1 was reported by rank 0 as "another rank is stuck or gone"."""
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-c", LAUNCHER], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": root})
    pid, found = r.stdout.splitlines()[:2]
    assert f"rank 1 (pid {pid}) is suspended (SIGSTOP or Ctrl-Z; kill -CONT {pid}" in found
    assert "rank 2 is not on this host or has ended" in found and "rank 0" not in found


def test_a_stall_message_gains_the_silent_ranks(monkeypatch):
    from harness.run import mpi_world
    from plumbing.errors import StallError

    monkeypatch.setattr(mpi_world, "silent_ranks",
                        lambda size: ["rank 2 is not on this host or has ended",
                                      "rank 1 (pid 7) is suspended"])
    exc = mpi_world.name_silent_ranks(StallError("another rank is stuck or gone"), 3)
    assert str(exc) == "another rank is stuck or gone: rank 1 (pid 7) is suspended"


@pytest.mark.parametrize("threads", ["1,100000", "1-1000000000"])
def test_verify_thread_lists_past_the_cap_are_refused_at_parse_time(threads, capsys):
    """Before: verify --threads 1,100000 ended in exit 5 "cannot join thread before it is
    started", and a range like 1-1000000000 was expanded into a set of a billion ints."""
    code, out, err = run_cli(["verify", "--presets", "tiny", "--threads", threads], capsys)
    assert code == ExitCode.USAGE
    assert f"more than {th.MAX_THREADS_PER_CORE} per usable core" in err and out == ""


def test_analyze_threads_past_the_cap_are_refused_before_any_phase(tmp_path, capsys):
    code, out, err = run_cli(["analyze", "--quick", "--threads", "10000", "--out",
                              str(tmp_path / "rep")], capsys)
    assert code == ExitCode.USAGE
    assert "--threads 10000 is more than" in err and "[data]" not in out
    assert not (tmp_path / "rep").exists()


def test_a_run_whose_record_outgrows_the_memory_is_refused_before_the_first_step(capsys):
    """The fast engine's run record keeps every span: 10^9 tiny steps would need ~2.6 TB."""
    code, out, err = run_cli(["train", "--steps", "1000000000"], capsys)
    assert code == ExitCode.USAGE
    assert "run record (1,000,000,000 steps)" in err and "--resume continues bitwise" in err
    assert "[step" not in err


def test_a_trace_the_disk_cannot_hold_is_refused(tmp_path):
    from harness.commands.preflight import check_disk, spans

    assert spans(CFG, 2, 10) == 10 * (8 + 4 * 3)
    with pytest.raises(InputError, match="--trace of 10 steps need .*; trace fewer --steps"):
        check_disk(tmp_path, spans(CFG, 2, 10) * th.TRACE_BYTES_PER_SPAN, "--trace of 10 steps",
                   free=1000, fix="trace fewer --steps")


def test_a_lock_file_that_cannot_be_removed_never_hides_the_error_that_ended_the_run(
        tmp_path, monkeypatch, capsys):
    """Before: a checkpoint folder made read-only mid-run ended with "<dir>/.spheres-lock:
    Operation not permitted", hiding that the checkpoint could not be written."""
    from plumbing.folder_lock import lock_folder

    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self.name == ".spheres-lock":
            raise PermissionError(1, "Operation not permitted")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(InputError, match="could not write the checkpoint"):
        with lock_folder(tmp_path, f"--checkpoint-dir {tmp_path}"):
            raise InputError("could not write the checkpoint step-000200.npz")
    assert "could not remove the lock file" in capsys.readouterr().err
    with lock_folder(tmp_path, "again"):  # the file left behind is free
        pass
