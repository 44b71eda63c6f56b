"""Data sources, tokenizer, vocabulary and synthetic corpus (SPEC 2)."""

from __future__ import annotations

import json
import re
import tracemalloc
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference.data as data
from harness.run.corpus import load_documents
from plumbing.errors import DataError, InputError
from reference.data import Vocab, encode_documents, synthetic_corpus, tokenize

# ------------------------------------------------------------------------------------ tokenize


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", ["hello", ",", "world", "!"]),
    ("It's 42 o'clock.", ["it's", "42", "o'clock", "."]),
    ("rock'n'roll  'quoted'", ["rock'n'roll", "'", "quoted", "'"]),
    ("don''t a-b\tc\n\nd", ["don", "'", "'", "t", "a", "-", "b", "c", "d"]),
    ("x2y ... ?!", ["x2y", ".", ".", ".", "?", "!"]),
    ("   \n\t ", []),
    ("CAFÉ", ["caf", "é"]),  # only [a-z0-9] make words; other characters stand alone
])
def test_tokenize_examples(text, expected):
    assert tokenize(text) == expected


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet="ab1' ,.\n\tX", max_size=200), size=st.integers(1, 25))
def test_chunked_tokens_equal_whole_text_tokens(text, size):
    """Cutting the text into chunks never splits or merges a token."""
    old = data.CHUNK_CHARS
    data.CHUNK_CHARS = size
    try:
        chunked = [t for part in data._iter_token_chunks(text) for t in part]
    finally:
        data.CHUNK_CHARS = old
    assert chunked == tokenize(text)
    assert "".join(data._chunks(text, size)) == text


# ----------------------------------------------------------------------------------- vocabulary


def test_vocab_orders_by_frequency_then_first_occurrence():
    docs = ["b a b c z", "a b y y q z"]  # b:3 a:2 y:2 z:2 c:1 q:1; a before z before y
    v = Vocab.build(docs, cap=100)
    assert v.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "b", "a", "z", "y", "c", "q"]
    assert len(v) == 10
    capped = Vocab.build(docs, cap=6)
    assert capped.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "b", "a"]


def test_encode_unknown_words_map_to_unk_and_decode_round_trips():
    v = Vocab.build(["The cat sat. The cat ran!"], cap=7)  # the, cat, sat (. ran ! dropped)
    assert v.itos[4:] == ["the", "cat", "sat"]
    ids = v.encode("The dog sat.")
    assert ids.dtype == np.int64
    assert ids.tolist() == [4, 1, 6, 1]
    assert v.decode(ids) == "the <unk> sat <unk>"
    assert v.decode([2, 5, 3]) == "<bos> cat <eos>"
    with pytest.raises(DataError, match="outside the vocabulary"):
        v.decode([7])


def test_vocab_json_round_trip_and_errors():
    v = Vocab.build(["zeta alpha alpha, beta"], cap=50)
    back = Vocab.from_json(v.to_json())
    assert back == v and back.stoi == v.stoi
    with pytest.raises(DataError, match="malformed"):
        Vocab.from_json("{not json")
    with pytest.raises(DataError, match="must start with"):
        Vocab.from_json(json.dumps({"tokens": ["a", "b", "c", "d"]}))
    with pytest.raises(DataError, match="at least 5"):
        Vocab.build(["a"], cap=3)


def test_encode_documents_appends_eos_after_each_document():
    v = Vocab.build(["a b", "b"], cap=10)  # b -> 4, a -> 5
    stream = encode_documents(["a b", "b", "c"], v)
    assert stream.dtype == np.int64
    assert stream.tolist() == [5, 4, 3, 4, 3, 1, 3]
    assert encode_documents([], v).shape == (0,)


def test_chunked_encoding_matches_whole_text_lookup():
    """A corpus several chunks long encodes exactly as one tokenize() + dict lookup would."""
    text = synthetic_corpus(400_000, seed=3)  # ~2 MB, two chunks or more
    assert len(text) > 1.5 * data.CHUNK_CHARS
    v = Vocab.build([text], cap=300)
    words = tokenize(text)
    counts = Counter(words)
    first = {}
    for i, w in enumerate(words):
        first.setdefault(w, i)
    expected_order = sorted(counts, key=lambda w: (-counts[w], first[w]))[:296]
    assert v.itos[4:] == expected_order
    lookup = {w: i + 4 for i, w in enumerate(expected_order)}
    expected = np.array([lookup.get(w, 1) for w in words], dtype=np.int64)
    np.testing.assert_array_equal(v.encode(text), expected)


def test_vocab_build_and_encode_do_not_hold_all_token_strings(monkeypatch):
    """Peak traced memory stays near one chunk's tokens plus the id array, not the corpus's."""
    text = synthetic_corpus(300_000, seed=1)  # ~1.5 MB; all its token strings: ~17 MB
    monkeypatch.setattr(data, "CHUNK_CHARS", 1 << 16)
    tracemalloc.start()
    try:
        v = Vocab.build([text], cap=788)
        stream = encode_documents([text], v)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(stream) == 300_001
    all_tokens = len(tokenize(text)) * (49 + 5)  # str header + ~5 chars, not counting the list
    assert peak < all_tokens / 2, f"peak {peak / 1e6:.1f} MB, all tokens {all_tokens / 1e6:.1f} MB"


# ------------------------------------------------------------------------------ synthetic corpus


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1))
def test_synthetic_corpus_has_exactly_n_tokens(n, seed):
    assert len(tokenize(synthetic_corpus(n, seed))) == n


def test_synthetic_corpus_is_deterministic_per_seed():
    a = synthetic_corpus(5000, seed=7)
    assert a.encode() == synthetic_corpus(5000, seed=7).encode()
    assert a != synthetic_corpus(5000, seed=8)


def test_synthetic_corpus_reads_like_sentences_and_paragraphs():
    text = synthetic_corpus(20_000, seed=0)
    paragraphs = text.strip("\n").split("\n\n")
    assert len(paragraphs) > 20
    assert all(p and "\n" not in p for p in paragraphs)
    sentences = re.split(r"(?<=[.!?]) ", " ".join(paragraphs))
    assert len(sentences) > 3 * len(paragraphs)
    for s in sentences:
        assert s[0].isupper() and s[-1] in ".!?", s
        assert not any(c in ".!?" for c in s[:-1]), s  # one end mark, at the end
    marks = Counter(s[-1] for s in sentences)
    assert marks["."] > marks["?"] > 0 and marks["!"] > 0
    assert text.count(",") > len(sentences) // 4
    assert "don't" in text.lower() or "it's" in text.lower()  # apostrophe words occur


def test_synthetic_corpus_word_frequencies_follow_zipf():
    words = [t for t in tokenize(synthetic_corpus(200_000, seed=2)) if t[0].isalnum()]
    freq = np.array(sorted(Counter(words).values(), reverse=True)[:300], dtype=np.float64)
    ranks = np.arange(1, len(freq) + 1)
    slope = np.polyfit(np.log(ranks), np.log(freq), 1)[0]
    assert -1.3 < slope < -0.9, slope  # generated with exponent 1.1


def test_synthetic_corpus_bytes_per_token_like_the_seed_dataset():
    n = 100_000
    per_token = len(synthetic_corpus(n, seed=0).encode()) / n
    assert 4.5 < per_token < 5.5  # the seed: 24 MB for ~4.8M tokens = 5 bytes per token


def test_synthetic_corpus_rejects_non_positive_size():
    with pytest.raises(DataError, match="positive"):
        synthetic_corpus(0)


# -------------------------------------------------------------------------------------- sources


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert isinstance(exc.value, InputError) and exc.value.exit_code == 2
    return msg


def test_none_means_the_synthetic_corpus():
    assert load_documents(None, synthetic_tokens=300, seed=4) == [synthetic_corpus(299, 4)]


def test_text_file_is_one_document(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("Hello there.\nSecond line, é.\n", encoding="utf-8")
    assert load_documents(f) == ["Hello there.\nSecond line, é.\n"]
    assert load_documents(str(f)) == ["Hello there.\nSecond line, é.\n"]


def test_folder_reads_every_file_recursively_in_sorted_order(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a" / "z.md").write_text("zed")
    (tmp_path / "a" / "deep" / "x").write_text("ex")
    (tmp_path / "a" / "c.txt").write_text("sea")
    assert load_documents(tmp_path) == ["sea", "ex", "zed", "bee"]  # a/c, a/deep/x, a/z, b


def test_folder_skips_binary_and_non_utf8_files_with_a_warning(tmp_path):
    (tmp_path / "good.txt").write_text("words here")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\x00\x00\x01")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.warns(UserWarning) as record:
        docs = load_documents(tmp_path)
    assert docs == ["words here"]
    messages = " ".join(str(w.message) for w in record)
    assert "image.png" in messages and "latin1.txt" in messages


def test_folder_with_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(DataError) as exc:  # the reasons are in the one line, not warnings
        load_documents(tmp_path)
    assert str(tmp_path) in _one_line(exc)
    assert "blob.bin" in _one_line(exc) and "binary" in _one_line(exc)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no readable text file"):
        load_documents(empty)


def test_missing_path_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError) as exc:
        load_documents(missing)
    msg = _one_line(exc)
    assert str(missing) in msg and "does not exist" in msg


@pytest.mark.parametrize("content", [b"", b"  \n\t\n  "])
def test_empty_or_whitespace_file_is_an_error(tmp_path, content):
    f = tmp_path / "blank.txt"
    f.write_bytes(content)
    with pytest.raises(DataError) as exc:
        load_documents(f)
    assert str(f) in _one_line(exc) and "empty" in str(exc.value)


def test_undecodable_text_file_is_an_error_with_the_offset(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"fine so far \xff\xfe oops")
    with pytest.raises(DataError) as exc:
        load_documents(f)
    msg = _one_line(exc)
    assert str(f) in msg and "offset 12" in msg and "UTF-8" in msg


SQUAD = {
    "version": "v2.0",
    "data": [
        {"title": "One", "paragraphs": [
            {"context": "The sky is blue.", "qas": [
                {"question": "What colour is the sky?", "id": "1",
                 "answers": [{"text": "blue", "answer_start": 11},
                             {"text": "Blue", "answer_start": 11}]},
                {"question": "Is it green?", "id": "2", "answers": [],
                 "is_impossible": True, "plausible_answers": [{"text": "no"}]},
            ]},
            {"context": "Grass is green.", "qas": []},
        ]},
        {"title": "Two", "paragraphs": [
            {"context": "Water is wet.", "qas": [
                {"question": "What is water?", "id": "3", "answers": [{"text": "wet"}]}]},
        ]},
    ],
}


def test_squad_gives_one_document_per_paragraph(tmp_path):
    f = tmp_path / "train-v2.0.json"
    f.write_text(json.dumps(SQUAD))
    assert load_documents(f) == [
        "The sky is blue.\nWhat colour is the sky?\nblue\nBlue\nIs it green?",
        "Grass is green.",
        "Water is wet.\nWhat is water?\nwet",
    ]


def test_squad_bad_json_is_an_error(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('{"data": [')
    with pytest.raises(DataError) as exc:
        load_documents(f)
    msg = _one_line(exc)
    assert str(f) in msg and "not valid JSON" in msg and "SQuAD" in msg


@pytest.mark.parametrize("path_to_delete, key, where", [
    ((), "data", "top level"),
    (("data", 0), "paragraphs", "data[0]"),
    (("data", 0, "paragraphs", 1), "qas", "data[0].paragraphs[1]"),
    (("data", 1, "paragraphs", 0), "context", "data[1].paragraphs[0]"),
    (("data", 0, "paragraphs", 0, "qas", 1), "question", "data[0].paragraphs[0].qas[1]"),
    (("data", 1, "paragraphs", 0, "qas", 0, "answers", 0), "text",
     "data[1].paragraphs[0].qas[0].answers[0]"),
])
def test_squad_missing_key_is_named(tmp_path, path_to_delete, key, where):
    doc = json.loads(json.dumps(SQUAD))
    node = doc
    for step in path_to_delete:
        node = node[step]
    del node[key]
    f = tmp_path / "squad.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(DataError) as exc:
        load_documents(f)
    msg = _one_line(exc)
    assert f"missing key '{key}'" in msg and where in msg and str(f) in msg
