"""The whole GPT-style model in float64: forward, loss, backward, batch and group gradients.

Composes `reference.layers` exactly as SPEC section 1 writes the forward pass. Per-batch work
returns loss and gradient SUMS; a group divides once by its total non-pad count, so a short or
padded group is exactly the token-weighted mean (SPEC 2, DESIGN.md "reference API").
"""

from __future__ import annotations

import numpy as np

from plumbing.errors import InputError
from reference import layers
from reference.config import ConfigError, ModelConfig
from reference.params import param_specs


def _check_ids(m: ModelConfig, ids: np.ndarray, what: str) -> np.ndarray:
    """Integer (B,T) ids in [0, V) with T <= S, or a clear error."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"{what} must be a 2-D integer array (rows, positions); "
                         f"got shape {ids.shape} dtype {ids.dtype}")
    if ids.shape[1] > m.seq_len:
        raise ConfigError(f"{what} have {ids.shape[1]} positions but the model's context is "
                          f"seq_len={m.seq_len}; cut rows to at most {m.seq_len} positions")
    if ids.size and (ids.min() < 0 or ids.max() >= m.vocab_size):
        raise InputError(f"{what} hold ids in [{ids.min()}, {ids.max()}] but the vocabulary has "
                         f"vocab_size={m.vocab_size} ids (0..{m.vocab_size - 1}); "
                         "re-tokenize with the model's vocabulary")
    return ids.astype(np.int64, copy=False)


def forward(params: dict, m: ModelConfig, tokens: np.ndarray) -> tuple[np.ndarray, dict]:
    """Logits (B,T,V) for tokens (B,T), T <= S, and the cache `backward` needs."""
    tokens = _check_ids(m, tokens, "tokens")
    x, emb_cache = layers.embedding_forward(params["wte"], params["wpe"], tokens)  # (B,T,d)
    blocks = []
    for layer in range(m.n_layers):
        p = f"h.{layer}."
        a, ln1 = layers.layernorm_forward(x, params[p + "ln1.g"], params[p + "ln1.b"])  # (B,T,d)
        qkv, qkv_lin = layers.linear_forward(a, params[p + "attn.w_qkv"],
                                             params[p + "attn.b_qkv"])  # (B,T,3d)
        y, att = layers.attention_forward(qkv, m.n_heads)  # (B,T,d)
        o, o_lin = layers.linear_forward(y, params[p + "attn.w_o"], params[p + "attn.b_o"])
        x = x + o  # (B,T,d) residual
        h, ln2 = layers.layernorm_forward(x, params[p + "ln2.g"], params[p + "ln2.b"])  # (B,T,d)
        u, fc_lin = layers.linear_forward(h, params[p + "mlp.w_fc"], params[p + "mlp.b_fc"])
        g, gelu = layers.gelu_forward(u)  # (B,T,f)
        z, proj_lin = layers.linear_forward(g, params[p + "mlp.w_proj"],
                                            params[p + "mlp.b_proj"])  # (B,T,d)
        x = x + z  # (B,T,d) residual
        blocks.append({"ln1": ln1, "qkv": qkv_lin, "att": att, "o": o_lin,
                       "ln2": ln2, "fc": fc_lin, "gelu": gelu, "proj": proj_lin})
    xf, lnf = layers.layernorm_forward(x, params["lnf.g"], params["lnf.b"])  # (B,T,d)
    logits, out = layers.logits_forward(xf, params["wte"])  # (B,T,V)
    return logits, {"emb": emb_cache, "blocks": blocks, "lnf": lnf, "out": out}


def backward(dlogits: np.ndarray, cache: dict, m: ModelConfig) -> dict[str, np.ndarray]:
    """Gradients of every registry parameter given dlogits (B,T,V); reverses `forward`."""
    grads: dict[str, np.ndarray] = {}
    dxf, dwte_out = layers.logits_backward(dlogits, cache["out"])
    dx, grads["lnf.g"], grads["lnf.b"] = layers.layernorm_backward(dxf, cache["lnf"])
    for layer in reversed(range(m.n_layers)):
        p, c = f"h.{layer}.", cache["blocks"][layer]
        # x = x + z: the residual passes dx through unchanged and into the MLP branch
        dg, grads[p + "mlp.w_proj"], grads[p + "mlp.b_proj"] = layers.linear_backward(
            dx, c["proj"])
        du = layers.gelu_backward(dg, c["gelu"])
        dh, grads[p + "mlp.w_fc"], grads[p + "mlp.b_fc"] = layers.linear_backward(du, c["fc"])
        dln2, grads[p + "ln2.g"], grads[p + "ln2.b"] = layers.layernorm_backward(dh, c["ln2"])
        dx = dx + dln2
        # x = x + o: the same for the attention branch
        dy, grads[p + "attn.w_o"], grads[p + "attn.b_o"] = layers.linear_backward(dx, c["o"])
        dqkv = layers.attention_backward(dy, c["att"])
        da, grads[p + "attn.w_qkv"], grads[p + "attn.b_qkv"] = layers.linear_backward(
            dqkv, c["qkv"])
        dln1, grads[p + "ln1.g"], grads[p + "ln1.b"] = layers.layernorm_backward(da, c["ln1"])
        dx = dx + dln1
    dwte_emb, grads["wpe"] = layers.embedding_backward(dx, cache["emb"])
    grads["wte"] = dwte_emb + dwte_out  # tied: input embedding plus output projection
    return {s.name: grads[s.name] for s in param_specs(m)}  # registry order


def batch_loss_and_grads(params: dict, m: ModelConfig, tokens: np.ndarray, targets: np.ndarray
                         ) -> tuple[float, int, dict[str, np.ndarray]]:
    """(loss SUM over non-pad targets, their count, gradient of the loss SUM) for one batch."""
    targets = _check_ids(m, targets, "targets")
    if np.shape(tokens) != targets.shape:
        raise InputError(f"tokens {np.shape(tokens)} and targets {targets.shape} must have the "
                         "same shape")
    logits, cache = forward(params, m, tokens)
    (loss_sum, n), ce = layers.crossentropy_forward(logits, targets)
    grads = backward(layers.crossentropy_backward(1.0, ce), cache, m)
    return loss_sum, n, grads


def group_loss_and_grads(params: dict, m: ModelConfig, tokens: np.ndarray, targets: np.ndarray,
                         batch_size: int) -> tuple[float, int, dict[str, np.ndarray]]:
    """(mean loss, n, mean gradient) over a group of rows (g*B, S), token-weighted.

    Rows are cut into batches of `batch_size` (a shorter final batch is allowed); batch sums
    are added in index order and divided once by the group's total non-pad count.
    """
    if not isinstance(batch_size, int | np.integer) or batch_size <= 0:
        raise InputError(f"batch_size={batch_size!r} must be a positive integer")
    if np.ndim(tokens) != 2 or np.shape(tokens) != np.shape(targets):
        raise InputError(f"tokens {np.shape(tokens)} and targets {np.shape(targets)} must be "
                         "2-D arrays of the same shape (rows, positions)")
    rows = np.shape(tokens)[0]
    loss_total, n_total = 0.0, 0
    grad_total = {s.name: np.zeros(s.shape) for s in param_specs(m)}
    for start in range(0, rows, batch_size):
        rs = slice(start, start + batch_size)
        loss_sum, n, grads = batch_loss_and_grads(params, m, tokens[rs], targets[rs])
        loss_total += loss_sum
        n_total += n
        for name, grad in grads.items():
            grad_total[name] += grad
    if n_total == 0:
        raise InputError(f"the group of {rows} rows has no non-pad targets (every target is "
                         f"<pad>={layers.PAD_ID}); there is nothing to learn from: check the data")
    return loss_total / n_total, n_total, {k: g / n_total for k, g in grad_total.items()}
