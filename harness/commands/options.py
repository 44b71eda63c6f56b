"""Option types and the option groups several commands share (`--preset`, `--engine`, ...).

Each command module adds its own options (`add_arguments`) and calls these for the groups it
shares with others, so every shared option has one spelling, one default and one help text.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from reference.config import PRESETS, Config, preset

MAX_SEED = 2**63 - 1  # numpy's SeedSequence takes any non-negative int; int64 keeps JSON exact
MAX_STEPS = 10**9  # bounds for counts typed on the command line: far above any real run
MAX_LR = 10.0  # AdamW steps of size ~lr: above 10 every weight is destroyed in one step
MAX_STALL_TIMEOUT = 7 * 86400.0  # a week; beyond that a stall would never be reported


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def finite_number(low: float, high: float = math.inf, *, low_inclusive: bool = False
                  ) -> Callable[[str], float]:
    """argparse type: a finite float in (low, high] (or [low, high] with low_inclusive)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        above = value >= low if low_inclusive else value > low
        if not above:
            what = ("positive" if low == 0 and not low_inclusive
                    else f"{'at least' if low_inclusive else 'greater than'} {low:g}")
            raise argparse.ArgumentTypeError(f"must be {what}, got {value:g}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {value:g}")
        return value
    return parse


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must lie in [{low}, {high}], got {value}")
        return value
    return parse


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = finite_number(0, 1)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (e.g. 0.1), got {value:g}")
    return value


def checked_text(parse: Callable[[str], object]) -> Callable[[str], str]:
    """argparse type: `text` unchanged once `parse(text)` accepts it (its InputError becomes a
    usage error, exit 2, at parse time: before any work). For lists parsed again where used."""
    def check(text: str) -> str:
        from plumbing.errors import InputError

        try:
            parse(text)
        except InputError as exc:  # argparse names the option: drop the message's own
            message = str(exc)
            if message.startswith("--") and f" {text!r}: " in message:
                message = message.split(" ", 1)[1]
            raise argparse.ArgumentTypeError(message) from None
        return text
    return check


def thread_counts(text: str) -> str:
    from harness.run.engines import parse_threads

    return checked_text(parse_threads)(text)


def rank_counts(text: str) -> str:
    from harness.verify.ranks import parse_ranks

    return checked_text(parse_ranks)(text)


def ranks_count(text: str) -> int:
    from fast.mpi_topology import MAX_RANKS

    value = positive_int(text)
    if value > MAX_RANKS:
        raise argparse.ArgumentTypeError(f"the {MAX_RANKS} level-2 spheres allow 1 to "
                                         f"{MAX_RANKS} ranks, got {value}")
    return value


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="model and batch sizes (SPEC 1): tiny, small or seed (default: tiny)")
    p.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=0,
                   help="initialisation and synthetic-corpus seed (default: 0)")
    p.add_argument("--data", default=None,
                   help="text file, folder of text files, or SQuAD JSON "
                        "(default: the built-in synthetic corpus)")
    p.add_argument("--group-size", type=positive_int, default=None,
                   help="batches per step G (default: the preset's); independent of --threads")


def add_engine(p: argparse.ArgumentParser, *, default_engine: str) -> None:
    from harness.run.plugins import engine_names

    p.add_argument("--engine", default=default_engine, metavar="ENGINE",
                   help=f"{', '.join(engine_names())} (see `spheres engines`), exec:COMMAND or "
                        f"module:factory (docs/ENGINES.md) (default: {default_engine})")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="worker threads for the fast engine (default: number of cores)")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"],
                   help="fast-engine precision (default: float32; the reference is float64)")


def timeout_seconds(floor: float) -> Callable[[str], float]:
    """argparse type: a timeout in [floor, a week]; each floor's reason is in thresholds.py."""
    parse = finite_number(floor, MAX_STALL_TIMEOUT, low_inclusive=True)

    def check(text: str) -> float:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:
            if "at least" not in str(exc):
                raise
            raise argparse.ArgumentTypeError(
                f"{exc}: below {floor:g} s a healthy run is called a stall (the waiters poll "
                "every 0.2 s and a loaded machine pauses longer)") from None
    return check


def add_stall_timeout(p: argparse.ArgumentParser) -> None:
    from harness.figures.thresholds import MIN_STALL_TIMEOUT

    p.add_argument("--stall-timeout", type=timeout_seconds(MIN_STALL_TIMEOUT), default=60.0,
                   help=f"seconds without progress before a thread (or an engine process) is "
                        f"declared stuck, at least {MIN_STALL_TIMEOUT:g} (default: 60)")


def add_faults(p: argparse.ArgumentParser) -> None:
    add_stall_timeout(p)
    p.add_argument("--inject", action="append", default=[], metavar="KIND:target=T,step=N",
                   help="fault drill, repeatable: KIND is hang|raise|nan|slow, target worker=I or "
                        "node-zero, e.g. hang:target=worker=1,step=2 or "
                        "slow:target=node-zero,step=0,seconds=3")


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true",
                   help="no live progress (bar on a terminal, plain lines otherwise)")
    from harness.figures.thresholds import MIN_PROGRESS_SECONDS

    p.add_argument("--progress-seconds",
                   type=finite_number(MIN_PROGRESS_SECONDS, MAX_STALL_TIMEOUT, low_inclusive=True),
                   default=None,
                   help="seconds between plain progress lines when stderr is not a terminal "
                        "(default: 5)")


def add_trace(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", type=Path, default=None, metavar="FILE.json",
                   help="write the threads' timeline as a Chrome trace (open in Perfetto or "
                        "chrome://tracing)")


def add_mpi(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mpi", action="store_true",
                   help="run across MPI ranks: mpiexec -n R spheres ... --mpi (R = 1..144; "
                        "needs the [mpi] extra)")


def config_from_args(args: argparse.Namespace, **train: object) -> Config:
    """The preset with --seed, --group-size and the given train settings (those not None)
    applied, validated."""
    changes: dict[str, object] = {"seed": args.seed}
    if args.group_size:
        changes["group_size"] = args.group_size
    changes.update({name: value for name, value in train.items() if value is not None})
    return preset(args.preset, **changes)


_UNSET = object()


def explicit_dests(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations the user set on the command line (parsed again with no defaults)."""
    parsers = [parser]
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            parsers += list(action.choices.values())
    saved = []
    for p in parsers:
        for action in p._actions:  # noqa: SLF001
            if action.dest not in ("help", "command") and not isinstance(
                    action, argparse._AppendAction):  # noqa: SLF001 - appends need a list
                saved.append((action, action.default))
                action.default = _UNSET
    try:
        ns = parser.parse_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    return {k for k, v in vars(ns).items() if v is not _UNSET}
