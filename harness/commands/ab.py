"""`spheres ab`: is B slower than A? Interleaved fresh processes, an A/A floor, statistics."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands import options as o
from harness.commands.preflight import Outputs
from harness.figures.thresholds import AB_MIN_ROUNDS
from plumbing.errors import ExitCode
from plumbing.outputs import write_json, write_output
from reference.config import PRESETS

DESCRIPTION = ("Time the fast engine's training throughput of two trees (git revisions, "
               "exported to a temporary folder, or checkout folders) in alternating fresh "
               "processes with an A/A noise floor measured in the same session; report B/A with "
               "its interval and the Mann-Whitney U p-value; exit 1 when B is slower beyond "
               "the noise.")
OUTPUTS: Outputs = (("--json", "json", "file"), ("--markdown", "markdown", "file"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A", help="the baseline: a revision of --repo or a folder")
    p.add_argument("b", metavar="B", help="the candidate: a revision of --repo or a folder")
    p.add_argument("--repo", default=".",
                   help="git repository the revisions are read from (default: .)")
    p.add_argument("--rounds", type=o.int_in_range(AB_MIN_ROUNDS, 200), default=10,
                   help=f"rounds of A, A', B (default: 10; at least {AB_MIN_ROUNDS}, the "
                        "fewest the U test can decide with)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="workload preset (default: tiny)")
    p.add_argument("--group-size", type=o.positive_int, default=None,
                   help="batches per step (default: the preset's G)")
    p.add_argument("--threads", type=o.positive_int, default=1,
                   help="worker threads of the trainer (default: 1)")
    p.add_argument("--steps", type=o.positive_int, default=50,
                   help="timed training steps per process, after one warm-up step (default: 50)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: tokens per second (default); cpu: tokens per CPU second of the "
                        "process, steadier beside other load but blind to time spent waiting")
    p.add_argument("--seed", type=o.int_in_range(0, 2**32 - 1), default=0,
                   help="seed of the order of A, A', B within each round (default: 0)")
    p.add_argument("--json", type=Path, default=None, help="write every sample and figure")
    p.add_argument("--markdown", type=Path, default=None, help="write the table")


def run(args: argparse.Namespace) -> int:
    """Resolve both sides (exit 2 before any work), measure, judge, write."""
    from harness.bench.ab import AbWorkload, markdown, resolve_side, run_ab
    from harness.run.stop import Stopped, deferred
    from reference.config import preset

    a = resolve_side(args.a, args.repo, "A")
    b = resolve_side(args.b, args.repo, "B")
    work = AbWorkload(args.preset, args.group_size or preset(args.preset).train.group_size,
                      args.threads, args.steps, args.clock)
    try:
        with deferred("the measuring process in flight is ended"):
            result = run_ab(a, b, work, rounds=args.rounds, seed=args.seed,
                            say=lambda line: print(line, flush=True))
    except Stopped as exc:  # children ended, temporary trees removed; nothing reads as finished
        print(f"ab: INTERRUPTED by {exc.name}: the comparison is incomplete; no --json or "
              "--markdown written", flush=True)
        raise
    text = markdown(result)
    print("\n" + text, end="", flush=True)
    if args.json is not None:
        write_json(args.json, result.to_json(), "--json", indent=2)
    if args.markdown is not None:
        write_output(args.markdown, "# A/B timing\n\n" + text, "--markdown")
    return ExitCode.VERIFY_FAILED if result.regressed else ExitCode.OK
