"""`make bench`: run the benchmark suites, then judge the figures against the targets.

Steps: pytest runs `benchmarks/` with pytest-benchmark enabled and writes its JSON to
`reports/bench/<timestamp>.json`; `summarize` turns that JSON (timings plus the `extra_info`
every benchmark stored) into tokens/s per engine and thread count, scaling efficiency, model
FLOP/s against the machine's measured float32 matmul peak, Node Zero's serial share and peak
memory; the targets judge it. Writes `reports/bench/summary.md` and `summary.json` (with machine,
git commit and config), prints the table, exits 1 when a target is missed, else 0.

Every rate uses the best (minimum) round time of its benchmark: on a shared machine the minimum
is the measurement least disturbed by other processes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bench.history import (
    Comparison,
    compare_runs,
    markdown_table,
    previous_run,
    regression_message,
)
from harness.bench.render import print_summary, render_markdown, write_plots
from harness.bench.summary import summarize
from harness.measure.machine import REPO_ROOT, machine_facts
from plumbing.outputs import write_json, write_output


@dataclass(frozen=True)
class BenchOptions:
    """One `make bench` run's settings, made once from its command line (`parse_args`)."""

    preset: str
    scaling_threads: str
    scaling_group: int
    seed_threads: int
    seed_group: int
    rounds: int
    matmul_n: int
    quick: bool
    out_dir: str
    summarize: str | None  # only rebuild the summary from this pytest-benchmark JSON
    history: str | None  # pytest-benchmark storage folder of every run, None: not kept
    baseline: str | None  # committed baseline run to compare with, None: none
    pytest_args: tuple[str, ...] = ()
    quiet: bool = False  # no per-benchmark progress lines


def pytest_command(json_path: Path, args: BenchOptions) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-m", "bench", "-p", "no:cacheprovider",
           "--benchmark-enable", f"--benchmark-json={json_path}", "--benchmark-sort=name",
           "--timeout=1800", "-q", "-rs",
           f"--ks-preset={args.preset}", f"--ks-scaling-threads={args.scaling_threads}",
           f"--ks-scaling-group={args.scaling_group}", f"--ks-seed-threads={args.seed_threads}",
           f"--ks-seed-group={args.seed_group}", f"--ks-rounds={args.rounds}",
           f"--ks-matmul-n={args.matmul_n}"]
    if not args.quiet:  # a line per benchmark, elapsed and ETA (bench/progress_plugin.py)
        cmd += ["-p", "harness.bench.progress_plugin"]
    if args.history:  # every run kept, with commit and machine
        cmd += ["--benchmark-autosave", "--benchmark-save-data",  # raw rounds: the U test
                f"--benchmark-storage=file://{args.history}"]
    return cmd + list(args.pytest_args)


def parse_args(argv: list[str] | None) -> BenchOptions:
    p = argparse.ArgumentParser(prog="python -m harness.bench.runner",
                                description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="seed", help="model preset (default: seed)")
    p.add_argument("--scaling-threads", default="1,2,4", help="thread counts of the sweep")
    p.add_argument("--scaling-group", type=int, default=8, help="batches per step in the sweep")
    p.add_argument("--seed-threads", type=int, default=63, help="threads of the seed workload")
    p.add_argument("--seed-group", type=int, default=0,
                   help="batches of the seed workload (0 = the preset's G)")
    p.add_argument("--rounds", type=int, default=2, help="measured steps per benchmark")
    p.add_argument("--matmul-n", type=int, default=2048, help="sgemm size for the peak")
    p.add_argument("--quick", action="store_true",
                   help="prove the pipeline in about a minute: small preset, small groups")
    p.add_argument("--out-dir", default=str(REPO_ROOT / "reports" / "bench"))
    p.add_argument("--summarize", metavar="JSON",
                   help="only rebuild the summary from an existing pytest-benchmark JSON")
    p.add_argument("--history", default=None,
                   help="pytest-benchmark storage folder of every run (default for a real run: "
                        ".benchmarks; with --summarize: none); 'none' to skip")
    p.add_argument("--baseline", default=None,
                   help="committed baseline run to compare with (default for a real run: "
                        "benchmarks/baseline.json; with --summarize: none); 'none' to skip")
    p.add_argument("--quiet", action="store_true",
                   help="no per-benchmark progress lines (bench i/N, elapsed, ETA)")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    a = p.parse_args(argv)
    history, baseline = a.history, a.baseline
    if not a.summarize:
        history = history or str(REPO_ROOT / ".benchmarks")
        baseline = baseline or str(REPO_ROOT / "benchmarks" / "baseline.json")
    preset, scaling_group, seed_group = ("small", 4, 12) if a.quick else (
        a.preset, a.scaling_group, a.seed_group)
    return BenchOptions(preset=preset, scaling_threads=a.scaling_threads,
                        scaling_group=scaling_group, seed_threads=a.seed_threads,
                        seed_group=seed_group, rounds=a.rounds, matmul_n=a.matmul_n,
                        quick=a.quick, out_dir=a.out_dir, summarize=a.summarize,
                        history=None if history == "none" else history,
                        baseline=None if baseline == "none" else baseline,
                        pytest_args=tuple(a.pytest_args), quiet=a.quiet)


def compare_history(run: dict[str, Any], args: BenchOptions,
                    out_dir: Path) -> list[Comparison]:
    """This run against the previous stored run and the committed baseline; the tables are
    printed and written to `comparison.md` beside the summary."""
    found: list[tuple[str, Path]] = []
    if args.history:
        prev = previous_run(Path(args.history), run)
        if prev is not None:
            found.append(("the previous run", prev))
        else:
            print(f"history: no earlier run with these settings on this machine in "
                  f"{args.history}; this run is the first")
    if args.baseline:
        if Path(args.baseline).is_file():
            found.append(("the committed baseline", Path(args.baseline)))
        else:
            print(f"history: no baseline at {args.baseline}")
    comparisons = [compare_runs(json.loads(path.read_text()), run, against=label,
                                path=str(path)) for label, path in found]
    if comparisons:
        lines = ["# Benchmark comparison", ""]
        for c in comparisons:
            lines += markdown_table(c) + [""]
        text = "\n".join(lines)
        print(text)
        write_output(out_dir / "comparison.md", text)
    return comparisons


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pytest_rc = 0
    if args.summarize:
        json_path = Path(args.summarize)
    else:
        json_path = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.preset}.json"
        cmd = pytest_command(json_path, args)
        print("running:", " ".join(cmd), flush=True)
        pytest_rc = subprocess.run(cmd, cwd=REPO_ROOT).returncode
    if not json_path.is_file():
        print(f"error: no benchmark results at {json_path}: pytest exited {pytest_rc} before "
              "writing them; fix the failure shown above and rerun `make bench`")
        return 1
    summary = summarize(json.loads(json_path.read_text()))
    summary.bench_json = str(json_path)
    summary.pytest_exit_code = pytest_rc
    if summary.machine is None:
        summary.machine = machine_facts()
    summary.plots = write_plots(summary, out_dir)
    write_json(out_dir / "summary.json", summary.to_json(), indent=2)
    write_output(out_dir / "summary.md", render_markdown(summary))
    print_summary(summary)
    print(f"wrote {out_dir / 'summary.md'} and {out_dir / 'summary.json'}")
    history = compare_history(json.loads(json_path.read_text()), args, out_dir)
    failed = [v for v in summary.targets if v.status == "fail"]
    regressed = [c for c in history if c.failed]
    for c in regressed:
        print(f"FAIL: {regression_message(c)}")
    if pytest_rc not in (0, 5):
        print(f"FAIL: the benchmark run itself failed (pytest exit {pytest_rc})")
    if failed:
        print(f"FAIL: {len(failed)} target(s) missed (details above): "
              + "; ".join(v.name for v in failed))
    return 1 if failed or regressed or pytest_rc not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
