"""The one parameter registry: name, shape and initialisation of every tensor (SPEC section 1).

Initialisation, checkpoints, gradients, `.npz` exports, the fast engine's flat buffers and the
tests all iterate `param_specs`; nothing keeps a parallel hand-written list of tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reference.config import ModelConfig


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    init: str  # "normal", "ones" or "zeros"
    std: float = 0.0  # standard deviation for "normal"

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def decays(self) -> bool:
        """AdamW weight decay applies to 2-D matrices only (SPEC 3)."""
        return len(self.shape) == 2


def param_specs(m: ModelConfig) -> list[ParamSpec]:
    """Every parameter in a fixed order; the order is part of the format (flat layout, RNG)."""
    V, S, d, L, f = m.vocab_size, m.seq_len, m.d_model, m.n_layers, m.d_ff
    proj_std = 0.02 / math.sqrt(2 * L)
    specs = [ParamSpec("wte", (V, d), "normal", 0.02), ParamSpec("wpe", (S, d), "normal", 0.02)]
    for layer in range(L):
        h = f"h.{layer}."
        specs += [
            ParamSpec(h + "ln1.g", (d,), "ones"),
            ParamSpec(h + "ln1.b", (d,), "zeros"),
            ParamSpec(h + "attn.w_qkv", (d, 3 * d), "normal", 0.02),
            ParamSpec(h + "attn.b_qkv", (3 * d,), "zeros"),
            ParamSpec(h + "attn.w_o", (d, d), "normal", proj_std),
            ParamSpec(h + "attn.b_o", (d,), "zeros"),
            ParamSpec(h + "ln2.g", (d,), "ones"),
            ParamSpec(h + "ln2.b", (d,), "zeros"),
            ParamSpec(h + "mlp.w_fc", (d, f), "normal", 0.02),
            ParamSpec(h + "mlp.b_fc", (f,), "zeros"),
            ParamSpec(h + "mlp.w_proj", (f, d), "normal", proj_std),
            ParamSpec(h + "mlp.b_proj", (d,), "zeros"),
        ]
    specs += [ParamSpec("lnf.g", (d,), "ones"), ParamSpec("lnf.b", (d,), "zeros")]
    return specs


def param_count(m: ModelConfig) -> int:
    return sum(s.size for s in param_specs(m))


def init_params(m: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """Seeded float64 parameters; both engines start from exactly these values."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for spec in param_specs(m):
        if spec.init == "normal":
            params[spec.name] = rng.standard_normal(spec.shape) * spec.std
        elif spec.init == "ones":
            params[spec.name] = np.ones(spec.shape)
        else:
            params[spec.name] = np.zeros(spec.shape)
    return params


def flat_offsets(m: ModelConfig) -> dict[str, tuple[int, int]]:
    """(start, stop) of each parameter inside one flat vector, in registry order."""
    offsets, start = {}, 0
    for spec in param_specs(m):
        offsets[spec.name] = (start, start + spec.size)
        start += spec.size
    return offsets


def flatten(m: ModelConfig, tensors: dict[str, np.ndarray], dtype=np.float64) -> np.ndarray:
    """Pack named tensors into one flat vector in registry order."""
    return np.concatenate([np.asarray(tensors[s.name], dtype=dtype).ravel()
                           for s in param_specs(m)])


def unflatten(m: ModelConfig, flat: np.ndarray) -> dict[str, np.ndarray]:
    """Named views (no copies) into a flat vector laid out by `flat_offsets`."""
    return {s.name: flat[a:b].reshape(s.shape)
            for s, (a, b) in zip(param_specs(m), flat_offsets(m).values(), strict=True)}
