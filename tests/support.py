"""Helpers shared by several test files (imported as `support`: tests/ is on sys.path)."""

from __future__ import annotations

import hashlib

import numpy as np
import psutil

from harness.cli import main


def digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over names and bytes in sorted name order: equal digests, equal bits."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Relative L2 error of a against the reference b (absolute when b is all zeros)."""
    scale = float(np.linalg.norm(b))
    return float(np.linalg.norm(np.asarray(a, np.float64) - b)) / (scale or 1.0)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`spheres argv` in-process; argparse usage errors count as exit 2 like the real command."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def processes_gone(pids: list[int]) -> bool:
    """No process of `pids` is still running (a zombie has already died)."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True
