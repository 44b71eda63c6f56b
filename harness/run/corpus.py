"""From a `--data` argument to a token stream and its batch groups, for every command.

One place turns a path (or the built-in synthetic corpus) into a vocabulary, a token stream and
`BatchGroups`, so `train`, `grads`, `verify` and `analyze` all read data the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plumbing.sources import open_source, read_documents
from plumbing.text_files import SkipReport, TextFile
from reference.batches import BatchGroups
from reference.config import Config
from reference.data import (
    DEFAULT_SYNTHETIC_TOKENS,
    Vocab,
    encode_documents,
    stream_dtype,
    synthetic_documents,
)


def load_documents(path: str | Path | None, *, synthetic_tokens: int = DEFAULT_SYNTHETIC_TOKENS,
                   seed: int = 0) -> list[str]:
    """The documents of a data source (SPEC 2); None means the synthetic corpus.

    The synthetic corpus is one document of `synthetic_tokens - 1` tokens, so its encoded
    stream, with the <eos> that closes every document, is exactly `synthetic_tokens` long.
    """
    if path is None:
        return synthetic_documents(synthetic_tokens, seed)
    return read_documents(path)


def open_documents(path: str | Path | None, *, synthetic_tokens: int = DEFAULT_SYNTHETIC_TOKENS,
                   seed: int = 0) -> tuple[Iterable[str | TextFile], SkipReport]:
    """Like load_documents, but files are streamed when read (never held whole) and the
    skipped entries of a folder come back as a report instead of a warning."""
    if path is None:
        return synthetic_documents(synthetic_tokens, seed), SkipReport()
    return open_source(path)


@dataclass
class Corpus:
    """A tokenised corpus ready for batching."""

    source: str  # the path, or "synthetic(N tokens, seed S)"
    vocab: Vocab
    stream: np.ndarray  # token ids (smallest unsigned type for the vocabulary), <eos> between
    n_documents: int
    skips: SkipReport = field(default_factory=SkipReport)  # --data folder entries not used

    def groups(self, cfg: Config) -> BatchGroups:
        t = cfg.train
        return BatchGroups(self.stream, t.batch_size, cfg.model.seq_len, t.group_size,
                           last_group=t.last_group)


def one_group_tokens(cfg: Config, groups: int = 1) -> int:
    """Synthetic tokens for exactly `groups` full batch groups of this config: G*B*S targets
    per group plus the first input (the synthetic stream has exactly this many tokens)."""
    t = cfg.train
    return groups * t.group_size * t.batch_size * cfg.model.seq_len + 1


def load_corpus(cfg: Config, data: str | Path | None = None, *, synthetic_tokens: int | None = None,
                vocab: Vocab | None = None) -> Corpus:
    """Read `data` (or generate the synthetic corpus), build or reuse a vocabulary, encode.

    A vocabulary passed in (from a checkpoint, for `--resume`) is reused so ids stay the same.
    """
    n_synth = synthetic_tokens if synthetic_tokens is not None else one_group_tokens(cfg, 4)
    docs, skips = open_documents(data, synthetic_tokens=n_synth, seed=cfg.train.seed)
    if vocab is None:  # files are streamed: read once for the vocabulary, once to encode
        vocab = Vocab.build(docs, cfg.model.vocab_size)
    stream = encode_documents(docs, vocab, dtype=stream_dtype(len(vocab)))
    source = (str(data) if data is not None
              else f"synthetic({n_synth} tokens, seed {cfg.train.seed})")
    return Corpus(source=source, vocab=vocab, stream=stream, n_documents=len(docs), skips=skips)


def corpus_warnings(corpus: Corpus, cfg: Config, heldout_targets: int | None = None
                    ) -> list[str]:
    """What makes a run on this corpus meaningless, one line each (#20 class 7): a corpus
    smaller than one batch or one group trains every step on padding, and a held-out tail
    smaller than one batch measures a loss over a handful of targets."""
    t = cfg.train
    batch = t.batch_size * cfg.model.seq_len
    group = t.group_size * batch
    targets = max(0, int(corpus.stream.size) - 1)
    out = []
    if targets < group:
        what = (f"less than one batch ({t.batch_size}x{cfg.model.seq_len} = {batch})"
                if targets < batch else f"less than one group (G={t.group_size} batches of "
                f"{t.batch_size}x{cfg.model.seq_len} = {group:,})")
        out.append(f"the corpus holds {targets:,} training targets, {what}: every step trains "
                   f"on the whole corpus, {targets:,} of its {group:,} target slots "
                   f"({targets / group:.1%}), the rest padding; give more --data (or "
                   "--synthetic-tokens), a smaller --group-size or a smaller --preset")
    if heldout_targets is not None and heldout_targets < batch:
        out.append(f"the held-out tail holds {heldout_targets:,} targets, less than one batch "
                   f"({batch}): its loss is noise; raise --eval-fraction or give more data")
    return out
