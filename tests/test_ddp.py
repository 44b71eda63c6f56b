"""The `torch-ddp` engine (issue 23): DistributedDataParallel on CPU gloo, every rank a process
the harness can name by pid, on loopback only, under the watchdog's deadline, and all ended."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

pytest.importorskip("torch")

from support import processes_gone  # noqa: E402

from harness.figures.thresholds import GRAD_TOL, LOSS_TOL, TRAJ_TOL  # noqa: E402
from harness.run.ddp_engine import build  # noqa: E402
from harness.run.plugins import resolve_factory  # noqa: E402
from harness.verify.digest import fingerprint, reference_answers, trajectory_groups  # noqa: E402
from plumbing.errors import InputError, StallError  # noqa: E402
from reference.config import preset  # noqa: E402


def _world_facts(pids: list[int]) -> tuple[set[str], list[str]]:
    """Every IP address any rank's inet sockets use, and each rank's command line."""
    addresses: set[str] = set()
    cmdlines = []
    for pid in pids:
        proc = psutil.Process(pid)
        cmdlines.append(" ".join(proc.cmdline()))
        for conn in proc.net_connections("inet"):
            addresses.add(conn.laddr.ip)
            if conn.raddr:
                addresses.add(conn.raddr.ip)
    return addresses, cmdlines


@pytest.fixture(scope="module")
def tiny():
    cfg = preset("tiny")
    groups = trajectory_groups(cfg, 3)
    return cfg, groups, reference_answers(cfg, groups)


@pytest.mark.parametrize("world", [1, 2])
def test_ddp_world_passes_the_reference_gates_on_loopback_and_every_rank_ends(world, tiny):
    cfg, groups, ref = tiny
    engine = build(cfg, world=world, threads=1, dtype="float64", stall_timeout=120)
    try:
        pids = engine.pids
        assert len(set(pids)) == world  # rank 0 and its W-1 ranks, as the OS counts them
        addresses, cmdlines = _world_facts(pids)
        assert all("torch_engine/ddp.py" in c for c in cmdlines), cmdlines
        assert addresses <= {"127.0.0.1"}, addresses  # loopback only, no store on '::'
        if world > 1:
            assert addresses  # the ranks did talk: gloo's sockets
        fp = fingerprint(engine, groups, ranks=world, threads=1, dtype="float64",
                         reference=ref)
    finally:
        engine.close()
    deadline = time.monotonic() + 10
    while not processes_gone(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_gone(pids), [p for p in pids if psutil.pid_exists(p)]
    assert fp.loss_err <= LOSS_TOL["float64"]
    assert fp.grad_err <= GRAD_TOL["float64"]
    assert fp.traj_err <= TRAJ_TOL["float64"]


def test_a_stuck_rank_is_a_stall_within_the_deadline_and_the_world_is_killed(tiny):
    cfg, groups, _ = tiny
    engine = build(cfg, world=2, threads=1, dtype="float64", stall_timeout=120)
    pids = engine.pids
    assert len(pids) == 2
    try:
        os.kill(pids[1], signal.SIGSTOP)  # rank 1 stops answering the all-reduce
        engine.deadline = 4.0  # the per-request stall timeout, after the slow start-up
        start = time.monotonic()
        with pytest.raises(StallError, match="no reply within 4s"):
            engine.group_grads(groups[0].tokens, groups[0].targets)
        assert time.monotonic() - start < 30
    finally:
        engine.close()
    deadline = time.monotonic() + 10
    while not processes_gone(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_gone(pids)


def test_torch_ddp_is_a_registered_name_and_refuses_a_bad_world():
    assert resolve_factory("torch-ddp") is build
    with pytest.raises(InputError, match="world size must be 1 to 12"):
        build(preset("tiny"), world=13)


def test_verify_ranks_runs_torch_ddp_worlds_and_reports_bitwise_as_measured(tmp_path, capsys):
    from support import run_cli

    out = tmp_path / "v.json"
    code, stdout, err = run_cli(["verify", "--engine", "torch-ddp", "--presets", "tiny",
                                 "--dtypes", "float64", "--threads", "1", "--ranks", "2",
                                 "--json", str(out)], capsys)
    assert code == 0, err
    assert "across torch-ddp world sizes" in stdout and "measured, not gated" in stdout
    import json

    ranks = json.loads(out.read_text())["ranks"]
    assert [(r["ranks"], r["threads"]) for r in ranks] == [(2, 1)]
    assert ranks[0]["failures"] == [] and ranks[0]["bitwise"] in (True, False)
    assert ranks[0]["grad_error"] <= GRAD_TOL["float64"]
    assert ranks[0]["trajectory_error"] <= TRAJ_TOL["float64"]


def test_ranks_refuses_an_engine_it_cannot_spread_before_any_work(capsys):
    from support import run_cli

    code, _, err = run_cli(["verify", "--engine", "torch", "--presets", "tiny", "--threads",
                            "1", "--ranks", "2"], capsys)
    assert code == 2 and "--ranks runs fast or torch-ddp across processes, not 'torch'" in err


@pytest.mark.parametrize("require", [False, True])
def test_rank_bitwise_differences_gate_only_when_required(require):
    from harness.verify.digest import Fingerprint
    from harness.verify.ranks import run_rank_gates

    def launcher(R, cfg, dtypes, threads, *, steps, stall_timeout):
        return [Fingerprint(R, T, d, 1.0, "g" if R == 1 else "G", "u", "t", 0.0, 0.0, 0.0)
                for d in dtypes for T in threads]

    base = {"float64": {"grad_hash": "g", "update_hash": "u", "trajectory_hash": "t"}}
    recs = run_rank_gates(preset("tiny"), ["float64"], [1], [1, 2], base, steps=3,
                          stall_timeout=1.0, tolerances=(LOSS_TOL, GRAD_TOL, TRAJ_TOL),
                          out=lambda line: None, launcher=launcher, require_bitwise=require)
    same, differs = recs
    assert same.bitwise is True and not same.failures and not same.notes
    assert differs.bitwise is False
    gated, noted = (differs.failures, differs.notes) if require else (differs.notes,
                                                                     differs.failures)
    assert noted == [] and len(gated) == 1 and gated[0].startswith("bitwise-ranks-grads")
