"""Forward/backward pairs of every layer of the model (SPEC section 1), float64 NumPy.

Each `<layer>_forward` is pure and returns `(out, cache)`; `<layer>_backward(dout, cache)`
returns the gradients of its inputs and parameters. Clarity over speed: this file is the
executable specification that `fast/kernels.py` (same names) is checked against.
Shape letters: B batch rows, T positions, S context, V vocabulary, d width, H heads,
hd = d/H head size, i/o linear in/out widths.
"""

from __future__ import annotations

import math

import numpy as np

LN_EPS = 1e-5  # SPEC 1: LayerNorm epsilon
PAD_ID = 0  # SPEC 2: <pad>; targets equal to it are ignored by the loss
GELU_C = math.sqrt(2.0 / math.pi)  # tanh-form GELU constant


# ---------------------------------------------------------------- embedding


def embedding_forward(wte: np.ndarray, wpe: np.ndarray, tokens: np.ndarray
                      ) -> tuple[np.ndarray, tuple]:
    """x = wte[t] + wpe[0:T]; wte (V,d), wpe (S,d), tokens (B,T) ints in [0,V), T <= S."""
    T = tokens.shape[1]
    x = wte[tokens] + wpe[:T]  # (B,T,d)
    return x, (tokens, wte.shape, wpe.shape)


def embedding_backward(dx: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Differentiates `x = wte[tokens] + wpe[:T]`; dx (B,T,d) -> (dwte (V,d), dwpe (S,d))."""
    tokens, wte_shape, wpe_shape = cache
    T = tokens.shape[1]
    dwte = np.zeros(wte_shape)  # (V,d)
    np.add.at(dwte, tokens, dx)  # a token repeated in the batch accumulates every use
    dwpe = np.zeros(wpe_shape)  # (S,d); rows T..S-1 were unused
    dwpe[:T] = dx.sum(axis=0)
    return dwte, dwpe


# ---------------------------------------------------------------- layernorm


def layernorm_forward(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """LayerNorm over the last axis, biased variance; x (...,d), g (d,), b (d,)."""
    mean = x.mean(axis=-1, keepdims=True)  # (...,1)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # (...,1) biased
    rstd = 1.0 / np.sqrt(var + LN_EPS)  # (...,1)
    xhat = (x - mean) * rstd  # (...,d)
    y = xhat * g + b  # (...,d)
    return y, (xhat, rstd, g)


def layernorm_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Differentiates `y = (x - mean) * rstd * g + b`; dy (...,d) -> (dx (...,d), dg, db)."""
    xhat, rstd, g = cache
    d = xhat.shape[-1]
    dg = (dy * xhat).reshape(-1, d).sum(axis=0)  # (d,)
    db = dy.reshape(-1, d).sum(axis=0)  # (d,)
    dxhat = dy * g  # (...,d)
    # mean and rstd depend on x too: remove the components along 1 and along xhat.
    dx = rstd * (dxhat
                 - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))  # (...,d)
    return dx, dg, db


# ---------------------------------------------------------------- linear


def linear_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """y = x @ W + b; x (...,i), W (i,o), b (o,) -> y (...,o)."""
    y = x @ W + b  # (...,o)
    return y, (x, W)


def linear_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Differentiates `y = x @ W + b`; dy (...,o) -> (dx (...,i), dW (i,o), db (o,))."""
    x, W = cache
    i, o = W.shape
    dx = dy @ W.T  # (...,i)
    dW = x.reshape(-1, i).T @ dy.reshape(-1, o)  # (i,o) summed over every row
    db = dy.reshape(-1, o).sum(axis=0)  # (o,)
    return dx, dW, db


# ---------------------------------------------------------------- attention


def _split_heads(z: np.ndarray, n_heads: int) -> np.ndarray:
    """(B,T,d) -> (B,H,T,hd)."""
    B, T, d = z.shape
    return z.reshape(B, T, n_heads, d // n_heads).transpose(0, 2, 1, 3)


def _merge_heads(z: np.ndarray) -> np.ndarray:
    """(B,H,T,hd) -> (B,T,d)."""
    B, H, T, hd = z.shape
    return z.transpose(0, 2, 1, 3).reshape(B, T, H * hd)


def attention_forward(qkv: np.ndarray, n_heads: int) -> tuple[np.ndarray, tuple]:
    """Causal multi-head self-attention core; qkv (B,T,3d) holds q, k, v in that order.

    The w_qkv / w_o projections around it are `linear` layers.
    """
    d = qkv.shape[-1] // 3
    q, k, v = (_split_heads(z, n_heads) for z in np.split(qkv, 3, axis=-1))  # (B,H,T,hd) each
    scale = 1.0 / math.sqrt(d // n_heads)
    T = qkv.shape[1]
    causal = np.tril(np.ones((T, T), dtype=bool))  # (T,T): position i sees j <= i
    scores = np.where(causal, q @ k.transpose(0, 1, 3, 2) * scale, -np.inf)  # (B,H,T,T)
    scores = scores - scores.max(axis=-1, keepdims=True)  # stable; the diagonal is always finite
    att = np.exp(scores)
    att /= att.sum(axis=-1, keepdims=True)  # (B,H,T,T) rows sum to 1, zero above the diagonal
    y = _merge_heads(att @ v)  # (B,T,d)
    return y, (q, k, v, att, scale, n_heads)


def attention_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """Differentiates `y = merge(softmax(q k^T * scale, causal) @ v)`; dy (B,T,d) -> dqkv."""
    q, k, v, att, scale, n_heads = cache
    dyh = _split_heads(dy, n_heads)  # (B,H,T,hd)
    datt = dyh @ v.transpose(0, 1, 3, 2)  # (B,H,T,T)   from  y = att @ v
    dv = att.transpose(0, 1, 3, 2) @ dyh  # (B,H,T,hd)
    # softmax backward per row: dscores = att * (datt - sum_j att*datt); masked entries have att 0
    dscores = att * (datt - (att * datt).sum(axis=-1, keepdims=True))  # (B,H,T,T)
    dq = dscores @ k * scale  # (B,H,T,hd)   from  scores = q @ k^T * scale
    dk = dscores.transpose(0, 1, 3, 2) @ q * scale  # (B,H,T,hd)
    return np.concatenate([_merge_heads(dq), _merge_heads(dk), _merge_heads(dv)], axis=-1)


# ---------------------------------------------------------------- gelu


def gelu_forward(u: np.ndarray) -> tuple[np.ndarray, tuple]:
    """y = 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))); u any shape."""
    th = np.tanh(GELU_C * (u + 0.044715 * u**3))  # same shape as u
    y = 0.5 * u * (1.0 + th)
    return y, (u, th)


def gelu_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """Differentiates `y = 0.5 u (1 + th)`, th = tanh(c (u + 0.044715 u^3)); -> du."""
    u, th = cache
    dth_du = (1.0 - th**2) * GELU_C * (1.0 + 3 * 0.044715 * u**2)
    return dy * (0.5 * (1.0 + th) + 0.5 * u * dth_du)


# ---------------------------------------------------------------- tied output logits


def logits_forward(x: np.ndarray, wte: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Tied output layer: logits = x @ wte^T; x (B,T,d) final-LN output, wte (V,d)."""
    logits = x @ wte.T  # (B,T,V)
    return logits, (x, wte)


def logits_backward(dlogits: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Differentiates `logits = x @ wte^T`; dlogits (B,T,V) -> (dx (B,T,d), dwte (V,d))."""
    x, wte = cache
    V, d = wte.shape
    dx = dlogits @ wte  # (B,T,d)
    dwte = dlogits.reshape(-1, V).T @ x.reshape(-1, d)  # (V,d)
    return dx, dwte


# ---------------------------------------------------------------- cross-entropy


def crossentropy_forward(logits: np.ndarray, targets: np.ndarray
                         ) -> tuple[tuple[float, int], tuple]:
    """SUM of -log softmax(logits)[target] over non-pad targets, and their count.

    logits (B,T,V), targets (B,T) ints in [0,V); targets == PAD_ID (0) contribute nothing.
    A sum, not a mean: the caller divides once by the whole group's count (DESIGN.md).
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (B,T,V)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # (B,T,V)
    mask = targets != PAD_ID  # (B,T)
    logp_target = np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # (B,T)
    loss_sum = float(-(logp_target * mask).sum())
    n = int(mask.sum())
    return (loss_sum, n), (logp, targets, mask)


def crossentropy_backward(dloss_sum: float, cache: tuple) -> np.ndarray:
    """Differentiates `loss_sum = -sum(mask * logp[target])`; -> dlogits (B,T,V)."""
    logp, targets, mask = cache
    dlogits = np.exp(logp)  # (B,T,V) softmax
    np.put_along_axis(dlogits, targets[..., None],
                      np.take_along_axis(dlogits, targets[..., None], axis=-1) - 1.0, axis=-1)
    return dlogits * mask[..., None] * dloss_sum
