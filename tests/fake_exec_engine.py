"""A misbehaving out-of-process engine for the exec-engine tests: `python fake_exec_engine.py
MODE PIDFILE`. It answers `init` correctly, then on `grads` does MODE:
hang (and starts a child that sleeps too), crash, shape, nan, names, garbage, error.
It writes its own pid (and its child's) to PIDFILE so the test can prove none survives."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from numpy_engine import Engine, read_frame, write_frame  # noqa: E402


def main() -> None:
    mode, pidfile = sys.argv[1], Path(sys.argv[2])
    pids = [os.getpid()]
    if mode == "hang":
        pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid)
    pidfile.write_text(" ".join(map(str, pids)))
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
        write_frame(stdout, reply)


if __name__ == "__main__":
    main()
