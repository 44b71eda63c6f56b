"""The Gantt picture of one step from the run record: threads down, time across, phases coloured.

The same record the checks and the trace read (fast.record), so the picture, the
synchronisation section's waits and the verdicts cannot disagree.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fast.record import (
    BACKWARD,
    BATCH,
    CHECKPOINT,
    DECIDE,
    DISPATCH,
    FOLDING,
    FORWARD,
    GRANT,
    NESTED,
    REDUCE,
    STEP,
    TICKET,
    UPDATE,
    WORKSPACE,
    RecordSnapshot,
    peak_in_flight,
    wait_kind,
)
from plumbing.outputs import write_output

COLOURS = {
    BATCH: "#2b8cbe", FORWARD: "#08519c", BACKWARD: "#6baed6", TICKET: "#bdd7e7",
    GRANT: "#9e9ac8", WORKSPACE: "#dadaeb", FOLDING: "#de2d26",
    DISPATCH: "#756bb1", DECIDE: "#e6550d",
    REDUCE: "#31a354", UPDATE: "#a1d99b", CHECKPOINT: "#636363",
    wait_kind("point-A"): "#fdae6b", wait_kind("reduced"): "#fdd0a2",
    wait_kind("decided"): "#fee6ce", wait_kind("point-B"): "#fcbba1",
}


def plot_gantt(rec: RecordSnapshot, step: int, out_path: str | Path) -> Path:
    """One step's spans per thread (Node Zero on top), seconds from the step's start."""
    rows = [t for t in rec.threads if any(s[1] == step for s in t.spans)]
    if not rows:
        raise ValueError(f"the record has no span of step {step}; pass a step it ran")
    rows.sort(key=lambda t: (t.role != "node-zero", t.role != "worker", t.ident or 0))
    start = min(s[2] for t in rows for s in t.spans if s[1] == step)
    height = max(3.0, 0.22 * len(rows) + 1.5)
    fig = Figure(figsize=(9.0, height), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    used = set()
    for y, t in enumerate(rows):
        for kind, s, t0, t1, _ in t.spans:
            if s != step or kind == STEP:
                continue
            used.add(kind)
            # forward/backward lie inside their batch: a thin bar along its lower half
            lane = (y, 0.4) if kind in NESTED else (y - 0.4, 0.8)
            ax.broken_barh([(t0 - start, max(t1 - t0, 1e-7))], lane,
                           color=COLOURS.get(kind, "#969696"))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([t.name for t in rows], fontsize=7 if len(rows) > 16 else 9)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the step started")
    ax.set_title(f"step {step}: what every thread did (run record); at most "
                 f"{peak_in_flight(rec, step)} batches computing at once")
    ax.legend(handles=[Patch(color=COLOURS.get(k, "#969696"), label=k) for k in COLOURS
                       if k in used], fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    out = Path(out_path)
    write_output(out, lambda fh: fig.savefig(fh, format=out.suffix.lstrip(".") or "png"))
    return out
