"""`pyspy_flamegraph` / `pyspy_dump`: sampled flame graphs and stack dumps of a live process
(the py-spy executable; never raises, a failure is reported in the result)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def find_pyspy() -> str | None:
    """The py-spy executable beside this interpreter (the venv), else on PATH, else None."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


_PYSPY_MISSING = "py-spy not found beside {exe} or on PATH; install it with `make install`"


def pyspy_flamegraph(
    pid: int, seconds: float, out_svg: str | Path, native: bool = False
) -> dict[str, Any]:
    """Records a flame graph of a live process with py-spy; returns what happened, never raises.

    Default is `--nonblocking` (the profiled run is not paused, so timings stay honest).
    py-spy cannot combine that with `--native` ("Can't get native stack traces with the
    --nonblocking option"), so `native=True` records in blocking mode with `--native` instead,
    which shows frames inside Numba/BLAS but pauses the target for each sample.
    Keys: ok, svg, command, returncode, output, and error when not ok.
    """
    exe = find_pyspy()
    if exe is None:
        return {"ok": False, "error": _PYSPY_MISSING.format(exe=sys.executable), "svg": None}
    out_svg = Path(out_svg)
    out_svg.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
           "--format", "flamegraph", "-o", str(out_svg)]
    cmd += ["--native"] if native else ["--nonblocking"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        return {"ok": False, "command": cmd, "svg": None,
                "error": f"py-spy record did not finish within {seconds + 30:.0f} s"}
    except OSError as exc:
        return {"ok": False, "command": cmd, "svg": None, "error": f"py-spy failed: {exc}"}
    ok = proc.returncode == 0 and out_svg.is_file() and out_svg.stat().st_size > 0
    result = {"ok": ok, "command": cmd, "returncode": proc.returncode,
              "output": (proc.stdout + proc.stderr)[-4000:], "svg": str(out_svg) if ok else None}
    if not ok:
        result["error"] = (f"py-spy record exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()[:500]} (py-spy needs ptrace "
                           "permission: run as root or set kernel.yama.ptrace_scope=0)")
    return result


def pyspy_dump(pid: int, timeout: float = 20.0) -> str:
    """Every thread's stack of a live process (`py-spy dump --native`, else without --native).

    Works on this process too (the watchdog's stack dumps). Never raises: on failure the text
    says why, starting with "py-spy dump unavailable".
    """
    exe = find_pyspy()
    if exe is None:
        return "py-spy dump unavailable: " + _PYSPY_MISSING.format(exe=sys.executable)
    errors = []
    for extra in (["--native"], []):
        cmd = [exe, "dump", "--pid", str(pid), *extra]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (subprocess.TimeoutExpired, OSError) as exc:
            errors.append(f"{' '.join(cmd)}: {exc}")
            continue
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout
        errors.append(f"{' '.join(cmd)} exited {proc.returncode}: "
                      f"{proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else ''}")
    return "py-spy dump unavailable: " + "; ".join(errors)


# --------------------------------------------------------------------------- machine
