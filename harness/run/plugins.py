"""The engine registry: which engines exist, where they come from, and how to build one.

One registry, the entry-point group `kissing_spheres.engines` (SPEC 13, docs/ENGINES.md): our own
`reference`, `fast` and `torch` are registered there like anyone's plug-in. Two more spellings
need no installed distribution: `exec:COMMAND` (an out-of-process engine,
harness/run/exec_engine.py)
and `module:attr` (a factory importable from the current path, for tests and quick trials).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from harness.run.engine_text import engine_text
from plumbing.errors import FaultError, InputError, SpheresError

GROUP = "kissing_spheres.engines"
EXEC_PREFIX = "exec:"
# The engines that ship in this source tree, for a name the installed distribution metadata
# does not (yet) list: a tree run without installing, or an editable install made before an
# engine was added to pyproject.toml (its entry points are read at install time). The installed
# entry points win; a fresh `pip install -e .` lists all of these itself.
_BUILTIN = {"reference": "harness.run.engines:build_reference",
            "fast": "harness.run.engines:build_fast",
            "torch": "torch_engine.engine:build",
            "torch-ddp": "harness.run.ddp_engine:build"}


@dataclass
class EngineInfo:
    """One registered engine: its name, the factory's `module:attr`, and who provides it."""

    name: str
    target: str  # "module:attr" of the factory
    distribution: str  # "kissing-spheres 0.1.0", or how it was found
    error: str = ""  # why it cannot be loaded here ("" when it loads)

    @property
    def available(self) -> bool:
        return not self.error


def _registered() -> dict[str, tuple[str, str]]:
    """name -> (module:attr, distribution) for every entry point of the group."""
    found: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown"
        found.setdefault(ep.name, (ep.value, dist))
    for name, target in _BUILTIN.items():
        found.setdefault(name, (target, "this source tree (not installed)"))
    return found


def _load_target(target: str) -> Callable:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module.strip())
    for part in attr.strip().split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj


def list_engines(load: bool = True) -> list[EngineInfo]:
    """Every registered engine; with `load`, each factory is imported to see if it works here."""
    out = []
    for name, (target, dist) in sorted(_registered().items()):
        info = EngineInfo(name, target, dist)
        if load:
            try:
                _load_target(target)
            except Exception as exc:  # a plug-in's import error must not hide the others
                info.error = f"{type(exc).__name__}: {engine_text(exc, 160)}"
        out.append(info)
    return out


def engine_names() -> list[str]:
    """Registered names, for `--engine` help and choices."""
    return sorted(_registered())


def resolve_factory(spec: str) -> Callable:
    """The factory behind a registered NAME or a `module:attr` spec, or InputError saying why."""
    registered = _registered()
    if spec in registered:
        target = registered[spec][0]
    elif ":" in spec and not spec.startswith(EXEC_PREFIX):
        target = spec
    else:
        raise InputError(f"unknown engine {spec!r}; choose one of {', '.join(sorted(registered))}"
                         ", exec:COMMAND or module:factory (see `spheres engines`)")
    try:
        return _load_target(target)
    except Exception as exc:
        hint = (" (install it with: pip install -e '.[torch]')"
                if spec in ("torch", "torch-ddp") else "")
        raise InputError(f"engine {spec!r} ({target}) cannot be loaded: "
                         f"{type(exc).__name__}: {engine_text(exc)}{hint}") from None


def _whose(spec: str) -> str:
    """Who to blame for engine `spec`: the plug-in, its factory and its distribution."""
    registered = _registered()
    if spec in registered:
        target, dist = registered[spec]
        return f"plug-in engine {spec!r} ({target}, from {dist})"
    return f"plug-in engine {spec!r}"


def _plugin_fault(spec: str, what: str, exc: Exception) -> FaultError:
    return FaultError(f"{_whose(spec)}: {what} raised {type(exc).__name__}: {engine_text(exc)} "
                      "(an error of the plug-in, not of spheres: report it to its authors)")


def build_plugin(spec: str, factory: Callable, *args: object, **kwargs: object) -> object:
    """The engine `factory(*args, **kwargs)` builds, its errors named as the plug-in's: an
    exception that is not one of ours (plumbing.errors) from the factory or any method is a
    fault of the engine (exit 4), never "internal error" of the harness."""
    try:
        engine = factory(*args, **kwargs)
    except SpheresError:
        raise
    except Exception as exc:
        raise _plugin_fault(spec, "its factory", exc) from exc
    return PluginEngine(spec, engine)


class PluginEngine:
    """A plug-in's engine behind a guard: every call that raises a foreign exception becomes
    a FaultError naming the plug-in and the method; attributes pass through unchanged, so the
    capability Protocols (Recorded, InjectsFaults...) see what the plug-in has."""

    def __init__(self, spec: str, engine: object) -> None:
        self._spec = spec
        self._engine = engine

    def __getattr__(self, name: str) -> object:
        value = getattr(self._engine, name)
        if not callable(value) or name.startswith("__"):
            return value
        spec = self._spec

        def guarded(*args: object, **kwargs: object) -> object:
            try:
                return value(*args, **kwargs)
            except SpheresError:
                raise
            except Exception as exc:
                raise _plugin_fault(spec, f"its {name}()", exc) from exc
        return guarded


def format_engines(infos: list[EngineInfo]) -> str:
    """The `spheres engines` table."""
    rows = [("name", "factory", "from", "status")]
    rows += [(i.name, i.target, i.distribution, "ok" if i.available else f"unavailable: {i.error}")
             for i in infos]
    rows.append(("exec:COMMAND", "harness.run.exec_engine:ExecEngine", "any program speaking "
                 "docs/ENGINES.md", "ok"))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}"
                     for r in rows)
