"""`spheres grads`: one step's loss and gradients written as the `.npz` of SPEC section 6."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from plumbing.atomic import atomic_write
from plumbing.errors import InputError
from reference.config import Config
from reference.engine import StepResult
from reference.params import param_specs


def check_writable(path: Path) -> None:
    """Fail before any work when the output cannot be written (exit 2, nothing half-written)."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(
            f"output folder {folder} does not exist; create it or choose another --out")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {folder} is not writable; choose another --out")


def write_grads_npz(path: Path, cfg: Config, tokens: np.ndarray, targets: np.ndarray,
                    params: dict[str, np.ndarray], result: StepResult) -> None:
    """Atomically write tokens, targets, loss, param/<name>, grad/<name> and config."""
    assert result.grads is not None
    arrays: dict[str, np.ndarray] = {
        "tokens": np.asarray(tokens, dtype=np.int64),
        "targets": np.asarray(targets, dtype=np.int64),
        "loss": np.float64(result.loss),
        "config": np.array(cfg.to_json()),
    }
    for spec in param_specs(cfg.model):
        arrays[f"param/{spec.name}"] = np.asarray(params[spec.name])
        arrays[f"grad/{spec.name}"] = np.asarray(result.grads[spec.name], dtype=np.float64)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
