#!/usr/bin/env python3
"""A complete out-of-process engine for `spheres --engine exec:...`, in NumPy alone.

It imports nothing from Kissing Spheres: the model math is written here from SPEC section 1 and
the protocol from docs/ENGINES.md, so it reads as a template for an engine in any language.
Run:  spheres verify --engine "exec:python examples/numpy_engine.py" --presets tiny --threads 1,2

Channel: stdin/stdout, frames of b"KSE1" + uint64 little-endian length + .npz bytes. Each request
has an `op`; each reply is one frame. Logs go to stderr (stdout is the channel). EOF -> exit.
"""

import io
import json
import math
import struct
import sys

import numpy as np

HEADER = struct.Struct("<4sQ")
EPS_LN, PAD, GELU_C = 1e-5, 0, math.sqrt(2.0 / math.pi)


def read_frame(stream):
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None  # the harness closed the channel: exit quietly
    magic, length = HEADER.unpack(head)
    assert magic == b"KSE1", f"bad frame magic {magic!r}"
    with np.load(io.BytesIO(stream.read(length)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_frame(stream, arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    stream.write(HEADER.pack(b"KSE1", len(buf.getvalue())) + buf.getvalue())
    stream.flush()


def names(m):
    out = ["wte", "wpe"]
    for i in range(m["n_layers"]):
        out += [f"h.{i}.{n}" for n in ("ln1.g", "ln1.b", "attn.w_qkv", "attn.b_qkv", "attn.w_o",
                                       "attn.b_o", "ln2.g", "ln2.b", "mlp.w_fc", "mlp.b_fc",
                                       "mlp.w_proj", "mlp.b_proj")]
    return out + ["lnf.g", "lnf.b"]


def ln_fwd(x, g, b):
    mu = x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + EPS_LN)
    xh = (x - mu) * rstd
    return xh * g + b, (xh, rstd, g)


def ln_bwd(dy, c):
    xh, rstd, g = c
    dxh = dy * g
    dx = rstd * (dxh - dxh.mean(-1, keepdims=True) - xh * (dxh * xh).mean(-1, keepdims=True))
    return dx, (dy * xh).reshape(-1, xh.shape[-1]).sum(0), dy.reshape(-1, xh.shape[-1]).sum(0)


def lin_bwd(dy, x, W):
    return dy @ W.T, x.reshape(-1, W.shape[0]).T @ dy.reshape(-1, W.shape[1]), \
        dy.reshape(-1, W.shape[1]).sum(0)


def heads(z, H):
    B, T, d = z.shape
    return z.reshape(B, T, H, d // H).transpose(0, 2, 1, 3)


def merge(z):
    B, H, T, hd = z.shape
    return z.transpose(0, 2, 1, 3).reshape(B, T, H * hd)


def batch_grads(P, m, tok, tgt):
    """(loss sum over non-pad targets, their count, gradient of that sum) for one batch."""
    H, L = m["n_heads"], m["n_layers"]
    B, T = tok.shape
    x = P["wte"][tok] + P["wpe"][:T]
    mask_tt = np.tril(np.ones((T, T), bool))
    caches = []
    for i in range(L):
        p = f"h.{i}."
        a, c1 = ln_fwd(x, P[p + "ln1.g"], P[p + "ln1.b"])
        q, k, v = (heads(z, H) for z in np.split(a @ P[p + "attn.w_qkv"] + P[p + "attn.b_qkv"],
                                                 3, axis=-1))
        scale = 1.0 / math.sqrt(q.shape[-1])
        s = np.where(mask_tt, q @ k.transpose(0, 1, 3, 2) * scale, -np.inf)
        att = np.exp(s - s.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = merge(att @ v)
        x = x + y @ P[p + "attn.w_o"] + P[p + "attn.b_o"]
        h, c2 = ln_fwd(x, P[p + "ln2.g"], P[p + "ln2.b"])
        u = h @ P[p + "mlp.w_fc"] + P[p + "mlp.b_fc"]
        th = np.tanh(GELU_C * (u + 0.044715 * u ** 3))
        gl = 0.5 * u * (1 + th)
        x = x + gl @ P[p + "mlp.w_proj"] + P[p + "mlp.b_proj"]
        caches.append((a, c1, q, k, v, scale, att, y, h, c2, u, th, gl))
    xf, cf = ln_fwd(x, P["lnf.g"], P["lnf.b"])
    logits = xf @ P["wte"].T
    sh = logits - logits.max(-1, keepdims=True)
    logp = sh - np.log(np.exp(sh).sum(-1, keepdims=True))
    keep = tgt != PAD
    loss = float(-(np.take_along_axis(logp, tgt[..., None], -1)[..., 0] * keep).sum())
    dlog = np.exp(logp)
    np.put_along_axis(dlog, tgt[..., None], np.take_along_axis(dlog, tgt[..., None], -1) - 1, -1)
    dlog *= keep[..., None]
    G = {}
    V, d = P["wte"].shape
    dxf = dlog @ P["wte"]
    dwte = dlog.reshape(-1, V).T @ xf.reshape(-1, d)
    dx, G["lnf.g"], G["lnf.b"] = ln_bwd(dxf, cf)
    for i in reversed(range(L)):
        p = f"h.{i}."
        a, c1, q, k, v, scale, att, y, h, c2, u, th, gl = caches[i]
        dgl, G[p + "mlp.w_proj"], G[p + "mlp.b_proj"] = lin_bwd(dx, gl, P[p + "mlp.w_proj"])
        du = dgl * (0.5 * (1 + th) + 0.5 * u * (1 - th ** 2) * GELU_C * (1 + 3 * 0.044715 * u**2))
        dh, G[p + "mlp.w_fc"], G[p + "mlp.b_fc"] = lin_bwd(du, h, P[p + "mlp.w_fc"])
        dn, G[p + "ln2.g"], G[p + "ln2.b"] = ln_bwd(dh, c2)
        dx = dx + dn
        dy, G[p + "attn.w_o"], G[p + "attn.b_o"] = lin_bwd(dx, y, P[p + "attn.w_o"])
        dyh = heads(dy, H)
        datt = dyh @ v.transpose(0, 1, 3, 2)
        dv = att.transpose(0, 1, 3, 2) @ dyh
        ds = att * (datt - (att * datt).sum(-1, keepdims=True))
        dqkv = np.concatenate([merge(ds @ k * scale),
                               merge(ds.transpose(0, 1, 3, 2) @ q * scale), merge(dv)], -1)
        da, G[p + "attn.w_qkv"], G[p + "attn.b_qkv"] = lin_bwd(dqkv, a, P[p + "attn.w_qkv"])
        dn, G[p + "ln1.g"], G[p + "ln1.b"] = ln_bwd(da, c1)
        dx = dx + dn
    np.add.at(dwte, tok, dx)
    G["wte"] = dwte
    G["wpe"] = np.zeros_like(P["wpe"])
    G["wpe"][:T] = dx.sum(0)
    return loss, int(keep.sum()), G


class Engine:
    def __init__(self, req):
        cfg = json.loads(str(req["config"]))
        self.m, self.t = cfg["model"], cfg["train"]
        self.dt = np.dtype(str(req["dtype"]))
        self.names = names(self.m)
        self.P = {n: req[f"param/{n}"].astype(self.dt) for n in self.names}
        self.M = {n: np.zeros_like(p) for n, p in self.P.items()}
        self.Vv = {n: np.zeros_like(p) for n, p in self.P.items()}
        self.step_count = 0

    def grads(self, tok, tgt):
        """Mean loss and mean gradient over the group, batch sums added in index order."""
        B = self.t["batch_size"]
        loss, n, total = 0.0, 0, {k: np.zeros_like(p) for k, p in self.P.items()}
        for s in range(0, len(tok), B):
            ls, c, g = batch_grads(self.P, self.m, tok[s:s + B], tgt[s:s + B])
            loss, n = loss + ls, n + c
            for k in total:
                total[k] += g[k]
        return loss / n, n, {k: g / n for k, g in total.items()}

    def lr(self, step):
        t, c = step + 1, self.t
        lr, Tt = c["lr"], c["total_steps"]
        W = min(c["warmup_steps"], int(Tt * 0.5))  # warm-up capped at half the horizon (SPEC 3)
        if W > 0 and t <= W:
            return lr * t / W
        prog = min(1.0, (t - W) / max(1, Tt - W))
        return lr * c["min_lr_ratio"] + 0.5 * (lr - lr * c["min_lr_ratio"]) * (1 + math.cos(
            math.pi * prog))

    def step(self, tok, tgt):
        """Gradient, global-norm clip, AdamW (decay on 2-D matrices) as SPEC 3 writes it."""
        loss, n, G = self.grads(tok, tgt)
        c, t, lr = self.t, self.step_count + 1, self.lr(self.step_count)
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in G.values()))
        scale = min(1.0, c["clip_norm"] / (norm + 1e-6))
        for k, p in self.P.items():
            g = G[k] * scale
            self.M[k] = c["beta1"] * self.M[k] + (1 - c["beta1"]) * g
            self.Vv[k] = c["beta2"] * self.Vv[k] + (1 - c["beta2"]) * g ** 2
            mh, vh = self.M[k] / (1 - c["beta1"] ** t), self.Vv[k] / (1 - c["beta2"] ** t)
            decay = c["weight_decay"] * p if p.ndim == 2 else 0.0
            self.P[k] = (p - lr * (mh / (np.sqrt(vh) + c["eps"]) + decay)).astype(self.dt)
        self.step_count += 1
        return {"loss": np.float64(loss), "n_targets": np.int64(n),
                "grad_norm": np.float64(norm), "lr": np.float64(lr)}


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    engine = None
    while (req := read_frame(stdin)) is not None:
        op = str(req["op"])
        try:
            if op == "init":
                engine = Engine(req)
                reply = {"name": np.array("numpy example engine")}
            elif op == "grads":
                loss, n, G = engine.grads(req["tokens"], req["targets"])
                reply = {"loss": np.float64(loss), "n_targets": np.int64(n),
                         **{f"grad/{k}": g for k, g in G.items()}}
            elif op == "step":
                reply = engine.step(req["tokens"], req["targets"])
            elif op == "state":
                reply = {"step": np.int64(engine.step_count)}
                for kind, d in (("param", engine.P), ("adam_m", engine.M), ("adam_v", engine.Vv)):
                    reply.update({f"{kind}/{k}": v for k, v in d.items()})
            elif op == "load_state":
                engine.P = {k: req[f"param/{k}"].astype(engine.dt) for k in engine.names}
                engine.M = {k: req[f"adam_m/{k}"].astype(engine.dt) for k in engine.names}
                engine.Vv = {k: req[f"adam_v/{k}"].astype(engine.dt) for k in engine.names}
                engine.step_count = int(req["step"])
                reply = {}
            elif op == "close":
                write_frame(stdout, {})
                return
            else:
                reply = {"error": np.array(f"unknown op {op!r}")}
        except Exception as exc:  # report, do not die silently: the harness names the request
            reply = {"error": np.array(f"{type(exc).__name__}: {exc}")}
        write_frame(stdout, reply)


if __name__ == "__main__":
    main()
