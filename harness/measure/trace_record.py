"""The run record read back from a report's `trace.json`, so its findings can be re-derived.

`harness.measure.trace.trace_events` writes every span of the record (kind, step, start, end,
batch) and, on each batch span, the fold it made (position, sphere); this module inverts it
into a `fast.record.RecordSnapshot` that `harness.measure.evidence` reads exactly as it read
the live record (`spheres check`, harness/analysis/recheck.py). Timestamps come back to within
the file's rounding (a thousandth of a microsecond, `ROUNDING_S`). A trace that left steps out
(long runs, `TracePolicy`) is not the whole record: `read_trace` says so instead of returning a
partial one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fast.record import BATCH, NESTED, STEP, RecordSnapshot, ThreadLog
from harness.measure.trace import US

CALLER_TID = 1000  # trace tids from here on are caller threads (harness.measure.trace._tid)
# `ts` and `dur` are each rounded to 0.001 us, so a span that began the instant the previous
# one ended can read as overlapping it by up to 0.002 us; closer than this they touch
ROUNDING_S = 0.002 / US


@dataclass
class TraceRecord:
    """The record rebuilt from a trace, or why it could not be (then `snapshot` is None)."""

    snapshot: RecordSnapshot | None
    why_not: str = ""


def _role(tid: int) -> tuple[str, int | None]:
    if tid == 0:
        return "node-zero", None
    if tid < CALLER_TID:
        return "worker", tid - 1
    return "caller", None


def _logs(events: list[dict]) -> dict[int, ThreadLog]:
    logs: dict[int, ThreadLog] = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            role, ident = _role(int(e["tid"]))
            logs[int(e["tid"])] = ThreadLog(str(e["args"]["name"]), role, ident)
    for e in events:
        if e.get("ph") != "X":
            continue
        log = logs[int(e["tid"])]
        args = e.get("args", {})
        step, batch = int(args["step"]), int(args.get("batch", -1))
        start = float(e["ts"]) / US
        log.span(str(e["cat"]), step, start, (float(e["ts"]) + float(e["dur"])) / US, batch)
        if e["cat"] == BATCH and args.get("position") is not None:
            log.fold(step, batch, int(args["position"]), int(args["sphere"]))
    for log in logs.values():
        _close_rounding_gaps(log)
    return logs


def _close_rounding_gaps(log: ThreadLog) -> None:
    """End a span where the next one starts when they overlap by less than the rounding."""
    order = sorted((i for i, s in enumerate(log.spans) if s[0] != STEP and s[0] not in NESTED),
                   key=lambda i: log.spans[i][2])
    for prev, nxt in zip(order, order[1:], strict=False):
        kind, step, start, end, batch = log.spans[prev]
        begin = log.spans[nxt][2]
        if begin < end <= begin + ROUNDING_S:
            log.spans[prev] = (kind, step, start, begin, batch)


def read_trace(path: Path) -> TraceRecord:
    """The run record of one process's trace (`analyze`'s trace.json)."""
    try:
        data = json.loads(Path(path).read_text())
        events = data["traceEvents"]
        other = data.get("otherData", {})
        pids = {e.get("pid") for e in events}
        if len(pids) != 1:
            return TraceRecord(None, f"{len(pids)} processes in one trace (not analyze's)")
        dropped = int(other.get("steps_dropped", 0))
        unkept = int(other.get("steps_not_retained_in_memory", 0))
        if dropped or unkept:
            return TraceRecord(None, f"the trace is sampled ({dropped} steps left out of the "
                               f"file, {unkept} out of memory), not the whole record")
        logs = _logs(events)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return TraceRecord(None, f"unreadable ({type(exc).__name__}: {exc})")
    return TraceRecord(RecordSnapshot([logs[t] for t in sorted(logs)], [], 0))
