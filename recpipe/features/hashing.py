"""Stable feature hashing: strings, text n-grams and integer pairs into fixed buckets.

Every hash here is a pure function of its input bytes and the seed, equal across
processes, machines and Python versions. Python's built-in ``hash()`` is salted per
process (``PYTHONHASHSEED``) and must never be used for features: a model trained in
one process would see different buckets when served from another.

- Strings (:func:`stable_hash`, :func:`hash_texts`) use keyed BLAKE2b (RFC 7693) with
  an 8-byte digest read as a little-endian ``uint64``, modulo ``n_buckets``. The seed is
  the key; a *namespace* (BLAKE2b's personalisation string) keeps word n-grams, char
  n-grams and plain values apart, so the word ``"the"`` and the char trigram ``"the"``
  fall into unrelated buckets. Only distinct values are hashed (a Python loop over
  them); rows map back through integer codes.
- Integer pairs (:func:`hash_pairs`) use the splitmix64 finaliser on ``uint64`` with
  wrapping arithmetic, fully vectorised in numpy: the cross-product features of
  Wide & Deep (Cheng et al. 2016, "Wide & Deep Learning for Recommender Systems").
  :func:`hash_ids` builds k independent hash functions of integer ids on it (the
  Bloom / hash embeddings of :mod:`recpipe.models.hashed`).

Text features follow fastText's bag of tricks (Joulin et al. 2017; Bojanowski et al.
2017, "Enriching Word Vectors with Subword Information"): lower-cased ``\\w+`` tokens,
word n-grams, and char n-grams of each word wrapped in ``<`` and ``>``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from recpipe.features.idmap import as_arrow_strings

log = logging.getLogger(__name__)

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)

#: BLAKE2b personalisation strings: one hash space per kind of feature.
NAMESPACE_VALUE = b""
NAMESPACE_WORD = b"recpipe.word"
NAMESPACE_CHAR = b"recpipe.char"

_TOKEN = re.compile(r"\w+")


# strings -------------------------------------------------------------------------
def _check_buckets(n_buckets: int) -> None:
    if int(n_buckets) != n_buckets or n_buckets < 1:
        raise ValueError(f"n_buckets must be a positive integer, got {n_buckets!r}")


def _seed_key(seed: int) -> bytes:
    """The 8-byte BLAKE2b key of ``seed`` (two's complement, little endian)."""
    if not -(1 << 63) <= seed < (1 << 64):
        raise ValueError(f"seed must fit in 64 bits, got {seed}")
    return (seed & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


def hash_strings(
    strings: Iterable[str], n_buckets: int, seed: int = 0, namespace: bytes = NAMESPACE_VALUE
) -> np.ndarray:
    """Bucket each string by keyed BLAKE2b (no de-duplication; pass distinct strings).

    Parameters
    ----------
    strings : iterable of str
        (M,) strings, UTF-8 encoded before hashing.
    n_buckets : int
        Size of the hashed space.
    seed : int, default 0
        The BLAKE2b key (any 64-bit integer).
    namespace : bytes, default b""
        BLAKE2b personalisation (at most 16 bytes) separating feature kinds.

    Returns
    -------
    numpy.ndarray
        (M,) int64 buckets in ``[0, n_buckets)``.
    """
    _check_buckets(n_buckets)
    key = _seed_key(seed)
    blake = hashlib.blake2b
    digests = b"".join(
        blake(s.encode("utf-8", "surrogatepass"), digest_size=8, key=key, person=namespace).digest()
        for s in strings
    )
    words = np.frombuffer(digests, dtype="<u8")
    return (words % _U64(n_buckets)).astype(np.int64)


def stable_hash(
    values: pd.Series | Sequence[Any] | np.ndarray, n_buckets: int, seed: int = 0
) -> np.ndarray:
    """Hash values into ``[0, n_buckets)``, identically in every process.

    Distinct values are hashed once (keyed BLAKE2b, see the module docstring) and
    mapped back to the rows, so repeated ids cost one dictionary lookup each.

    Parameters
    ----------
    values : pandas.Series, sequence or numpy.ndarray
        (N,) values; non-strings are converted with ``astype("string")`` (so ``1``
        and ``"1"`` share a bucket).
    n_buckets : int
        Size of the hashed space.
    seed : int, default 0
        Hash seed; record it with the model that uses the buckets.

    Returns
    -------
    numpy.ndarray
        (N,) int64 buckets in ``[0, n_buckets)``; nulls give ``-1`` (callers choose
        their own slot for a missing value).

    Examples
    --------
    >>> stable_hash(["a", "b", "a", None], 1000).tolist()[2:]
    [473, -1]
    """
    _check_buckets(n_buckets)
    arr = as_arrow_strings(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    encoded = pc.dictionary_encode(arr)
    buckets = hash_strings(encoded.dictionary.to_pylist(), n_buckets, seed)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if not len(buckets):
        return np.full(len(codes), -1, dtype=np.int64)
    return np.where(codes >= 0, buckets[np.maximum(codes, 0)], -1)


# text n-grams --------------------------------------------------------------------
def _check_ns(ns: Sequence[int], what: str) -> tuple[int, ...]:
    out = tuple(int(n) for n in ns)
    if any(n < 1 for n in out) or any(int(n) != n for n in ns):
        raise ValueError(f"{what} n-gram sizes must be positive integers, got {list(ns)}")
    return out


def tokenize(text: str | None) -> list[str]:
    """Lower-cased word tokens (``\\w+``, Unicode-aware; punctuation splits words).

    >>> tokenize("Toy Story (1995), it's")
    ['toy', 'story', '1995', 'it', 's']
    """
    return _TOKEN.findall(text.lower()) if isinstance(text, str) and text else []


def _word_ngrams(tokens: list[str], ns: tuple[int, ...]) -> list[str]:
    out: list[str] = []
    for n in ns:
        if n == 1:
            out.extend(tokens)
        else:
            out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return out


def _char_ngrams(tokens: list[str], ns: tuple[int, ...]) -> list[str]:
    out: list[str] = []
    wrapped = [f"<{t}>" for t in tokens]
    for n in ns:
        for w in wrapped:
            out.extend(w[i : i + n] for i in range(len(w) - n + 1))
    return out


def word_ngrams(text: str | None, ns: Sequence[int]) -> list[str]:
    """Word n-grams of ``text``: for each ``n`` in ``ns`` (in order), every run of n tokens.

    Tokens are joined by one space. ``None`` or empty text gives ``[]``.

    >>> word_ngrams("Red wool Jacket", [1, 2])
    ['red', 'wool', 'jacket', 'red wool', 'wool jacket']
    """
    return _word_ngrams(tokenize(text), _check_ns(ns, "word"))


def char_ngrams(text: str | None, ns: Sequence[int]) -> list[str]:
    """Char n-grams of each token wrapped in ``<`` and ``>``; n-major, then word order.

    A token shorter than ``n - 2`` characters yields no n-gram of size ``n`` (word
    n-grams cover it).

    >>> char_ngrams("Wool hat", [3])
    ['<wo', 'woo', 'ool', 'ol>', '<ha', 'hat', 'at>']
    """
    return _char_ngrams(tokenize(text), _check_ns(ns, "char"))


def hash_texts(
    texts: pd.Series | Sequence[str | None],
    n_buckets: int,
    word_ngrams: Sequence[int] = (1, 2),
    char_ngrams: Sequence[int] = (3,),
    seed: int = 0,
    *,
    binary: bool = False,
) -> sp.csr_matrix:
    """Bag of hashed word and char n-grams, one row per text.

    Word and char n-grams are hashed in separate namespaces (see the module
    docstring) into one space of ``n_buckets`` columns. Each distinct n-gram is
    hashed once.

    Parameters
    ----------
    texts : pandas.Series or sequence of str
        (N,) texts; nulls and empty strings give all-zero rows.
    n_buckets : int
        Number of columns (the hashing space).
    word_ngrams, char_ngrams : sequence of int
        n-gram sizes; empty to switch a kind off.
    seed : int, default 0
        Hash seed.
    binary : bool, default False
        ``False``: entries are counts (how often the row's n-grams hit the bucket);
        ``True``: 1.0 where the count is positive.

    Returns
    -------
    scipy.sparse.csr_matrix
        (N, n_buckets) float32, canonical format (sorted indices, no duplicates).
    """
    _check_buckets(n_buckets)
    wn = _check_ns(word_ngrams, "word")
    cn = _check_ns(char_ngrams, "char")
    rows = texts.tolist() if isinstance(texts, pd.Series | pd.Index) else list(texts)
    word_feats: list[str] = []  # every row's word n-grams, concatenated
    word_lengths: list[int] = []
    char_vocab: dict[str, int] = {}
    char_codes: list[int] = []
    char_lengths: list[int] = []
    # a token's char n-grams depend on the token alone: encode each distinct token once
    token_chars: dict[str, list[int]] = {}
    for text in rows:
        tokens = tokenize(text) if isinstance(text, str) else []
        feats = _word_ngrams(tokens, wn)
        word_feats.extend(feats)
        word_lengths.append(len(feats))
        before = len(char_codes)
        for token in tokens if cn else ():
            cached = token_chars.get(token)
            if cached is None:
                grams = _char_ngrams([token], cn)
                # setdefault's second argument is evaluated first: a new n-gram gets the next code
                cached = [char_vocab.setdefault(g, len(char_vocab)) for g in grams]
                token_chars[token] = cached
            char_codes.extend(cached)
        char_lengths.append(len(char_codes) - before)
    word_codes, word_vocab = pd.factorize(np.array(word_feats, dtype=object))
    row_parts, col_parts = [], []
    for codes, vocab, lengths, namespace in (
        (word_codes, word_vocab, word_lengths, NAMESPACE_WORD),
        (np.asarray(char_codes, dtype=np.int64), list(char_vocab), char_lengths, NAMESPACE_CHAR),
    ):
        if not len(codes):
            continue
        buckets = hash_strings(vocab, n_buckets, seed, namespace)
        col_parts.append(buckets[codes])
        row_parts.append(np.repeat(np.arange(len(rows)), lengths))
    r = np.concatenate(row_parts) if row_parts else np.zeros(0, dtype=np.int64)
    c = np.concatenate(col_parts) if col_parts else np.zeros(0, dtype=np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(rows), int(n_buckets))
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    if binary:
        matrix.data[:] = 1.0
    log.debug(
        "hash_texts: %d texts, %d distinct word and %d char n-grams, %d non-zeros",
        len(rows),
        len(word_vocab),
        len(char_vocab),
        matrix.nnz,
    )
    return matrix


# integer pairs -------------------------------------------------------------------
def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 step on a uint64 array (add the golden gamma, then finalise)."""
    z = x + _GOLDEN
    z = (z ^ (z >> _U64(30))) * _MIX1
    z = (z ^ (z >> _U64(27))) * _MIX2
    return z ^ (z >> _U64(31))


def _pair_salt(seed: int, name: str) -> np.uint64:
    """uint64 salt from the seed and a CRC-32 of ``name``."""
    if not -(1 << 63) <= seed < (1 << 64):
        raise ValueError(f"seed must fit in 64 bits, got {seed}")
    key = np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=_U64)
    key = _splitmix64(key) ^ _U64(zlib.crc32(name.encode()))
    return _splitmix64(key)[0]


def _as_uint64(name: str, values: np.ndarray | Sequence[int] | int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False).view(_U64)


def hash_pairs(
    a: np.ndarray | Sequence[int],
    b: np.ndarray | Sequence[int],
    n_buckets: int,
    seed: int = 0,
    *,
    name: str = "",
) -> np.ndarray:
    """Hash pairs of integers (a cross-product feature) into ``[0, n_buckets)``.

    ``h = splitmix64(splitmix64(a ^ salt) ^ b) mod n_buckets`` on uint64 with
    wrapping arithmetic, where ``salt`` derives from ``seed`` and ``name`` (two
    crosses of the same columns under different names land in unrelated buckets).
    Order matters: ``(a, b)`` and ``(b, a)`` hash differently.

    Parameters
    ----------
    a, b : array-like of int
        Integer arrays broadcastable to one shape (e.g. (N,) and (N,), or (N,) and a
        scalar); negative values are taken as their two's complement.
    n_buckets : int
        Size of the hashed space.
    seed : int, default 0
        Hash seed.
    name : str, default ""
        Name of the cross, mixed into the salt.

    Returns
    -------
    numpy.ndarray
        int64 buckets of the broadcast shape.
    """
    _check_buckets(n_buckets)
    a64, b64 = np.broadcast_arrays(_as_uint64("a", a), _as_uint64("b", b))
    h = _splitmix64(_splitmix64(a64 ^ _pair_salt(seed, name)) ^ b64)
    return (h % _U64(n_buckets)).astype(np.int64)


def hash_ids(
    ids: np.ndarray | Sequence[int],
    n_buckets: int,
    n_hashes: int = 1,
    seed: int = 0,
    *,
    name: str = "",
) -> np.ndarray:
    """Hash integer ids with ``n_hashes`` independent hash functions into ``[0, n_buckets)``.

    Hash function ``j`` is :func:`hash_pairs` of ``(j, id)``: the inner
    ``splitmix64(j ^ salt)`` is the function's own 64-bit seed, so the ``k`` buckets
    of an id are independent draws (the k hash functions of a Bloom filter, as in
    the Bloom embeddings of Serrà & Karatzoglou 2017, "Getting deep recommenders fit:
    Bloom embeddings for sparse binary input/output networks"). An id's buckets may
    coincide (as in a Bloom filter); two ids share all ``k`` buckets with probability
    about ``n_buckets ** -k``.

    Parameters
    ----------
    ids : array-like of int
        (N,) integer ids (any int dtype; negative values as their two's complement).
    n_buckets : int
        Size of the hashed space.
    n_hashes : int, default 1
        k: number of hash functions.
    seed : int, default 0
        Hash seed (any 64-bit integer).
    name : str, default ""
        Name of the id space, mixed into the salt: two tables hashed under different
        names (e.g. users and items) collide independently.

    Returns
    -------
    numpy.ndarray
        (N, n_hashes) int64 buckets; column ``j`` is hash function ``j``.

    Raises
    ------
    ValueError
        ``ids`` is not 1-D integers, ``n_buckets`` or ``n_hashes`` is not a positive
        integer.

    Examples
    --------
    >>> hash_ids([2, 3], 1000, n_hashes=2).shape
    (2, 2)
    """
    _check_buckets(n_buckets)
    if int(n_hashes) != n_hashes or n_hashes < 1:
        raise ValueError(f"n_hashes must be a positive integer, got {n_hashes!r}")
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
    functions = np.arange(int(n_hashes), dtype=np.int64)[None, :]
    return hash_pairs(functions, arr[:, None], n_buckets, seed, name=name)
