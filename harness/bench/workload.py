"""The benchmarks' stand-in for a corpus: full batches of uniform word ids."""

from __future__ import annotations

import numpy as np

from reference.config import Config


def random_group(cfg: Config, n_batches: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A group of n_batches full batches: (n*B, S) int64 tokens and next-token targets.

    Throughput does not depend on which word ids occur (only pads would change the work), so
    uniform non-special ids stand in for a corpus and keep the bench independent of the data.
    """
    m, b = cfg.model, cfg.train.batch_size
    rng = np.random.default_rng(seed)
    stream = rng.integers(4, m.vocab_size, size=(n_batches * b, m.seq_len + 1), dtype=np.int64)
    return np.ascontiguousarray(stream[:, :-1]), np.ascontiguousarray(stream[:, 1:])
