"""`spheres verify --engine torch-ddp --ranks 1,2,3,4`: the launcher of harness/verify/ranks.py
for the torch-ddp engine, where a rank count is a DDP world size (issue 23).

For every (dtype, T) it starts a world of R processes (harness/run/ddp_engine.py), runs the
verify trajectory on it and fingerprints it with the very code the single-process runs and the
MPI ranks are fingerprinted with (harness/verify/digest.py), then ends the world. A world that
fails (a stall, a dead rank) is a RuntimeError, which the rank gates record as `ranks-run`.
"""

from __future__ import annotations

from plumbing.errors import SpheresError
from reference.config import Config

_REFERENCE: dict[tuple[str, int, int], tuple[list, dict]] = {}  # per config: groups, answers


def _reference(cfg: Config, steps: int) -> tuple[list, dict]:
    """The trajectory groups and the reference's answers, once per config and step count."""
    from harness.verify.digest import reference_answers, trajectory_groups

    key = (cfg.to_json(), steps, cfg.train.seed)
    if key not in _REFERENCE:
        groups = trajectory_groups(cfg, steps)
        _REFERENCE.clear()  # one preset at a time: keep only the newest
        _REFERENCE[key] = (groups, reference_answers(cfg, groups))
    return _REFERENCE[key]


def launch_ddp(ranks: int, cfg: Config, dtypes: list[str], threads: list[int], *,
               steps: int, stall_timeout: float) -> list:
    """One torch-ddp world of `ranks` processes per (dtype, T); their fingerprints."""
    from harness.run.ddp_engine import build
    from harness.run.stop import check_stop
    from harness.verify.digest import fingerprint

    groups, reference = _reference(cfg, steps)
    out = []
    for dtype in dtypes:
        for T in threads:
            check_stop(f"before torch-ddp world {ranks}, {dtype}, T={T}")
            try:
                engine = build(cfg, world=ranks, threads=T, dtype=dtype,
                               stall_timeout=stall_timeout)
                try:
                    out.append(fingerprint(engine, groups, ranks=ranks, threads=T, dtype=dtype,
                                           reference=reference))
                finally:
                    engine.close()
            except SpheresError as exc:
                raise RuntimeError(f"torch-ddp world {ranks}, {dtype}, T={T}: {exc}") from None
    return out
