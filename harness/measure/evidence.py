"""Verdicts about the threaded system read from the run record (fast.record), never the plan.

Each function takes a `RecordSnapshot` and returns a `Finding`: passed or not, and the
measured figure behind it. `harness.analysis.checks` (analyze) and `harness.verify.gates` turn
findings into
their verdicts; `tests/test_breakers.py` runs a deliberately broken engine for each one and sees
it fail. Per-thread statistics and Node Zero's phase times come from the same record.
"""

from __future__ import annotations

from collections import defaultdict

from fast.record import (
    BATCH,
    CHECKPOINT,
    DECIDE,
    DISPATCH,
    NESTED,
    REDUCE,
    STEP,
    TICKET,
    UPDATE,
    RecordSnapshot,
    wait_kind,
)
from fast.spheres import LEVEL2_SPHERES, POSITIONS, SPHERES_PER_POSITION
from harness.figures.facts import Finding, ThreadStats
from harness.figures.results import PositionRow, Structure

BARRIERS = ("point-A", "reduced", "decided", "point-B")  # in step order (fast.node_zero)


def _batches(rec: RecordSnapshot) -> dict[int, list[tuple[str, int]]]:
    """Per step: (thread, batch) for every batch span in the record."""
    out: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for t in rec.threads:
        for kind, step, _, _, batch in t.spans:
            if kind == BATCH:
                out[step].append((t.name, batch))
    return out


def handed_out(rec: RecordSnapshot) -> dict[int, int]:
    """Per step: how many batches Node Zero handed out (its dispatch span carries the count)."""
    return {step: n for t in rec.by_role("node-zero")
            for kind, step, _, _, n in t.spans if kind == DISPATCH}


def node_zero_never_computes(rec: RecordSnapshot) -> Finding:
    ran = rec.batches_by_thread()
    by_others = {name: n for name, n in ran.items() if n and not name.startswith("ks-worker-")}
    total = sum(ran.values())
    return Finding(not by_others and total > 0,
                   f"batches run by Node Zero or any non-worker thread: "
                   f"{by_others or 0} (record of {total} batches over {len(rec.steps())} steps)")


def every_batch_once(rec: RecordSnapshot) -> Finding:
    """Every batch Node Zero handed out ran exactly once, in every step."""
    ran, given = _batches(rec), handed_out(rec)
    bad = []
    for step, g in sorted(given.items()):
        ids = sorted(b for _, b in ran.get(step, []))
        if ids != list(range(g)):
            bad.append(f"step {step}: ran {len(ids)} of {g} (duplicates or gaps)")
    return Finding(bool(given) and not bad,
                   "; ".join(bad[:3]) if bad else
                   f"{sum(given.values())} batches over {len(given)} steps, each ran once")


def folds_at_position(rec: RecordSnapshot) -> Finding:
    """Batch b's gradient was written into position segment b mod 12 (whoever ran it)."""
    folds = [f for t in rec.threads for f in t.folds]
    wrong = [(s, b, p) for s, b, p, _ in folds if p != b % POSITIONS]
    return Finding(bool(folds) and not wrong,
                   f"{len(wrong)} of {len(folds)} folds into the wrong segment"
                   + (f", e.g. batch {wrong[0][1]} into position {wrong[0][2]}" if wrong else ""))


def fold_order(rec: RecordSnapshot) -> Finding:
    """Each position folded its batches in ascending order: fold k of position p is p + 12k."""
    per: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for t in rec.threads:
        for step, batch, position, order in t.folds:
            per[(step, position)].append((order, batch))
    bad = []
    for (step, position), seq in sorted(per.items()):
        batches = [b for _, b in sorted(seq)]
        if batches != sorted(batches) or [o for o, _ in sorted(seq)] != list(range(len(seq))):
            bad.append(f"step {step} position {position}: folded {batches}")
    longest = max((len(s) for s in per.values()), default=0)
    return Finding(bool(per) and not bad, "; ".join(bad[:2]) if bad else
                   f"{len(per)} position sums in ascending batch order (up to {longest} folds)")


def positions_filled(rec: RecordSnapshot) -> Finding:
    """Each step's batches spread over min(12, g) positions."""
    per: dict[int, set[int]] = defaultdict(set)
    for t in rec.threads:
        for step, _, position, _ in t.folds:
            per[step].add(position)
    given = handed_out(rec)
    bad = [f"step {s}: {len(per.get(s, ()))} positions for {g} batches"
           for s, g in sorted(given.items()) if len(per.get(s, ())) != min(POSITIONS, g)]
    used = max((len(v) for v in per.values()), default=0)
    return Finding(bool(given) and not bad, "; ".join(bad[:2]) if bad else
                   f"{used} of 12 positions received folds in each of {len(given)} steps")


def hierarchy(rec: RecordSnapshot) -> Finding:
    """What ran forms the 1 + 12 + 144 tree: one Node Zero, <= 12 positions, <= 144 spheres."""
    nz = [t for t in rec.by_role("node-zero") if any(s[0] == STEP for s in t.spans)]
    positions = {p for t in rec.threads for _, _, p, _ in t.folds}
    spheres = {(p, o) for t in rec.threads for _, _, p, o in t.folds if o < SPHERES_PER_POSITION}
    ok = (len(nz) == 1 and 0 < len(positions) <= POSITIONS
          and all(0 <= p < POSITIONS for p in positions) and len(spheres) <= LEVEL2_SPHERES)
    return Finding(ok, f"observed {len(nz)} + {len(positions)} + {len(spheres)} "
                       f"(of 1 + {POSITIONS} + {LEVEL2_SPHERES}): threads that drove steps, "
                       "positions and level-2 spheres that received folds")


def barriers_held(rec: RecordSnapshot) -> Finding:
    """At every barrier of every step each thread arrived once and none left before the last."""
    parties = [t for t in rec.threads if t.role in ("worker", "node-zero")]
    waits: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for t in parties:
        for kind, step, start, end, _ in t.spans:
            if kind.startswith("wait ") and kind != TICKET:
                waits[(step, kind)].append((start, end))
    bad = []
    margin = float("inf")
    for step in sorted(handed_out(rec)):
        for name in BARRIERS:
            spans = waits.get((step, wait_kind(name)), [])
            if len(spans) != len(parties):
                bad.append(f"step {step} {name}: {len(spans)} of {len(parties)} arrived")
                continue
            last_arrival = max(s for s, _ in spans)
            first_leave = min(e for _, e in spans)
            margin = min(margin, first_leave - last_arrival)
            if first_leave < last_arrival:
                bad.append(f"step {step} {name}: a thread left {last_arrival - first_leave:.6f} s"
                           " before the last arrival")
    n = len(handed_out(rec))
    return Finding(n > 0 and not bad, "; ".join(bad[:2]) if bad else
                   f"{len(BARRIERS)} barriers x {n} steps: all {len(parties)} threads arrived, "
                   f"first leave >= last arrival (margin {margin * 1e6:.0f} us)")


def update_after_batches(rec: RecordSnapshot) -> Finding:
    """No update starts before the step's last batch ended (SPEC 8.14's race)."""
    last_batch: dict[int, float] = defaultdict(float)
    first_update: dict[int, float] = {}
    for t in rec.threads:
        for kind, step, start, end, _ in t.spans:
            if kind == BATCH:
                last_batch[step] = max(last_batch[step], end)
            elif kind == UPDATE:
                first_update[step] = min(first_update.get(step, start), start)
    bad = [s for s, u in first_update.items() if u < last_batch.get(s, 0.0)]
    return Finding(not bad, f"{len(bad)} of {len(first_update)} updating steps started "
                            "before their last batch ended")


def spans_disjoint(rec: RecordSnapshot) -> Finding:
    """No thread is in two phases at once (Node Zero's whole-step span aside)."""
    bad = []
    for t in rec.threads:
        spans = sorted((s, e, k) for k, _, s, e, _ in t.spans if k != STEP and k not in NESTED)
        end, inside = float("-inf"), ""
        for start, stop, kind in spans:
            if start < end:
                bad.append(f"{t.name}: {kind} starts inside {inside}")
                break
            end, inside = stop, kind
    return Finding(not bad, "; ".join(bad[:2]) if bad else
                   f"{sum(len(t.spans) for t in rec.threads)} spans, none overlapping per thread")


RECORD_FINDINGS = {
    "node-zero-no-batch": node_zero_never_computes,
    "every-batch-once": every_batch_once,
    "fold-position": folds_at_position,
    "fold-order": fold_order,
    "positions-filled": positions_filled,
    "hierarchy": hierarchy,
    "barriers": barriers_held,
    "update-after-batches": update_after_batches,
    "spans-disjoint": spans_disjoint,
}


# ---------------------------------------------------------------------- statistics


def thread_stats(rec: RecordSnapshot, cpu_seconds: dict[str, float] | None = None
                 ) -> list[ThreadStats]:
    """Per-thread figures, Node Zero first, then workers in index order."""
    cpu = cpu_seconds or {}
    order = {"node-zero": 0, "worker": 1, "caller": 2}
    out = []
    for t in sorted(rec.threads, key=lambda t: (order.get(t.role, 3), t.ident or 0)):
        sec = rec.seconds_by_kind(t)
        out.append(ThreadStats(
            name=t.name, role=t.role, position=t.position,
            batches=sum(1 for s in t.spans if s[0] == BATCH),
            compute_seconds=sec.get(BATCH, 0.0), ticket_wait_seconds=sec.get(TICKET, 0.0),
            wait_a_seconds=sec.get(wait_kind("point-A"), 0.0),
            wait_reduced_seconds=sec.get(wait_kind("reduced"), 0.0),
            wait_decided_seconds=sec.get(wait_kind("decided"), 0.0),
            wait_b_seconds=sec.get(wait_kind("point-B"), 0.0),
            reduce_seconds=sec.get(REDUCE, 0.0), update_seconds=sec.get(UPDATE, 0.0),
            dispatch_seconds=sec.get(DISPATCH, 0.0), decide_seconds=sec.get(DECIDE, 0.0),
            checkpoint_seconds=sec.get(CHECKPOINT, 0.0), cpu_seconds=cpu.get(t.name, 0.0)))
    return out


# Node Zero's phases under the name of what it does in them (it never reduces or updates).
NODE_ZERO_PHASES = (
    ("dispatch_seconds", "handing out the group"),
    ("wait_a_seconds", "waiting at Point A while workers compute"),
    ("wait_reduced_seconds", "driving the reduction (waiting while workers sum positions)"),
    ("decide_seconds", "deciding (loss, norm, finiteness, clip, learning rate)"),
    ("wait_decided_seconds", "publishing the decision"),
    ("wait_b_seconds", "waiting at Point B while workers update"),
)


def structure(rec: RecordSnapshot) -> Structure:
    """The 12-fold structure as it ran: per position, the threads that folded into it and the
    most batches it took in one step; the tree levels observed (what the report tables show)."""
    workers: dict[int, set[str]] = defaultdict(set)
    per_step: dict[tuple[int, int], int] = defaultdict(int)
    spheres = set()
    for t in rec.threads:
        for step, _, position, order in t.folds:
            workers[position].add(t.name)
            per_step[(step, position)] += 1
            if order < SPHERES_PER_POSITION:
                spheres.add((position, order))
    most = {p: max((n for (_, q), n in per_step.items() if q == p), default=0)
            for p in range(POSITIONS)}
    nz = [t for t in rec.by_role("node-zero") if any(s[0] == STEP for s in t.spans)]
    levels = [len(nz), len(workers), len(spheres)]
    first = min(handed_out(rec), default=None)
    parties = sum(1 for t in rec.threads
                  if any(k == wait_kind("point-A") and s == first for k, s, *_ in t.spans))
    return Structure(
        barrier_parties=parties,  # threads that waited at Point A in the first step
        positions=[PositionRow(p, len(workers.get(p, ())), most[p]) for p in range(POSITIONS)],
        level_sizes=levels, total_spheres=sum(levels), tree=[1, POSITIONS, LEVEL2_SPHERES],
        occupied_spheres=len(spheres))


def findings(rec: RecordSnapshot) -> dict[str, Finding]:
    """Every record finding by id (for results.json and the checks)."""
    return {name: fn(rec) for name, fn in RECORD_FINDINGS.items()}
