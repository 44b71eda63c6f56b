"""Engine throughput against the machine: float32 matmul peak, the reference, PyTorch eager.

Each benchmark stores in `extra_info` what `harness.bench.summary` needs to turn its time into a
rate:
`kind`, and tokens or FLOPs per round. Thread scaling of the fast engine is in
test_bench_scaling.py; the summary puts both side by side.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from plumbing.cores import usable_cores
from reference.config import ModelConfig

pytestmark = pytest.mark.bench


@pytest.mark.parametrize("cores", ["all", "one"])
def test_matmul_peak(benchmark, bench_settings, cores):
    """The machine's float32 GEMM peak: the yardstick for the model's FLOP/s."""
    n = bench_settings.matmul_n
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    threads = usable_cores() if cores == "all" else 1
    with threadpool_limits(limits=threads):
        benchmark.pedantic(np.matmul, args=(a, b), kwargs={"out": out}, rounds=10,
                           warmup_rounds=2, iterations=1)
    benchmark.extra_info.update(kind="matmul_peak", cores=cores, threads=threads, n=n,
                                flops_per_round=2 * n**3)
    np.testing.assert_allclose(out[:2, :2], a[:2] @ b[:, :2], rtol=1e-3)


def test_reference_engine(benchmark, bench_settings, make_group):
    """The float64 NumPy executable specification on one batch (a yardstick, not a target)."""
    from reference.engine import ReferenceEngine

    cfg = bench_settings.config(group_size=1)
    tokens, targets = make_group(cfg, 1)
    engine = ReferenceEngine(cfg)
    try:
        result = benchmark.pedantic(engine.group_grads, args=(tokens, targets),
                                    rounds=bench_settings.rounds, iterations=1)
    finally:
        engine.close()
    assert np.isfinite(result.loss) and result.n_targets == tokens.size
    benchmark.extra_info.update(kind="engine", engine="reference", threads=1, group=1,
                                tokens_per_round=int(tokens.size))


def torch_threads(settings) -> int:
    """PyTorch runs at the largest swept fast-engine thread count the cores can hold."""
    fitting = [t for t in settings.scaling_threads if t <= usable_cores()]
    return max(fitting or [1])


def _torch_gpt(m: ModelConfig):
    """The model of SPEC section 1 in PyTorch eager (same sizes; the init does not matter)."""
    import torch
    import torch.nn.functional as F

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = torch.nn.LayerNorm(m.d_model, eps=1e-5)
            self.qkv = torch.nn.Linear(m.d_model, 3 * m.d_model)
            self.o = torch.nn.Linear(m.d_model, m.d_model)
            self.ln2 = torch.nn.LayerNorm(m.d_model, eps=1e-5)
            self.fc = torch.nn.Linear(m.d_model, m.d_ff)
            self.proj = torch.nn.Linear(m.d_ff, m.d_model)

        def forward(self, x):  # x (B, T, d)
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)  # each (B, T, d)

            def heads(z):  # (B, T, d) -> (B, H, T, d/H)
                return z.view(b, t, m.n_heads, m.head_dim).transpose(1, 2)

            y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
            x = x + self.o(y.transpose(1, 2).reshape(b, t, d))
            return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = torch.nn.Embedding(m.vocab_size, m.d_model)
            self.wpe = torch.nn.Embedding(m.seq_len, m.d_model)
            self.blocks = torch.nn.ModuleList([Block() for _ in range(m.n_layers)])
            self.lnf = torch.nn.LayerNorm(m.d_model, eps=1e-5)

        def forward(self, tokens, targets):  # tokens, targets (B, T) int64
            x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))  # (B, T, d)
            for block in self.blocks:
                x = block(x)
            logits = self.lnf(x) @ self.wte.weight.T  # (B, T, V), tied output embedding
            return F.cross_entropy(logits.reshape(-1, m.vocab_size), targets.reshape(-1),
                                   ignore_index=0, reduction="sum")

    return GPT()


def _torch_group(benchmark, bench_settings, make_group, compiled: bool) -> None:
    """The same model and group in PyTorch at the same thread count (if installed): eager, or
    through torch.compile (its compilation in the warm-up step, outside the timing)."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("skipped: torch not importable")
    import torch

    threads = torch_threads(bench_settings)
    cfg = bench_settings.config(group_size=bench_settings.scaling_group)
    b = cfg.train.batch_size
    tokens, targets = (torch.from_numpy(a) for a in make_group(cfg, bench_settings.scaling_group))
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = _torch_gpt(cfg.model)
    run = torch.compile(model) if compiled else model

    def group_step() -> float:
        model.zero_grad(set_to_none=False)
        total = 0.0
        for start in range(0, tokens.shape[0], b):  # batch by batch, gradients summed
            loss = run(tokens[start:start + b], targets[start:start + b])
            loss.backward()
            total += float(loss)
        return total

    group_step()  # warm-up: allocator and kernel selection (and compilation)
    loss_sum = benchmark.pedantic(group_step, rounds=bench_settings.rounds, iterations=1)
    assert np.isfinite(loss_sum)
    benchmark.extra_info.update(kind="engine", engine="torch.compile" if compiled else "torch",
                                threads=threads, group=bench_settings.scaling_group,
                                tokens_per_round=int(tokens.numel()),
                                torch=torch.__version__)


def test_torch_eager(benchmark, bench_settings, make_group):
    """The same model and group in PyTorch eager at the same thread count (if installed)."""
    _torch_group(benchmark, bench_settings, make_group, compiled=False)


def test_torch_compile(benchmark, bench_settings, make_group):
    """The same model and group through torch.compile at the same thread count."""
    _torch_group(benchmark, bench_settings, make_group, compiled=True)
