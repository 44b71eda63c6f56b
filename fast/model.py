"""The fast engine's model: flat parameter layout, per-worker workspaces, one batch's gradient.

A worker calls `batch_forward_backward` once per batch; after argument checks everything runs
inside one `nogil` Numba function (`fast.kernels.model_forward_backward`: micro-batch loop,
every layer, the loss, the backward), so threads really run in parallel and the Python
overhead per batch is tens of microseconds. Parameters and gradients are flat vectors in
registry order (`reference.params.flat_offsets`), sliced inside Numba by an int64 offsets
table. Activations live in one flat `Workspace` buffer per worker, carved into the regions of
`fast.kernels.workspace_region_sizes` for `micro_batch` rows of S tokens.
"""

from __future__ import annotations

import mmap
import time

import numpy as np

from fast import kernels as K
from plumbing.errors import InputError
from reference.config import ConfigError, ModelConfig
from reference.params import flat_offsets, param_specs

_ALIGN_BYTES = 64  # every region starts on a cache line: same alignment in every workspace


def _region_sizes(m: ModelConfig, micro_batch: int) -> list[int]:
    return K.workspace_region_sizes(m.vocab_size, m.seq_len, m.d_model, m.n_layers, m.n_heads,
                                    m.d_ff, micro_batch)


class Workspace:
    """One worker's activation and scratch memory for one micro-batch (owned by one thread)."""

    def __init__(self, model: FastModel) -> None:
        self.model_config = model.m
        self.dtype = model.dtype
        self.micro_batch = model.micro_batch
        item = model.dtype.itemsize
        align = _ALIGN_BYTES // item
        offsets, pos = [], 0
        for size in _region_sizes(model.m, model.micro_batch):
            offsets.append(pos)
            pos += -(-size // align) * align
        self.offsets = np.array(offsets + [pos], dtype=np.int64)  # (n_regions + 1,)
        # An anonymous mapping, not malloc: glibc keeps a freed block in the arena of the
        # thread that freed it, so T workers allocating and dropping workspaces would pin up to
        # T of them (2.2 GB instead of 0.7 GB at the seed preset with 63 threads). A mapping
        # goes back to the OS when its last view is dropped, and is page (so cache-line) aligned.
        self.buffer = np.frombuffer(mmap.mmap(-1, max(pos, 1) * item), dtype=model.dtype)[:pos]

    @property
    def nbytes(self) -> int:
        """Bytes of activation and scratch memory this workspace maps."""
        return int(self.buffer.nbytes)

    def region(self, name: str) -> np.ndarray:
        """The flat region `name` (for inspection and tests)."""
        i = K.REGION_NAMES.index(name)
        return self.buffer[self.offsets[i]:self.offsets[i + 1]]


class FastModel:
    """The flat layout of one model in one dtype, and the micro-batch size its workspaces fit."""

    def __init__(self, m: ModelConfig, dtype=np.float32, micro_batch: int = 1) -> None:
        self.m = m.validate()
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ConfigError(f"fast engine dtype {self.dtype} is not supported; "
                              "use float32 or float64")
        if not isinstance(micro_batch, int | np.integer) or micro_batch <= 0:
            raise ConfigError(f"micro_batch={micro_batch!r} must be a positive integer")
        self.micro_batch = int(micro_batch)
        self.specs = param_specs(m)
        self.offsets = flat_offsets(m)  # name -> (start, stop)
        self.n_params = sum(s.size for s in self.specs)
        self.param_offsets = np.array([a for a, _ in self.offsets.values()] + [self.n_params],
                                      dtype=np.int64)  # (n_tensors + 1,) for the njit code

    def flatten(self, params: dict) -> np.ndarray:
        """One flat vector in registry order, cast to self.dtype (a new array)."""
        flat = np.empty(self.n_params, dtype=self.dtype)
        for spec in self.specs:
            if spec.name not in params:
                raise KeyError(f"parameter {spec.name!r} is missing; pass every tensor of "
                               "reference.params.param_specs")
            value = np.asarray(params[spec.name])
            if value.shape != spec.shape:
                raise ValueError(f"parameter {spec.name!r} has shape {value.shape}, "
                                 f"expected {spec.shape}")
            a, b = self.offsets[spec.name]
            flat[a:b] = value.ravel()
        return flat

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views (no copies) into a flat vector of this layout."""
        if flat.shape != (self.n_params,):
            raise ValueError(f"flat vector has shape {flat.shape}, expected ({self.n_params},)")
        return {s.name: flat[a:b].reshape(s.shape)
                for s, (a, b) in zip(self.specs, self.offsets.values(), strict=True)}

    def new_workspace(self) -> Workspace:
        return Workspace(self)

    def workspace_nbytes(self) -> int:
        """Bytes one workspace takes, without allocating it."""
        item = self.dtype.itemsize
        align = _ALIGN_BYTES // item
        n = sum(-(-s // align) * align for s in _region_sizes(self.m, self.micro_batch))
        return n * item


def _as_ids(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{what} must be a 2-D integer array (rows, positions); "
                         f"got shape {a.shape} dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


def batch_forward_backward(model: FastModel, params_flat: np.ndarray, grad_segment: np.ndarray,
                           tokens: np.ndarray, targets: np.ndarray, workspace: Workspace,
                           ticks: np.ndarray, slot: int,
                           timing: np.ndarray | None = None,
                           marks: np.ndarray | None = None) -> tuple[float, int]:
    """Adds d(loss SUM of this batch)/d(params) into grad_segment (+=, fixed op order).

    tokens/targets (B, T) int64, T <= S. Returns (loss_sum, non-pad target count). Micro-batches
    of `model.micro_batch` rows run in row order; ticks[slot] += 1 after every layer.
    timing: None, or an int64 array of len(fast.kernels.TIMING_GROUPS) to which every kernel
    group's CPU cycles are added (the per-kernel table of `make bench`).
    marks: None, or an int64 array of `n_marks(model, B)` cycle-counter readings the kernel
    writes: its start, then after each micro-batch's forward and after its backward.
    """
    m = model.m
    tokens = _as_ids(tokens, "tokens")
    targets = _as_ids(targets, "targets")
    if tokens.shape != targets.shape:
        raise InputError(f"tokens {tokens.shape} and targets {targets.shape} must have the "
                         "same shape")
    if tokens.shape[1] > m.seq_len:
        raise ConfigError(f"tokens have {tokens.shape[1]} positions but the model's context is "
                          f"seq_len={m.seq_len}; cut rows to at most {m.seq_len} positions")
    for ids, what in ((tokens, "tokens"), (targets, "targets")):
        if ids.size and (ids.min() < 0 or ids.max() >= m.vocab_size):
            raise InputError(f"{what} hold ids in [{ids.min()}, {ids.max()}] but the vocabulary "
                             f"has vocab_size={m.vocab_size} ids; re-tokenize with the model's "
                             "vocabulary")
    for arr, what in ((params_flat, "params_flat"), (grad_segment, "grad_segment")):
        if arr.shape != (model.n_params,) or arr.dtype != model.dtype \
                or not arr.flags.c_contiguous:
            raise ValueError(f"{what} must be a contiguous ({model.n_params},) {model.dtype} "
                             f"vector from FastModel.flatten; got {arr.shape} {arr.dtype}")
    if (workspace.model_config != m or workspace.dtype != model.dtype
            or workspace.micro_batch != model.micro_batch):
        raise ValueError("workspace was made for another model, dtype or micro_batch; "
                         "use model.new_workspace()")
    if ticks.dtype != np.int64 or not 0 <= slot < ticks.shape[0]:
        raise ValueError(f"ticks must be an int64 array with slot {slot} in range")
    if timing is None:
        timing = _NO_TIMING
    elif timing.dtype != np.int64 or timing.shape != (len(K.TIMING_GROUPS),):
        raise ValueError(f"timing must be an int64 array of {len(K.TIMING_GROUPS)} counters")
    if marks is None:
        marks = _NO_TIMING
    elif marks.dtype != np.int64 or marks.shape != (n_marks(model, tokens.shape[0]),):
        raise ValueError(f"marks must be an int64 array of {n_marks(model, tokens.shape[0])}")
    if tokens.size == 0:
        return 0.0, 0
    dims = np.array([m.vocab_size, m.seq_len, m.d_model, m.n_layers, m.n_heads, m.d_ff,
                     model.micro_batch], dtype=np.int64)
    loss, n = K.model_forward_backward(params_flat, grad_segment, model.param_offsets, tokens,
                                targets, workspace.buffer, workspace.offsets, dims, ticks,
                                int(slot), timing, marks)
    return float(loss), int(n)


def n_marks(model: FastModel, rows: int) -> int:
    """Cycle marks of a batch of `rows` rows: a start, then two per micro-batch."""
    return 2 * -(-rows // model.micro_batch) + 1


_NO_TIMING = np.zeros(0, np.int64)  # read-only in effect: the kernel skips an empty array
_WARMUP_MODEL = ModelConfig(vocab_size=11, seq_len=4, d_model=8, n_layers=1, n_heads=2, d_ff=16)


def warmup(dtype=None) -> float:
    """Compiles (or loads from the cache) the whole batch kernel for float32 and float64, or
    only `dtype`; returns the seconds spent. Call before starting worker threads."""
    from reference.params import init_params

    start = time.perf_counter()
    dtypes = [np.float32, np.float64] if dtype is None else [dtype]
    params = init_params(_WARMUP_MODEL, 0)
    tokens = np.array([[1, 2, 3, 4], [5, 6, 0, 0]], dtype=np.int64)
    targets = np.array([[2, 3, 4, 5], [6, 7, 0, 0]], dtype=np.int64)
    for dt in dtypes:
        model = FastModel(_WARMUP_MODEL, dt, micro_batch=1)
        flat = model.flatten(params)
        batch_forward_backward(model, flat, np.zeros_like(flat), tokens, targets,
                               model.new_workspace(), np.zeros(1, np.int64), 0)
    return time.perf_counter() - start
