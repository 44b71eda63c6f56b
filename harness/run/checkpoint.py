"""Atomic, checksummed checkpoints: one `.npz` with everything `--resume` needs.

Layout: `param/<name>`, `adam_m/<name>`, `adam_v/<name>` arrays; `meta`, a JSON string with the
step, the config, the vocabulary and caller extras; `checksum`, the sha256 over every other
entry's name, dtype, shape and bytes. The file is written to a temp file in the same folder,
flushed, fsynced and renamed, so a crash leaves the previous checkpoint intact and a reader
never sees half a file. Round trips are bitwise.

What a checkpoint must hold before anything uses it (SPEC 12): the checksum only proves the
file is what its writer wrote; a crafted or foreign file can carry a valid checksum. So the
loaded content is checked against the config it names (`checkpoint_problem`): the config
itself is validated with upper bounds (reference/config.py), the parameter names and order are
those of `param_specs`, every parameter and both Adam moments have exactly the spec's shape, a
float dtype and finite values, the step is a non-negative integer, and the vocabulary fits the
model. A file that fails is refused with the first problem found (exit 2), never a crash in an
engine or an allocation sized by an attacker.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plumbing.errors import InputError
from plumbing.outputs import write_output
from reference.config import Config
from reference.data import Vocab
from reference.engine import TrainState
from reference.params import param_specs

FORMAT_VERSION = 1
MAX_STEP = 10**12  # far beyond any run (the seed preset needs ~1 s per step: 30,000 years)
_STEP_NAME = re.compile(r"^step-(\d+)\.npz$")  # what harness/run/train.py writes: step-000042.npz


class CheckpointError(InputError):
    """A checkpoint that is missing, unreadable or corrupted (exit code 2)."""


@dataclass
class Checkpoint:
    state: TrainState
    config: Config
    vocab: Vocab | None
    extra: dict[str, Any]


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over each entry's name, dtype, shape and raw bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: TrainState, config: Config, vocab: Vocab | None,
                    extra: dict | None = None) -> Path:
    """Write the checkpoint atomically (temp file, fsync, rename); returns the path."""
    path = Path(path)
    meta = {
        "format": FORMAT_VERSION,
        "step": int(state.step),
        "config": config.to_dict(),
        "vocab": vocab.to_json() if vocab is not None else None,
        "extra": extra or {},
        "params": list(state.params),  # names in registry order
    }
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta, sort_keys=True))}
    for group, tensors in (("param", state.params), ("adam_m", state.adam_m),
                           ("adam_v", state.adam_v)):
        for name, a in tensors.items():
            arrays[f"{group}/{name}"] = np.ascontiguousarray(a)
    arrays["checksum"] = np.array(_checksum(arrays))

    return write_output(path, lambda fh: np.savez(fh, **arrays), "checkpoint")


ZIP_MAGIC = b"PK\x03\x04"  # every .npz is a zip archive and starts with this


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz; a file that is not one is refused in our words, never numpy's
    (its advice for a non-archive is to unpickle it, which a checkpoint never needs)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(ZIP_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc}); "
                              "check its permissions") from exc
    if len(head) < len(ZIP_MAGIC) and ZIP_MAGIC.startswith(head):
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated to {len(head)} "
                              "bytes); delete it or resume from an earlier checkpoint")
    if head != ZIP_MAGIC:
        raise CheckpointError(
            f"{path} is not a checkpoint: not an .npz archive (no zip header); pass a "
            "step-*.npz written by spheres train --checkpoint-dir, or its folder")
    try:  # our own handle: np.load leaks its file when the zip is damaged (ResourceWarning)
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except ValueError as exc:  # an entry of Python objects: numpy asks for allow_pickle
        raise CheckpointError(
            f"{path} is not a checkpoint spheres wrote: it holds Python objects, which a "
            "checkpoint never does; pass a step-*.npz written by spheres train") from exc
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or damaged: {exc}); "
            "delete it or resume from an earlier checkpoint") from exc


def checkpoint_problem(checkpoint: Any, meta: dict) -> str | None:
    """The first reason a loaded `checkpoint` is unusable, or None (SPEC 12)."""
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_STEP:
        return f"step {step!r} is not an integer in [0, {MAX_STEP}]"
    if not isinstance(meta.get("extra"), dict):
        return "'extra' is not a JSON object"
    cfg = checkpoint.config
    specs = param_specs(cfg.model)
    names = [s.name for s in specs]
    if meta.get("params") != names:
        return (f"its parameter list {meta.get('params')!r} is not the one its config "
                f"describes ({len(names)} parameters: {', '.join(names[:4])}, ...)")
    state = checkpoint.state
    for group, tensors in (("param", state.params), ("adam_m", state.adam_m),
                           ("adam_v", state.adam_v)):
        for spec in specs:
            a = tensors[spec.name]
            if tuple(a.shape) != tuple(spec.shape):
                return (f"{group}/{spec.name} has shape {tuple(a.shape)} but the config needs "
                        f"{tuple(spec.shape)}")
            if not np.issubdtype(a.dtype, np.floating):
                return f"{group}/{spec.name} has dtype {a.dtype}, not a float type"
            if not np.isfinite(a).all():
                return f"{group}/{spec.name} holds NaN or Inf"
    vocab = checkpoint.vocab
    if vocab is not None and len(vocab) > cfg.model.vocab_size:
        return (f"its vocabulary has {len(vocab)} tokens but the model only "
                f"{cfg.model.vocab_size} ids")
    return None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint; CheckpointError says which file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass an existing .npz file or "
                              "a --checkpoint-dir that holds step-*.npz files")
    arrays = _read_arrays(path)
    for key in ("checksum", "meta"):
        if key not in arrays:
            raise CheckpointError(f"checkpoint {path} has no '{key}' entry: it was not written "
                                  "by save_checkpoint; choose another file")
    stored = str(arrays.pop("checksum"))
    if _checksum(arrays) != stored:
        raise CheckpointError(f"checkpoint {path} is corrupted: checksum mismatch; delete it or "
                              "resume from an earlier checkpoint")
    try:
        meta = json.loads(str(arrays["meta"]))
        names = meta["params"]
        state = TrainState(params={n: arrays[f"param/{n}"] for n in names},
                           adam_m={n: arrays[f"adam_m/{n}"] for n in names},
                           adam_v={n: arrays[f"adam_v/{n}"] for n in names},
                           step=int(meta["step"]))
        vocab = Vocab.from_json(meta["vocab"]) if meta["vocab"] is not None else None
        config = Config.from_dict(meta["config"])
        extra = meta["extra"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} is malformed (missing or bad entry {exc}); "
                              "it was not written by this version; choose another file") from exc
    checkpoint = Checkpoint(state=state, config=config, vocab=vocab, extra=extra)
    problem = checkpoint_problem(checkpoint, meta)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} is not usable: {problem}; it was not written "
                              "by save_checkpoint for this model; choose another file")
    return checkpoint


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """The conventional file name for the checkpoint after `step` updates."""
    return Path(directory) / f"step-{step:06d}.npz"


def is_checkpoint_name(name: str) -> bool:
    """Whether a file called `name` in a --checkpoint-dir is one the run writes or prunes."""
    return _STEP_NAME.match(name) is not None


def is_our_checkpoint(path: Path) -> bool:
    """Whether `path` is a zip holding save_checkpoint's `meta` and `checksum` entries: what
    pruning may delete (a file of the user's that only shares the name is left alone)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return {"meta.npy", "checksum.npy"} <= names


def prune_checkpoints(directory: str | Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest step-*.npz checkpoints in `directory` (only files that
    are checkpoints, `is_our_checkpoint`); returns the deleted."""
    folder = Path(directory)
    found = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if p.is_file() and not p.is_symlink() and (m := _STEP_NAME.match(p.name))
                   and is_our_checkpoint(p))
    doomed = [p for _, p in found[:-keep]] if keep > 0 else []
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The `step-<N>.npz` with the largest N in `directory`, or None if there is none."""
    folder = Path(directory)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_file() and (m := _STEP_NAME.match(p.name))]
    return max(found)[1] if found else None
