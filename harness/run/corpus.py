"""From a `--data` argument to a token stream and its batch groups, for every command.

One place turns a path (or the built-in synthetic corpus) into a vocabulary, a token stream and
`BatchGroups`, so `train`, `grads`, `verify` and `analyze` all read data the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reference.batches import BatchGroups
from reference.config import Config
from reference.data import Vocab, encode_documents, open_documents, stream_dtype
from reference.text_files import SkipReport


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
