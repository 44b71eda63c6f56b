"""`memray_profile`: peak memory and the allocation sites alive at the high-water mark."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.measure.machine import REPO_ROOT


def _site_frame(stack: list[tuple[str, str, int]]) -> tuple[str, str, int]:
    """The allocation's most telling frame: the first one in our code, else the innermost."""
    for function, filename, line in stack:
        ours = filename.startswith(str(REPO_ROOT)) and "site-packages" not in filename
        if ours and filename != __file__:
            return function, filename, line
    return stack[0] if stack else ("<unknown>", "<unknown>", 0)


def _quiet_exit(tracker: Any) -> None:
    """Stops a tracker while fn's own exception is on its way out (that one matters more)."""
    try:
        tracker.__exit__(None, None, None)
    except Exception:
        pass


def memray_profile(
    fn: Callable[[], Any], out_dir: str | Path, top: int = 10, name: str = "memray"
) -> dict[str, Any]:
    """Runs fn() under memray and reports peak memory and the top sites at the high-water mark.

    The capture is `out_dir/<name>.bin` (replaced if present). Returns peak_bytes,
    total_allocations, capture path, `top_sites` (function, file, line, bytes, allocations;
    sites are the first frame in this repository, else the innermost Python frame) and `result`
    (fn's return value). A memray failure never reaches the caller: the dict then has `error`
    (and fn still runs untracked if the tracker could not start). Exceptions of fn propagate.
    """
    out_dir = Path(out_dir)
    path = out_dir / f"{name}.bin"
    try:
        import memray

        out_dir.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        tracker = memray.Tracker(str(path), native_traces=True)
        tracker.__enter__()
    except Exception as exc:  # memray missing, unsupported platform, another tracker active
        return {"error": f"memray could not start: {exc!r}", "result": fn(), "capture": None}
    try:
        result = fn()
    except BaseException:
        _quiet_exit(tracker)
        raise
    try:
        tracker.__exit__(None, None, None)
    except Exception as exc:
        return {"error": f"memray could not stop: {exc!r}", "result": result,
                "capture": str(path)}
    try:
        reader = memray.FileReader(str(path))
        sites: dict[tuple[str, str, int], list[int]] = {}
        for record in reader.get_high_watermark_allocation_records(merge_threads=True):
            key = _site_frame(record.stack_trace())
            acc = sites.setdefault(key, [0, 0])
            acc[0] += record.size
            acc[1] += record.n_allocations
        ranked = sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]
        meta = reader.metadata
        return {
            "peak_bytes": int(meta.peak_memory),
            "total_allocations": int(meta.total_allocations),
            "capture": str(path),
            "top_sites": [
                {"function": f, "file": fname, "line": line, "bytes": b, "allocations": n}
                for (f, fname, line), (b, n) in ranked
            ],
            "result": result,
        }
    except Exception as exc:
        return {"error": f"memray capture {path} unreadable: {exc!r}", "result": result,
                "capture": str(path)}


# --------------------------------------------------------------------------- py-spy
