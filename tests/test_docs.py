"""Every "SPEC n" reference resolves to a section of docs/SPEC.md, every docs/*.md named exists.

Code and docs cite the specification as "SPEC 6", "SPEC 8.13", "SPEC section 2", "SPEC sections
6 and 12", "SPEC 5, 8.13", "SPEC 1-2" or "SPEC 8.5/8.9". "SPEC n" is the heading `## n. ...` of
docs/SPEC.md; "SPEC n.m" is a heading `### n.m ...` or item m of section n's numbered list (the
original system's failures are SPEC 8.1 .. 8.14). The scan reads every text file of the repo
(`git ls-files`: .py, .md, .toml and the Makefile; report JSON is data, not prose) and names
file:line for each reference that does not resolve.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC_FILE = ROOT / "docs" / "SPEC.md"
TEXT_SUFFIXES = (".py", ".md", ".toml")
SKIP_DIRS = {".git", ".venv", "build", "__pycache__", ".pytest_cache", ".benchmarks"}

NUM = r"\d+(?:\.\d+)?"
# Between two numbers of one reference: ", " "/" " and " " or " ", and " or a range "-".
JOIN = r"(?:\s*[,/]\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+|\s*-\s*)"
REF_RE = re.compile(rf"\bSPEC(?:\.md)?\s+(?:sections?\s+|§\s*)?({NUM}(?:{JOIN}{NUM})*)")
# A docs/*.md path anywhere, or a bare upper-case name (DESIGN.md, CHECKS.md), which means docs/.
DOC_RE = re.compile(r"\bdocs/([\w.-]+?\.md)\b|(?<![\w./-])([A-Z][A-Z_]+\.md)\b")
NOT_IN_DOCS = {"README.md"}  # bare names that live elsewhere (the repo's and reports' READMEs)


def repo_text_files() -> list[Path]:
    """The repo's text files: tracked and not-ignored new ones, or a walk when git is absent."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
        paths = {ROOT / name for name in out.stdout.decode().split("\0") if name}
    except (OSError, subprocess.CalledProcessError):
        paths = {p for p in ROOT.rglob("*") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)}
    return sorted(p for p in paths if p.is_file()
                  and (p.suffix in TEXT_SUFFIXES or p.name == "Makefile"))


def spec_sections(text: str) -> set[str]:
    """"n" for each `## n. Title`, "n.m" for each `### n.m Title` and item `m. ` of section n."""
    keys: set[str] = set()
    section, fenced = None, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        if m := re.match(r"## (\d+)\. \S", line):
            section = m[1]
            keys.add(section)
        elif line.startswith("## "):
            section = None
        elif m := re.match(r"### (\d+\.\d+)\.? \S", line):
            keys.add(m[1])
        elif section is not None and (m := re.match(r"(\d+)\. \S", line)):
            keys.add(f"{section}.{m[1]}")
    return keys


def _range(first: str, last: str) -> list[str]:
    """The numbers after `first` up to `last` of a range "first-last" (8.3-8.5: 8.4, 8.5)."""
    a, b = first.split("."), last.split(".")
    if len(a) == len(b) == 1:
        return [str(n) for n in range(int(a[0]) + 1, int(b[0]) + 1)] or [last]
    if len(a) == len(b) == 2 and a[0] == b[0]:
        return [f"{a[0]}.{n}" for n in range(int(a[1]) + 1, int(b[1]) + 1)] or [last]
    return [last]


def referenced(numbers: str) -> list[str]:
    """The sections one reference's number list names: "5, 8.13" -> 5, 8.13; "1-3" -> 1, 2, 3."""
    nums = re.findall(NUM, numbers)
    seps = re.split(NUM, numbers)[1:-1]
    out = [nums[0]]
    for sep, n in zip(seps, nums[1:], strict=True):
        out += _range(out[-1], n) if "-" in sep else [n]
    return out


def bad_references(text: str, keys: set[str], where: str) -> list[str]:
    """'where:line: ...' for each SPEC reference in `text` naming a section not in `keys`."""
    bad = []
    for m in REF_RE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        missing = [n for n in referenced(m[1]) if n not in keys]
        if missing:
            bad.append(f"{where}:{line}: {m[0]!r} names {', '.join(missing)}, which "
                       "docs/SPEC.md has no section (or numbered item) for")
    return bad


def missing_docs(text: str, docs: set[str], where: str) -> list[str]:
    """'where:line: ...' for each docs/*.md path (or bare upper-case name) not among `docs`."""
    bad = []
    for m in DOC_RE.finditer(text):
        name = m[1] or m[2]
        if name in NOT_IN_DOCS or name in docs:
            continue
        line = text.count("\n", 0, m.start()) + 1
        bad.append(f"{where}:{line}: names docs/{name}, which does not exist")
    return bad


def test_the_spec_has_sections_1_to_13_and_the_failures_8_1_to_8_14():
    text = SPEC_FILE.read_text(encoding="utf-8")
    titles = [int(n) for n in re.findall(r"^## (\d+)\. ", text, flags=re.M)]
    assert titles == list(range(1, 14)), f"docs/SPEC.md sections are {titles}, expected 1..13"
    keys = spec_sections(text)
    items = sorted(int(k.split(".")[1]) for k in keys if k.startswith("8."))
    assert items == list(range(1, 15)), f"section 8 lists items {items}, expected 1..14"


def test_every_spec_reference_resolves():
    keys = spec_sections(SPEC_FILE.read_text(encoding="utf-8"))
    files = repo_text_files()
    assert ROOT / "tests" / "test_docs.py" in files, "the scan does not see the repo's files"
    bad, count = [], 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        count += len(REF_RE.findall(text))
        bad += bad_references(text, keys, str(path.relative_to(ROOT)))
    assert count >= 100, f"only {count} SPEC references found: is the pattern still matching?"
    assert not bad, "SPEC references that do not resolve:\n" + "\n".join(bad)


def test_every_docs_file_named_exists():
    docs = {p.name for p in (ROOT / "docs").glob("*.md")}
    bad = []
    for path in repo_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        bad += missing_docs(text, docs, str(path.relative_to(ROOT)))
    assert not bad, "references to docs that do not exist:\n" + "\n".join(bad)


def test_the_reference_forms_are_read():
    def numbers(text: str) -> list[list[str]]:
        return [referenced(m[1]) for m in REF_RE.finditer(text)]

    assert numbers("(SPEC 6) and SPEC 8.13: x") == [["6"], ["8.13"]]
    assert numbers("SPEC section 2. Then SPEC sections 6 and 12.") == [["2"], ["6", "12"]]
    assert numbers("(SPEC 5, 8.13) SPEC 2, 8.1, 8.12).") == [["5", "8.13"], ["2", "8.1", "8.12"]]
    assert numbers("SPEC sections 2-3, SPEC 1-2, SPEC 8.5/8.9") == [
        ["2", "3"], ["1", "2"], ["8.5", "8.9"]]
    assert numbers("SPEC 2, DESIGN.md; docs/SPEC.md section 7") == [["2"], ["7"]]
    assert numbers("SPEC_FORM, SPECIALS, SPEC.md (outside)") == []


def test_a_reference_to_no_section_is_caught():
    """The breaking variants: a section, an item and a range end the spec does not have. (The
    synthetic references are spelt `{S} n`, so this file's own text holds none that fail.)"""
    S = "SPEC"
    spec = "# S\n\n## 1. One\n\n## 8. Failures\n\n1. a\n2. b\n\n## 9. Code\n\n### 9.1 Pairs\n"
    keys = spec_sections(spec)
    assert keys == {"1", "8", "8.1", "8.2", "9", "9.1"}
    ok = f"{S} 1, {S} 8.2, {S} sections 1 and 9, {S} 9.1, {S} 8.1-8.2"
    assert bad_references(ok, keys, "f.py") == []
    for text, missing in ((f"x\n# see {S} 99", "99"), (f"{S} 8.3: y", "8.3"),
                          (f"{S} sections 1 and 13", "13"), (f"{S} 8.1-8.4", "8.3, 8.4"),
                          (f"{S} 9.2", "9.2"), (f"{S} 1-2", "2")):
        found = bad_references(text, keys, "f.py")
        assert len(found) == 1 and f"names {missing}," in found[0], (text, found)
    assert bad_references(f"a\nb {S} 99", keys, "f.py")[0].startswith("f.py:2: ")


def test_a_missing_docs_file_is_caught():
    docs = {"SPEC.md", "DESIGN.md"}
    assert missing_docs("docs/SPEC.md, DESIGN.md, README.md, reports/x/summary.md", docs, "f") == []
    nope, guide = "NOPE" + ".md", "GUIDE" + ".md"  # spelt apart: this file names neither
    found = missing_docs(f"ok\nsee docs/{nope} and {guide}", docs, "f.md")
    assert found == [f"f.md:2: names docs/{nope}, which does not exist",
                     f"f.md:2: names docs/{guide}, which does not exist"]


# ---------------------------------------------------------------- the module map and file paths

PACKAGES = ("plumbing", "reference", "fast", "harness")
PATH_RE = re.compile(r"`((?:plumbing|reference|fast|harness|torch_engine|examples|benchmarks|tests)"
                     r"/[\w/]+\.py)`")


def unmapped_modules(design: str, modules: list[str]) -> list[str]:
    """Modules with no row `| `path` | job |` in docs/DESIGN.md."""
    return [m for m in modules if f"| `{m}` |" not in design]


def dangling_paths(text: str, where: str) -> list[str]:
    """Backticked source paths in a document that name no file of the repo."""
    return [f"{where}: {p}" for p in PATH_RE.findall(text) if not (ROOT / p).is_file()]


def test_every_module_has_a_line_in_the_design_module_map():
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    modules = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES
                     for p in (ROOT / pkg).rglob("*.py") if p.name != "__init__.py")
    assert modules, "no modules found"
    missing = unmapped_modules(design, modules)
    assert not missing, f"docs/DESIGN.md has no row for {missing}"


def test_every_source_path_named_in_the_docs_exists():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    bad = [b for d in docs for b in dangling_paths(d.read_text(), d.name)]
    assert not bad, bad


def test_an_unmapped_module_and_a_dangling_path_are_caught():
    design = "| `fast/barrier.py` | the barrier |\n"
    assert unmapped_modules(design, ["fast/barrier.py", "fast/new.py"]) == ["fast/new.py"]
    assert dangling_paths("see `fast/barrier.py` and `harness/gone/old.py`", "X.md") == [
        "X.md: harness/gone/old.py"]
