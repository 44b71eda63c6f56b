"""A misbehaving out-of-process engine for the exec-engine tests: `python fake_exec_engine.py
MODE PIDFILE`. It answers `init` correctly, then on `grads` does MODE:
hang (and starts a child that sleeps too), crash, shape, nan, names, garbage, error, short-garbage
(a few bytes of text, then silence), huge-length (the magic and a 2^64-1 length), zero-targets,
big-error (a 2 MB error full of terminal escapes), close-stdout (closes the channel, keeps
running), self-kill (SIGKILLs itself), escape (answers well, but at init leaves a detached
grandchild behind: a double fork and setsid(), and a setsid() child; both sleep).
It writes its own pid (and its children's) to PIDFILE so the test can prove none survives."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from numpy_engine import Engine, read_frame, write_frame  # noqa: E402
from numpy_engine import main as correct_engine  # noqa: E402


def main() -> None:
    mode, pidfile = sys.argv[1], Path(sys.argv[2])
    pids = [os.getpid()]
    if mode == "hang":
        pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid)
    if mode == "escape":
        pids += _escape()
    pidfile.write_text(" ".join(map(str, pids)))
    if mode == "escape":
        return correct_engine()  # a correct engine, but for what it left behind
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    engine = None
    while (req := read_frame(stdin)) is not None:
        op = str(req["op"])
        if op == "init":
            engine = Engine(req)
            write_frame(stdout, {})
            continue
        if op == "close":
            write_frame(stdout, {})
            return
        loss, n, grads = engine.grads(req["tokens"], req["targets"])
        reply = {"loss": np.float64(loss), "n_targets": np.int64(n),
                 **{f"grad/{k}": g for k, g in grads.items()}}
        if mode == "hang":
            time.sleep(600)
        elif mode == "crash":
            os._exit(7)
        elif mode == "shape":
            reply["grad/lnf.b"] = reply["grad/lnf.b"][:-1]
        elif mode == "nan":
            reply["grad/wpe"] = reply["grad/wpe"].copy()
            reply["grad/wpe"][0, 0] = np.nan
        elif mode == "names":
            reply["grad/lnf.gamma"] = reply.pop("grad/lnf.g")
        elif mode == "garbage":
            stdout.write(b"hello from an engine that logs to stdout\n")
            stdout.flush()
        elif mode == "error":
            reply = {"error": np.array("out of memory on the device")}
        elif mode == "short-garbage":
            stdout.write(b"ok\n")
            stdout.flush()
            time.sleep(600)
        elif mode == "huge-length":
            stdout.write(b"KSE1" + b"\xff" * 8)
            stdout.flush()
            time.sleep(600)
        elif mode == "zero-targets":
            reply["n_targets"] = np.int64(0)
        elif mode == "big-error":
            reply = {"error": np.array("\x1b[2J\x1b]0;owned\x07\x1b[31mboom" + "x" * 2_000_000)}
        elif mode == "close-stdout":
            os.close(1)
            sys.stdout.close()
            time.sleep(600)
        elif mode == "self-kill":
            os.kill(os.getpid(), signal.SIGKILL)
        write_frame(stdout, reply)


def _escape() -> list[int]:
    """A grandchild that leaves the process group and loses its parent (double fork and
    setsid, re-parented away from us), and a child in a session of its own."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL)
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        grandchild = os.fork()
        if grandchild == 0:
            os.close(read)
            os.write(write, str(os.getpid()).encode())
            os.close(write)
            time.sleep(600)
            os._exit(0)
        os._exit(0)
    os.close(write)
    os.waitpid(middle, 0)
    with os.fdopen(read) as fh:
        grandchild = int(fh.read())
    return [child.pid, grandchild]


if __name__ == "__main__":
    main()
