"""The SPEC 1 model in PyTorch eager, behind the `Engine` protocol (entry point `torch`).

A second, independent implementation judged by the same gates as ours: autograd instead of
hand-written backward passes, PyTorch's own kernels and thread pool (`torch.set_num_threads`).
Installed with the `[torch]` extra; nothing here imports the harness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from plumbing.errors import InputError, NonFiniteGradientError
from reference.config import Config, ModelConfig
from reference.engine import StepResult, TrainState
from reference.optim import lr_at
from reference.params import init_params, param_specs

LN_EPS = 1e-5  # SPEC 1
PAD_ID = 0  # SPEC 2: targets equal to it are ignored
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def loss_sum(m: ModelConfig, P: Mapping[str, torch.Tensor], tokens: torch.Tensor,
             targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy SUM over the non-pad targets of `tokens` (rows, T), the SPEC 1 model on
    the parameters `P` by name; zero rows give a zero loss still tied to every parameter (a DDP
    rank without a batch takes part in the all-reduce with zero gradients)."""
    B, T = tokens.shape
    d, H = m.d_model, m.n_heads
    hd = d // H
    x = P["wte"][tokens] + P["wpe"][:T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for layer in range(m.n_layers):
        p = f"h.{layer}."
        a = F.layer_norm(x, (d,), P[p + "ln1.g"], P[p + "ln1.b"], LN_EPS)
        qkv = a @ P[p + "attn.w_qkv"] + P[p + "attn.b_qkv"]
        q, k, v = (z.reshape(B, T, H, hd).transpose(1, 2) for z in qkv.split(d, dim=-1))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        x = x + y @ P[p + "attn.w_o"] + P[p + "attn.b_o"]
        h = F.layer_norm(x, (d,), P[p + "ln2.g"], P[p + "ln2.b"], LN_EPS)
        u = F.gelu(h @ P[p + "mlp.w_fc"] + P[p + "mlp.b_fc"], approximate="tanh")
        x = x + u @ P[p + "mlp.w_proj"] + P[p + "mlp.b_proj"]
    xf = F.layer_norm(x, (d,), P["lnf.g"], P["lnf.b"], LN_EPS)
    logits = xf @ P["wte"].T
    return F.cross_entropy(logits.reshape(B * T, logits.shape[-1]), targets.reshape(B * T),
                           ignore_index=PAD_ID, reduction="sum")


def build(config: Config, *, threads: int = 1, dtype: str = "float64",
          params: dict[str, np.ndarray] | None = None, stall_timeout: float = 60.0
          ) -> TorchEngine:
    """Entry point `torch` (docs/ENGINES.md factory signature)."""
    return TorchEngine(config, threads=threads, dtype=dtype, params=params)


class TorchEngine:
    """Parameters as leaf tensors; `group_grads` sums batch losses and divides once by the
    group's non-pad count, like the reference; `step` is SPEC 3's clip + AdamW in torch ops."""

    def __init__(self, config: Config, *, threads: int = 1, dtype: str = "float64",
                 params: dict[str, np.ndarray] | None = None) -> None:
        if dtype not in TORCH_DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; choose float32 or float64")
        if threads < 1:
            raise InputError(f"--threads must be at least 1, got {threads}")
        self.config = config.validate()
        self.threads = int(threads)
        self.dtype = dtype
        self._tdtype = TORCH_DTYPES[dtype]
        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # process-wide: restored by close()
        self.specs = param_specs(config.model)
        start = params if params is not None else init_params(config.model, config.train.seed)
        self.params = {s.name: torch.tensor(np.asarray(start[s.name]), dtype=self._tdtype,
                                            requires_grad=True) for s in self.specs}
        self.m = {n: torch.zeros_like(p, requires_grad=False) for n, p in self.params.items()}
        self.v = {n: torch.zeros_like(p, requires_grad=False) for n, p in self.params.items()}
        self.step_count = 0
        self._closed = False

    # ------------------------------------------------------------------ the model

    def _loss_sum(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy SUM over non-pad targets of one batch (B, T)."""
        return loss_sum(self.config.model, self.params, tokens, targets)

    def group_grads(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        """Mean loss and mean gradient over the group's batches (a short last batch allowed)."""
        tok = torch.as_tensor(np.asarray(tokens, np.int64))
        tgt = torch.as_tensor(np.asarray(targets, np.int64))
        B = self.config.train.batch_size
        for p in self.params.values():
            p.grad = None
        loss_total, n_total = 0.0, 0
        for start in range(0, tok.shape[0], B):
            loss = self._loss_sum(tok[start:start + B], tgt[start:start + B])
            loss.backward()  # gradients of the batch sums accumulate in .grad
            loss_total += float(loss.detach())
            n_total += int((tgt[start:start + B] != PAD_ID).sum())
        if n_total == 0:
            raise InputError("the group has no non-pad targets; there is nothing to learn from")
        grads = {n: (p.grad / n_total).detach().to(torch.float64).numpy().copy()
                 for n, p in self.params.items()}
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        return StepResult(loss=loss_total / n_total, n_targets=n_total, grad_norm=norm,
                          grads=grads)

    def step(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        """Gradient, finite check, global-norm clip, AdamW (SPEC 3); nothing applied on error."""
        result = self.group_grads(tokens, targets)
        for name, g in result.grads.items():
            if not np.all(np.isfinite(g)):
                raise NonFiniteGradientError(name, step=self.step_count)
        c, t = self.config.train, self.step_count + 1
        lr = lr_at(self.step_count, c)
        scale = min(1.0, c.clip_norm / (result.grad_norm + 1e-6))
        with torch.no_grad():
            for name, p in self.params.items():
                g = p.grad / result.n_targets * scale
                self.m[name].mul_(c.beta1).add_(g, alpha=1 - c.beta1)
                self.v[name].mul_(c.beta2).add_(g * g, alpha=1 - c.beta2)
                m_hat = self.m[name] / (1 - c.beta1 ** t)
                v_hat = self.v[name] / (1 - c.beta2 ** t)
                delta = m_hat / (v_hat.sqrt() + c.eps)
                if p.ndim == 2:
                    delta = delta + c.weight_decay * p
                p.sub_(lr * delta)
        self.step_count += 1
        result.lr = lr
        return result

    def state(self) -> TrainState:
        def cp(d: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
            return {n: t.detach().numpy().copy() for n, t in d.items()}

        return TrainState(params=cp(self.params), adam_m=cp(self.m), adam_v=cp(self.v),
                          step=self.step_count)

    def load_state(self, state: TrainState) -> None:
        with torch.no_grad():
            for s in self.specs:
                for store, src in ((self.params, state.params), (self.m, state.adam_m),
                                   (self.v, state.adam_v)):
                    a = np.asarray(src[s.name])
                    if a.shape != s.shape:
                        raise InputError(f"state: {s.name!r} has shape {a.shape}, the config "
                                         f"needs {s.shape}")
                    store[s.name].copy_(torch.as_tensor(a, dtype=self._tdtype))
        self.step_count = int(state.step)

    def close(self) -> None:
        """Give back the process-wide thread count; safe to call twice."""
        if not self._closed:
            self._closed = True
            torch.set_num_threads(self._saved_threads)

    def __enter__(self) -> TorchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

