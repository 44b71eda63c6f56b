"""Text in, token ids out: the tokenizer, the vocabulary and the synthetic corpus.

SPEC section 2. The original system needed 838 MB to build a vocabulary from 24 MB of text, so
everything here walks the text in chunks of about a megabyte with one compiled regex and never
holds the millions of token strings of a whole corpus at once.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import repeat

import numpy as np

from plumbing.errors import DataError
from plumbing.text_files import TextFile

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")  # ids 0..3, in this order (SPEC 2)

# A word is [a-z0-9]+ with internal apostrophes ("don't"); any other non-space character is a
# token of its own. Applied to lower-cased text.
TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|[^\sa-z0-9]")

_SPACE_RE = re.compile(r"\s")

CHUNK_CHARS = 1 << 20  # ~1 MB of text per regex pass: bounds the token strings alive at once
DEFAULT_SYNTHETIC_TOKENS = 1_000_000  # a default corpus big enough for many tiny/small groups
SEED_CORPUS_TOKENS = 4_800_000  # the seed's dataset: SQuAD, 24 MB, ~4.8M tokens


# ---------------------------------------------------------------------------------------------
# tokenizer


def _chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """Pieces of about `size` characters, each cut just after whitespace so no token is split."""
    start, n = 0, len(text)
    while start < n:
        stop = start + size
        if stop >= n:
            yield text[start:]
            return
        cut = max(text.rfind("\n", start, stop), text.rfind(" ", start, stop))
        if cut < start:  # a very long run without spaces or newlines: cut at the next whitespace
            m = _SPACE_RE.search(text, stop)
            cut = m.start() if m else n - 1
        yield text[start:cut + 1]
        start = cut + 1


def tokenize(text: str) -> list[str]:
    """Lower-cased words and single punctuation characters; whitespace is dropped."""
    return TOKEN_RE.findall(text.lower())


def _iter_token_chunks(text: str | TextFile) -> Iterator[list[str]]:
    """The tokens of `text` (or of a file, streamed), one list per chunk, so only one chunk's
    strings are alive."""
    pieces = text.chunks() if isinstance(text, TextFile) else _chunks(text, CHUNK_CHARS)
    for chunk in pieces:  # CHUNK_CHARS read at call time, so tests can shrink it
        yield TOKEN_RE.findall(chunk.lower())


# ---------------------------------------------------------------------------------------------
# vocabulary


class Vocab:
    """Token strings <-> ids: 0..3 are the specials, then words by falling frequency."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.itos: list[str] = list(tokens)
        if tuple(self.itos[:4]) != SPECIALS:
            raise DataError(f"a vocabulary must start with {', '.join(SPECIALS)}; "
                            f"got {self.itos[:4]}")
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DataError("a vocabulary lists the same token twice; rebuild it")

    @classmethod
    def build(cls, documents: Iterable[str], cap: int) -> Vocab:
        """The `cap - 4` most frequent words (ties: first occurrence first), after the specials."""
        if cap < len(SPECIALS):
            raise DataError(f"vocabulary cap {cap} is below the {len(SPECIALS)} special ids; "
                            "use a vocab_size of at least 5")
        counts: Counter[str] = Counter()
        for doc in documents:
            for tokens in _iter_token_chunks(doc):
                counts.update(tokens)  # a Counter keeps first-insertion order: first occurrence
        for special in SPECIALS:  # "<pad>" never tokenizes to one token, but be safe
            counts.pop(special, None)
        # most_common sorts stably by count, so equal counts keep first-occurrence order
        words = [w for w, _ in counts.most_common(cap - len(SPECIALS))]
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64) of `text`; words outside the vocabulary become <unk> (1)."""
        parts = list(self._encode_chunks(text))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _encode_chunks(self, text: str) -> Iterator[np.ndarray]:
        """The ids of `text`, one array per chunk."""
        for tokens in _iter_token_chunks(text):
            ids = map(self.stoi.get, tokens, repeat(UNK))  # C-level lookups, no Python loop
            yield np.fromiter(ids, dtype=np.int64, count=len(tokens))

    def decode(self, ids: Iterable[int]) -> str:
        """Tokens joined by single spaces (specials appear by name, e.g. <eos>)."""
        arr = ids if isinstance(ids, np.ndarray) else np.array(list(ids), dtype=np.int64)
        out = []
        for i in arr.ravel():
            if not 0 <= i < len(self.itos):
                raise DataError(f"token id {int(i)} is outside the vocabulary of "
                                f"{len(self.itos)} ids")
            out.append(self.itos[i])
        return " ".join(out)

    def to_json(self) -> str:
        return json.dumps({"tokens": self.itos}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        try:
            data = json.loads(text)
            tokens = data["tokens"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"vocabulary JSON is malformed ({exc}); expected "
                            '{"tokens": ["<pad>", "<unk>", "<bos>", "<eos>", ...]}') from exc
        return cls(tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value: not hashable


def stream_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id (uint16 up to 65,536 ids)."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def encode_documents(docs: Iterable[str | TextFile], vocab: Vocab,
                     dtype: np.dtype | type = np.int64) -> np.ndarray:
    """One token stream: each document's ids followed by <eos> (SPEC 2), as `dtype`
    (`stream_dtype(len(vocab))` keeps a large corpus at 2 bytes per token)."""
    eos = np.array([EOS], dtype=dtype)
    parts: list[np.ndarray] = []
    for doc in docs:  # one concatenation at the end: the stream is copied once
        parts += [*(ids.astype(dtype, copy=False) for ids in vocab._encode_chunks(doc)), eos]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# synthetic corpus

_ONSETS = ("", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v",
           "w", "y", "z", "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "sl", "st", "th",
           "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng")
_CONTRACTIONS = ("don't", "it's", "can't", "isn't", "we're", "they'll", "o'clock")
_N_WORDS = 6000  # distinct words in the generated lexicon
_ZIPF_EXPONENT = 1.1  # word-frequency exponent: English is close to 1
_LEXICON_SEED = 20241201  # the lexicon is fixed: the same words whatever the corpus seed


def _lexicon() -> list[str]:
    """A fixed list of pronounceable words, in frequency-rank order."""
    rng = np.random.default_rng(_LEXICON_SEED)
    words: dict[str, None] = {}
    while len(words) < _N_WORDS - len(_CONTRACTIONS):
        n_syl = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.4, 0.22, 0.08]))
        word = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                       + _CODAS[rng.integers(len(_CODAS))] for _ in range(n_syl))
        words.setdefault(word)
    # Frequent words tend to be short, as in English: rank by length plus noise (a mean
    # frequency-weighted length of ~4.5 letters, ~5 bytes per token like the seed's 24 MB/4.8M).
    noise = rng.normal(0.0, 4.0, size=len(words))
    key = [len(w) + z for w, z in zip(words, noise, strict=True)]
    ordered = [w for _, w in sorted(zip(key, words, strict=True))]
    for rank, word in zip((7, 23, 41, 60, 95, 150, 400), _CONTRACTIONS, strict=True):
        ordered.insert(rank, word)
    return ordered


_LEXICON_CACHE: list[str] = []


def _cached_lexicon() -> list[str]:
    if not _LEXICON_CACHE:
        _LEXICON_CACHE.extend(_lexicon())
    return _LEXICON_CACHE


# What follows each word: nothing special, a comma, or a sentence end (then a space, a paragraph
# break, or the end of the text).
_FOLLOW = (" ", ", ", ". ", "! ", "? ", ".\n\n", "!\n\n", "?\n\n", ".\n", "!\n", "?\n", "\n")
_SPACE, _COMMA, _END, _END_PARA, _END_TEXT, _LONE = 0, 1, 2, 5, 8, 11


def synthetic_corpus(n_tokens: int, seed: int = 0) -> str:
    """Deterministic English-like text that tokenizes to exactly `n_tokens` tokens.

    Zipf-distributed words from a fixed lexicon; sentences of 4-18 words, capitalised, with
    commas inside and ending in `.`, `!` or `?`; paragraphs of 2-7 sentences separated by a
    blank line. Same (n_tokens, seed) -> same bytes. Built with bulk NumPy draws and one join.
    """
    if not isinstance(n_tokens, int | np.integer) or n_tokens < 1:
        raise DataError(f"synthetic corpus size {n_tokens!r} must be a positive token count")
    rng = np.random.default_rng(seed)
    lexicon = _cached_lexicon()

    # Sentences: w words, commas after ~8% of words (never the last), one end mark.
    n_sent = n_tokens // 8 + 2  # a sentence averages ~12 tokens, so this is always enough
    words_per = rng.integers(4, 19, size=n_sent)
    word_end = np.cumsum(words_per)  # index one past each sentence's last word
    comma = rng.random(int(word_end[-1])) < 0.08
    comma[word_end - 1] = False
    tokens_per = words_per + np.add.reduceat(comma.astype(np.int64), np.r_[0, word_end[:-1]]) + 1
    total = np.cumsum(tokens_per)
    keep = int(np.searchsorted(total, n_tokens, side="right"))  # whole sentences that fit
    left = n_tokens - (int(total[keep - 1]) if keep else 0)
    n_words = int(word_end[keep - 1]) if keep else 0
    comma = comma[:n_words]
    follow = np.where(comma, _COMMA, _SPACE)
    starts = np.r_[0, word_end[:keep - 1]] if keep else np.zeros(0, dtype=np.int64)
    ends = word_end[:keep] - 1
    if left == 1 and keep:  # one token short: lengthen the last sentence by one word
        follow = np.r_[follow, _SPACE]
        ends = ends.copy()
        ends[-1] += 1
        n_words += 1
        left = 0
    if left >= 2:  # a final short sentence of left-1 words, no commas
        starts = np.r_[starts, n_words]
        ends = np.r_[ends, n_words + left - 2]
        follow = np.r_[follow, np.full(left - 1, _SPACE)]
        n_words += left - 1
    marks = rng.choice(3, size=len(ends), p=[0.8, 0.08, 0.12])  # . ! ?
    sent_per_para = rng.integers(2, 8, size=len(ends))
    last_of_para = np.cumsum(sent_per_para) - 1
    para_end = np.zeros(len(ends), dtype=bool)
    para_end[last_of_para[last_of_para < len(ends)]] = True
    follow[ends] = np.where(para_end, _END_PARA, _END) + marks
    if len(ends):
        follow[ends[-1]] = _END_TEXT + marks[-1]
    else:  # n_tokens == 1: a lone word
        follow = np.array([_LONE])
        starts = np.array([0])
        n_words = 1

    # Zipf ranks: p(rank k) ~ 1 / k^s over the lexicon.
    ranks = np.arange(1, len(lexicon) + 1, dtype=np.float64)
    p = ranks ** -_ZIPF_EXPONENT
    word_ids = rng.choice(len(lexicon), size=n_words, p=p / p.sum())
    words = np.array(lexicon, dtype=object)[word_ids]
    capital = np.array([w.capitalize() for w in lexicon], dtype=object)
    words[starts] = capital[word_ids[starts]]
    pieces = np.empty(2 * n_words, dtype=object)
    pieces[0::2] = words
    pieces[1::2] = np.array(_FOLLOW, dtype=object)[follow]
    return "".join(pieces.tolist())


def synthetic_documents(synthetic_tokens: int, seed: int) -> list[str]:
    """One document of `synthetic_tokens - 1` tokens: with its closing <eos> the stream is
    exactly `synthetic_tokens` long (SPEC 2)."""
    if not isinstance(synthetic_tokens, int | np.integer) or synthetic_tokens < 2:
        raise DataError(f"synthetic corpus size {synthetic_tokens!r} must be at least 2 "
                        "tokens (one input and its target); pass a larger --synthetic-tokens")
    return [synthetic_corpus(synthetic_tokens - 1, seed)]
