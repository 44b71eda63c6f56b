"""`--resume` with a setting that disagrees with the checkpoint: refused, naming the setting.

A resumed run continues the checkpoint's config bitwise, so an option that would change it
(a different --lr, --seed, ...) cannot be honoured silently. The table below pairs each train
option with the config field it sets; a new option that lands in the config gets one row.
Only options the user typed are compared (argparse defaults are not a request). Options that
do not change the result (--threads, --stall-timeout, --checkpoint-dir, ...) are free.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plumbing.errors import InputError
from reference.config import Config


@dataclass(frozen=True)
class ResumeRule:
    option: str  # as typed on the command line
    dest: str  # argparse destination
    field: Callable[[Config], Any]  # the checkpoint's value of the same setting
    name: str  # how the config calls it, for the message


RESUME_RULES: tuple[ResumeRule, ...] = (
    ResumeRule("--preset", "preset", lambda c: c.preset, "preset"),
    ResumeRule("--seed", "seed", lambda c: c.train.seed, "train.seed"),
    ResumeRule("--lr", "lr", lambda c: c.train.lr, "train.lr"),
    ResumeRule("--group-size", "group_size", lambda c: c.train.group_size, "train.group_size"),
    ResumeRule("--total-steps", "total_steps", lambda c: c.train.total_steps, "train.total_steps"),
    ResumeRule("--last-group", "last_group", lambda c: c.train.last_group, "train.last_group"),
    ResumeRule("--no-shuffle", "no_shuffle", lambda c: not c.train.shuffle, "train.shuffle"),
)


def check_resume_conflicts(args: argparse.Namespace, cfg: Config, explicit: set[str],
                           rules: tuple[ResumeRule, ...] = RESUME_RULES) -> None:
    """InputError (exit 2) naming the first typed option that differs from the checkpoint."""
    for rule in rules:
        if rule.dest not in explicit:
            continue
        given, stored = getattr(args, rule.dest), rule.field(cfg)
        if given != stored:
            shown = rule.option if isinstance(given, bool) else f"{rule.option} {given}"
            raise InputError(
                f"{shown} conflicts with the checkpoint's {rule.name}={stored}: "
                f"a resumed run continues the checkpoint's settings; drop {rule.option} (or "
                "start a new run without --resume)")


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
