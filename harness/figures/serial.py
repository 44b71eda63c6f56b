"""Dataclasses to JSON and back, for the results model (`results.json`, bench `summary.json`).

`to_json` turns a dataclass tree into plain JSON data; `from_json` rebuilds it from the field
types (nested dataclasses, `list[X]`, `dict[str, X]`, `X | None`), so a reader gets the same
typed object the producer built. JSON has no NaN or infinity (RFC 8259): `to_json` writes a
non-finite float as null and `from_json` reads null back as NaN where the field is a plain
`float` (an `X | None` field keeps None). `check_schema` refuses a file of another schema
version with an `InputError` (exit 2) naming both versions.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from plumbing.errors import InputError

T = TypeVar("T")


def to_json(obj: Any) -> Any:
    """Plain JSON data (dicts, lists, str, numbers, None) of a dataclass tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalars and arrays
        return to_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # standard JSON: null, read back as NaN by a float field
    return obj


def from_json(cls: type[T], data: Any) -> T:
    """The dataclass `cls` rebuilt from `to_json` data; unknown keys are an InputError."""
    return _convert(cls, data, cls.__name__)


def check_schema(data: Any, expected: int, what: str) -> None:
    """An InputError (exit 2) unless `data` carries `schema_version == expected`."""
    found = data.get("schema_version") if isinstance(data, dict) else None
    if found is None or isinstance(found, bool) or found != expected:
        if not isinstance(data, dict) or "schema_version" not in data:
            got = "no schema_version"
        elif isinstance(found, bool) or not isinstance(found, int | float):  # "3" is not 3
            got = f"schema_version {found!r}, a JSON {_json_type(found)} not a number,"
        else:
            got = f"schema_version {found!r}"
        raise InputError(f"{what}: {got} but this version reads schema_version {expected}; "
                         "regenerate it with this version")


def _json_type(value: Any) -> str:
    return {str: "string", bool: "boolean", float: "number", list: "array", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _convert(tp: Any, value: Any, where: str) -> Any:
    if tp is float and value is None:  # what to_json writes for NaN and infinities
        return math.nan
    if tp is Any or value is None:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        return _convert(arms[0], value, where) if len(arms) == 1 else value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected an object, found {type(value).__name__}")
        hints = _hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = set(value) - names
        if unknown:
            raise InputError(f"{where}: unknown field(s) {sorted(unknown)} for {tp.__name__}")
        try:
            return tp(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in value.items()})
        except TypeError as exc:
            raise InputError(f"{where}: {exc}") from None
    if origin is tuple and args and args[-1] is not Ellipsis:
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
    if origin in (list, tuple):
        item = args[0] if args else Any
        out = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        key, val = args if args else (Any, Any)
        return {(int(k) if key is int else k): _convert(val, v, f"{where}.{k}")
                for k, v in value.items()}
    if tp is float and isinstance(value, int | float):
        return float(value)
    if tp is float and value in ("NaN", "nan"):
        return math.nan
    return value
