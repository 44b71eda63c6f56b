"""What one `spheres analyze` measures: the plan from the options, and where it reports.

`--quick` shrinks every phase; the defaults are the main job's.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.run.corpus import one_group_tokens
from plumbing.cores import usable_cores
from reference.config import preset as _preset

SEED_DATASET_TOKENS = 4_800_000  # the seed's 24 MB SQuAD set held about 4.8M tokens


Say = Callable[[str], None]  # prints one line of the analysis' log


def say(line: str) -> None:
    print(line, flush=True)


@dataclass
class Plan:
    """What one analysis measures; the defaults are the main job's, `--quick` shrinks them."""

    preset: str
    data: str | None
    threads: int
    steps: int
    seed: int
    stall_timeout: float
    inject: list[str]
    quick: bool
    synthetic_tokens: int
    sweep_threads: list[int]  # equivalence gates at the tiny preset
    throughput_threads: list[int]
    throughput_group: int  # batches per group in the throughput sweep
    command: str = ""
    extra_verify: list[str] = field(default_factory=list)  # more presets for the gates
    extra_threads: list[int] = field(default_factory=list)  # their (shorter) thread sweep
    engines: list[str] = field(default_factory=list)  # --engine: more engines side by side
    # the reproducibility table (harness/bench/repro.py, issue 23), at the tiny preset
    repro_threads: list[int] = field(default_factory=lambda: [1, 2, 3])
    repro_worlds: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    repro_dtypes: list[str] = field(default_factory=lambda: ["float32", "float64"])


def make_plan(*, preset: str, quick: bool, threads: int | None, steps: int | None,
              data: str | None, seed: int, stall_timeout: float, inject: list[str],
              engines: list[str] | None = None) -> Plan:
    """The analysis `spheres analyze` runs: its options in, every phase's sizes out (`quick`
    shrinks them; threads and steps None: the defaults)."""
    name = "tiny" if quick else preset
    cfg = _preset(name)
    threads = threads or usable_cores()
    if quick:
        steps = steps or 6
        synth = one_group_tokens(cfg, 3)
        sweep = [1, 2, 3, 5, 7, 11, 12, 13, 24, 63]
        tput = sorted({1, 2, threads, 4, 63})
        tput_g = cfg.train.group_size
    else:
        steps = steps or (3 if name == "seed" else 10)
        synth = SEED_DATASET_TOKENS if name == "seed" else one_group_tokens(cfg, 20)
        sweep = list(range(1, 64))
        tput = sorted({1, 2, threads, 4, 12, 63})
        tput_g = min(cfg.train.group_size, 4 if name == "seed" else 12)
    return Plan(preset=name, data=data, threads=threads, steps=steps, seed=seed,
                stall_timeout=stall_timeout, inject=list(inject), quick=quick,
                synthetic_tokens=synth, sweep_threads=sweep, throughput_threads=tput,
                throughput_group=tput_g, command="spheres " + " ".join(sys.argv[1:]),
                extra_verify=[] if quick else ["small"],
                extra_threads=sorted({1, 2, threads, 13, 63}),
                engines=list(engines or []),
                **({"repro_threads": [1, 2], "repro_worlds": [1, 2],
                    "repro_dtypes": ["float64"]} if quick else {}))


def default_out(plan: Plan) -> Path:
    suffix = "-quick" if plan.quick else ""
    return Path("reports") / f"{dt.date.today().isoformat()}-{plan.preset}{suffix}"
