"""Stable hashing: equal across processes, n-gram extraction, text and pair hashing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recpipe.features.hashing import (
    NAMESPACE_CHAR,
    NAMESPACE_WORD,
    char_ngrams,
    hash_pairs,
    hash_strings,
    hash_texts,
    stable_hash,
    tokenize,
    word_ngrams,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["Red wool jacket", "red RED", None, "", "Toy Story (1995)", "café crème ✓"]

# What one process computes; the subprocess test compares against another process.
_PROBE = """
import json, sys
import numpy as np
from recpipe.features.hashing import hash_pairs, hash_texts, stable_hash
texts = json.loads(sys.argv[1])
m = hash_texts(texts, 1 << 20, (1, 2), (3, 4), seed=7)
print(json.dumps({
    "stable": stable_hash(["a", "b", "item 42", "é", None], 1000, seed=3).tolist(),
    "indices": m.indices.tolist(),
    "indptr": m.indptr.tolist(),
    "data": m.data.tolist(),
    "pairs": hash_pairs(np.arange(-3, 5), np.arange(8) * 11, 97, seed=5).tolist(),
    "builtin": hash("python salts this"),
}))
"""


def _probe_in_process() -> dict:
    m = hash_texts(TEXTS, 1 << 20, (1, 2), (3, 4), seed=7)
    return {
        "stable": stable_hash(["a", "b", "item 42", "é", None], 1000, seed=3).tolist(),
        "indices": m.indices.tolist(),
        "indptr": m.indptr.tolist(),
        "data": m.data.tolist(),
        "pairs": hash_pairs(np.arange(-3, 5), np.arange(8) * 11, 97, seed=5).tolist(),
    }


def test_hashes_equal_across_processes_with_different_hash_seeds():
    here = _probe_in_process()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROBE, json.dumps(TEXTS)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for hash_seed in ("1", "2")  # both processes run at once
    ]
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        outputs.append(json.loads(stdout))
    # the probe is sensitive: Python's own hash differs between the two processes ...
    assert outputs[0]["builtin"] != outputs[1]["builtin"]
    # ... while ours agree with each other and with this process
    for out in outputs:
        out.pop("builtin")
        assert out == here


def test_stable_hash_golden_values():
    # pinned: a change here silently re-buckets every trained model's features
    assert stable_hash(["a", "b", "a", None], 1000).tolist() == [473, 753, 473, -1]
    assert hash_strings(["a"], 1 << 62, seed=0).tolist() == hash_strings(["a"], 1 << 62).tolist()
    assert hash_pairs([1, 2], [3, 4], 1000).tolist() == hash_pairs([1, 2], [3, 4], 1000, 0).tolist()


def test_stable_hash_range_dtype_seed_and_nulls():
    values = pd.Series([f"id{i}" for i in range(500)] + [None], dtype="string")
    h = stable_hash(values, 64)
    assert h.dtype == np.int64 and h.shape == (501,)
    assert ((h[:-1] >= 0) & (h[:-1] < 64)).all() and h[-1] == -1
    assert len(np.unique(h[:-1])) == 64  # 500 ids fill 64 buckets
    assert not np.array_equal(stable_hash(values, 1 << 30, seed=1), stable_hash(values, 1 << 30))
    # repeated values share a bucket; 1 and "1" are the same id
    assert (
        stable_hash(["x", "y", "x"], 1 << 30)[[0, 2]].tolist()
        == [stable_hash(["x"], 1 << 30)[0]] * 2
    )
    assert stable_hash(pd.Series([1, 2]), 999).tolist() == stable_hash(["1", "2"], 999).tolist()
    assert stable_hash([], 10).shape == (0,)
    assert stable_hash([None], 10).tolist() == [-1]


def test_stable_hash_validates_arguments():
    with pytest.raises(ValueError, match="n_buckets"):
        stable_hash(["a"], 0)
    with pytest.raises(ValueError, match="seed"):
        stable_hash(["a"], 10, seed=1 << 70)
    stable_hash(["a"], 10, seed=-1)  # negative seeds are fine (two's complement)


def test_tokenize_and_word_ngrams():
    assert tokenize("Toy Story (1995), it's") == ["toy", "story", "1995", "it", "s"]
    assert tokenize(None) == tokenize("") == tokenize("  ,; ") == []
    assert word_ngrams("Red wool Jacket", [1, 2]) == [
        "red",
        "wool",
        "jacket",
        "red wool",
        "wool jacket",
    ]
    assert word_ngrams("one two", [3]) == []
    assert word_ngrams("a b c", [2, 3]) == ["a b", "b c", "a b c"]


def test_char_ngrams_have_boundary_markers():
    assert char_ngrams("Wool hat", [3]) == ["<wo", "woo", "ool", "ol>", "<ha", "hat", "at>"]
    assert char_ngrams("a", [3]) == ["<a>"]
    assert char_ngrams("a", [4]) == []
    assert char_ngrams("ab", [2, 4]) == ["<a", "ab", "b>", "<ab>"]
    assert char_ngrams(None, [3]) == []
    with pytest.raises(ValueError, match="positive"):
        char_ngrams("x", [0])
    with pytest.raises(ValueError, match="positive"):
        word_ngrams("x", [-1])


def test_hash_texts_counts_match_ngrams():
    n_buckets = 1 << 20
    m = hash_texts(TEXTS, n_buckets, (1, 2), (3,), seed=0)
    assert isinstance(m, sp.csr_matrix)
    assert m.shape == (len(TEXTS), n_buckets) and m.dtype == np.float32
    assert m.has_canonical_format
    for row, text in enumerate(TEXTS):
        words, chars = word_ngrams(text, (1, 2)), char_ngrams(text, (3,))
        assert m[row].sum() == len(words) + len(chars)
        expected = np.zeros(n_buckets)
        np.add.at(expected, hash_strings(words, n_buckets, 0, NAMESPACE_WORD), 1)
        np.add.at(expected, hash_strings(chars, n_buckets, 0, NAMESPACE_CHAR), 1)
        assert np.array_equal(m[row].toarray().ravel(), expected)
    # "red RED": the unigram "red" twice
    assert m[1].max() == 2.0
    # null and empty texts are all-zero rows
    assert m[2].nnz == 0 and m[3].nnz == 0


def test_hash_texts_binary_namespaces_and_options():
    m = hash_texts(["red RED"], 1 << 20, (1,), (), binary=True)
    assert m.data.tolist() == [1.0]
    # the word "the" and the char trigram "the" do not share a bucket
    word = hash_texts(["the"], 1 << 20, (1,), ())
    char = hash_texts(["the"], 1 << 20, (), (3,))
    assert word.nnz == 1 and char.nnz == 3
    assert word.indices[0] not in set(char.indices.tolist())
    assert hash_texts(["x y"], 16, (), ()).nnz == 0
    assert hash_texts([], 16).shape == (0, 16)
    series = pd.Series(TEXTS, dtype="string", index=[10, 11, 12, 13, 14, 15])
    assert (hash_texts(series, 256) != hash_texts(TEXTS, 256)).nnz == 0
    assert (hash_texts(TEXTS, 256, seed=1) != hash_texts(TEXTS, 256)).nnz > 0


def test_hash_pairs():
    a = np.arange(1000)
    b = np.arange(1000) % 7
    h = hash_pairs(a, b, 50, seed=3)
    assert h.dtype == np.int64 and h.shape == (1000,)
    assert h.min() >= 0 and h.max() < 50
    assert len(np.unique(h)) == 50
    assert np.array_equal(h, hash_pairs(a, b, 50, seed=3))
    assert not np.array_equal(h, hash_pairs(b, a, 50, seed=3))  # order matters
    assert not np.array_equal(h, hash_pairs(a, b, 50, seed=4))
    assert not np.array_equal(h, hash_pairs(a, b, 50, seed=3, name="cross_user_item"))
    assert hash_pairs(a[:4], 5, 50).shape == (4,)  # broadcasting
    assert hash_pairs(np.array([-1]), np.array([-1]), 10).tolist()[0] in range(10)
    # independent of the integer dtype
    assert np.array_equal(hash_pairs(a.astype(np.int32), b.astype(np.int8), 50, 3), h)
    with pytest.raises(ValueError, match="integers"):
        hash_pairs(np.array([0.5]), np.array([1]), 10)
    with pytest.raises(ValueError, match="n_buckets"):
        hash_pairs(a, b, 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), st.none()), max_size=12))
def test_property_any_texts_hash(texts):
    m = hash_texts(texts, 97, (1, 2), (2, 3), seed=11)
    assert m.shape == (len(texts), 97)
    assert np.all(m.data > 0)
    h = stable_hash(texts, 97)
    assert ((h >= 0) | (h == -1)).all() and (h < 97).all()
    assert ((h == -1) == np.array([t is None for t in texts], dtype=bool)).all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=1, max_size=20),
    st.integers(1, 1 << 40),
)
def test_property_pairs_in_range(values, n_buckets):
    a = np.array(values, dtype=np.int64)
    h = hash_pairs(a, a[::-1], n_buckets)
    assert ((h >= 0) & (h < n_buckets)).all()
