"""Where a failed gate first diverges: the fold of a bitwise failure, the layer of a tolerance one.

Bitwise (two thread counts give different bits): both runs are driven again through the same
jobs as the gates (`drive`) with fold digests on (`fast.record.FoldDigests`: a digest of every
partial sum of the reduction tree), unless `verify --locate` recorded them in the gate runs
already. The first key whose digests differ, in the order the tree computes them (step; then
every batch's fold into its position segment in batch order, the 12-segment sum by chunks, the
update by chunks), is the first divergence; one more pair of runs keeps a copy of just that
partial sum, which names the tensor, flat index, both values and their distance in ULPs.

Tolerance (the engine leaves the float64 reference): for the fast engine, first the forward
activations of batch 0 at the initial weights, layer by layer (the fast kernels' workspace after
a forward against the reference forward's cache); when they all agree, the first gradient tensor
beyond the tolerance in backward order (final norm, last layer down to the first, embeddings).
Other engines expose no activations: gradients only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from fast.record import FOLD, SUM, FoldDigests
from harness.run.engines import make_engine
from reference.config import Config
from reference.params import flat_offsets, param_specs

LOCATED = "located"  # prefix of every location phrase (appended to the failure message)


@runtime_checkable
class RecordsDigests(Protocol):
    """An engine that can record fold digests (the fast engine: `FastTrainer.record_digests`)."""

    def record_digests(self, capture=()) -> FoldDigests: ...


def drive(engine, groups) -> tuple:
    """The gates' jobs, in order: the gradient of group 0 (job 1), then one training step per
    group (jobs 2, 3, ...). Returns (gradient result, weights after step 1, final weights)."""
    first = groups[0]
    res = engine.group_grads(first.tokens, first.targets)
    engine.step(first.tokens, first.targets)
    after_one = engine.state().params
    for g in groups[1:]:
        engine.step(g.tokens, g.targets)
    return res, after_one, engine.state().params


def job_label(step: int) -> str:
    """What the run record's step `step` of `drive` was."""
    return "the gradient of group 0" if step == 1 else f"training step {step - 1}"


def ulps(a, b) -> int:
    """Distance between two floats of the same dtype in units in the last place (0: same bits)."""
    a, b = np.asarray(a), np.asarray(b)
    ints = np.int64 if a.dtype == np.float64 else np.int32
    return abs(_ordered_int(a.view(ints)) - _ordered_int(b.view(ints)))


def _ordered_int(i: np.ndarray) -> int:
    """Bits of a float as an integer that counts up with the float (negatives mirrored)."""
    v = int(i)
    return v if v >= 0 else -(v - int(np.iinfo(i.dtype).min))


def tensor_at(cfg: Config, flat: int) -> str:
    """`name[i, j]` of flat parameter index `flat` in the registry layout."""
    shapes = {s.name: s.shape for s in param_specs(cfg.model)}
    for name, (a, b) in flat_offsets(cfg.model).items():
        if a <= flat < b:
            index = np.unravel_index(flat - a, shapes[name])
            return f"{name}[{', '.join(str(int(i)) for i in index)}]"
    raise IndexError(f"flat index {flat} is outside the {cfg.preset} parameters")


def first_difference(a: FoldDigests, b: FoldDigests) -> tuple[int, str, int] | None:
    """The first key (in tree order) whose digest differs or that only one run recorded."""
    both = FoldDigests()
    both.digests = {**a.digests, **b.digests}
    for key in both.ordered():
        if a.digests.get(key) != b.digests.get(key):
            return key
    return None


def _record(cfg: Config, dtype: str, threads: int, groups, *, stall_timeout: float, faults,
            engine_name: str, capture=()) -> FoldDigests | None:
    """Drive one run with fold digests on; None when the engine cannot record them."""
    engine = make_engine(engine_name, cfg, threads=threads, dtype=dtype,
                         stall_timeout=stall_timeout, faults=faults)
    try:
        if not isinstance(engine, RecordsDigests):
            return None
        digests = engine.record_digests(capture)
        drive(engine, groups)
    finally:
        engine.close()
    return digests


def _describe(key: tuple[int, str, int], digests: FoldDigests) -> str:
    step, stage, index = key
    if stage == FOLD:
        position, sphere = digests.where.get(key, (index % 12, index // 12))
        return (f"step {step} ({job_label(step)}), fold of batch {index} into position "
                f"{position} as sphere {sphere}")
    what = "sum of the 12 position segments" if stage == SUM else "update"
    return f"step {step} ({job_label(step)}), {what}, chunk {index}"


def locate_bitwise(cfg: Config, dtype: str, groups, threads: tuple[int, int], *,
                   stall_timeout: float = 60.0, faults=None, engine_name: str = "fast",
                   digests: tuple | None = None) -> str:
    """One phrase: where the runs at threads[0] and threads[1] first differ (see module doc).
    `digests`: the two runs' FoldDigests if the gate runs recorded them (`--locate`)."""
    run = dict(stall_timeout=stall_timeout, faults=faults, engine_name=engine_name)
    ta, tb = threads
    if digests is None or None in digests:
        digests = tuple(_record(cfg, dtype, t, groups, **run) for t in threads)
        if None in digests:
            return f"{LOCATED}: not possible: engine {engine_name} records no fold digests"
    key = first_difference(*digests)
    if key is None:
        return (f"{LOCATED}: nowhere: every partial sum of the reduction tree and every update "
                "chunk has the same digest in both runs (the difference did not reproduce)")
    where = _describe(key, digests[1] if key in digests[1].where else digests[0])
    kept = [_record(cfg, dtype, t, groups, capture=(key,), **run).captured for t in threads]
    if key not in kept[0] or key not in kept[1]:
        return f"{LOCATED}: {where}: only the T={tb if key in kept[1] else ta} run has it"
    (lo, a), (_, b) = kept[0][key], kept[1][key]
    uint = np.uint64 if a.dtype.itemsize == 8 else np.uint32
    diff = np.flatnonzero(a.view(uint) != b.view(uint))
    if not diff.size:
        return f"{LOCATED}: {where}: the digests differ but the repeat gave equal bits"
    i = int(diff[0])
    n = ulps(a[i], b[i])
    many = diff.size > 1
    return (f"{LOCATED}: {where}: {tensor_at(cfg, lo + i)} (flat {lo + i}): T={ta} {a[i]!s} vs "
            f"T={tb} {b[i]!s}, {n} ulp{'s' if n != 1 else ''} ({diff.size} element"
            f"{'s' if many else ''} of that partial sum differ{'' if many else 's'})")


def backward_order(names: Iterable[str]) -> list[str]:
    """Parameters in the order backward reaches them: the registry reversed (final norm, the
    last layer from its MLP down to ln1, ..., the first layer, then the embeddings)."""
    return list(reversed(list(names)))


def layer_of(name: str) -> str:
    """`h.3` for a block's tensor, the tensor's own name otherwise (wte, wpe, lnf.g...)."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "h" else name


def fast_activations(cfg: Config, dtype: str, params: dict, tokens: np.ndarray,
                     targets: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(name, values) of the fast kernels' forward of one batch, in forward order: per layer
    the ln1 output, the merged attention heads, the ln2 output and the MLP hidden (GELU) values,
    then the final LayerNorm. Read from the workspace after `fast.evaluate.batch_forward_loss`
    (one micro-batch of all the batch's rows, so every slot holds this batch)."""
    from fast.evaluate import batch_forward_loss
    from fast.model import FastModel
    from harness.run.engines import parse_dtype

    m, (B, T) = cfg.model, tokens.shape
    model = FastModel(m, parse_dtype(dtype), micro_batch=B)
    ws = model.new_workspace()
    batch_forward_loss(model, model.flatten(params), tokens, targets, ws,
                       np.zeros(1, np.int64), 0)
    N, Nmax = B * T, B * m.seq_len  # a layer's slot is sized for full rows of S tokens

    def slot(region: str, layer: int, cols: int) -> np.ndarray:
        a = layer * Nmax * cols
        return ws.region(region)[a:a + N * cols].reshape(B, T, cols)

    out, d = [], m.d_model
    for layer in range(m.n_layers):
        h = f"h.{layer}."
        out += [(h + "ln1", slot("ln1", layer, d)), (h + "attn", slot("y", layer, d)),
                (h + "ln2", slot("ln2", layer, d)), (h + "mlp", slot("g", layer, m.d_ff))]
    return out + [("lnf", slot("lnf", 0, d))]


def reference_activations(cfg: Config, params: dict, tokens: np.ndarray) -> dict:
    """The same activations from the reference forward's cache (the inputs its linears kept)."""
    from reference.model import forward

    _, cache = forward(params, cfg.model, tokens)
    out = {}
    for layer, block in enumerate(cache["blocks"]):
        h = f"h.{layer}."
        out |= {h + "ln1": block["qkv"][0], h + "attn": block["o"][0], h + "ln2": block["fc"][0],
                h + "mlp": block["proj"][0]}
    return out | {"lnf": cache["out"][0]}


def locate_forward(cfg: Config, dtype: str, tokens: np.ndarray, targets: np.ndarray, tol: float,
                   rel_l2) -> str | None:
    """The first forward activation (batch 0 of group 0, the initial weights) where the fast
    kernels leave the reference by more than `tol`; None when every one is within it."""
    from reference.params import init_params

    params = init_params(cfg.model, cfg.train.seed)
    ref = reference_activations(cfg, params, tokens)
    for name, values in fast_activations(cfg, dtype, params, tokens, targets):
        err = rel_l2(values, ref[name])
        if not err <= tol:
            return (f"{LOCATED} (forward activations, batch 0): layer {layer_of(name)}, "
                    f"{name} output: relative L2 {err:.3e} > {tol:.0e}")
    return None


def locate_tolerance(fast: dict[str, np.ndarray], ref: dict[str, np.ndarray],
                     names: Iterable[str], tol: float, rel_l2, forward=None) -> str:
    """One phrase: the first layer whose forward activations leave the reference (`forward`:
    a callable returning `locate_forward`'s phrase, for the fast engine), else the first
    gradient tensor in backward order whose relative L2 error exceeds `tol`."""
    located = forward() if forward is not None else None
    if located is not None:
        return located
    for name in backward_order(names):
        err = rel_l2(fast[name], ref[name])
        if not err <= tol:
            return (f"{LOCATED} (gradients in backward order): layer {layer_of(name)}, tensor "
                    f"{name}: relative L2 {err:.3e} > {tol:.0e}")
    checked = "every forward activation of batch 0 and " if forward is not None else ""
    return f"{LOCATED}: nowhere below the loss: {checked}every gradient tensor is within {tol:.0e}"


def locate_records(records, cfg: Config, dtype: str, groups, *, digests: dict | None,
                   stall_timeout: float, faults, engine_name: str) -> None:
    """Append the first divergence to the first bitwise failure of each record (against the
    first thread count), so the printed line, --json and --junit carry it."""
    base = records[0]
    for r in records[1:]:
        at = [i for i, f in enumerate(r.failures) if f.startswith("bitwise-")]
        if not at:
            continue
        pair = (digests.get(base.threads), digests.get(r.threads)) if digests else None
        phrase = locate_bitwise(cfg, dtype, groups, (base.threads, r.threads),
                                stall_timeout=stall_timeout, faults=faults,
                                engine_name=engine_name, digests=pair)
        r.failures[at[0]] += f"; {phrase}"
