"""Signals stop every command at a safe point with 128 + N, and a stop is never a failure.

Issues #20 (class 6) and #24 (class 3). Each test sends a real signal to a real `spheres`
subprocess at a known point (a line it printed, or a file its engine wrote), then checks the
exit code, the "interrupted" marker in what it wrote, the time it took to exit and that every
child process it started has ended. The one mechanism is harness/run/stop.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.figures.thresholds import STOP_AT_ONCE_SECONDS
from harness.run.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--synthetic-tokens", "3000"]  # 5 groups of the tiny preset
# a hung out-of-process engine: it says where it is (its PID in a file), then never answers
HANG_ENGINE = ("import os, sys, time\n"
               "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
               "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
               "time.sleep(3600)\n")


class Spheres:
    """`python -m harness ARGS` with its output (stderr merged) read line by line."""

    def __init__(self, *argv: str, preexec=None, cwd: Path = ROOT, **env_vars: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="default", **env_vars)
        self.proc = subprocess.Popen([sys.executable, "-m", "harness", *argv], cwd=cwd,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, preexec_fn=preexec)
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="test-reader")
        self._reader.start()
        self.sent_at = 0.0

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        with self._new:
            while sum(text in line for line in self.lines) < count:
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, \
                    f"never printed {text!r}:\n{self.output}"
                self._new.wait(min(left, 0.5))

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)
        self.sent_at = time.monotonic()

    def finish(self, timeout: float = 120.0) -> tuple[int, float, str]:
        """Exit code, seconds from the last signal to the exit, the whole output."""
        try:
            rc = self.proc.wait(timeout=timeout)
            took = time.monotonic() - self.sent_at
        finally:
            self.close()
        return rc, took, self.output

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join()
        self.proc.stdout.close()

    @property
    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def run(no_thread_leak):
    started: list[Spheres] = []

    def start(*argv: str, **kw) -> Spheres:
        started.append(Spheres(*argv, **kw))
        return started[-1]

    yield start
    for s in started:
        s.close()


def gone(pid: int) -> bool:
    """The process has ended (no such process, or a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_file(path: Path, proc: Spheres, timeout: float = 240.0) -> int:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline and proc.proc.poll() is None, proc.output
        time.sleep(0.05)
    return int(path.read_text())


def hang_engine(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "hang_engine.py"
    script.write_text(HANG_ENGINE)
    pid_file = tmp_path / "engine.pid"
    return f"exec:{sys.executable} {script} {pid_file}", pid_file


# -- train: SIGHUP is SIGTERM; a second signal is "at once" for real ---------------------------

def test_sighup_checkpoints_like_sigterm(run, tmp_path):
    ck = tmp_path / "ck"
    s = run("train", *TINY, "--engine", "reference", "--steps", "100000",
            "--checkpoint-dir", str(ck))
    s.wait_for("[step 3/")
    s.send(signal.SIGHUP)  # a dropped ssh session
    rc, took, out = s.finish()
    assert rc == 129, out
    assert "SIGHUP received: stopping after the current step" in out
    files = sorted(ck.glob("step-*.npz"))
    assert len(files) == 1, out
    step = load_checkpoint(files[0]).state.step
    assert step >= 3 and f"checkpointed the last completed step {step}" in out
    assert took < 30  # one step and one checkpoint


def test_ignored_sighup_stays_ignored(run, tmp_path):
    """`nohup spheres train ...`: SIGHUP was ignored when we started, so it is not ours."""
    s = run("train", *TINY, "--engine", "reference", "--steps", "100000",
            preexec=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    s.wait_for("[step 2/")
    s.send(signal.SIGHUP)
    s.wait_for("[step", count=sum("[step" in ln for ln in s.lines) + 2)  # still training
    assert "SIGHUP" not in s.output
    s.send(signal.SIGTERM)
    rc, _, out = s.finish()
    assert rc == 143, out


def test_second_signal_stops_at_once_within_the_bound(run, tmp_path):
    # steps of a 96-batch group take seconds: the second signal lands mid-step
    s = run("train", "--preset", "small", "--group-size", "96", "--threads", "2",
            "--steps", "1000", "--checkpoint-dir", str(tmp_path / "ck"))
    s.wait_for("[step 1/")
    s.send(signal.SIGINT)
    s.wait_for("SIGINT received: stopping after the current step")
    s.send(signal.SIGINT)
    rc, took, out = s.finish()
    assert rc == 130, out
    assert "stopping at once, mid-step; no checkpoint written" in out
    assert took < STOP_AT_ONCE_SECONDS + 1.0, f"{took:.1f}s:\n{out}"  # under 2 s


# -- verify: a partial JUnit file marked incomplete --------------------------------------------

def test_verify_sigterm_keeps_the_runs_done_marked_interrupted(run, tmp_path):
    junit, js, md = tmp_path / "v.xml", tmp_path / "v.json", tmp_path / "v.md"
    s = run("verify", "--threads", "1,2,3,4", "--presets", "tiny", "--dtypes", "float64",
            "--junit", str(junit), "--json", str(js), "--markdown", str(md))
    s.wait_for("  PASS")  # the first run is done
    s.send(signal.SIGTERM)
    rc, took, out = s.finish()
    assert rc == 143, out
    assert "verify: INTERRUPTED by SIGTERM" in out and "verify: PASS" not in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("errors") == "1"
    cases = suite.findall("testcase")
    assert 1 <= len(cases) - 1 < 4  # the runs done, and one more case saying why it stopped
    error = cases[-1].find("error")
    assert error is not None and error.get("message") == "interrupted by SIGTERM"
    data = json.loads(js.read_text())
    assert data["passed"] is False and data["interrupted"] == "SIGTERM"
    assert data["runs_planned"] == 4 and len(data["records"]) == len(cases) - 1
    assert "**INTERRUPTED** by SIGTERM" in md.read_text() and "**PASS**" not in md.read_text()
    assert took < 60  # at most the run in flight


# -- analyze: a signal in the drills is not a drill failure; nothing reads as finished ---------

def test_analyze_sigterm_in_the_drills_is_no_drill_failure(run, tmp_path):
    out_dir = tmp_path / "report"
    s = run("analyze", "--quick", "--out", str(out_dir))
    s.wait_for("[drill] ")
    s.send(signal.SIGTERM)
    rc, took, out = s.finish()
    assert rc == 143, out
    after = out[out.index("SIGTERM received"):]
    assert "FAIL" not in after and "NOT named" not in after, out
    assert "analyze: INTERRUPTED by SIGTERM" in out and "checks passed" not in out
    assert not out_dir.exists() and list(tmp_path.iterdir()) == []  # no report, no temp
    assert took < 30  # the drill in flight (a few seconds) and the cleanup


def test_analyze_sigterm_in_training_stops_it_at_once(run, tmp_path):
    """Not "FAIL every requested step finished ... error: Stopped" and the rest of the
    analysis (99 s); nor a wait for the py-spy recording of the whole training."""
    out_dir = tmp_path / "report"
    s = run("analyze", "--preset", "small", "--steps", "20", "--threads", "2",
            "--out", str(out_dir))
    s.wait_for("[train] step 3/")
    s.send(signal.SIGTERM)
    rc, took, out = s.finish()
    assert rc == 143, out
    assert "stopped in phase train after step" in out and "FAIL" not in out, out
    assert "[throughput]" not in out and not out_dir.exists()
    assert took < 15  # the step in flight and the cleanup


def test_analyze_sigterm_while_reading_the_data_stops_at_once(run, tmp_path):
    """No safe point inside tokenising: deferring the stop to the first step would wait for it."""
    corpus = tmp_path / "corpus.txt"
    words = " ".join(f"w{i % 5000}" for i in range(200_000)) + "\n"
    corpus.write_text(words * 16)  # ~20 MB: seconds of tokenising
    s = run("analyze", "--quick", "--data", str(corpus), "--out", str(tmp_path / "report"))
    s.wait_for("[data] loading")
    time.sleep(0.5)
    s.send(signal.SIGTERM)
    rc, took, out = s.finish()
    assert rc == 143, out
    assert "[train]" not in out and not (tmp_path / "report").exists()
    assert took < STOP_AT_ONCE_SECONDS + 2.0, f"{took:.1f}s:\n{out}"


# -- stress: a signal stops hypothesis, it is never a FlakyFailure -----------------------------

def test_stress_sigint_stops_between_cases(run):
    s = run("stress", "--replay", "3626764237")
    s.wait_for("  case ", count=2)
    s.send(signal.SIGINT)
    rc, took, out = s.finish()
    assert rc == 130, out
    assert "stress: INTERRUPTED by SIGINT after" in out
    assert "Flaky" not in out and "FAILED" not in out, out
    assert took < 30  # the case in flight


def test_stress_sigint_is_not_ignored_for_the_rest_of_its_time(run):
    s = run("stress", "--seconds", "600", "--seed", "1")
    s.wait_for("batch ")  # a first batch of cases is done; the next one is running
    s.send(signal.SIGINT)
    rc, took, out = s.finish()
    assert rc == 130, out
    assert "stress: INTERRUPTED by SIGINT after" in out and "Flaky" not in out, out
    assert took < 30  # the case in flight, not the 600 s


# -- engines --measure and grads: children are ended ------------------------------------------

def test_engines_measure_sigterm_ends_every_child(run, tmp_path):
    spec, pid_file = hang_engine(tmp_path)
    s = run("engines", "--measure", "--engine", spec)
    engine = wait_file(pid_file, s)
    child = parent_of(engine)  # the measuring child process between us and the engine
    s.send(signal.SIGTERM)
    rc, took, out = s.finish()
    assert rc == 143, out
    assert "engines: INTERRUPTED by SIGTERM" in out
    assert took < 10
    deadline = time.monotonic() + 5
    while not (gone(engine) and gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(engine) and gone(child), out


def test_grads_sighup_ends_the_hung_engine(run, tmp_path):
    spec, pid_file = hang_engine(tmp_path)
    s = run("grads", "--engine", spec, "--out", str(tmp_path / "g.npz"))
    engine = wait_file(pid_file, s)
    s.send(signal.SIGHUP)
    rc, took, out = s.finish()
    assert rc == 129, out
    assert "Traceback" not in out and "ResourceWarning" not in out, out
    assert took < STOP_AT_ONCE_SECONDS + 1.0
    assert gone(engine) and not (tmp_path / "g.npz").exists()


def test_compare_sighup_is_129(run, tmp_path):
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)  # compare blocks opening it: a known point
    s = run("compare", str(fifo), str(fifo))
    deadline = time.monotonic() + 120
    wchan = Path(f"/proc/{s.proc.pid}/wchan")
    while "partner" not in wchan.read_text() and "fifo" not in wchan.read_text():
        assert time.monotonic() < deadline and s.proc.poll() is None, s.output
        time.sleep(0.05)
    s.send(signal.SIGHUP)
    rc, took, out = s.finish()
    assert rc == 129, out
    assert "spheres: stopped: SIGHUP" in out and took < 5


# -- the stall diagnosis is never lost ---------------------------------------------------------

def test_stall_diagnosis_falls_back_to_the_temp_folder(tmp_path, monkeypatch, capsys):
    from harness.commands.failures import report_stall
    from plumbing.errors import StallError

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr("harness.measure.pyspy.pyspy_dump", lambda pid: "skipped")
    report_stall(StallError("stuck", {"stuck": "ks-worker-1"}), blocked / "out")
    err = capsys.readouterr().err
    written = list(temp.glob("stall-*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["stuck"] == "ks-worker-1"
    assert f"stall diagnosis written to {written[0]} (could not write it into" in err
    assert "could not write the stall diagnosis" not in err


def test_stall_diagnosis_of_a_run_whose_folder_vanished_goes_to_the_temp_folder(run, tmp_path):
    """The CLI case: the current folder cannot be written when the stall is reported."""
    here, temp = tmp_path / "here", tmp_path / "tmp"
    here.mkdir()
    temp.mkdir()
    s = run("train", *TINY, "--threads", "2", "--steps", "5", "--stall-timeout", "3",
            "--inject", "hang:target=worker=0,step=1", cwd=here, TMPDIR=str(temp))
    s.wait_for("[step 1/")
    here.rmdir()  # as a read-only folder would, writing into it now fails
    rc, _, out = s.finish()
    assert rc == 3, out
    written = list(temp.glob("stall-*.json"))
    assert len(written) == 1, out
    assert f"spheres: stall diagnosis written to {written[0]} (could not write it into" in out
    assert "ks-worker-0" in written[0].read_text()


def test_stall_diagnosis_is_printed_when_nothing_can_be_written(tmp_path, monkeypatch, capsys):
    from harness.commands.failures import report_stall
    from plumbing.errors import StallError

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setattr(tempfile, "tempdir", str(blocked / "tmp"))
    monkeypatch.setattr("harness.measure.pyspy.pyspy_dump", lambda pid: "skipped")
    report_stall(StallError("stuck", {"stuck": "ks-node-zero"}), blocked / "out")
    err = capsys.readouterr().err
    assert '"stuck": "ks-node-zero"' in err
    assert "stall diagnosis printed above" in err


def test_a_stop_is_no_exception_of_the_code_it_interrupts():
    """`except Exception` (a drill, a case, a gate) cannot mistake a stop for a failure."""
    from harness.run.stop import Stopped
    from plumbing.errors import SpheresError

    assert not issubclass(Stopped, Exception) and not issubclass(Stopped, SpheresError)
    assert Stopped(signal.SIGHUP, "x", consistent=True).exit_code == 129
