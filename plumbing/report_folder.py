"""A report folder that is built whole and never takes anything it did not write.

A report (`spheres analyze --out DIR`) is built in a temporary sibling `.DIR.partial-<pid>`;
when it is complete, `seal` writes `.spheres-manifest.json` into it, listing every file with
its size and sha256, and `install` moves it in place of DIR with two renames. An existing DIR
is replaced only when it is one of our reports: its manifest lists exactly what it holds, byte
for byte (`report_folder_problem`). A folder holding anything else (the user's `notes.txt`, a
report file edited since) is refused with exit 2 before any work, so nothing is deleted that
spheres cannot prove it wrote. The old report is removed file by file from its manifest,
never with a recursive delete.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from plumbing.errors import InputError
from plumbing.outputs import output_dir_problem, write_output

MANIFEST = ".spheres-manifest.json"
KIND = "spheres-report"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _contents(folder: Path) -> dict[str, Path]:
    """Every entry under `folder` by its relative path (folders end with '/'), not followed."""
    found: dict[str, Path] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root)
        for name in dirs:
            found[f"{(base / name).relative_to(folder).as_posix()}/"] = base / name
        for name in files:
            found[(base / name).relative_to(folder).as_posix()] = base / name
    return found


def read_manifest(folder: Path) -> dict[str, dict] | None:
    """The files a report folder's manifest lists, or None when it has no valid manifest."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) and data.get("kind") == KIND else None
    return files if isinstance(files, dict) else None


def foreign_entries(folder: Path) -> list[str] | None:
    """What `folder` holds that its manifest does not prove we wrote; None without a manifest."""
    files = read_manifest(folder)
    if files is None:
        return None
    foreign = []
    for rel, path in sorted(_contents(folder).items()):
        if rel == MANIFEST or (rel.endswith("/") and any(f.startswith(rel) for f in files)):
            continue
        entry = files.get(rel)
        if (entry is None or path.is_symlink() or not path.is_file()
                or path.stat().st_size != entry.get("bytes")
                or _sha256(path) != entry.get("sha256")):
            foreign.append(rel)
    return foreign


def manifest_problems(folder: Path) -> list[str]:
    """Every way `folder` differs from its manifest, one line each: a listed file missing or
    changed (size or sha256), a file or link the manifest does not list. Empty when the folder
    is byte for byte what `seal` listed; the caller has checked a manifest exists."""
    files = read_manifest(folder) or {}
    found = _contents(folder)
    problems = []
    for rel, entry in sorted(files.items()):
        path = found.get(rel)
        if path is None or path.is_symlink() or not path.is_file():
            problems.append(f"{rel}: listed in the manifest but missing")
            continue
        size, digest = path.stat().st_size, _sha256(path)
        if size != entry.get("bytes") or digest != entry.get("sha256"):
            problems.append(f"{rel}: changed since analyze wrote it (sha256 "
                            f"{str(entry.get('sha256'))[:12]}, {entry.get('bytes')} bytes "
                            f"listed; now {digest[:12]}, {size} bytes)")
    for rel in sorted(found):
        if rel == MANIFEST or rel in files:
            continue
        if rel.endswith("/"):
            if not any(f.startswith(rel) for f in files):
                problems.append(f"{rel}: a folder the manifest does not list (added later)")
            continue
        problems.append(f"{rel}: not in the manifest (added after analyze sealed the report)")
    return problems


def _few(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most
                                      else "")


def report_folder_problem(out: Path) -> str | None:
    """Why `out` cannot become (or be replaced by) a report folder, or None."""
    out = Path(out)
    here = Path.cwd().resolve()
    resolved = out.resolve()
    if resolved == here or resolved in here.parents:
        return ("is the current folder (or holds it); a report replaces its folder whole: "
                "give a new folder name such as ./report")
    if out.is_symlink():
        return f"is a symbolic link; give the folder itself ({resolved}) or a new one"
    if out.exists() and not out.is_dir():
        return "exists and is not a folder; choose another folder"
    problem = output_dir_problem(out.parent if out.exists() else out)
    if problem is not None:
        return problem
    if not out.exists() or not any(out.iterdir()):
        return None
    foreign = foreign_entries(out)
    if foreign is None:
        return (f"is a folder that is not a spheres report (it holds "
                f"{_few(sorted(p.name for p in out.iterdir()))}); spheres deletes nothing it "
                "did not write: choose a new or empty folder")
    if foreign:
        return (f"is a spheres report but also holds {_few(foreign)}, which spheres "
                "did not write (or which changed since); move them out or choose another "
                "folder")
    return None


def check_report_folder(out: Path, option: str) -> None:
    """InputError (exit 2) unless `out` may become a report folder (before any work)."""
    problem = report_folder_problem(out)
    if problem is not None:
        sep = " " if problem.startswith(("is ", "exists")) else ": "
        raise InputError(f"{option} {out}{sep}{problem}")


def build_folder(out: Path) -> Path:
    """A fresh temporary sibling of `out` to build the report in."""
    out = Path(out).resolve()
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():  # our own pid's leftover: remove it the same careful way
        remove_listed(tmp, {rel: {} for rel in _contents(tmp) if not rel.endswith("/")})
    tmp.mkdir(parents=False)
    return tmp


def seal(folder: Path) -> None:
    """Write the manifest: every file `folder` holds, with its size and sha256."""
    files = {rel: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
             for rel, path in sorted(_contents(folder).items())
             if not rel.endswith("/") and rel != MANIFEST}
    write_output(folder / MANIFEST, json.dumps({"kind": KIND, "version": 1, "files": files},
                                               indent=2, sort_keys=True))


def remove_listed(folder: Path, files: dict[str, dict]) -> bool:
    """Remove the listed files that are still as listed (size and sha256, when the entry has
    them) and the folders that leaves empty; True when `folder` itself is gone."""
    for rel, entry in files.items():
        path = folder / rel
        if path.is_symlink() or not path.is_file():
            continue
        if "sha256" in entry and (path.stat().st_size != entry.get("bytes")
                                  or _sha256(path) != entry["sha256"]):
            continue  # changed since we wrote it: the user's now
        path.unlink()
    (folder / MANIFEST).unlink(missing_ok=True)
    for rel in sorted((r for r in _contents(folder) if r.endswith("/")), key=len, reverse=True):
        try:
            (folder / rel).rmdir()
        except OSError:
            pass  # not empty: something we did not write
    try:
        folder.rmdir()
    except OSError:
        return False
    return True


def install(tmp: Path, out: Path) -> Path | None:
    """Move the sealed report `tmp` in place of `out`; returns where a leftover went, or None.

    `out` was checked before the work (`check_report_folder`). Whatever appeared in it since,
    or was changed, stays: the old folder is renamed aside, the new one renamed in, and only
    the old manifest's unchanged files are removed; anything else is left in the old folder,
    whose path is returned.
    """
    out = Path(out)
    if not out.exists():
        os.replace(tmp, out)
        return None
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    files = read_manifest(out) or {}
    if not any(out.iterdir()):
        os.replace(tmp, out)  # an empty folder: rename over it
        return None
    os.replace(out, old)
    os.replace(tmp, out)
    return None if remove_listed(old, files) else old
