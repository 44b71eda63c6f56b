"""SPEC 10 with a real mpiexec on loopback: bitwise identity for every ranks x threads, fault
drills across ranks (exit code, time to end, no process left), bad launches, resume across R.
Every launch proves that all of its processes ended (`mpirun` watches them).

Each mpiexec launch fingerprints several (dtype, T) configurations at once (harness.verify.digest),
because MPI start-up costs about a second per launch on this machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from fast.mpi_topology import (
    MAX_RANKS,
    batches_of,
    holders,
    position_ranks,
    positions_of,
    rank_of_batch,
    slice_bounds,
)
from fast.spheres import POSITIONS
from harness.figures.thresholds import GRAD_TOL, MPI_BYTES_OVER_RING, TRAJ_TOL

BIN = Path(sys.executable).parent
MPIEXEC = str(BIN / "mpiexec")
SPHERES = str(BIN / "spheres")
LAUNCH_TIMEOUT = 240  # seconds for one mpiexec launch on a loaded 2-core machine
STALL = 3.0  # stall timeout of the drills (seconds)
END_SLACK = 12.0  # the job must end within the stall timeout plus this (start-up included)
GONE_SECONDS = 5.0  # after mpiexec exits, its killed ranks may take this long to be reaped


def _clean_env() -> dict[str, str]:
    """This process's environment without any MPI launcher variables."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PMI_", "MPI_LOCAL", "OMPI_", "PMIX_", "HYDRA_"))}


def mpirun(ranks: int, argv: list[str], *, timeout: float = LAUNCH_TIMEOUT,
           cwd: Path | None = None) -> subprocess.CompletedProcess:
    """mpiexec -n `ranks` argv; fails the test if any process of the job outlives mpiexec."""
    cmd = [MPIEXEC, "-n", str(ranks), *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_clean_env(), cwd=cwd)
    seen: dict[int, psutil.Process] = {}
    start = time.monotonic()
    try:
        while True:
            try:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    seen.setdefault(child.pid, child)
            except psutil.Error:
                pass  # mpiexec just exited
            try:
                out, err = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - start > timeout:
                    raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert seen or ranks == 0, "no rank process was ever seen"
    _assert_all_gone(seen)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def digests(ranks: int, threads: str, dtypes: str = "float64,float32", *extra: str) -> list[dict]:
    proc = mpirun(ranks, [sys.executable, "-m", "harness.verify.digest", "--threads", threads,
                          "--dtypes", dtypes, *extra])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


CHAIN_GROUP = 30  # 2-3 spheres per position: with R > 12 every position's fold crosses ranks


@pytest.fixture
def ranks_end(monkeypatch):
    """For launches this test cannot watch itself (spheres verify, analyze): every process
    that inherited this test's token must be gone when the test ends."""
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("KS_TEST_LAUNCH", token)
    yield

    def mine() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            try:
                if p.pid != os.getpid() and p.environ().get("KS_TEST_LAUNCH") == token:
                    found.append(p)
            except psutil.Error:
                continue  # gone meanwhile, or another user's process
        return found

    _, alive = psutil.wait_procs(mine(), timeout=GONE_SECONDS)
    assert not alive, f"processes left behind: {[p.pid for p in alive]}"


@pytest.fixture(scope="module")
def single_process():
    """The single-process engine's fingerprints (T=1) per dtype and group size."""
    from fast.trainer import FastTrainer
    from harness.verify.digest import fingerprint, trajectory_groups
    from reference.config import preset

    out = {}
    for group_size in (None, 13, CHAIN_GROUP):
        cfg = preset("tiny", seed=0, **({"group_size": group_size} if group_size else {}))
        groups = trajectory_groups(cfg, 3)
        for dtype in ("float64", "float32"):
            with FastTrainer(cfg, 1, dtype=np.dtype(dtype).type) as engine:
                out[dtype, group_size] = fingerprint(engine, groups, ranks=0, threads=1,
                                                     dtype=dtype)
    return out


def _same_bits(fp: dict, ref) -> None:
    where = f"R={fp['ranks']} T={fp['threads']} {fp['dtype']}"
    assert fp["grads_sha"] == ref.grads_sha, f"gradient differs at {where}"
    assert fp["update_sha"] == ref.update_sha, f"first update differs at {where}"
    assert fp["trajectory_sha"] == ref.trajectory_sha, f"trajectory differs at {where}"
    assert fp["loss"] == ref.loss, where


# -- topology (no MPI) --------------------------------------------------------------------------

@pytest.mark.parametrize("ranks", [*range(1, 14), 23, 24, 25, 100, MAX_RANKS])
def test_every_batch_has_one_rank_and_every_position_a_chain_in_fold_order(ranks):
    served = [position_ranks(p, ranks) for p in range(POSITIONS)]
    everyone = [r for rs in served for r in rs]
    assert sorted(set(everyone)) == list(range(ranks))  # no rank without a position
    if ranks >= POSITIONS:
        assert everyone == list(range(ranks))  # each rank serves one position, in order
    for g in (1, 5, 8, 12, 13, 30, 63, 144):
        mine = [batches_of(r, ranks, g) for r in range(ranks)]
        assert sorted(b for m in mine for b in m) == list(range(g))
        for r, m in enumerate(mine):
            assert all(b % POSITIONS in positions_of(r, ranks) for b in m)
            assert all(rank_of_batch(b, ranks, g) == r for b in m)
        for p in range(min(g, POSITIONS)):
            chain = holders(p, ranks, g)
            # the chain visits each rank once and hands the batches on in fold order
            assert [b for _, bs in chain for b in bs] == list(range(p, g, POSITIONS))
            assert len({r for r, _ in chain}) == len(chain)
            assert [r for r, _ in chain] == sorted(r for r, _ in chain)
        if ranks <= POSITIONS:
            assert len(mine[0]) == max(len(m) for m in mine)  # rank 0 never has fewer
        elif g >= ranks:
            assert all(mine)  # enough batches: every rank computes
    bounds = [slice_bounds(r, ranks, 28032) for r in range(ranks)]
    assert bounds[0][0] == 0 and bounds[-1][1] == 28032
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(bounds, bounds[1:], strict=False))


def test_single_process_path_never_imports_mpi4py(tmp_path):
    code = ("import sys; from harness.cli import main; "
            f"rc = main(['grads', '--engine', 'fast', '--threads', '1', '--out', "
            f"{str(tmp_path / 'g.npz')!r}]); "
            "assert rc == 0, rc; assert 'mpi4py' not in sys.modules, 'mpi4py imported'; "
            "print('clean')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT, env=_clean_env())
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr[-2000:]


# -- bitwise identity ---------------------------------------------------------------------------

def _bitwise_and_bytes(ranks: int, single_process, group: int | None) -> None:
    """R ranks x T in {1, 3} x both dtypes against the single process; from R = 12 on (one
    position or less per rank), every rank's bytes of the last step within the bound."""
    from reference.config import preset
    from reference.params import param_count

    extra = ("--group-size", str(group)) if group else ()
    fps = digests(ranks, "1,3", "float64,float32", *extra)
    assert {(f["dtype"], f["threads"]) for f in fps} == {
        (d, t) for d in ("float64", "float32") for t in (1, 3)}
    P = param_count(preset("tiny").model)
    for fp in fps:
        assert fp["ranks"] == ranks
        _same_bits(fp, single_process[fp["dtype"], group])
        reports = fp["ranks_report"]
        assert sorted(r["rank"] for r in reports) == list(range(ranks))
        ring = 2 * P * np.dtype(fp["dtype"]).itemsize
        for r in reports:  # the last step (the short group), every rank including rank 0
            t = r["times"]
            assert "segments" not in t["by_kind"]  # no root gather of position segments
            if ranks < POSITIONS:  # k positions on a rank: it sends k slices to every owner
                continue
            for moved in (t["last_sent_bytes"], t["last_received_bytes"]):
                assert 0 < moved <= MPI_BYTES_OVER_RING * ring, (ranks, r["rank"], moved, ring)


@pytest.mark.parametrize("ranks", [2, 3, 13])
def test_weights_bitwise_equal_single_process(ranks, single_process):
    _bitwise_and_bytes(ranks, single_process, CHAIN_GROUP)


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [1, 2, 3, 5, 12, 13, 24])
def test_weights_bitwise_equal_single_process_every_rank_count(ranks, single_process):
    """The issue's matrix: R in {1, 2, 3, 5, 12, 13, 24} x T in {1, 3} x float32/float64, with
    a short padded last group; G = 30 puts 2-3 spheres on each position, so from R = 13 on
    positions are chains of ranks."""
    _bitwise_and_bytes(ranks, single_process, CHAIN_GROUP)


def test_two_batches_per_position_and_reference_errors(single_process):
    """G=13: position 0 folds two batches (on rank 0); the reference comparison holds too."""
    fps = digests(5, "2", "float64,float32", "--group-size", "13", "--reference")
    assert len(fps) == 2
    for fp in fps:
        _same_bits(fp, single_process[fp["dtype"], 13])
        assert fp["grad_err"] < GRAD_TOL[fp["dtype"]]
        assert fp["traj_err"] < TRAJ_TOL[fp["dtype"]]


def test_bytes_counted_per_rank():
    """Slices go from each position's finishing rank to their owners and the weights come back
    by an all-gather, as counted on every rank; rank 0 no longer receives whole segments."""
    from harness.verify.digest import trajectory_groups
    from reference.config import preset
    from reference.params import param_count

    R, cfg = 3, preset("tiny", seed=0)
    fps = digests(R, "1", "float64")
    P = param_count(cfg.model)
    sizes = [hi - lo for lo, hi in (slice_bounds(r, R, P) for r in range(R))]
    groups = [g.tokens.shape[0] // cfg.train.batch_size for g in trajectory_groups(cfg, 3)]
    jobs = [groups[0], *groups]  # the gradient, then one step per group
    reports = fps[0]["ranks_report"]
    assert [r["rank"] for r in reports] == [0, 1, 2]
    for r in reports:
        me, t = r["rank"], r["times"]
        slices = 0
        for g in jobs:
            fin = [holders(p, R, g)[-1][0] for p in range(min(g, POSITIONS))]
            slices += sum(fin.count(me) * sizes[j] for j in range(R) if j != me)
            slices += sum(fin.count(q) * sizes[me] for q in range(R) if q != me)
        assert t["by_kind"]["slices"] == slices * 8
        # three steps: this rank's slice to the 2 others, the 2 other slices back
        assert t["by_kind"]["weights"] == 3 * (sizes[me] * (R - 1) + P - sizes[me]) * 8
        assert "segments" not in t["by_kind"]


# -- train --mpi: checkpoints and resume across R ------------------------------------------------

def _resume_across(tmp_path, first: int, second: int, *extra: str) -> None:
    """2 steps at R=`first`, resumed for 2 more at R=`second`: bitwise the single process's 4."""
    common = ["--preset", "tiny", "--threads", "1", "--dtype", "float64", *extra]
    a = mpirun(first, [SPHERES, "train", "--mpi", *common, "--steps", "2", "--total-steps", "4",
                       "--checkpoint-dir", str(tmp_path / "a")])  # the lr horizon of all 4 steps
    assert a.returncode == 0, a.stderr[-2000:]
    b = mpirun(second, [SPHERES, "train", "--mpi", *common, "--steps", "2", "--resume",
                        str(tmp_path / "a"), "--checkpoint-dir", str(tmp_path / "b")])
    assert b.returncode == 0, b.stderr[-2000:]
    c = subprocess.run([SPHERES, "train", *common, "--steps", "4", "--checkpoint-dir",
                        str(tmp_path / "one")], capture_output=True, text=True,
                       timeout=LAUNCH_TIMEOUT, env=_clean_env())
    assert c.returncode == 0, c.stderr[-2000:]
    x = np.load(tmp_path / "b" / "step-000004.npz")
    y = np.load(tmp_path / "one" / "step-000004.npz")
    floats = [k for k in x.files if x[k].dtype.kind == "f"]
    assert any(k.startswith("adam_v/") for k in floats)  # the sharded moments came back whole
    different = [k for k in floats if not np.array_equal(x[k], y[k])]
    assert floats and not different, different[:5]
    assert not list((tmp_path / "b").glob("*.tmp*"))  # written once, atomically


def test_resume_with_a_different_rank_count_is_bitwise(tmp_path):
    _resume_across(tmp_path, 2, 3)


@pytest.mark.slow
def test_resume_from_3_to_24_ranks_is_bitwise(tmp_path):
    """The moments are sharded across the ranks: gathered into the checkpoint at R=3, cut into
    24 slices on resume; G = 30 makes every position a chain of two ranks at R=24."""
    _resume_across(tmp_path, 3, 24, "--group-size", str(CHAIN_GROUP))


# -- bad launches -------------------------------------------------------------------------------

def test_mpiexec_without_mpi_flag_is_refused(tmp_path):
    proc = mpirun(2, [SPHERES, "grads", "--engine", "fast", "--out", str(tmp_path / "g.npz")])
    assert proc.returncode == 2
    assert "without --mpi" in proc.stderr and "--mpi" in proc.stderr
    assert proc.stderr.count("without --mpi") == 1  # said once, by rank 0, not per rank
    assert not (tmp_path / "g.npz").exists()


def test_more_ranks_than_level2_spheres_is_refused():
    from harness.verify.ranks import parse_ranks
    from plumbing.errors import InputError

    assert parse_ranks("1,13,24,144") == [1, 13, 24, 144]
    with pytest.raises(InputError, match="1 to 144 ranks"):
        parse_ranks("3,145")


def test_mpi_flag_where_mpi_cannot_start(tmp_path):
    fake = tmp_path / "fake" / "mpi4py"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no MPI library here')\n")
    env = _clean_env() | {"PYTHONPATH": str(fake.parent)}
    proc = subprocess.run([SPHERES, "grads", "--mpi", "--out", str(tmp_path / "g.npz")],
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "MPI cannot start" in proc.stderr and "[mpi]" in proc.stderr


def test_grads_mpi_matches_single_process(tmp_path):
    proc = mpirun(2, [SPHERES, "grads", "--mpi", "--threads", "1", "--dtype", "float64",
                      "--out", str(tmp_path / "m.npz")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = subprocess.run([SPHERES, "grads", "--engine", "fast", "--threads", "2", "--dtype",
                          "float64", "--out", str(tmp_path / "s.npz")], capture_output=True,
                         text=True, timeout=LAUNCH_TIMEOUT, env=_clean_env())
    assert one.returncode == 0, one.stderr[-2000:]
    m, s = np.load(tmp_path / "m.npz"), np.load(tmp_path / "s.npz")
    grads = [k for k in m.files if k.startswith("grad/")]
    assert grads and all(np.array_equal(m[k], s[k]) for k in grads)


# -- fault drills across ranks ------------------------------------------------------------------

def _drill(tmp_path, inject: str, ranks: int = 3, kill_rank: int | None = None,
           extra: tuple[str, ...] = ()):
    """Run a 3-step job with a fault; returns (exit code, seconds, stderr, pids seen)."""
    argv = [MPIEXEC, "-n", str(ranks), SPHERES, "train", "--mpi", "--threads", "2", "--steps",
            "3", "--stall-timeout", str(STALL), "--inject", inject, *extra]
    start = time.monotonic()
    log = tmp_path / "stderr.txt"
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink, text=True,
                                env=_clean_env(), cwd=tmp_path)
    pids: dict[int, psutil.Process] = {}
    killed = False
    try:
        while proc.poll() is None and time.monotonic() - start < LAUNCH_TIMEOUT:
            for child in psutil.Process(proc.pid).children(recursive=True):
                pids.setdefault(child.pid, child)
                if kill_rank is not None and not killed and _rank_of(child) == kill_rank:
                    if "[step 1/3]" in log.read_text():  # rank 1 is inside step 1
                        child.kill()
                        killed = True
            time.sleep(0.05)  # polling the job from outside, not synchronising threads
        proc.wait(timeout=LAUNCH_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    seconds = time.monotonic() - start
    return proc.returncode, seconds, log.read_text(), pids, killed


def _rank_of(p: psutil.Process) -> int | None:
    try:
        env = p.environ()
        return int(env["PMI_RANK"]) if "spheres" in " ".join(p.cmdline()) else None
    except (psutil.Error, KeyError, ValueError):
        return None


def _assert_all_gone(procs: dict[int, psutil.Process]) -> None:
    """Every process of the job is gone (Process objects survive PID reuse by other jobs)."""
    gone, alive = psutil.wait_procs(list(procs.values()), timeout=GONE_SECONDS)
    described = []
    for p in alive:
        try:
            described.append(f"{p.pid} {p.status()} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            pass
    assert not described, f"processes left behind: {described}"


@pytest.mark.parametrize("inject,code,needle", [
    ("hang:target=worker=0,rank=1,step=1", 3, "rank 1: stall"),
    ("hang:target=node-zero,rank=2,step=0", 3, "rank 2: stall"),
    ("raise:target=worker=1,rank=2,step=1", 4, "rank 2: thread ks-worker-1"),
    ("nan:target=worker=0,rank=1,step=1", 4, "rank 1: non-finite gradient"),
])
def test_fault_on_a_follower_ends_the_job(tmp_path, inject, code, needle):
    rc, seconds, err, pids, _ = _drill(tmp_path, inject)
    assert rc == code, err[-3000:]
    assert needle in err, err[-3000:]
    assert seconds < STALL + END_SLACK + 5.0, f"took {seconds:.1f} s"
    _assert_all_gone(pids)


def test_slow_follower_is_not_a_stall(tmp_path):
    """Slow work on rank 1 (longer than the stall timeout, with progress) finishes normally."""
    rc, seconds, err, pids, _ = _drill(
        tmp_path, f"slow:target=worker=0,rank=1,step=1,seconds={2 * STALL:g}")
    assert rc == 0, err[-3000:]
    assert "stall" not in err.lower()
    _assert_all_gone(pids)


def test_hang_at_the_head_of_a_chain_ends_the_job(tmp_path):
    """R=13, G=30: ranks 0 and 1 share position 0. Rank 0 hangs in its batches; its watchdog
    reports, it still hands its partial on, and rank 1 (waiting for it) joins the status
    gather, so the job ends as a stall of rank 0, not as a collective deadline."""
    rc, seconds, err, pids, _ = _drill(tmp_path, "hang:target=worker=0,rank=0,step=1", ranks=13,
                                       extra=("--group-size", str(CHAIN_GROUP)))
    assert rc == 3, err[-3000:]
    assert "rank 0: stall" in err, err[-3000:]
    assert "did not complete within" not in err, err[-3000:]  # no rank hit a deadline
    _assert_all_gone(pids)


@pytest.mark.slow
def test_slow_head_of_a_chain_is_not_a_stall(tmp_path):
    """Rank 1 waits for rank 0's partial of position 0 for longer than the stall timeout."""
    rc, seconds, err, pids, _ = _drill(
        tmp_path, f"slow:target=worker=0,rank=0,step=1,seconds={2 * STALL:g}", ranks=13,
        extra=("--group-size", str(CHAIN_GROUP)))
    assert rc == 0, err[-3000:]
    assert "stall" not in err.lower()
    _assert_all_gone(pids)


def test_sigkill_of_a_rank_ends_the_job(tmp_path):
    rc, seconds, err, pids, killed = _drill(
        tmp_path, "slow:target=worker=0,rank=1,step=1,seconds=120", kill_rank=1)
    assert killed, "rank 1 was never seen to kill"
    assert rc != 0, err[-2000:]
    assert seconds < 60.0, f"took {seconds:.1f} s (the slow fault alone lasts 120 s)"
    _assert_all_gone(pids)


# -- spheres verify --ranks ---------------------------------------------------------------------

def test_verify_ranks_gate_passes_through_the_cli(tmp_path, ranks_end):
    out = tmp_path / "v.json"
    proc = subprocess.run([SPHERES, "verify", "--threads", "1,2", "--presets", "tiny",
                           "--dtypes", "float64", "--ranks", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
                          env=_clean_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ranks = json.loads(out.read_text())["ranks"]
    assert sorted((r["ranks"], r["threads"]) for r in ranks) == [(3, 1), (3, 2)]
    assert all(not r["failures"] and r["grad_hash"] for r in ranks)


# A plausible wrong design: a rank that finishes several positions pre-sums them before the
# reduce-scatter (fewer bytes), rounding the partial sum to the engine dtype. Every value is
# right up to rounding, but the 12-position sum is re-associated.
_PRESUM = '''
import numpy as np
from fast import mpi_engine
from fast.mpi_topology import holders
_orig = mpi_engine._Rank._reduce_scatter
def _reduce_scatter(self, g, n_targets):
    data = self.trainer.shared.segments.data
    mine = [p for p in range(min(g, 12)) if holders(p, self.ranks, g)[-1][0] == self.rank]
    if len(mine) > 1:
        data[mine[0]] = data[mine].astype(np.float64).sum(axis=0).astype(data.dtype)
        data[mine[1:]] = 0
    return _orig(self, g, n_targets)
mpi_engine._Rank._reduce_scatter = _reduce_scatter
'''


def test_verify_ranks_gate_fails_on_a_presumming_rank(tmp_path, monkeypatch, no_thread_leak,
                                                     ranks_end):
    from harness.verify.ranks import run_rank_gates
    from reference.config import preset

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_PRESUM)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]))
    cfg = preset("tiny", seed=0, group_size=24)
    from fast.trainer import FastTrainer
    from harness.verify.digest import fingerprint, trajectory_groups

    with FastTrainer(cfg, 1, dtype=np.float32) as engine:
        fp = fingerprint(engine, trajectory_groups(cfg, 3), ranks=0, threads=1,
                         dtype="float32")
    baseline = {"float32": {"grad_hash": fp.grads_sha, "update_hash": fp.update_sha,
                            "trajectory_hash": fp.trajectory_sha}}
    tol = {"float32": 1.0}
    records = run_rank_gates(cfg, ["float32"], [1], [2], baseline, steps=3, stall_timeout=30,
                             tolerances=(tol, tol, tol), out=lambda line: None)
    assert len(records) == 1
    assert any(f.startswith("bitwise-ranks-grads") for f in records[0].failures), records


# -- spheres analyze --ranks: the Scale-out section --------------------------------------------

def test_scale_out_section_measures_ranks_and_bitwise(no_thread_leak, ranks_end):
    from harness.analysis.scale_out import add_scale_out, scale_out_checks, section_lines
    from harness.figures.results import AnalysisResults

    results = AnalysisResults()
    add_scale_out(results, "tiny", 2, 1, 0, lambda line: None)
    s = results.scale_out
    assert s.error is None, s.error
    assert [r.rank for r in s.bench.per_rank] == [0, 1]
    assert all(r.last_sent_bytes > 0 and r.compute_s > 0 for r in s.bench.per_rank)
    assert results.checks[-1].passed and results.verdict == "PASS"
    text = "\n".join(section_lines(s))
    assert "| 1 |" in text and "ring" in text.lower()
    # the section survives results.json: the same typed object comes back
    assert AnalysisResults.from_json(results.to_json()).scale_out == s
    # the verdict reads the hashes: a different trajectory on the MPI side is a FAIL
    broken = dataclasses.replace(s, mpi_hashes=dict(s.mpi_hashes, trajectory_sha="0" * 64))
    assert not scale_out_checks(broken)[0].passed


# -- pieces without a job ----------------------------------------------------------------------

def test_inject_rank_is_parsed_and_defaults_to_zero():
    from fast.faults import FaultPlan, parse_inject

    old = parse_inject("hang:target=worker=1,step=2")
    new = parse_inject("hang:target=worker=1,rank=3,step=2")
    assert old.rank == 0 and new.rank == 3
    assert str(old) == "hang:target=worker=1,step=2"  # unchanged spelling without rank
    assert parse_inject(str(new)) == new
    plan = FaultPlan([new])  # a single process is rank 0: a rank-3 fault never fires there
    assert plan.fire("worker", 1, 2, 0, 0, first=True) is False
    assert plan.unfired() == [new]


def test_a_collective_past_its_deadline_raises_naming_rank_and_collective(tmp_path):
    """Rank 0 never joins the broadcast: rank 1 must give up at its deadline, not hang."""
    script = tmp_path / "late.py"
    script.write_text(
        "import sys, time\n"
        "import numpy as np\n"
        "from fast.mpi_comm import Channel, CommTimeout\n"
        "ch = Channel()\n"
        "if ch.rank == 1:\n"
        "    t0 = time.monotonic()\n"
        "    try:\n"
        "        ch.bcast(np.zeros(4), 1.0, 'header')\n"
        "    except CommTimeout as exc:\n"
        "        with open(sys.argv[1], 'w') as fh:  # a file: Abort may drop forwarded stdout\n"
        "            fh.write(f'TIMEOUT {time.monotonic() - t0:.2f} {exc}')\n"
        "        ch.abort(3)\n"
        "else:\n"
        "    time.sleep(60)\n")
    said = tmp_path / "said.txt"
    start = time.monotonic()
    proc = mpirun(2, [sys.executable, str(script), str(said)], timeout=60)
    assert proc.returncode == 3, proc.stderr[-2000:]
    out = said.read_text()
    assert "TIMEOUT" in out and "rank 1" in out and "header" in out
    waited = float(out.split("TIMEOUT ")[1].split()[0])
    assert 1.0 <= waited < 5.0
    assert time.monotonic() - start < 30.0


def test_inject_aimed_at_a_missing_rank_is_refused(tmp_path):
    proc = mpirun(2, [SPHERES, "train", "--mpi", "--threads", "1", "--steps", "1",
                      "--inject", "raise:target=worker=0,rank=5,step=0"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "targets rank 5" in proc.stderr


def test_chain_rank_computes_while_its_upstream_is_still_computing(tmp_path):
    """R=13, G=30: rank 1 continues rank 0's partial of position 0. Rank 0's first batch is a
    2 s `slow` fault, so its partial leaves after 2 s; rank 1's own batches must compute in
    that time (their compute seconds before the partial's arrival, from the run record), and
    only its first fold there waits. The old engine received before it computed: overlap 0."""
    slow = 2.0
    script = tmp_path / "chain.py"
    script.write_text(
        "import json, sys\n"
        "import numpy as np\n"
        "from fast.mpi_comm import Channel\n"
        "from fast.mpi_engine import MpiEngine, follow\n"
        "from harness.verify.digest import trajectory_groups\n"
        "from reference.config import preset\n"
        f"cfg = preset('tiny', seed=0, group_size={CHAIN_GROUP})\n"
        f"faults = ['slow:target=worker=0,rank=0,step=0,seconds={slow:g}']\n"
        "ch = Channel()\n"
        "if ch.rank:\n"
        f"    sys.exit(follow(ch, cfg, 1, np.float64, {STALL:g}, faults))\n"
        f"engine = MpiEngine(ch, cfg, 1, np.float64, {STALL:g}, faults)\n"
        "group = trajectory_groups(cfg, 1)[0]\n"
        "engine.step(group.tokens, group.targets)\n"
        "engine.close()\n"
        "with open(sys.argv[1], 'w') as fh:\n"
        "    json.dump(engine.reports, fh)\n")
    said = tmp_path / "reports.json"
    proc = mpirun(13, [sys.executable, str(script), str(said)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    times = {r["rank"]: r["times"] for r in json.loads(said.read_text())}
    assert [(r, list(b)) for r, b in holders(0, 13, CHAIN_GROUP)] == [(0, [0, 12]), (1, [24])]
    one = times[1]
    # the partial arrived after rank 0's slow batch: rank 1 really waited for it ...
    assert one["chain_wait_s"] >= 0.8 * slow, one
    # ... and its batches computed meanwhile (all of them are tiny: well inside the wait)
    assert one["chain_overlap_s"] > 0.0, one
    assert times[0]["chain_wait_s"] == 0.0  # the head of a chain receives nothing


def test_a_large_collective_is_not_throttled_by_the_wait_loop(tmp_path):
    """The seed's slices at R = 2 (60 MB each way, Ialltoallv) once both ranks are in: polled
    with sleeps MPICH moved them in 8.1-8.7 s, polled back to back in 23-29 ms (fast.mpi_poll);
    3 s leaves a loaded machine 100 times the honest figure and still catches the throttle."""
    script = tmp_path / "slices.py"
    script.write_text(
        "import sys, time\n"
        "import numpy as np\n"
        "from fast.mpi_comm import Channel\n"
        "ch = Channel()\n"
        "n = 15_000_000\n"
        "send, recv = np.full(2 * n, ch.rank + 1.0, np.float32), np.zeros(2 * n, np.float32)\n"
        "ch.comm.Barrier()\n"
        "t0 = time.monotonic()\n"
        "ch.alltoallv(send, [n, n], recv, [n, n], 60.0, 'slices')\n"
        "took = time.monotonic() - t0\n"
        "ok = recv[:n].min() == recv[:n].max() == 1.0 and recv[n:].min() == 2.0\n"
        "if ch.rank == 0:\n"
        "    with open(sys.argv[1], 'w') as fh:\n"
        "        fh.write(f'{took:.3f} {ok} {ch.bytes.sent} {ch.bytes.received}')\n")
    said = tmp_path / "said.txt"
    proc = mpirun(2, [sys.executable, str(script), str(said)], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    took, ok, sent, received = said.read_text().split()
    assert ok == "True" and int(sent) == int(received) == 60_000_000
    assert float(took) < 3.0, f"60 MB each way took {took} s"
