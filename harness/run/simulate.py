"""`spheres simulate`'s engine run: the real protocol on N simulated cores, stand-in batches.

The real FastTrainer (Node Zero, workers, tickets, gradient and workspace pools, barriers, real
folds, reduction and AdamW update) built with `cores=N` (its pools sized for N cores, as
`plumbing.cores.usable_cores` would on such a machine) and `kernel=SleepKernel(c)` (each batch
sleeps its compute time c: a sleeping thread uses no core, so the workspace pool's min(T, N) is
what bounds batches computing at once, as N cores would). Every figure is read from the run
record (fast.record): step times from Node Zero's spans, batches in flight from the batch
spans, the critical path from the batch whose fold ended last.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from fast.model import FastModel, batch_forward_backward
from fast.record import BATCH, FOLDING, GRANT, STEP, TICKET, RecordSnapshot, in_flight, wait_kind
from fast.standin import SleepKernel
from fast.trainer import FastTrainer
from reference.config import Config
from reference.params import init_params

SWEEP_THREADS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 63, 64, 96, 128, 192, 256)


@dataclass
class SimResult:
    """One simulated configuration: what the record says a step took, against the ideal."""

    preset: str
    cores: int  # N, the simulated core count
    threads: int  # T
    group: int  # G
    compute_seconds: float  # c, the stand-in's time per batch
    steps: list[float]  # every measured step's seconds (Node Zero's step spans)
    step_seconds: float  # their median
    rounds: int  # ceil(G / min(T, N)): batch times one after another on the busiest core
    fold_seconds: float  # median fold span: one P-length add into a position segment
    tail_seconds: float  # median step time outside Point A's wait: dispatch, reduce, decide,
    # update (the part the ideal adds as is)
    ideal_seconds: float  # rounds x c + fold + tail
    cores_busy: float  # mean batches computing over the step / N
    peak_in_flight: int  # most batches computing at once (from the record)
    critical_path: list[tuple[str, float]] = field(default_factory=list)  # (what, seconds)
    in_flight: list[tuple[float, int]] = field(default_factory=list)  # last step, from its start

    @property
    def ratio(self) -> float:
        """Simulated step / ideal step (1.0: the protocol adds no wait of its own)."""
        return self.step_seconds / self.ideal_seconds if self.ideal_seconds > 0 else math.inf

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def measure_compute_seconds(cfg: Config, repeats: int = 3) -> float:
    """One batch's forward+backward on one core here (median of `repeats`, after a warm-up):
    the stand-in's default compute time, "per core" as a simulated core would run it."""
    model = FastModel(cfg.model, np.float32, cfg.train.micro_batch)
    params = model.flatten(init_params(cfg.model, cfg.train.seed))
    grad, ws = np.zeros_like(params), model.new_workspace()
    tokens, targets = synthetic_group(cfg, 1)
    ticks = np.zeros(1, np.int64)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        batch_forward_backward(model, params, grad, tokens, targets, ws, ticks, 0)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def synthetic_group(cfg: Config, group: int) -> tuple[np.ndarray, np.ndarray]:
    """`group` batches of random non-pad tokens (seeded): the stand-in needs shapes only."""
    rng = np.random.default_rng(cfg.train.seed)
    shape = (group * cfg.train.batch_size, cfg.model.seq_len)
    return (rng.integers(1, cfg.model.vocab_size, size=shape),
            rng.integers(1, cfg.model.vocab_size, size=shape))


def simulate(cfg: Config, cores: int, threads: int, group: int, compute_seconds: float,
             steps: int = 2) -> tuple[SimResult, RecordSnapshot]:
    """Run a warm-up step and `steps` measured steps; the result and the run record."""
    tokens, targets = synthetic_group(cfg, group)
    stall = max(60.0, 10.0 * compute_seconds)  # a stand-in batch ticks: this only backs it up
    with FastTrainer(cfg, threads, dtype=np.float32, cores=cores, stall_timeout=stall,
                     kernel=SleepKernel(compute_seconds)) as trainer:
        for _ in range(steps + 1):
            trainer.step(tokens, targets)
    rec = trainer.record.snapshot()
    return summarise(rec, cfg.preset, cores, threads, group, compute_seconds), rec


def summarise(rec: RecordSnapshot, preset: str, cores: int, threads: int, group: int,
              compute_seconds: float) -> SimResult:
    """The figures of every step but the first (the warm-up), read from the record."""
    node = rec.by_role("node-zero")[0]
    step_spans = {s: (a, b) for k, s, a, b, _ in node.spans if k == STEP}
    wait_a = {s: b - a for k, s, a, b, _ in node.spans if k == wait_kind("point-A")}
    measured = sorted(step_spans)[1:] or sorted(step_spans)
    if not measured:
        raise ValueError("the record holds no finished step: nothing to summarise")
    durations = [step_spans[s][1] - step_spans[s][0] for s in measured]
    folds = [b - a for t in rec.threads for k, s, a, b, _ in t.spans
             if k == FOLDING and s in measured]
    tails = [step_spans[s][1] - step_spans[s][0] - wait_a.get(s, 0.0) for s in measured]
    rounds = math.ceil(group / max(1, min(threads, cores)))
    fold = statistics.median(folds) if folds else 0.0
    tail = statistics.median(tails)
    last = measured[-1]
    t0, t1 = step_spans[last]
    series = [(t - t0, n) for t, n in in_flight(rec, last)]
    busy = _mean_in_flight(series, t1 - t0) / cores
    return SimResult(
        preset=preset, cores=cores, threads=threads, group=group,
        compute_seconds=compute_seconds, steps=durations,
        step_seconds=statistics.median(durations), rounds=rounds, fold_seconds=fold,
        tail_seconds=tail, ideal_seconds=rounds * compute_seconds + fold + tail,
        cores_busy=busy, peak_in_flight=max((n for _, n in series), default=0),
        critical_path=critical_path(rec, last, t0, t1), in_flight=series)


def _mean_in_flight(series: list[tuple[float, int]], length: float) -> float:
    """Time-weighted mean of a step function given as (time, value from then on)."""
    if length <= 0 or not series:
        return 0.0
    area = sum((b[0] - a[0]) * a[1] for a, b in zip(series, series[1:], strict=False))
    return area / length


def critical_path(rec: RecordSnapshot, step: int, t0: float, t1: float) -> list[tuple[str, float]]:
    """The chain that ended the step: the batch whose fold ended last, its waits, compute and
    fold, then what followed up to Point B (Node Zero's reduce, decide and update waits)."""
    spans = {}  # batch -> {kind: (start, end)}
    worker = {}
    for t in rec.threads:
        for k, s, a, b, batch in t.spans:
            if s == step and k in (GRANT, BATCH, TICKET, FOLDING):
                spans.setdefault(batch, {})[k] = (a, b)
                if k == BATCH:
                    worker[batch] = t.name
    if not spans:
        return []
    last = max(spans, key=lambda b: spans[b].get(FOLDING, (0.0, 0.0))[1])
    mine = spans[last]
    start = min(a for a, _ in mine.values())
    path = [("dispatch to the batch's first wait", start - t0)]
    for kind, label in ((GRANT, "buffer wait"), (BATCH, "compute"), (TICKET, "fold turn"),
                        (FOLDING, "fold")):
        if kind in mine:
            path.append((f"batch {last} ({worker.get(last, '?')}) {label}",
                         mine[kind][1] - mine[kind][0]))
    end = mine.get(FOLDING, (0.0, start))[1]
    path.append(("Point A, reduce, decide, update, Point B", t1 - end))
    return path


def run_size(cores: int, threads: int, group: int, compute_seconds: float,
             steps: int) -> float:
    """A run's stand-in compute, known before it starts: the warm-up and measured steps, each
    ceil(G / min(T, N)) rounds of c (the sweep's progress times the rest by it)."""
    return (steps + 1) * math.ceil(group / max(1, min(threads, cores))) * compute_seconds


def sweep(cfg: Config, cores: int, group: int, compute_seconds: float,
          threads: tuple[int, ...] = SWEEP_THREADS, steps: int = 1,
          on_result=None, live=None) -> list[SimResult]:
    """`simulate` for each thread count (each a fresh trainer), in order; `live` (a
    `harness.run.progress.SizedRuns` over `run_size`) is told as each run begins and ends."""
    out = []
    for i, t in enumerate(threads):
        if live is not None:
            live.begin(i)
        result, _ = simulate(cfg, cores, t, group, compute_seconds, steps)
        out.append(result)
        if live is not None:
            live.end()
        if on_result is not None:
            on_result(result)
    return out
