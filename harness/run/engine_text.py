"""Text an engine sends us (an `error` reply, its stderr, a plug-in's exception): made safe to
print. One sanitiser for every such message (#24 class 6): a hostile or broken engine may send
megabytes, terminal escape codes (that recolour, retitle or clear the user's terminal) or bytes
that are not UTF-8; what reaches the console, a log or a JUnit file is one cut line of
printable text, with what was cut said in numbers.
"""

from __future__ import annotations

import re
import unicodedata

MAX_ENGINE_TEXT = 400  # characters: a message line stays readable; the rest is counted, not shown
# ANSI/ECMA-48 escapes: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), any other ESC x
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|"
                      r"\x9b[0-?]*[ -/]*[@-~]")


def _printable(ch: str) -> str:
    if ch in "\n\r\t":
        return " "
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):  # controls, bidi, unassigned
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
    return ch


def engine_text(raw: object, limit: int = MAX_ENGINE_TEXT) -> str:
    """`raw` (str, bytes or anything with a str) as one line of printable text of at most
    `limit` characters: escape sequences removed, other controls shown as \\xNN, runs of
    whitespace folded, and a tail saying how many characters were cut."""
    if isinstance(raw, bytes | bytearray):
        text = bytes(raw).decode("utf-8", errors="replace")
    else:
        text = str(raw)
    head = text[:limit * 8]  # enough to fill `limit` after escapes are removed; never 2 MB
    clean = "".join(_printable(ch) for ch in _ESCAPES.sub("", head))
    clean = re.sub(r"\s+", " ", clean).strip()
    rest = len(text) - len(head)
    if len(clean) > limit:
        rest += len(clean) - limit
        clean = clean[:limit].rstrip()
    return clean + (f" ... ({rest:,} more characters cut)" if rest > 0 else "")
