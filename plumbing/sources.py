"""Reading a `--data` source: a text file, a folder of text files, or a SQuAD JSON file.

The file-system half of the data pipeline (docs/SPEC.md section 2): which paths are accepted,
how a folder is walked and a SQuAD file unpacked into documents. Turning documents into token
ids is the specification's job (reference/data.py); the synthetic corpus lives there too.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

from plumbing.errors import DataError
from plumbing.text_files import FolderDocuments, SkipReport, TextFile, TextFileError, scan_folder


def _decode_bytes(raw: bytes, path: Path) -> str:
    """UTF-8 text of a file, or DataError naming the first bad byte."""
    nul = raw.find(b"\0")
    if nul >= 0:
        raise DataError(f"{path} looks binary (NUL byte at offset {nul}); expected UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (undecodable byte at offset {exc.start}); "
                        "convert it to UTF-8 or remove it from the data") from exc


def _text_file(path: Path) -> TextFile:
    """A single --data file, checked (streamed through once); DataError if unusable."""
    text_file = TextFile(path)
    try:
        text_file.check()
    except TextFileError as exc:
        raise DataError(str(exc)) from exc
    return text_file


def _read_text_file(path: Path) -> str:
    return _text_file(path).read()


def _scan_folder(folder: Path) -> FolderDocuments:
    """The usable files under `folder`; DataError when there is none."""
    found = scan_folder(folder)
    if not found.files:
        lines = found.skips.summary()
        raise DataError(f"folder {folder} holds no readable text file "
                        f"({len(found.skips.skipped)} entries skipped or none found"
                        f"{': ' + '; '.join(x.strip() for x in lines[1:-1]) if lines else ''})"
                        "; expected UTF-8 text files")
    return found


def _read_folder(folder: Path) -> list[str]:
    """Every usable file under `folder` as text, sorted by relative path (one warning sums up
    what was skipped)."""
    found = _scan_folder(folder)
    if found.skips.skipped:
        warnings.warn(" ".join(found.skips.summary()), stacklevel=3)
    return [f.read() for f in found]


def _require(obj: object, key: str, where: str, path: Path, kind: type) -> object:
    """obj[key] with the type SQuAD promises, or DataError naming the missing key."""
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{path} is not SQuAD JSON: missing key '{key}' at {where}; expected "
                        "data -> paragraphs -> context, qas -> question, answers -> text")
    value = obj[key]
    if not isinstance(value, kind):
        raise DataError(f"{path} is not SQuAD JSON: '{key}' at {where} should be a "
                        f"{kind.__name__}, got {type(value).__name__}")
    return value


def _read_squad(path: Path) -> list[str]:
    """One document per paragraph: its context, then each question and its answers' texts."""
    try:
        root = json.loads(_decode_bytes(path.read_bytes(), path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                        f"{exc.msg}); expected a SQuAD v1.1/v2.0 file") from exc
    except RecursionError as exc:
        raise DataError(f"{path} nests JSON too deeply to be SQuAD; expected a SQuAD v1.1/v2.0 "
                        "file") from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise DataError(f"{path} is not usable JSON ({exc}); expected a SQuAD v1.1/v2.0 "
                        "file") from exc
    docs = []
    for a, article in enumerate(_require(root, "data", "top level", path, list)):
        paragraphs = _require(article, "paragraphs", f"data[{a}]", path, list)
        for p, para in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            lines = [_require(para, "context", where, path, str)]
            for q, qa in enumerate(_require(para, "qas", where, path, list)):
                lines.append(_require(qa, "question", f"{where}.qas[{q}]", path, str))
                for k, ans in enumerate(_require(qa, "answers", f"{where}.qas[{q}]", path, list)):
                    lines.append(_require(ans, "text", f"{where}.qas[{q}].answers[{k}]", path,
                                          str))
            docs.append("\n".join(lines))
    if not any(doc.strip() for doc in docs):
        raise DataError(f"{path} holds no SQuAD paragraphs with text; expected data -> "
                        "paragraphs -> context")
    return docs


def _check_data_path(path: str | Path) -> Path:
    """The --data path exists and is a folder or a regular file (a FIFO would block forever,
    /dev/zero never ends): refused up front, before anything is read."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data path {p} does not exist; pass a text file, a folder of text "
                        "files or a SQuAD .json file, or omit --data for the synthetic corpus")
    if not (p.is_dir() or p.is_file()):
        raise DataError(f"data path {p} is not a regular file or folder (a FIFO, device or "
                        "socket); pass a text file, a folder or a SQuAD .json file")
    return p


def read_documents(path: str | Path) -> list[str]:
    """The documents of a data source (SPEC 2), each read whole."""
    p = _check_data_path(path)
    if p.is_dir():
        return _read_folder(p)
    if p.suffix.lower() == ".json":
        return _read_squad(p)
    return [_read_text_file(p)]


def open_source(path: str | Path) -> tuple[Iterable[str | TextFile], SkipReport]:
    """Like read_documents, but files are streamed when read (never held whole) and the
    skipped entries of a folder come back as a report instead of a warning."""
    p = _check_data_path(path)
    if p.is_dir():
        found = _scan_folder(p)
        return found, found.skips
    if p.suffix.lower() == ".json":
        return _read_squad(p), SkipReport()
    return [_text_file(p)], SkipReport()
