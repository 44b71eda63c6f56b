"""Thread-count lists from the command line (`--threads 1-63`): one parser for every command.

Its own module so that commands (verify) and the CLI share it without importing each other.
"""

from __future__ import annotations

from plumbing.errors import InputError


def parse_threads(text: str) -> list[int]:
    """`1-63`, `1,2,4`, `1-4,8,16-18` -> sorted unique thread counts (each >= 1)."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                out.update(range(lo, hi + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise InputError(
            f"--threads {text!r}: expected counts like 1-63 or 1,2,4 or 1-4,8") from None
    if not out or min(out) < 1:
        raise InputError(f"--threads {text!r}: thread counts must be >= 1")
    return sorted(out)
