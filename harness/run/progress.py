"""Live progress inside long work: a tqdm bar on a terminal, plain flushed lines in CI logs.

A run is a sequence of units (training steps, verify cases, analyze phases); a unit may have
inner work it reports as it goes (a step's G batches). The engine never imports this: it
exposes `batches_done() -> (batches done, batches)` for the group in flight (fast/trainer.py;
the `CountsBatches` protocol of reference/engine.py), and a thread started here polls it.
Whoever drives the units calls `begin`/`end`; the poller fills in the inner counts, and the
renderer shows batches done of G, tokens/s, the unit's and the run's ETA, the last loss and
held-out loss.
Modes: "bar" when the stream is a terminal, "lines" when it is not (one flushed line every
`line_seconds`, plus one as each unit ends), "off" for `--quiet`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from reference.config import Config
from reference.engine import CountsBatches, Engine

LINE_SECONDS = 5.0  # CI logs: often enough to see a 40 s step move, rare enough not to flood
POLL_SECONDS = 0.25  # the bar's refresh; reading the engine's counter costs microseconds
DEFAULT_COLUMNS = 120  # bar width when the terminal reports no size
DEFAULT_ROWS = 24  # and its height (tqdm hides bars below a 0-row screen)
JOIN_SECONDS = 2.0  # the poller wakes every POLL_SECONDS, so it ends well within this

Poll = Callable[[], "tuple[int, int] | None"]


def _columns(stream: TextIO) -> int:
    """The terminal's width, 0 when it reports none (a fresh pseudo-terminal)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def choose_mode(quiet: bool, stream: TextIO) -> str:
    """"off" with --quiet, "bar" on a terminal, else "lines"."""
    if quiet:
        return "off"
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):
        return "lines"


def format_seconds(s: float | None) -> str:
    """12s, 3m05s, 1h02m; "?" when unknown."""
    if s is None or s != s or s < 0:
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class Estimate:
    """What a progress line shows, computed from counts and clocks alone (testable)."""

    unit: int  # 1-based index of the unit running (or last finished)
    units: int
    inner_done: int | None  # batches done in this unit (None: the unit reports none)
    inner_total: int | None
    tokens_per_s: float | None
    unit_eta: float | None  # seconds
    run_eta: float | None
    unit_elapsed: float = 0.0  # seconds the running unit has taken so far
    # run_eta is a lower bound: the running unit outlasted the mean (or finished its inner work
    # and is still busy), so only the units after it have a measured duration
    at_least: bool = False


def estimate(*, unit: int, units: int, done_units: int, done_seconds: float, done_inner: int,
             done_tokens: int, inner_done: int | None, inner_total: int | None,
             unit_elapsed: float, tokens_per_inner: float | None) -> Estimate:
    """ETAs from the rate so far: inner work (batches) when reported, whole units otherwise.

    done_*: totals over finished units; inner_*: the running unit; tokens_per_inner: the
    expected tokens of one batch (for tokens/s before the first step has ended)."""
    elapsed = done_seconds + unit_elapsed
    tok_rate = None
    if inner_done is not None and tokens_per_inner:
        tokens = done_tokens + inner_done * tokens_per_inner
        tok_rate = tokens / elapsed if elapsed > 0 and tokens else None
    elif done_tokens and done_seconds > 0:
        tok_rate = done_tokens / done_seconds
    remaining_units = max(0, units - unit)
    at_least = False
    mean = done_seconds / done_units if done_units else None
    if inner_done is not None and inner_total and not (inner_done >= inner_total
                                                       and unit_elapsed > 0):
        work = done_inner + inner_done
        rate = work / elapsed if elapsed > 0 and work else None
        unit_eta = (inner_total - inner_done) / rate if rate else None
        per_unit = done_inner / done_units if done_units else inner_total
        run_eta = unit_eta + remaining_units * per_unit / rate if rate else None
    elif mean is not None and unit_elapsed <= mean:
        unit_eta = mean - unit_elapsed
        run_eta = unit_eta + remaining_units * mean
    else:  # nothing finished yet, or this unit outlasted the mean (or has done all its batches
        # and is still reducing): no figure for it, the units after it at their mean
        unit_eta = None
        run_eta = remaining_units * mean if mean is not None else None
        at_least = run_eta is not None
    return Estimate(unit, units, inner_done, inner_total, tok_rate, unit_eta, run_eta,
                    unit_elapsed, at_least)


class LiveProgress:
    """One run's live progress; a context manager that owns its poller thread."""

    def __init__(self, label: str, units: int, *, mode: str, stream: TextIO | None = None,
                 poll: Poll | None = None, tokens_per_inner: float | None = None,
                 unit_name: str = "step", inner_name: str = "batch",
                 line_seconds: float = LINE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in ("bar", "lines", "off"):
            raise ValueError(f"progress mode {mode!r}: expected bar, lines or off")
        self.label, self.units, self.mode = label, int(units), mode
        self.stream = stream if stream is not None else sys.stderr
        self.poll = poll
        self.tokens_per_inner = tokens_per_inner
        self.unit_name, self.inner_name = unit_name, inner_name
        self.line_seconds = line_seconds
        self.clock = clock
        self.unit, self.unit_label = 0, ""
        self.offset = 0  # units an earlier run did (shown in the count, not in the rates)
        # the running unit's own counts and ETAs, replacing the generic ones (PhaseLines)
        self.detail: Callable[[], list[str] | None] | None = None
        self.inner_total: int | None = None
        self.inner_done: int | None = None
        self.done_units, self.done_seconds, self.done_inner, self.done_tokens = 0, 0.0, 0, 0
        self.loss: float | None = None
        self.eval_loss: float | None = None
        self._unit_start = clock()
        self._last_line = clock()
        self._lock = threading.Lock()  # the counts
        self._render_lock = threading.Lock()  # the bar or the stream
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> LiveProgress:
        if self.mode != "off":
            self._thread = threading.Thread(target=self._run, name="ks-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_SECONDS)
        with self._render_lock:
            if self._bar is not None:
                self._bar.close()

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.tick()

    # -- driven by the caller -----------------------------------------------------------------

    def begin(self, unit: int, inner_total: int | None = None, label: str = "") -> None:
        """Unit `unit` (1-based) starts; it has `inner_total` batches (None: not reported)."""
        with self._lock:
            self.unit, self.unit_label = unit, label
            self.inner_total = inner_total
            self.inner_done = 0 if inner_total is not None else None
            self._unit_start = self.clock()
        self._render(line=False)

    def end(self, tokens: int = 0, loss: float | None = None) -> None:
        """The running unit finished (`tokens` trained on, its loss)."""
        with self._lock:
            self.done_units += 1
            self.done_seconds += self.clock() - self._unit_start
            self.done_tokens += tokens
            if self.inner_total is not None:
                self.done_inner += self.inner_total
                self.inner_done = self.inner_total
            if loss is not None:
                self.loss = loss
        self._render(line=False)

    def set_units(self, units: int, offset: int = 0) -> None:
        """The run's number of units, once the caller knows it; `offset` units were done by an
        earlier run (a resumed training) and are shown, not timed: step 41/60 after 40."""
        with self._lock:
            self.units = int(units)
            self.offset = int(offset)
        with self._render_lock:
            if self._bar is not None:
                self._bar.total = self.units

    def unit_elapsed(self) -> float:
        """Seconds the running unit has taken so far."""
        with self._lock:
            return self.clock() - self._unit_start

    def set_eval(self, loss: float) -> None:
        with self._lock:
            self.eval_loss = loss

    def write(self, line: str) -> None:
        """A normal message: above the bar, as a line, or nothing when quiet."""
        if self.mode == "off":
            return
        with self._render_lock:
            if self._bar is not None:
                self._bar.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)

    def write_out(self, line: str) -> None:
        """A result line for stdout (verify rows, analyze messages): always printed, above
        the bar when there is one, even with --quiet (results are not progress)."""
        with self._render_lock:
            if self._bar is not None:
                self._bar.write(line, file=sys.stdout)
            else:
                print(line, flush=True)

    # aliases for the training loop
    def begin_step(self, step: int, n_batches: int) -> None:
        """A training step; its batches are shown only when the engine reports them."""
        self.begin(step, n_batches if self.poll is not None else None)

    def end_step(self, tokens: int, loss: float) -> None:
        self.end(tokens, loss)

    # -- polling and rendering ----------------------------------------------------------------

    def tick(self) -> None:
        """One poll of the engine's counter; a line when one is due (called by the poller)."""
        if self.poll is not None and self.inner_total is not None:
            got = self.poll()
            if got is not None:
                with self._lock:
                    done, total = got
                    if total == self.inner_total:
                        self.inner_done = max(self.inner_done or 0, done)
        due = self.clock() - self._last_line >= self.line_seconds
        self._render(line=due)

    def estimate(self) -> Estimate:
        with self._lock:
            return estimate(unit=self.unit, units=self.units, done_units=self.done_units,
                            done_seconds=self.done_seconds, done_inner=self.done_inner,
                            done_tokens=self.done_tokens, inner_done=self.inner_done,
                            inner_total=self.inner_total,
                            unit_elapsed=(0.0 if self.done_units == self.unit
                                          else self.clock() - self._unit_start),
                            tokens_per_inner=self.tokens_per_inner)

    def describe(self, e: Estimate) -> str:
        """The shared text of a bar postfix and a plain line."""
        label = f" {self.unit_label}" if self.unit_label else ""
        parts = [f"{self.unit_name} {e.unit + self.offset}/{e.units + self.offset}{label}"]
        detail = self.detail() if self.detail is not None else None
        if detail is not None:  # a phase's own work (PhaseLines): its counts and ETAs
            return " | ".join(parts + detail)
        if e.inner_total is not None:
            parts.append(f"{self.inner_name} {e.inner_done}/{e.inner_total}")
        if e.tokens_per_s is not None:
            parts.append(f"{e.tokens_per_s:,.0f} tok/s")
        if e.inner_total is not None:  # a unit with inner work: its own ETA too
            if e.unit_eta is not None or e.unit_elapsed <= 0:
                parts.append(f"{self.unit_name} ETA {format_seconds(e.unit_eta)}")
        if e.unit_eta is None and e.unit_elapsed > 0:
            done = (e.inner_total is not None and e.inner_done is not None
                    and e.inner_done >= e.inner_total)
            parts.append(f"{self.unit_name} running {format_seconds(e.unit_elapsed)}"
                         + (" (all batches done: reducing, updating)" if done else ""))
        parts.append(f"run ETA {'>= ' if e.at_least else ''}{format_seconds(e.run_eta)}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"eval {self.eval_loss:.4f}")
        return " | ".join(parts)

    def _render(self, *, line: bool) -> None:
        if self.mode == "off":
            return
        with self._render_lock:
            self._render_locked(line)

    def _make_bar(self):
        """The tqdm bar, made once the number of units is known (tqdm draws none for 0)."""
        from tqdm import tqdm

        sized = _columns(self.stream) > 0  # a fresh pseudo-terminal reports 0 x 0
        return tqdm(total=self.units, unit=self.unit_name, file=self.stream,
                    dynamic_ncols=sized, ncols=None if sized else DEFAULT_COLUMNS,
                    nrows=None if sized else DEFAULT_ROWS, leave=True,
                    bar_format=self.label + ": {percentage:3.0f}%|{bar}| {desc}")

    def _render_locked(self, line: bool) -> None:
        if self.mode == "bar" and self._bar is None:
            if not self.units:
                return
            self._bar = self._make_bar()
        e = self.estimate()
        if self._bar is not None:
            frac = e.inner_done / e.inner_total if e.inner_total else 0.0
            position = self.done_units + (0.0 if self.done_units >= e.unit else frac)
            self._bar.n = min(float(self.units), position)
            self._bar.set_description_str(self.describe(e), refresh=True)
        elif line:
            print(f"{self.label}: {self.describe(e)}", file=self.stream, flush=True)
            self._last_line = self.clock()


def open_progress(label: str, units: int, *, quiet: bool = False,
                  seconds: float | None = None, stream: TextIO | None = None,
                  **kwargs) -> LiveProgress:
    """The command line's --quiet and --progress-seconds (`seconds`) applied; on stderr."""
    stream = stream if stream is not None else sys.stderr
    return LiveProgress(label, units, mode=choose_mode(quiet, stream), stream=stream,
                        line_seconds=seconds or LINE_SECONDS, **kwargs)


class SizedRuns:
    """Units whose relative sizes are known before they start (a `simulate --sweep`'s runs:
    steps x rounds x c each, `make bench`'s benchmarks): the run ETA is the rest's size at the
    measured seconds per size unit, so a sweep whose first runs are its longest is not timed
    at their mean. A run that outlasts its size's share makes the ETA a lower bound."""

    def __init__(self, live: LiveProgress, sizes: list[float], labels: list[str]) -> None:
        if len(sizes) != len(labels):
            raise ValueError("one label per sized run")
        self.live, self.sizes, self.labels = live, [float(x) for x in sizes], labels
        live.set_units(len(sizes))
        live.detail = self._detail

    def begin(self, i: int) -> None:
        """Run `i` (0-based) starts."""
        self.live.begin(i + 1, label=self.labels[i])

    def end(self) -> None:
        self.live.end()

    def eta(self) -> tuple[float | None, bool]:
        """Seconds left (None before the first run ends) and whether it is a lower bound."""
        live = self.live
        done, elapsed = live.done_units, live.unit_elapsed()
        done_size = sum(self.sizes[:done])
        if not done or done_size <= 0:
            return None, False
        rate = live.done_seconds / done_size
        running = done < live.unit  # a run is in flight (begun, not ended)
        later = sum(self.sizes[live.unit if running else done:]) * rate
        if not running:
            return later, False
        here = self.sizes[live.unit - 1] * rate - elapsed
        return later + max(0.0, here), here < 0

    def _detail(self) -> list[str]:
        eta, bound = self.eta()
        live = self.live
        parts = []
        if live.done_units < live.unit:
            parts.append(f"{live.unit_name} running {format_seconds(live.unit_elapsed())}")
        total = live.done_seconds + (live.unit_elapsed() if live.done_units < live.unit else 0)
        parts.append(f"elapsed {format_seconds(total)}")
        parts.append(f"run ETA {'>= ' if bound else ''}{format_seconds(eta)}")
        return parts


def train_progress(engine: Engine, cfg: Config, *, quiet: bool = False,
                   seconds: float | None = None) -> LiveProgress:
    """`spheres train`'s live progress: polls the engine's batch counter when it has one."""
    poll = engine.batches_done if isinstance(engine, CountsBatches) else None
    return open_progress("train", 0, quiet=quiet, seconds=seconds, poll=poll,
                         tokens_per_inner=cfg.train.batch_size * cfg.model.seq_len)


ANALYZE_PHASES = ("data", "train", "throughput", "verify", "drill", "engines", "repro",
                  "memory", "scaling")
RATE_PHASE, RATE_KIND = "train", "step"  # the phase and work whose measured rate times the rest


@dataclass(frozen=True)
class Stage:
    """Part of a phase, sized before it starts: the work kind it reports (`report_work`), its
    model FLOPs (timed at the training steps' measured seconds per FLOP) and its fixed seconds
    (drill timeouts, process starts, per-case overheads)."""

    kind: str
    flops: float = 0.0
    seconds: float = 0.0

    def estimate(self, per_flop: float) -> float:
        return self.flops * per_flop + self.seconds


PhaseCosts = dict[str, tuple[Stage, ...]]


@dataclass
class PhaseWork:
    """Work inside one phase (steps, runs, cases): how much of it is done, its tokens, and the
    clock when it began and when the last unit ended; rates come from finished units only."""

    kind: str  # "step", "run", "case", "drill"
    total: int
    started: float
    done: int = 0
    tokens: int = 0
    last: float = 0.0

    def per_unit(self) -> float | None:
        return (self.last - self.started) / self.done if self.done else None

    def overrun(self, now: float) -> bool:
        """The running unit has taken longer than the mean unit so far."""
        per = self.per_unit()
        return per is not None and self.done < self.total and now - self.last > per

    def eta(self, now: float) -> float | None:
        """Seconds left at the measured rate; None before the first unit has ended. While the
        running unit outlasts the mean, the units after it (a lower bound, never "0s")."""
        per = self.per_unit()
        if per is None:
            return None
        if self.overrun(now):
            return (self.total - self.done - 1) * per
        return max(0.0, (self.total - self.done) * per - (now - self.last))

    def parts(self, now: float) -> list[str]:
        out = [f"{self.kind} {self.done}/{self.total}"]
        span = self.last - self.started
        if self.tokens and span > 0:
            out.append(f"{self.tokens / span:,.0f} tok/s")
        eta = self.eta(now)
        if (eta is None or self.overrun(now)) and self.done < self.total:
            out.append(f"{self.kind} {self.done + 1} running {format_seconds(now - self.last)}")
        bound = ">= " if self.overrun(now) else ""
        out.append(f"phase ETA {bound}{format_seconds(eta)}")
        return out


def report_work(say: Callable[[str], None], kind: str, done: int, total: int,
                tokens: int = 0) -> None:
    """Tell the phase progress behind `say` (a `PhaseLines`) how far its phase is: call with
    done=0 when the work starts and after each unit; a plain `say` ignores it."""
    work = getattr(say, "work", None)
    if work is not None:
        work(kind, done, total, tokens)


def plan_phases(say: Callable[[str], None], costs: PhaseCosts) -> None:
    """Give the phase progress behind `say` every phase's sizes (`harness.analysis.phases.
    phase_costs`), so the run ETA is a figure once the training steps have a rate."""
    plan = getattr(say, "plan", None)
    if plan is not None:
        plan(costs)


def enter_phase(say: Callable[[str], None], tag: str) -> None:
    """Start phase `tag` on the progress behind `say` (for phases whose lines carry no tag)."""
    enter = getattr(say, "enter", None)
    if enter is not None:
        enter(tag)


class PhaseLines:
    """`analyze`'s `say`: prints each line and advances the progress when a line's tag
    (`[train] ...`) names a later phase; phases skipped after an error just do not appear.
    Inside a phase, `work` (`report_work`) shows the units done, tokens/s and the phase's ETA
    from the measured rate. The run ETA: once the training steps have a measured seconds per
    FLOP and every later phase has its sizes (`plan`), the running stage's ETA plus each later
    stage's FLOPs at that rate plus its fixed seconds; without them, the phase's ETA and "more
    phases to go", a lower bound (no figure is invented)."""

    def __init__(self, live: LiveProgress, phases: tuple[str, ...] = ANALYZE_PHASES) -> None:
        self.live, self.phases = live, phases
        self.current: str | None = None
        self.work_done: PhaseWork | None = None
        self.costs: PhaseCosts = {}
        self.per_flop: float | None = None  # the training steps' measured seconds per FLOP
        live.set_units(len(phases))
        live.detail = self._detail

    def __call__(self, line: str) -> None:
        self.live.write_out(line)
        tag = line[1:line.find("]")] if line.startswith("[") and "]" in line else None
        if tag in self.phases and tag != self.current:
            self.enter(tag)

    def enter(self, tag: str) -> None:
        if self.current is not None:
            self.live.end()
        self.current, self.work_done = tag, None
        self.live.begin(self.phases.index(tag) + 1, label=tag)

    def work(self, kind: str, done: int, total: int, tokens: int = 0) -> None:
        now = self.live.clock()
        w = self.work_done
        if w is None or w.kind != kind or done == 0:
            w = self.work_done = PhaseWork(kind, total, started=now, last=now)
        w.done, w.total, w.tokens, w.last = done, total, tokens, now
        stage = self._stage(RATE_PHASE, RATE_KIND)
        if (self.current == RATE_PHASE and kind == RATE_KIND and done and stage is not None
                and stage.flops > 0):
            self.per_flop = w.per_unit() / (stage.flops / total)
        self.live.tick()

    def plan(self, costs: PhaseCosts) -> None:
        self.costs = dict(costs)

    def _stage(self, phase: str, kind: str) -> Stage | None:
        return next((s for s in self.costs.get(phase, ()) if s.kind == kind), None)

    def modelled_eta(self, now: float) -> tuple[float, bool] | None:
        """The run's seconds left from the measured rate and the planned sizes (and whether it
        is a lower bound: the running unit outlasts the mean); None without a rate or sizes."""
        if self.per_flop is None or self.current not in self.costs:
            return None
        later = self.phases[self.phases.index(self.current) + 1:]
        if any(p not in self.costs for p in later):
            return None
        pf, stages, w = self.per_flop, self.costs[self.current], self.work_done
        kinds = [s.kind for s in stages]
        over = False  # the running stage has outlasted its model: what follows it, a bound
        if w is not None and w.kind in kinds:
            i = kinds.index(w.kind)
            here = w.eta(now)
            if here is None:  # its first unit still running: the model, less its time so far
                here = stages[i].estimate(pf) - (now - w.started)
                over = here < 0
            rest = stages[i + 1:]
        else:  # the phase has reported no work yet
            here = sum(s.estimate(pf) for s in stages) - self.live.unit_elapsed()
            over = here < 0 and bool(stages)
            rest = ()
        total = max(0.0, here) + sum(s.estimate(pf) for s in rest)
        total += sum(s.estimate(pf) for p in later for s in self.costs[p])
        return total, over or (w is not None and w.overrun(now))

    def _detail(self) -> list[str] | None:
        w = self.work_done
        now = self.live.clock()
        modelled = self.modelled_eta(now)
        if modelled is not None:
            parts = (w.parts(now) if w is not None
                     else [f"phase running {format_seconds(self.live.unit_elapsed())}"])
            eta, bound = modelled
            return parts + [f"run ETA {'>= ' if bound else ''}{format_seconds(eta)}"]
        if w is None:
            return None
        parts = w.parts(now)
        eta = w.eta(now)
        later = len(self.phases) - (self.phases.index(self.current) + 1 if self.current else 0)
        if eta is not None and (later or w.overrun(now)):
            parts.append(f"run ETA >= {format_seconds(eta)}"
                         + (f" ({later} more phases)" if later else ""))
        else:
            parts.append(f"run ETA {format_seconds(eta)}")
        return parts

    def finish(self) -> None:
        if self.current is not None:
            self.live.end()
            self.current, self.work_done = None, None
