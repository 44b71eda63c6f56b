"""The report's pictures: one function per plot, each writes a PNG and returns its path.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot global state), so
plotting works headless and from any thread. Every function rejects empty or mismatched input
with a ValueError naming the argument, instead of writing an empty picture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from plumbing.outputs import write_output

_SIZE = (7.0, 4.2)  # inches: readable inline in a markdown report
_DPI = 110


def _check_series(name: str, values: Sequence[float]) -> list[float]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{name} is empty: nothing to plot; pass at least one measurement")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} holds NaN or Inf: {values}; plot only measured finite values")
    return values


def _check_pair(xname: str, xs: Sequence[float], yname: str, ys: Sequence[float]):
    xs, ys = _check_series(xname, xs), _check_series(yname, ys)
    if len(xs) != len(ys):
        raise ValueError(f"{xname} has {len(xs)} values but {yname} has {len(ys)}; "
                         "pass one y per x")
    return xs, ys


def _new_figure() -> tuple[Figure, object]:
    fig = Figure(figsize=_SIZE, dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Figure, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    write_output(out, lambda fh: fig.savefig(fh, format="png"))
    return out


def plot_throughput(threads: Sequence[int], tokens_per_s: Sequence[float],
                    out_path: str | Path, cores: int | None = None) -> Path:
    """Tokens/s against worker threads, with ideal linear scaling from the first point."""
    xs, ys = _check_pair("threads", threads, "tokens_per_s", tokens_per_s)
    order = sorted(range(len(xs)), key=xs.__getitem__)
    xs, ys = [xs[i] for i in order], [ys[i] for i in order]
    fig, ax = _new_figure()
    ax.plot(xs, ys, "o-", label="measured")
    per_thread = ys[0] / xs[0]
    ideal_x = [x for x in xs if cores is None or x <= cores] or xs[:1]
    ax.plot(ideal_x, [per_thread * x for x in ideal_x], "--", color="gray",
            label="linear from first point")
    if cores:
        ax.axvline(cores, color="red", alpha=0.4, label=f"{cores} cores")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("worker threads")
    ax.set_ylabel("tokens / s")
    ax.set_title("Throughput against threads")
    ax.legend()
    return _save(fig, out_path)


def plot_thread_cpu(cpu_seconds: Mapping[str, float], out_path: str | Path,
                    wall_seconds: float | None = None) -> Path:
    """One bar per thread name: CPU seconds (a wall-time line shows what one core could do)."""
    if not cpu_seconds:
        raise ValueError("cpu_seconds is empty: no thread was sampled; run the sampler first")
    names = list(cpu_seconds)
    values = _check_series("cpu_seconds", [cpu_seconds[n] for n in names])
    fig, ax = _new_figure()
    fig.set_size_inches(max(_SIZE[0], 0.18 * len(names) + 2), _SIZE[1])
    ax.bar(range(len(names)), values)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    if wall_seconds:
        ax.axhline(wall_seconds, color="red", alpha=0.5, label="wall time (one full core)")
        ax.legend()
    ax.set_ylabel("CPU seconds")
    ax.set_title("CPU seconds per thread")
    return _save(fig, out_path)


def plot_memory(times: Sequence[float], rss_bytes: Sequence[float], out_path: str | Path,
                limit_bytes: float | None = None) -> Path:
    """Process RSS (MB) over time, with an optional limit line (e.g. the seed's 1.32 GB)."""
    xs, ys = _check_pair("times", times, "rss_bytes", rss_bytes)
    fig, ax = _new_figure()
    ax.plot(xs, [y / 1e6 for y in ys], "-", label="RSS")
    if limit_bytes:
        ax.axhline(limit_bytes / 1e6, color="red", linestyle="--",
                   label=f"limit {limit_bytes / 1e6:.0f} MB")
    ax.set_xlabel("seconds")
    ax.set_ylabel("resident memory (MB)")
    ax.set_title("Memory over time")
    ax.legend()
    return _save(fig, out_path)


def plot_utilisation(times: Sequence[float], cpu_use: Sequence[float],
                     out_path: str | Path) -> Path:
    """CPU use over time as a share of all cores (CPU seconds / wall seconds / cores)."""
    xs, ys = _check_pair("times", times, "cpu_use", cpu_use)
    fig, ax = _new_figure()
    ax.plot(xs, [100.0 * y for y in ys], "-", label="all threads")
    ax.axhline(100.0, color="grey", linestyle=":", label="every core busy")
    ax.set_ylim(0, 110)
    ax.set_xlabel("seconds")
    ax.set_ylabel("CPU use (% of all cores)")
    ax.set_title("CPU use over time")
    ax.legend()
    return _save(fig, out_path)


def plot_equivalence(threads: Sequence[int], errors: Sequence[float], out_path: str | Path,
                     tolerance: float, label: str = "max relative error") -> Path:
    """Equivalence error against threads on a log scale, with the tolerance line.

    An error of exactly 0 (bitwise identical) cannot sit on a log axis: it is drawn at the
    bottom of the axis as a triangle marker and labelled "0 (bitwise)".
    """
    xs, ys = _check_pair("threads", threads, "errors", errors)
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance={tolerance!r} must be a positive number for a log axis")
    if any(y < 0 for y in ys):
        raise ValueError("errors must be >= 0 (they are norms)")
    positive = [y for y in ys if y > 0]
    floor = min(positive + [tolerance]) / 100
    fig, ax = _new_figure()
    ax.set_yscale("log")
    ax.plot(xs, [y if y > 0 else floor for y in ys], "-", color="C0", alpha=0.5)
    ax.plot([x for x, y in zip(xs, ys, strict=True) if y > 0], positive, "o", color="C0",
            label=label)
    zeros = [x for x, y in zip(xs, ys, strict=True) if y == 0]
    if zeros:
        ax.plot(zeros, [floor] * len(zeros), "v", color="green", label="0 (bitwise)")
    ax.axhline(tolerance, color="red", linestyle="--", label=f"tolerance {tolerance:g}")
    ax.set_xlabel("worker threads")
    ax.set_ylabel(label)
    ax.set_title("Equivalence error against threads")
    ax.legend()
    return _save(fig, out_path)


def plot_loss(steps: Sequence[int], losses: Sequence[float], out_path: str | Path, *,
              eval_steps: Sequence[int] = (), eval_losses: Sequence[float] = ()) -> Path:
    """Training loss per step, and the held-out loss where it was measured."""
    xs, ys = _check_pair("steps", steps, "losses", losses)
    fig, ax = _new_figure()
    ax.plot(xs, ys, "-", marker="." if len(xs) < 50 else None, label="training (the step's group)")
    if eval_steps:
        ex, ey = _check_pair("eval_steps", eval_steps, "eval_losses", eval_losses)
        ax.plot(ex, ey, "o--", label="held-out (never trained on)")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean cross-entropy)")
    ax.set_title("Loss curve")
    return _save(fig, out_path)


def plot_simulated_scaling(threads: Sequence[int], step_seconds: Sequence[float],
                           ideal_seconds: Sequence[float], out_path: str | Path, *,
                           cores: int, title: str = "") -> Path:
    """Simulated step time against worker threads, with the ideal ceil(G/min(T,N)) x c + tail."""
    xs, ys = _check_pair("threads", threads, "step_seconds", step_seconds)
    _, ideal = _check_pair("threads", threads, "ideal_seconds", ideal_seconds)
    order = sorted(range(len(xs)), key=xs.__getitem__)
    fig, ax = _new_figure()
    ax.plot([xs[i] for i in order], [ys[i] for i in order], "o-", label="simulated step")
    ax.plot([xs[i] for i in order], [ideal[i] for i in order], "--", color="gray",
            label="ideal: ceil(G / min(T, N)) x c + fold and update")
    ax.axvline(cores, color="red", alpha=0.4, label=f"{cores} simulated cores")
    ax.axvline(12, color="orange", alpha=0.4, label="12 positions (the old chain's limit)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("worker threads T")
    ax.set_ylabel("step seconds")
    ax.set_title(title or f"Simulated step time, {cores} cores")
    ax.legend(fontsize=8)
    return _save(fig, out_path)
