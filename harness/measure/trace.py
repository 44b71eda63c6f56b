"""The run record as a Chrome Trace Event file (Perfetto, chrome://tracing) and a Gantt PNG.

Tracks: one process per MPI rank (`pid`, 0 without MPI), one thread track per thread
(`ks-node-zero` first, then `ks-worker-i`, then caller threads, where checkpoint writes land).
Spans ("X" events) for every batch, ticket wait, barrier wait (Point A, reduced, decided,
Point B), reduction, Node Zero dispatching and deciding, update and checkpoint write; counters
("C" events) for RSS and tokens/s. A batch is one compiled forward+backward call, so it is one
span: the kernel has no boundary between forward and backward that Python could time.

Size policy on long runs (`TracePolicy`): every span of the first `full_steps` steps, then of
every `every`-th step; once the file would pass `max_bytes` no further step is added. Counters
are always kept. What was left out is written in `otherData` so a reader knows the trace is
sampled, never silently incomplete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fast.record import BATCH, IN_FLIGHT, STEP, RecordSnapshot, in_flight
from plumbing.outputs import json_text, write_output

US = 1e6  # trace timestamps are microseconds


@dataclass(frozen=True)
class TracePolicy:
    full_steps: int = 20  # every step up to here in full (as fast.record.Retention keeps them)
    every: int = 10  # then every `every`-th step
    max_bytes: int = 50_000_000  # stop adding steps past this size (Perfetto opens it easily)

    def keeps(self, step: int) -> bool:
        """Whether step `step` (1-based job number) is traced."""
        return step <= self.full_steps or (step - 1 - self.full_steps) % self.every == 0


def _tid(log, callers: dict[str, int]) -> int:
    if log.role == "node-zero":
        return 0
    if log.role == "worker":
        return 1 + int(log.ident)
    return callers.setdefault(log.name, 1000 + len(callers))


def trace_events(rec: RecordSnapshot, *, pid: int = 0, rank_name: str = "spheres",
                 policy: TracePolicy = TracePolicy()) -> dict:
    """The trace as a dict in the Trace Event Format (JSON object form)."""
    callers: dict[str, int] = {}
    events: list[dict] = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                           "args": {"name": rank_name}}]
    for log in rec.threads:
        tid = _tid(log, callers)
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                       "args": {"name": log.name}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                       "args": {"sort_index": tid}})
    steps = rec.steps()
    size = len(json.dumps(events))
    kept, dropped = [], []
    by_step: dict[int, list[dict]] = {s: [] for s in steps}
    positions = {(s, b): (p, o) for t in rec.threads for s, b, p, o in t.folds}
    for log in rec.threads:
        tid = _tid(log, callers)
        for kind, step, start, end, batch in log.spans:
            args: dict = {"step": step}
            name = kind
            if kind == BATCH:
                p, o = positions.get((step, batch), (None, None))
                name = f"batch {batch}"
                args.update(batch=batch, position=p, sphere=o)
            elif batch >= 0:
                args["batch"] = batch
            event = {"ph": "X", "name": name, "cat": kind, "pid": pid, "tid": tid,
                     "ts": round(start * US, 3), "dur": round(max(0.0, end - start) * US, 3),
                     "args": args}
            by_step.setdefault(step, []).append(event)
    for step in steps:  # batches computing at once: a counter track, sampled like its step
        by_step.setdefault(step, []).extend(
            {"ph": "C", "name": IN_FLIGHT, "pid": pid, "tid": 0, "ts": round(t * US, 3),
             "args": {"batches": float(n)}} for t, n in in_flight(rec, step))
    outside = by_step.pop(-1, [])  # spans outside any step (checkpoint writes): always kept
    events += outside
    size += len(json.dumps(outside))
    for step in sorted(by_step):
        chunk = by_step[step]
        cost = len(json.dumps(chunk))
        if policy.keeps(step) and size + cost <= policy.max_bytes:
            events += chunk
            size += cost
            kept.append(step)
        else:
            dropped.append(step)
    for name, t, value in rec.counters:
        events.append({"ph": "C", "name": name, "pid": pid, "tid": 0, "ts": round(t * US, 3),
                       "args": {name.split(" ")[0]: value}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"policy": f"first {policy.full_steps} steps in full, then every "
                          f"{policy.every}th, at most {policy.max_bytes} bytes",
                          "steps_kept": len(kept), "steps_dropped": len(dropped),
                          "steps_not_retained_in_memory": rec.dropped_steps,
                          "note": "a batch span is one compiled forward+backward call"}}


def write_trace(rec: RecordSnapshot, path: str | Path, **kwargs) -> Path:
    """Write the trace atomically; returns the path."""
    path = Path(path)
    write_output(path, json_text(trace_events(rec, **kwargs)))
    return path


def write_traces(runs: list[tuple[str, RecordSnapshot]], path: str | Path,
                 policy: TracePolicy = TracePolicy()) -> Path:
    """Several runs (verify's sweep) in one file, one process track each, under one byte cap."""
    events: list[dict] = []
    size, skipped = 0, 0
    for pid, (label, rec) in enumerate(runs):
        part = trace_events(rec, pid=pid, rank_name=label, policy=policy)["traceEvents"]
        cost = len(json.dumps(part))
        if size + cost > policy.max_bytes:
            skipped += 1
            continue
        events += part
        size += cost
    path = Path(path)
    write_output(path, json_text({"traceEvents": events, "displayTimeUnit": "ms",
                                  "otherData": {"runs": len(runs),
                                                "runs_left_out_for_size": skipped}}))
    return path


def representative_step(rec: RecordSnapshot) -> int | None:
    """The step of median duration (Node Zero's step span): neither the warm-up nor an outlier."""
    spans = sorted((end - start, step) for t in rec.by_role("node-zero")
                   for kind, step, start, end, _ in t.spans if kind == STEP)
    return spans[len(spans) // 2][1] if spans else None
