"""How close to the float32 sgemm peak can the fast engine get? Two measured tables.

1. The GEMM ceiling: every matrix product of one micro-batch of the model (each linear's
   forward, input-gradient and weight-gradient product, the tied logits, and the causal
   attention blocks) timed on its own, in its own shape, one thread, side by side with the
   square sgemm peak in the same run. Their summed best times are the step time the engine
   would have if everything outside BLAS (LayerNorm, GELU, softmax, loss, reduction, AdamW,
   barriers) cost nothing: model FLOPs / that time / peak is the highest ratio any engine
   built on this BLAS can reach on this model.
2. The micro-batch table: the trainer's tokens/s and peak RSS for each micro-batch size and
   thread count, side by side (interleaved rounds, best round counts). The micro-batch is a
   per-preset setting, never a per-thread-count one: it sets how a batch's weight-gradient sum
   is split into GEMMs, so two thread counts with two micro-batches would not give the same
   bits.

`make bench-ceiling` (`python -m harness.bench.ceiling`) runs it and writes
`reports/bench/ceiling.md` and `ceiling.json`; the numbers it prints are the evidence behind the
micro-batch of each preset in `reference.config`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from harness.bench.summary import flops_per_token
from harness.measure.machine import REPO_ROOT, machine_info
from harness.measure.process import peak_rss_bytes, release_free_memory, reset_peak_rss
from plumbing.errors import InputError
from plumbing.outputs import write_json, write_output
from reference.config import ModelConfig, preset


def best_seconds(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def gemm_shapes(m: ModelConfig, micro: int) -> list[tuple[str, int, int, int, bool, bool, int]]:
    """(group, M, N, K, transpose A, transpose B, calls) of one micro-batch's products."""
    n, d, f, V, S, L = micro * m.seq_len, m.d_model, m.d_ff, m.vocab_size, m.seq_len, m.n_layers
    shapes = []
    for group, i, o in (("qkv", d, 3 * d), ("attn-out", d, d), ("fc", d, f), ("proj", f, d)):
        shapes += [(f"{group} x w", n, o, i, False, False, L),
                   (f"{group} dx = dout w^T", n, i, o, False, True, L),
                   (f"{group} dw += x^T dout", i, o, n, True, False, L)]
    shapes += [("logits x wte^T", n, V, d, False, True, 1),
               ("logits dx = dl wte", n, d, V, False, False, 1),
               ("logits dwte += dl^T x", V, d, n, True, False, 1)]
    dh, block = d // m.n_heads, 64
    for i0 in range(0, S, block):  # causal blocks of attention_forward / attention_backward
        rows, keys = min(block, S - i0), min(S, i0 + block)
        calls = L * micro * m.n_heads
        shapes += [(f"attention q k^T, dy v^T (rows {i0}+)", rows, keys, dh, False, True,
                    2 * calls),
                   (f"attention P v, dS k (rows {i0}+)", rows, dh, keys, False, False,
                    2 * calls),
                   (f"attention P^T dy, dS^T q (rows {i0}+)", keys, dh, rows, True, False,
                    2 * calls)]
    return shapes


def gemm_ceiling(m: ModelConfig, micro: int, rounds: int, square: int) -> dict:
    """Best time of every product of one micro-batch and the square peak, one thread."""
    rng = np.random.default_rng(0)
    rows = []
    with threadpool_limits(1):
        a = rng.standard_normal((square, square), dtype=np.float32)
        out = np.empty_like(a)
        peak = 2 * square**3 / best_seconds(lambda: np.matmul(a, a, out=out), rounds)
        total = 0.0
        for group, M, N, K, ta, tb, calls in gemm_shapes(m, micro):
            x = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
            y = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
            xa, yb = (x.T if ta else x), (y.T if tb else y)
            c = np.empty((M, N), np.float32)
            sec = best_seconds(lambda xa=xa, yb=yb, c=c: np.matmul(xa, yb, out=c), rounds)
            rate = 2 * M * N * K / sec
            total += calls * sec
            rows.append({"group": group, "m": M, "n": N, "k": K, "calls": calls,
                         "gflops": rate / 1e9, "of_peak": rate / peak})
    model_flops = flops_per_token(m) * micro * m.seq_len
    return {"peak_gflops": peak / 1e9, "shapes": rows, "gemm_seconds": total,
            "model_flops": model_flops, "ceiling": model_flops / total / peak}


def micro_table(preset_name: str, micros: list[int], threads: list[int], group: int,
                rounds: int) -> list[dict]:
    """tokens/s and peak RSS of the trainer per (micro-batch, threads), interleaved rounds."""
    from fast.trainer import FastTrainer

    base = preset(preset_name).replace(group_size=group)
    rng = np.random.default_rng(0)
    shape = (group * base.train.batch_size, base.model.seq_len)
    tokens = rng.integers(4, base.model.vocab_size, shape, dtype=np.int64)
    targets = rng.integers(4, base.model.vocab_size, shape, dtype=np.int64)
    best: dict[tuple[int, int], float] = {}
    rss: dict[tuple[int, int], int] = {}
    for _ in range(rounds):
        for micro in micros:
            for t in threads:
                release_free_memory()
                window = reset_peak_rss()
                trainer = FastTrainer(base.replace(micro_batch=micro), t)
                try:
                    trainer.step(tokens[:base.train.batch_size], targets[:base.train.batch_size])
                    sec = best_seconds(lambda tr=trainer: tr.step(tokens, targets), 1)
                finally:
                    trainer.close()
                key = (micro, t)
                best[key] = min(best.get(key, float("inf")), sec)
                rss[key] = max(rss.get(key, 0), (peak_rss_bytes() or 0) if window else 0)
                print(f"  micro {micro:3d} threads {t:3d}: {tokens.size / sec:8.0f} tokens/s",
                      flush=True)
    return [{"micro_batch": mb, "threads": t, "tokens_per_s": tokens.size / best[(mb, t)],
             "peak_rss_mb": rss[(mb, t)] / 2**20} for mb in micros for t in threads]


def render(preset_name: str, ceiling: dict, table: list[dict], blas: list[str]) -> str:
    lines = [f"# Performance ceiling and micro-batch table, preset `{preset_name}`", "",
             f"BLAS: {'; '.join(blas)}. One thread; square sgemm peak in the same run: "
             f"{ceiling['peak_gflops']:.1f} GFLOP/s.", "",
             "## The GEMM ceiling", "",
             f"Every matrix product of one micro-batch timed alone in its own shape: "
             f"{ceiling['gemm_seconds'] * 1e3:.1f} ms in total. If nothing outside BLAS cost "
             f"anything, model FLOP/s / sgemm peak would be **{ceiling['ceiling']:.3f}**.", "",
             "| product | M | N | K | calls | GFLOP/s | of peak |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in ceiling["shapes"]:
        lines.append(f"| {r['group']} | {r['m']} | {r['n']} | {r['k']} | {r['calls']} | "
                     f"{r['gflops']:.1f} | {r['of_peak']:.0%} |")
    lines += ["", "## Micro-batch table (trainer tokens/s, best of the interleaved rounds)", "",
              "| micro-batch | threads | tokens/s | peak RSS MiB |", "|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['micro_batch']} | {r['threads']} | {r['tokens_per_s']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.ceiling",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--micro", default="2,4,8,16", help="micro-batch sizes, comma separated")
    parser.add_argument("--threads", default="1,2,63", help="thread counts, comma separated")
    parser.add_argument("--group", type=int, default=12, help="batches per measured step")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "bench")
    args = parser.parse_args(argv)
    try:
        micros = [int(x) for x in args.micro.split(",")]
        threads = [int(x) for x in args.threads.split(",")]
        cfg = preset(args.preset)
    except (ValueError, InputError) as exc:
        print(f"harness.bench.ceiling: {exc}", file=sys.stderr)
        return 2
    blas = [f"{p.get('internal_api')} {p.get('version')} kernel {p.get('architecture')}"
            for p in threadpool_info() if p.get("user_api") == "blas"]
    print(f"GEMM ceiling, preset {args.preset}, micro-batch {cfg.train.micro_batch}", flush=True)
    ceiling = gemm_ceiling(cfg.model, cfg.train.micro_batch, max(5, args.rounds), 2048)
    print(f"  ceiling {ceiling['ceiling']:.3f} of the sgemm peak", flush=True)
    table = micro_table(args.preset, micros, threads, args.group, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine_info(), "preset": args.preset, "blas": blas, "ceiling": ceiling,
            "micro_table": table}
    write_json(args.out / "ceiling.json", data, indent=2, default=str)
    write_output(args.out / "ceiling.md", render(args.preset, ceiling, table, blas))
    print(f"wrote {args.out / 'ceiling.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
