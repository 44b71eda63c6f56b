"""Reading `--data` files and folders: streamed, checked, and every skipped file accounted for.

A file is read in blocks of READ_BYTES and handed on as text pieces cut at whitespace, so no
file is ever held whole (the tokenizer works piece by piece; reference/data.py). A folder is
walked without following links; what is not trained on is counted with its reason and reported
in a few lines (SkipReport.summary), never one warning per file:
- hidden files and folders (name starts with "."): `.git/`, editor swap files, ...
- symbolic links (to files or folders, dangling or not): the target may be anywhere
- FIFOs, devices and sockets: reading one may block forever or never end
- unreadable files and folders (permissions), binary files (a NUL byte), non-UTF-8 files and
  files that are empty or only whitespace.
Every accepted file is checked once by reading it through (so a binary tail is found before
any token is counted), then read again by each consumer; order is by relative path.
"""

from __future__ import annotations

import codecs
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

READ_BYTES = 1 << 20  # one block per read: bounds the memory a file can take while read
SUMMARY_EXAMPLES = 2  # paths named per reason in the short summary (--verbose lists all)

HIDDEN = "hidden"
SYMLINK = "symbolic link"
NOT_REGULAR = "not a regular file (FIFO, device or socket)"
UNREADABLE = "unreadable"
UNREADABLE_DIR = "unreadable folder"
BINARY = "binary (NUL byte)"
NOT_UTF8 = "not UTF-8"
EMPTY = "empty or only whitespace"


class TextFileError(ValueError):
    """A file that holds no usable UTF-8 text; `reason` is one of the constants above."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TextFile:
    """One document read from disk on demand, as text pieces cut at whitespace."""

    path: Path

    def chunks(self) -> Iterator[str]:
        """The file's text in pieces of about READ_BYTES; TextFileError if it is not text."""
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        carry, offset = "", 0
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed below, also on error
        except OSError as exc:
            raise TextFileError(UNREADABLE, f"{self.path}: {exc.strerror or exc}") from exc
        with fh:
            while True:
                try:
                    block = fh.read(READ_BYTES)
                except OSError as exc:
                    raise TextFileError(UNREADABLE, f"{self.path}: {exc.strerror}") from exc
                if not block:
                    break
                nul = block.find(b"\0")
                if nul >= 0:
                    raise TextFileError(BINARY, f"{self.path} looks binary (NUL byte at offset "
                                                f"{offset + nul}); expected UTF-8 text")
                text = carry + self._decode(decoder, block, offset, final=False)
                offset += len(block)
                cut = max(text.rfind("\n"), text.rfind(" "), text.rfind("\t"))
                if cut < 0:
                    carry = text
                    continue
                yield text[:cut + 1]
                carry = text[cut + 1:]
        text = carry + self._decode(decoder, b"", offset, final=True)
        if text:
            yield text

    def _decode(self, decoder, block: bytes, offset: int, *, final: bool) -> str:
        try:
            return decoder.decode(block, final=final)
        except UnicodeDecodeError as exc:
            raise TextFileError(NOT_UTF8, f"{self.path} is not UTF-8 text (undecodable byte at "
                                          f"offset {offset + exc.start}); convert it to UTF-8 "
                                          "or remove it from the data") from exc

    def check(self) -> None:
        """Read the file through once: TextFileError if it is unusable (binary, empty, ...)."""
        if not any(piece.strip() for piece in self.chunks()):
            raise TextFileError(EMPTY, f"{self.path} is empty or only whitespace; expected "
                                       "text to train on")

    def read(self) -> str:
        return "".join(self.chunks())


@dataclass
class SkipReport:
    """Every file or folder not trained on, with its reason."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def add(self, path: str | Path, reason: str) -> None:
        self.skipped.append((str(path), reason))

    def counts(self) -> Counter[str]:
        return Counter(reason for _, reason in self.skipped)

    def summary(self, verbose: bool = False) -> list[str]:
        """A few lines: one per reason with a count and examples; every path when verbose."""
        if not self.skipped:
            return []
        lines = [f"skipped {len(self.skipped):,} entries (not trained on):"]
        for reason, n in self.counts().most_common():
            paths = [p for p, r in self.skipped if r == reason]
            shown = paths if verbose else paths[:SUMMARY_EXAMPLES]
            more = "" if verbose or n <= len(shown) else ", ..."
            lines.append(f"  {n:,} {reason}: {', '.join(shown)}{more}")
        if not verbose:
            lines.append("  (--verbose lists every skipped path)")
        return lines


@dataclass
class FolderDocuments:
    """The usable text files under a folder, in relative-path order; iterable many times."""

    folder: Path
    files: list[TextFile]
    skips: SkipReport

    def __iter__(self) -> Iterator[TextFile]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def scan_folder(folder: Path) -> FolderDocuments:
    """Walk `folder` (no links followed), classify every entry, check every candidate file."""
    skips = SkipReport()
    candidates: list[Path] = []

    def unreadable(exc: OSError) -> None:
        skips.add(exc.filename or folder, UNREADABLE_DIR)

    for root, dirs, names in os.walk(folder, onerror=unreadable, followlinks=False):
        keep = []
        for d in sorted(dirs):
            path = os.path.join(root, d)
            if os.path.islink(path):
                skips.add(path, SYMLINK)
            elif d.startswith("."):
                skips.add(path, HIDDEN)
            else:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                skips.add(path, UNREADABLE)
                continue
            if stat.S_ISLNK(mode):
                skips.add(path, SYMLINK)
            elif not stat.S_ISREG(mode):
                skips.add(path, NOT_REGULAR)
            elif name.startswith("."):
                skips.add(path, HIDDEN)
            else:
                candidates.append(Path(path))
    candidates.sort(key=lambda p: p.relative_to(folder).as_posix())
    files = []
    for path in candidates:
        text_file = TextFile(path)
        try:
            text_file.check()
        except TextFileError as exc:
            skips.add(path, exc.reason)
            continue
        files.append(text_file)
    return FolderDocuments(folder, files, skips)
