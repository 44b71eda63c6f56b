"""What a command writes (issues 20 and 24): checked before any work, written through one
checked writer, standard JSON, never replacing what spheres did not write, one run per folder.

Every device node here is a private one made with os.mknod in tmp_path (char 1,7 is the
kernel's "full" device); no test writes outside its own tmp_path.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import socket
import stat
from pathlib import Path

import pytest
from support import run_cli

from harness.cli import COMMANDS, load
from harness.figures.serial import from_json, to_json
from plumbing.atomic import atomic_write_text
from plumbing.errors import InputError
from plumbing.folder_lock import LOCK_NAME, lock_beside, lock_folder
from plumbing.outputs import json_text, write_output
from plumbing.report_folder import MANIFEST, foreign_entries, install, seal

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--threads", "2"]


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every non-Python reader does."""
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def full_device(folder: Path) -> Path:
    """A private character device 1,7 (the kernel's full device) in `folder`."""
    path = folder / "full"
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


def is_device(path: Path) -> bool:
    return stat.S_ISCHR(os.lstat(path).st_mode)


@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if a command starts its work (the checks must come first)."""
    def work(*args, **kwargs):
        raise AssertionError("the work started before the options were checked")
    monkeypatch.setattr("harness.commands.verify.run_verify", work)
    monkeypatch.setattr("harness.analysis.pipeline.analyze", work)
    monkeypatch.setattr("harness.bench.engine_compare.compare", work)
    monkeypatch.setattr("harness.run.train.make_engine", work)
    return work


# -- class: outputs that fail silently ---------------------------------------------------------

def test_trace_to_a_device_is_refused_before_work_and_the_device_stays(tmp_path, capsys,
                                                                        no_work):
    dev = full_device(tmp_path)
    code, _, err = run_cli(["train", *TINY, "--steps", "1", "--trace", str(dev)], capsys)
    assert code == 2 and "--trace" in err and "character device" in err
    assert is_device(dev), "the device node was replaced by a file"
    assert "trace written" not in err


@pytest.mark.parametrize("argv", [
    ["engines", "--measure", "--markdown", "{dev}"],
    ["engines", "--measure", "--json", "{dev}"],
    ["verify", "--threads", "1", "--junit", "{dev}"],
    ["analyze", "--quick", "--trace", "{dev}", "--out", "{tmp}/r"],
])
def test_every_output_option_refuses_a_device_before_work(argv, tmp_path, capsys, no_work):
    dev = full_device(tmp_path)
    argv = [a.format(dev=dev, tmp=tmp_path) for a in argv]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "not a regular file" in err, err
    assert is_device(dev)


def test_the_writer_never_replaces_a_device(tmp_path):
    dev = full_device(tmp_path)
    with pytest.raises(InputError, match="character device"):
        atomic_write_text(dev, "x")
    with pytest.raises(InputError, match="character device"):
        write_output(dev, b"x", "--json")
    assert is_device(dev)
    assert os.listdir(tmp_path) == ["full"], "no temp file may be left behind"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EFBIG])
def test_a_write_error_is_exit_2_naming_the_path(tmp_path, code):
    def fail(fh):
        raise OSError(code, os.strerror(code))
    target = tmp_path / "out.json"
    with pytest.raises(InputError) as info:
        write_output(target, fail, "--json")
    assert InputError.exit_code == 2
    message = str(info.value)
    assert str(target) in message and "--json" in message and os.strerror(code) in message
    assert ".tmp" not in message, "the message names the temp file, not the output"
    assert not target.exists() and os.listdir(tmp_path) == []


def test_a_read_only_folder_names_the_output_not_the_temp_file(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits: use a path under a file instead
        folder = tmp_path / "a-file"
        folder.write_text("x")
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
    with pytest.raises(InputError) as info:
        write_output(folder / "out.json", "{}", "--json")
    assert str(folder / "out.json") in str(info.value) and ".tmp" not in str(info.value)


def test_file_size_limit_during_a_real_write_is_exit_2(tmp_path):
    import resource
    import subprocess
    import sys

    out = tmp_path / "big.json"
    code = ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100)); "
            "from plumbing.outputs import write_json; from plumbing.errors import InputError\n"
            f"try:\n write_json({str(out)!r}, list(range(1000)), '--json')\n"
            "except InputError as exc:\n print(exc)\n")
    assert resource.RLIMIT_FSIZE is not None
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert "could not write --json" in r.stdout and str(out) in r.stdout, r.stdout + r.stderr
    assert not out.exists()


# -- class: standard JSON -----------------------------------------------------------------------

def test_train_with_no_steps_writes_standard_json_with_null(tmp_path, capsys):
    js = tmp_path / "s.json"
    code, _, err = run_cli(["train", *TINY, "--steps", "0", "--json", str(js)], capsys)
    assert code == 0, err
    data = strict_json(js.read_text())
    assert data["final_loss"] is None and data["mean_loss"] is None


def test_json_text_is_rfc_8259_and_the_results_model_reads_null_as_nan():
    from harness.figures.bench_metrics import EngineRow

    text = json_text({"a": math.nan, "b": [math.inf, 1.5], "c": (-math.inf,)})
    assert strict_json(text) == {"a": None, "b": [None, 1.5], "c": [None]}
    row = EngineRow("torch", "float32", 2, error="not installed")
    data = strict_json(json.dumps(to_json(row)))
    assert data["tokens_per_s"] is None
    back = from_json(EngineRow, data)
    assert math.isnan(back.tokens_per_s) and back.error == "not installed"


_RAW_WRITES = re.compile(r"\.write_text\(|\.write_bytes\(|shutil\.copy|atomic_write(_text)?\(|"
                         r"json\.dump\(|\.savefig\((?!fh)")
# harness/commands/failures.py writes the crash file and the stall diagnosis with fallbacks
# of its own (issue 20 class 6 reworks them); every other file goes through plumbing/outputs.py
_RAW_ALLOWED = {"harness/commands/failures.py"}


def test_every_file_the_harness_writes_goes_through_the_checked_writer():
    offenders = []
    for path in sorted((REPO / "harness").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in _RAW_ALLOWED:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _RAW_WRITES.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "write through plumbing.outputs.write_output:\n" + "\n".join(offenders)


def _old_report(out: Path) -> Path:
    out.mkdir()
    (out / "analysis.md").write_text("# old report")
    (out / "results.json").write_text("{}")
    seal(out)
    return out


# -- class: checked before the work ------------------------------------------------------------

def _parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    load(name).add_arguments(p)
    return p


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_path_option_is_an_output_the_preflight_checks(name):
    """A Path-typed option is an output (inputs such as --data and --resume are str)."""
    outputs = {option for option, _, _ in load(name).OUTPUTS}
    paths = {a.option_strings[0] for a in _parser(name)._actions  # noqa: SLF001
             if a.option_strings and a.type is Path}
    assert paths <= outputs, f"spheres {name}: {sorted(paths - outputs)} not in OUTPUTS"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_number_option_has_a_range_checked_at_parse_time(name):
    bare = [a.option_strings[0] for a in _parser(name)._actions  # noqa: SLF001
            if a.type in (int, float)]
    assert not bare, f"spheres {name}: {bare} take any number; give them a ranged type"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_number_option_takes_a_negative_or_non_finite_value(name):
    accepted = []
    for action in _parser(name)._actions:  # noqa: SLF001
        if not action.option_strings or action.type in (None, str, Path):
            continue
        try:
            if not isinstance(action.type("1"), int | float):
                continue
        except (argparse.ArgumentTypeError, ValueError):
            continue
        for bad in ("-1", "nan", "inf", "1e400"):
            try:
                action.type(bad)
            except (argparse.ArgumentTypeError, ValueError):
                continue
            accepted.append(f"{action.option_strings[0]} {bad}")
    assert not accepted, f"spheres {name} accepts {accepted}"


@pytest.mark.parametrize("ranks", ["0", "145", "200", "two"])
def test_verify_ranks_out_of_range_is_refused_before_the_sweep(ranks, capsys, no_work):
    code, _, err = run_cli(["verify", "--threads", "1", "--presets", "tiny", "--dtypes",
                            "float64", "--ranks", ranks], capsys)
    assert code == 2 and "--ranks" in err, err


def test_verify_junit_naming_a_folder_is_refused_before_the_sweep(tmp_path, capsys, no_work):
    code, _, err = run_cli(["verify", "--threads", "1", "--junit", str(tmp_path)], capsys)
    assert code == 2 and "--junit" in err and "directory" in err
    assert ".tmp" not in err


def test_two_outputs_naming_one_file_are_refused(tmp_path, capsys, no_work):
    same = tmp_path / "x"
    code, _, err = run_cli(["verify", "--threads", "1", "--json", str(same), "--markdown",
                            str(same)], capsys)
    assert code == 2 and "--json and --markdown both name" in err


def test_an_output_naming_the_input_is_refused(tmp_path, capsys, no_work):
    data = tmp_path / "corpus.txt"
    data.write_text("hello world " * 200)
    code, _, err = run_cli(["train", *TINY, "--data", str(data), "--json", str(data)], capsys)
    assert code == 2 and "would overwrite the input --data" in err
    assert data.read_text().startswith("hello world")


def test_an_output_inside_the_report_folder_is_refused(tmp_path, capsys, no_work):
    out = _old_report(tmp_path / "r")
    code, _, err = run_cli(["analyze", "--quick", "--out", str(out), "--trace",
                            str(out / "t.json")], capsys)
    assert code == 2 and "replaced whole" in err


# -- class: never delete or replace what we did not write -------------------------------------

def test_analyze_out_here_refuses_and_keeps_the_users_files(tmp_path, capsys, monkeypatch,
                                                            no_work):
    (tmp_path / "thesis.tex").write_text("\\documentclass{article}")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print('mine')")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["analyze", "--quick", "--out", "."], capsys)
    assert code == 2 and "--out" in err, err
    assert (tmp_path / "thesis.tex").read_text() == "\\documentclass{article}"
    assert (tmp_path / "src" / "main.py").read_text() == "print('mine')"
    assert sorted(os.listdir(tmp_path)) == ["src", "thesis.tex"]


def test_analyze_out_that_is_not_a_report_is_refused(tmp_path, capsys, no_work):
    out = tmp_path / "work"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    code, _, err = run_cli(["analyze", "--quick", "--out", str(out)], capsys)
    assert code == 2 and "not a spheres report" in err and "thesis.tex" in err
    assert os.listdir(out) == ["thesis.tex"]


def test_analyze_out_holding_a_report_and_the_users_notes_is_refused(tmp_path, capsys,
                                                                     no_work):
    out = _old_report(tmp_path / "report")
    (out / "notes.txt").write_text("my notes")
    code, _, err = run_cli(["analyze", "--quick", "--out", str(out)], capsys)
    assert code == 2 and "notes.txt" in err and "did not write" in err
    assert (out / "notes.txt").read_text() == "my notes"
    (out / "notes.txt").unlink()
    (out / "analysis.md").write_text("# old report, edited by hand")
    code, _, err = run_cli(["analyze", "--quick", "--out", str(out)], capsys)
    assert code == 2 and "analysis.md" in err


def test_a_report_replaces_only_our_own_older_report(tmp_path):
    out = _old_report(tmp_path / "report")
    assert foreign_entries(out) == []
    new = tmp_path / ".report.partial-1"
    new.mkdir()
    (new / "analysis.md").write_text("# new report")
    seal(new)
    assert install(new, out) is None
    assert (out / "analysis.md").read_text() == "# new report"
    assert sorted(os.listdir(out)) == [MANIFEST, "analysis.md"]
    assert sorted(os.listdir(tmp_path)) == ["report"]


def test_a_file_added_to_the_old_report_during_the_run_is_kept(tmp_path):
    out = _old_report(tmp_path / "report")
    new = tmp_path / ".report.partial-1"
    new.mkdir()
    (new / "analysis.md").write_text("# new report")
    seal(new)
    (out / "notes.txt").write_text("written while analyze ran")
    leftover = install(new, out)
    assert leftover is not None and sorted(os.listdir(leftover)) == ["notes.txt"]
    assert (out / "analysis.md").read_text() == "# new report"


def test_analyze_out_that_is_a_device_is_refused(tmp_path, capsys, no_work):
    dev = full_device(tmp_path)
    code, _, err = run_cli(["analyze", "--quick", "--out", str(dev)], capsys)
    assert code == 2 and "not a folder" in err
    assert is_device(dev)


# -- class: work lost to another run ------------------------------------------------------------

def test_a_second_train_on_a_locked_checkpoint_dir_is_refused(tmp_path, capsys, no_work):
    ckpt = tmp_path / "ckpt"
    with lock_folder(ckpt, "test"):
        code, _, err = run_cli(["train", *TINY, "--steps", "1", "--checkpoint-dir", str(ckpt)],
                               capsys)
    assert code == 2, err
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in err
    assert "--checkpoint-dir" in err and "in use by another spheres run" in err
    assert not (ckpt / LOCK_NAME).exists(), "the holder removes its lock file when it ends"


def test_the_lock_is_exclusive_between_processes(tmp_path):
    import subprocess
    import sys

    ckpt = tmp_path / "ckpt"
    code = ("import sys; from plumbing.folder_lock import lock_folder\n"
            f"with lock_folder({str(ckpt)!r}, 'child'):\n print('held', flush=True)\n"
            " sys.stdin.readline()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=f"pid {child.pid} on host"):
            lock_folder(ckpt, "--checkpoint-dir x").acquire()
    finally:
        child.communicate("\n", timeout=30)
    with lock_folder(ckpt, "after"):  # free once the owner ended
        pass


def test_a_stale_lock_of_a_dead_run_is_taken_over_with_a_message(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 12345, "host": "gone"}))
    code, _, err = run_cli(["train", *TINY, "--steps", "1", "--checkpoint-dir", str(ckpt)],
                           capsys)
    assert code == 0, err
    assert f"took over the lock left by pid {2**22 + 12345} on host gone" in err
    assert not (ckpt / LOCK_NAME).exists()
    assert (ckpt / "step-000001.npz").is_file()


def test_a_second_analyze_into_a_locked_out_is_refused(tmp_path, capsys, no_work):
    out = tmp_path / "report"
    with lock_beside(out, "test"):
        code, _, err = run_cli(["analyze", "--quick", "--out", str(out)], capsys)
    assert code == 2 and "in use by another spheres run" in err, err
    assert not out.exists()


def test_a_report_lock_beside_a_folder_not_yet_made(tmp_path):
    out = tmp_path / "new" / "deeper" / "report"
    with lock_beside(out, "--out x") as lock:
        assert lock.path.parent == out.parent and lock.path.exists()
    assert not lock.path.exists()


@pytest.mark.parametrize("argv, needle", [
    (["verify", "--threads", "1", "--engine", "nope"], "unknown engine 'nope'"),
    (["verify", "--threads", "1", "--engine", "exec:python 'unbalanced"], "cannot be split"),
    (["analyze", "--quick", "--engine", "nope"], "unknown engine 'nope'"),
    (["engines", "--measure", "--engine", "exec:"], "no command after exec:"),
])
def test_engine_specs_are_checked_before_the_work(argv, needle, capsys, no_work, monkeypatch,
                                                  tmp_path):
    monkeypatch.chdir(tmp_path)  # analyze's default report folder lands here if it gets that far
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and needle in err, err


def test_a_fifo_output_is_refused_before_work_and_stays(tmp_path, capsys, no_work):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = run_cli(["verify", "--threads", "1", "--json", str(fifo)], capsys)
    assert code == 2 and "FIFO" in err
    with pytest.raises(InputError, match="FIFO"):
        write_output(fifo, "{}")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_pruning_deletes_only_checkpoints_never_a_users_file_of_the_same_name(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    mine = ckpt / "step-000000.npz"
    mine.write_text("the user's own file that happens to share the name")
    code, _, err = run_cli(["train", *TINY, "--steps", "2", "--checkpoint-every", "1",
                            "--keep-checkpoints", "1", "--checkpoint-dir", str(ckpt)], capsys)
    assert code == 0, err
    assert mine.read_text().startswith("the user's own file")
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-000000.npz", "step-000002.npz"]


def _long_train_holding(lock, *outputs):
    """A real `spheres train` process that runs until signalled, once it holds `lock`."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "harness", "train", *TINY, "--steps",
                             "1000000", "--quiet", *outputs],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while not lock.exists() and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate(timeout=60)
            raise AssertionError("the first run never took its lock")
        time.sleep(0.05)
    return proc


def test_two_real_trains_on_one_checkpoint_dir_the_second_is_refused(tmp_path, capsys):
    import signal

    ckpt = tmp_path / "ckpt"
    first = _long_train_holding(ckpt / LOCK_NAME, "--checkpoint-dir", str(ckpt))
    try:
        code, _, err = run_cli(["train", *TINY, "--steps", "1", "--checkpoint-dir", str(ckpt)],
                               capsys)
        assert code == 2 and f"pid {first.pid} on host" in err, err
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=60)
    assert first.returncode == 143, first_err
    assert not (ckpt / LOCK_NAME).exists(), "a stopped run releases its lock"


def test_two_real_trains_on_one_json_the_second_is_refused(tmp_path, capsys):
    """Same for every file a run writes (#20 class 1): before, both exited 0 and the later
    writer silently replaced the other's summary. The second is refused naming the first."""
    import signal

    out = tmp_path / "summary.json"
    lock = tmp_path / f".summary.json{LOCK_NAME}"
    first = _long_train_holding(lock, "--json", str(out))
    try:
        code, _, err = run_cli(["train", *TINY, "--steps", "1", "--json", str(out)], capsys)
        assert code == 2 and f"--json {out} is in use by another spheres run (pid " \
            f"{first.pid} on host" in err, err
        assert not out.exists()  # the refused run wrote nothing
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=60)
    assert first.returncode == 143, first_err
    assert not lock.exists(), "a stopped run releases its lock"
    code, _, err = run_cli(["train", *TINY, "--steps", "1", "--json", str(out)], capsys)
    assert code == 0 and json.loads(out.read_text())["steps"] == 1, err
    assert list(tmp_path.iterdir()) == [out]  # nothing left beside the output


@pytest.mark.parametrize("option", ["--json", "--trace"])
def test_an_output_named_as_a_checkpoint_in_the_checkpoint_dir_is_refused(tmp_path, capsys,
                                                                         option):
    """Before: `--json ck/step-000002.npz` replaced the checkpoint it had just written (exit 0)."""
    ck = tmp_path / "ck"
    ck.mkdir()
    code, _, err = run_cli(["train", *TINY, "--steps", "2", "--checkpoint-dir", str(ck),
                            option, str(ck / "step-000002.npz")], capsys)
    assert code == 2 and "is a checkpoint's name inside --checkpoint-dir" in err, err
    assert list(ck.iterdir()) == []
    code, _, err = run_cli(["train", *TINY, "--steps", "2", "--checkpoint-dir", str(ck),
                            option, str(ck / "notes.json")], capsys)
    assert code == 0, err  # another name in the folder is the user's to choose
