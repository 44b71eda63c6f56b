"""What an out-of-process engine starts, we end (#24 class 5): its whole process tree.

A process group is not enough: a grandchild that calls `setsid()` leaves the group, and one
whose parent exits is re-parented to init, out of our sight. So the harness process becomes a
child subreaper (Linux `prctl(PR_SET_CHILD_SUBREAPER)`): every orphan below it is re-parented
to it instead of init. Each engine is started with a token in its environment, which its
descendants inherit; on close, `end_tree` kills every descendant of the engine and every
re-parented orphan carrying its token, then reaps each one (no zombie left either).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
TOKEN_VAR = "SPHERES_ENGINE_TREE"
REAP_SECONDS = 5.0  # SIGKILLed processes are gone in milliseconds; 5 s covers a loaded machine
_subreaper: bool | None = None


def become_subreaper() -> bool:
    """Make this process the subreaper of its descendants (once); False where the kernel has
    no such thing (not Linux), and the tree is then followed from the engine's pid alone."""
    global _subreaper
    if _subreaper is None:
        _subreaper = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                _subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            except (OSError, AttributeError):
                _subreaper = False
    return _subreaper


def new_token() -> str:
    return uuid.uuid4().hex


def tree_env(token: str) -> dict[str, str]:
    """The environment to start an engine with: ours, plus its tree's token."""
    return {**os.environ, TOKEN_VAR: token}


def _carries(proc: psutil.Process, token: str) -> bool:
    try:
        return proc.environ().get(TOKEN_VAR) == token
    except (psutil.Error, OSError):
        return False


def members(root: int, token: str) -> list[psutil.Process]:
    """The engine's live tree: descendants of `root`, and our own children (orphans we
    adopted as subreaper) that carry `token`, with their descendants."""
    found: dict[int, psutil.Process] = {}
    try:
        found.update((p.pid, p) for p in psutil.Process(root).children(recursive=True))
    except psutil.Error:
        pass
    try:
        ours = psutil.Process().children()
    except psutil.Error:
        ours = []
    for child in ours:
        if child.pid != root and child.pid not in found and _carries(child, token):
            found[child.pid] = child
            try:
                found.update((p.pid, p) for p in child.children(recursive=True))
            except psutil.Error:
                pass
    return list(found.values())


def end_tree(proc: subprocess.Popen, token: str) -> list[int]:
    """SIGKILL the engine `proc`, its process group and every member of its tree, reap the
    engine and every member that became our child; the pids of the members ended."""
    procs = members(proc.pid, token)  # while the root lives, its descendants hang below it
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        try:
            kill()
        except (ProcessLookupError, PermissionError, OSError):
            pass
    pids = _kill(procs)
    try:
        proc.wait(timeout=REAP_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    for _ in range(3):  # a member may have forked meanwhile: its orphans come to us, tokened
        more = [p for p in members(proc.pid, token) if p.pid not in pids]
        if not more:
            break
        procs += more
        pids |= _kill(more)
    _reap(procs)
    return sorted(pids)


def _kill(procs: list[psutil.Process]) -> set[int]:
    ended = set()
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGKILL)
            ended.add(p.pid)
        except (ProcessLookupError, PermissionError):
            pass
    return ended


def _reap(procs: list[psutil.Process]) -> None:
    """Wait for each killed process to be gone: reaped by us (our child, adopted or not) or by
    its own parent; bounded by REAP_SECONDS."""
    pending = {p.pid: p for p in procs}
    deadline = time.monotonic() + REAP_SECONDS
    while pending and time.monotonic() < deadline:
        for pid, proc in list(pending.items()):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == pid:
                    del pending[pid]
                continue
            except ChildProcessError:  # not ours (yet): its parent reaps it, or it is adopted
                pass
            try:
                if proc.status() == psutil.STATUS_ZOMBIE and proc.ppid() != os.getpid():
                    continue  # its parent (dying too) will be reaped, and it adopted by us
            except psutil.NoSuchProcess:
                del pending[pid]
        if pending:
            time.sleep(0.01)
