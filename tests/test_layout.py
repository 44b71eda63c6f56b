"""The layout a newcomer reads in one sitting: no function in the project is longer than 80 lines.

A function's length counts from its `def` line to its last line (decorators not counted, its
docstring and comments counted), nested functions and methods alike. Anything longer is split
into short private steps with names saying what each does.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("plumbing", "reference", "fast", "harness")
MAX_FUNCTION_LINES = 80


def long_functions(source: str, where: str = "<source>",
                   limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """'where:line name (N lines)' for every function in `source` longer than `limit` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def project_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_no_function_is_longer_than_80_lines():
    files = project_files()
    assert len(files) > 50  # the packages were found: an empty scan would pass vacuously
    too_long = [f for p in files
                for f in long_functions(p.read_text(), str(p.relative_to(ROOT)))]
    assert too_long == [], ("split these into short private steps:\n" + "\n".join(too_long))


def _function(name: str, body_lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines - 1))
    return f"{indent}def {name}():\n{body}{indent}    return 0\n"


def test_a_synthetic_long_function_is_caught_and_80_lines_pass():
    exactly = _function("fits", 79)  # def line + 79 body lines = 80
    assert long_functions(exactly) == []
    one_more = _function("too_long", 80)  # 81 lines
    assert long_functions(one_more, "x.py") == ["x.py:1 too_long (81 lines)"]


def test_methods_nested_functions_and_decorators_are_measured_from_def_to_end():
    method = "class C:\n" + _function("method", 81, indent="    ")
    assert [f.split()[1] for f in long_functions(method)] == ["method"]
    nested = "def outer():\n" + _function("inner", 81, indent="    ") + "    return inner\n"
    assert sorted(f.split()[1] for f in long_functions(nested)) == ["inner", "outer"]
    decorated = "".join(f"@d{i}\n" for i in range(5)) + _function("decorated", 79)
    assert long_functions(decorated) == []  # decorator lines do not count
