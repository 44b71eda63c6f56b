"""The held-out tail of the token stream, and the evaluation loss measured on it.

`--eval-fraction F` cuts the token stream in two BEFORE batching: the training part is
`stream[:cut]` and everything after it is batched, grouped and shuffled as usual; the held-out
part `stream[cut:]` is only ever evaluated. The cut depends on the stream and F alone (never on
the thread count), and no held-out token is an input or a target of any training batch: the
training batches' last target is `stream[cut - 1]`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from harness.run.corpus import Corpus
from plumbing.errors import InputError
from reference.batches import BatchGroups
from reference.config import Config
from reference.engine import Engine, Evaluates
from reference.evaluate import EvalResult

MIN_TOKENS = 2  # one input and its target: the smallest stream either side can batch


@dataclass(frozen=True)
class HeldOut:
    """The held-out tail: its place in the stream and its batches, stacked (n*B, S)."""

    start: int  # index in the full stream of the first held-out token (== training length)
    n_tokens: int
    tokens: np.ndarray  # (n_batches*B, S) int64
    targets: np.ndarray  # (n_batches*B, S) int64, 0 = padding
    n_batches: int


def heldout_cut(n_tokens: int, fraction: float) -> int:
    """Index of the first held-out token: the last ceil(F*N) tokens are held out."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"--eval-fraction {fraction}: must be between 0 and 1 (e.g. 0.1)")
    held = max(MIN_TOKENS, math.ceil(fraction * n_tokens))
    cut = n_tokens - held
    if cut < MIN_TOKENS:
        raise InputError(f"--eval-fraction {fraction} leaves {cut} of {n_tokens} tokens for "
                         "training; lower it or give more data")
    return cut


def split_heldout(corpus: Corpus, cfg: Config, fraction: float) -> tuple[Corpus, HeldOut]:
    """(the corpus with only the training part of the stream, the held-out tail's batches)."""
    cut = heldout_cut(int(corpus.stream.size), fraction)
    tail = corpus.stream[cut:]
    t = cfg.train
    batches = BatchGroups(tail, t.batch_size, cfg.model.seq_len, 1)
    group = BatchGroups(tail, t.batch_size, cfg.model.seq_len, batches.n_batches).group(0)
    train = dataclasses.replace(corpus, stream=corpus.stream[:cut],
                                source=f"{corpus.source}, first {cut} tokens (held out: "
                                       f"last {tail.size})")
    return train, HeldOut(start=cut, n_tokens=int(tail.size), tokens=group.tokens,
                          targets=group.targets, n_batches=group.n_batches)


def evaluate(engine: Engine, heldout: HeldOut) -> EvalResult:
    """The engine's held-out loss (forward only); engines without one are bad input."""
    if not isinstance(engine, Evaluates):
        raise InputError(f"engine {type(engine).__name__} has no eval_loss(tokens, targets); "
                         "drop --eval-every or use the reference or fast engine")
    return engine.eval_loss(heldout.tokens, heldout.targets)


DEFAULT_FRACTION = 0.1  # a tenth: enough batches for a stable mean on the presets' corpora


def plan_heldout(corpus: Corpus, cfg: Config, *, eval_every: int, eval_fraction: float | None
                 ) -> tuple[Corpus, HeldOut | None]:
    """`--eval-every N` / `--eval-fraction F` -> (training corpus, held-out tail or None)."""
    every, fraction = eval_every or 0, eval_fraction
    if every < 0:
        raise InputError(f"--eval-every {every}: must be >= 0 (0: only at the end)")
    if not every and fraction is None:
        return corpus, None
    return split_heldout(corpus, cfg, DEFAULT_FRACTION if fraction is None else fraction)
