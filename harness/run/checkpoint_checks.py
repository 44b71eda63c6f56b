"""What a checkpoint must hold before anything uses it (SPEC 12).

The checksum only proves the file is what its writer wrote; a crafted or foreign file can carry
a valid checksum. So the loaded content is checked against the config it names: the config
itself is validated with upper bounds (reference/config.py), the parameter names and order are
those of `param_specs`, every parameter and both Adam moments have exactly the spec's shape, a
float dtype and finite values, the step is a non-negative integer, and the vocabulary fits the
model. A file that fails is refused with the first problem found (exit 2), never a crash in an
engine or an allocation sized by an attacker.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reference.params import param_specs

MAX_STEP = 10**12  # far beyond any run (the seed preset needs ~1 s per step: 30,000 years)


def checkpoint_problem(checkpoint: Any, meta: dict) -> str | None:
    """The first reason `checkpoint` (a harness.run.checkpoint.Checkpoint) is unusable, or None."""
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
