"""Top-K retrieval over item vectors: exact (matrix product + top-k) or approximate (faiss).

A model with item vectors answers session and similar-item requests by the inner
product of a query vector with every item vector (cosine, since serving indexes the
unit-norm vectors of :attr:`ColdStartPolicy.unit_vectors
<recpipe.models.coldstart.ColdStartPolicy.unit_vectors>`). Two indexes do this:

=================  ===================================================================
:class:`ExactIndex`  a batched matrix product and :func:`top_k`, in chunks of items so
                   that a batch of 64 queries over a million items needs no 256 MB
                   score matrix; with ``quantize="int8"`` the vectors are kept as
                   8-bit codes with one scale per item (4x smaller) and dequantised
                   chunk by chunk
:class:`FaissIndex`  faiss (the ``ann`` extra): IVF (k-means cells, ``nprobe`` searched)
                   or HNSW graphs, over float32 vectors or 8-bit scalar-quantised
                   codes (``quantize="int8"``)
=================  ===================================================================

:func:`build_index` picks one by catalogue size (``serve.ann_min_items``), falling back
to the exact index, with a warning, when faiss is not installed. Both skip the reserved
slots (PAD, UNK) and take per-query lists of items to leave out (the query item itself,
items a user has seen). :func:`recall_at_k` measures an approximate index against the
exact one.

Terms: B queries, D dimensions, N item slots (reserved included), K results.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from recpipe.features.idmap import N_RESERVED

__all__ = [
    "ExactIndex",
    "FaissIndex",
    "ItemIndex",
    "build_index",
    "faiss_available",
    "index_report",
    "quantize_int8",
    "recall_at_k",
    "top_k",
]

log = logging.getLogger(__name__)

#: Most query-item scores held at once by :class:`ExactIndex` (B x chunk floats: 64 MB).
_MAX_SCORES_PER_CHUNK = 1 << 24
#: Columns per block of :func:`top_k`'s first pass, and the row length from which it pays.
_BLOCK = 128
_BLOCK_MIN_COLUMNS = 16_384
#: Items per alignment unit of :class:`ExactIndex`'s chunks (64 bytes of float32): a product
#: over columns that start off such a boundary runs up to 1.6x slower in MKL.
_ALIGN = 16
#: Catalogues from which :class:`ExactIndex` times numpy's and torch's products to pick one.
_CALIBRATE_MIN_ITEMS = 16_384


def faiss_available() -> bool:
    """Whether faiss can be imported (the ``ann`` extra: ``pip install recpipe[ann]``)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class ItemIndex(Protocol):
    """What serving needs of an index over item vectors."""

    kind: str
    n_items: int

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores of each query (see :meth:`ExactIndex.search`)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Kind, size and settings, for the service's ``/model`` answer and the reports."""
        ...


def quantize_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row 8-bit codes: ``vectors[i] ~= codes[i] * scales[i]``.

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float32.

    Returns
    -------
    codes : numpy.ndarray
        (N, D) int8 in [-127, 127].
    scales : numpy.ndarray
        (N,) float32; 0 for zero rows.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    peak = np.abs(vectors).max(axis=1) if vectors.size else np.zeros(len(vectors), np.float32)
    scales = (peak / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0)[:, None]
    codes = np.clip(np.rint(vectors / safe), -127, 127).astype(np.int8)
    return codes, scales


def _check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must be (B, {dim}), got shape {q.shape}")
    return q


def _exclusions(exclude: Sequence[np.ndarray] | None, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query exclusion lists as flat (rows, items) int64 arrays."""
    if exclude is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(exclude) != b:
        raise ValueError(f"exclude must hold one array per query ({b}), got {len(exclude)}")
    lists = [np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]
    rows = np.repeat(np.arange(b, dtype=np.int64), [len(e) for e in lists])
    items = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    return rows, items


def _faster_backend(vectors_t: np.ndarray, batch: int = 4, repeats: int = 3) -> str:
    """``"torch"`` when torch multiplies a small batch of queries by the (D, N) vectors
    clearly (20%) faster than numpy on this machine, else ``"numpy"``."""
    q = np.random.default_rng(0).standard_normal((batch, vectors_t.shape[0]), dtype=np.float32)
    tq, tv = torch.from_numpy(q), torch.from_numpy(vectors_t)

    def best(product: Any) -> float:
        product()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.inference_mode():
        numpy_s, torch_s = best(lambda: q @ vectors_t), best(lambda: tq.mm(tv))
    choice = "torch" if torch_s < 0.8 * numpy_s else "numpy"
    log.debug(
        "item index product: numpy %.2f ms, torch %.2f ms -> %s",
        numpy_s * 1e3,
        torch_s * 1e3,
        choice,
    )
    return choice


def top_k(scores: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest scores of each row and their columns, best first.

    Rows of more than ``_BLOCK_MIN_COLUMNS`` scores are searched in two passes: the
    maximum of every block of ``_BLOCK`` columns, then a full top-k over the ``k``
    blocks with the largest maxima only. That is exact (each of the ``k`` best
    scores lies in a block whose maximum is at least that score, so in one of the
    ``k`` best blocks) and, over 100k columns, about 4x faster than ``torch.topk``
    over the whole row, whose selection is not vectorised.

    Parameters
    ----------
    scores : numpy.ndarray or torch.Tensor
        (B, n) float32 scores; ``-inf`` marks columns that must not be returned.
    k : int
        Results per row, at most ``n``.

    Returns
    -------
    values : numpy.ndarray
        (B, k) float32 scores, descending.
    columns : numpy.ndarray
        (B, k) int64 column of each value.

    Examples
    --------
    >>> values, columns = top_k(np.array([[0.25, 0.75, 0.5]], np.float32), 2)
    >>> columns.tolist(), values.tolist()
    ([[1, 2]], [[0.75, 0.5]])
    """
    s = torch.as_tensor(scores)
    b, n = s.shape
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, {n}], got {k}")
    blocks = n // _BLOCK
    if n < _BLOCK_MIN_COLUMNS or k * 4 > blocks:
        top = torch.topk(s, k, dim=1)
        return top.values.numpy(), top.indices.numpy()
    whole = blocks * _BLOCK
    best = torch.topk(s[:, :whole].reshape(b, blocks, _BLOCK).amax(dim=2), k, dim=1).indices
    columns = (best[:, :, None] * _BLOCK + torch.arange(_BLOCK)).reshape(b, k * _BLOCK)
    if whole < n:  # the last, partial block is always a candidate
        columns = torch.cat([columns, torch.arange(whole, n).expand(b, n - whole)], dim=1)
    top = torch.topk(torch.gather(s, 1, columns), k, dim=1)
    return top.values.numpy(), torch.gather(columns, 1, top.indices).numpy()


class ExactIndex:
    """Exact top-K by a batched matrix product and :func:`top_k`.

    The vectors are kept transposed, (D, N) and contiguous: a query then streams through
    each dimension's row once, which halves the time of a single query against the
    (N, D) layout. Which BLAS multiplies them depends on the CPU: numpy's OpenBLAS runs
    the small-batch products of serving 2-3x faster than torch's MKL on AMD CPUs, while
    on recent Intel CPUs torch's is about 2x faster for batches of 2-16 queries
    (OpenBLAS takes as long for 2 queries over 100k items as for 16; torch as long as
    for 1). ``backend="auto"`` times both on a batch of 4 queries when the index is
    built (a few ms, catalogues of ``_CALIBRATE_MIN_ITEMS`` items and more) and keeps
    the faster; both compute the same float32 products.

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float32 item vectors by item index (the reserved rows are never returned).
    quantize : {"none", "int8"}, default "none"
        ``int8``: keep 8-bit codes and a scale per item (:func:`quantize_int8`).
    backend : {"auto", "numpy", "torch"}, default "auto"
        The matrix product of float32 vectors (int8 codes always use numpy).
    transposed : numpy.ndarray, optional
        ``vectors`` already transposed, (D, N) float32 and C-contiguous, kept as they
        are instead of a private copy (a memory map the service's workers share: see
        :mod:`recpipe.serve.bundle`); ignored for int8 codes.

    Examples
    --------
    >>> v = np.eye(4, dtype=np.float32)
    >>> idx, scores = ExactIndex(v).search(np.array([[0, 0, 1, 0.5]], np.float32), 2)
    >>> idx.tolist(), scores.tolist()
    ([[2, 3]], [[1.0, 0.5]])
    """

    kind = "exact"

    def __init__(
        self,
        vectors: np.ndarray,
        *,
        quantize: str = "none",
        backend: str = "auto",
        transposed: np.ndarray | None = None,
    ) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] <= N_RESERVED:
            raise ValueError(
                f"vectors must be (n_items, D) with more than {N_RESERVED} rows, got "
                f"shape {vectors.shape}"
            )
        if quantize not in ("none", "int8"):
            raise ValueError(f"quantize must be 'none' or 'int8', got {quantize!r}")
        if backend not in ("auto", "numpy", "torch"):
            raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
        self.n_items, self.dim = int(vectors.shape[0]), int(vectors.shape[1])
        self.quantize = quantize
        self._codes: np.ndarray | None = None
        self._scales: np.ndarray | None = None
        self._vectors: np.ndarray | None = None
        self._torch_vectors: torch.Tensor | None = None
        self.backend = "numpy"
        if quantize == "int8":
            codes, scales = quantize_int8(vectors)
            self._codes, self._scales = np.ascontiguousarray(codes.T), scales  # (D, N), (N,)
        else:
            if (
                transposed is not None
                and transposed.shape == (self.dim, self.n_items)
                and transposed.dtype == np.float32
                and transposed.flags.c_contiguous
            ):
                self._vectors = transposed  # shared, e.g. memory-mapped: no copy
            else:
                self._vectors = np.ascontiguousarray(vectors.T)  # (D, N)
            if backend == "auto" and self.n_items >= _CALIBRATE_MIN_ITEMS:
                backend = _faster_backend(self._vectors)
            if backend == "torch":
                self._torch_vectors = torch.from_numpy(self._vectors)  # shares the memory
                self.backend = "torch"

    @property
    def nbytes(self) -> int:
        """Bytes of the stored item vectors (codes and scales for int8)."""
        if self._vectors is not None:
            return int(self._vectors.nbytes)
        assert self._codes is not None and self._scales is not None
        return int(self._codes.nbytes + self._scales.nbytes)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "quantize": self.quantize,
            "n_items": self.n_items - N_RESERVED,
            "dim": self.dim,
            "vector_mb": round(self.nbytes / 2**20, 3),
            "backend": self.backend,
            "memory_map": isinstance(self._vectors, np.memmap),
        }

    def _scores(self, q: np.ndarray, start: int, stop: int) -> np.ndarray:
        """(B, stop - start) inner products of the queries with a chunk of items."""
        if self._torch_vectors is not None:
            return torch.from_numpy(q).mm(self._torch_vectors[:, start:stop]).numpy()
        if self._vectors is not None:
            return q @ self._vectors[:, start:stop]
        assert self._codes is not None and self._scales is not None
        scores = q @ self._codes[:, start:stop].astype(np.float32)
        scores *= self._scales[start:stop]
        return scores

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items of each query by inner product.

        Parameters
        ----------
        queries : numpy.ndarray
            (B, D) float32 query vectors.
        k : int
            Results per query (fewer when fewer items remain).
        exclude : sequence of numpy.ndarray, optional
            B arrays of item indices each query must not return.

        Returns
        -------
        indices : numpy.ndarray
            (B, K') int64 item indices, best first; ``-1`` pads rows that ran out.
        scores : numpy.ndarray
            (B, K') float32; ``-inf`` where ``indices`` is -1.
        """
        q = _check_queries(queries, self.dim)
        b = q.shape[0]
        kk = max(0, min(int(k), self.n_items - N_RESERVED))
        if b == 0 or kk == 0:
            return np.full((b, kk), -1, np.int64), np.full((b, kk), -np.inf, np.float32)
        ex_rows, ex_items = _exclusions(exclude, b)
        chunk = max(kk + N_RESERVED, _MAX_SCORES_PER_CHUNK // max(b, 1))
        chunk = -(-chunk // _ALIGN) * _ALIGN  # chunks start on 64-byte boundaries
        best_scores: np.ndarray | None = None
        best_index: np.ndarray | None = None
        for start in range(0, self.n_items, chunk):
            stop = min(start + chunk, self.n_items)
            scores = self._scores(q, start, stop)  # (B, chunk)
            if start < N_RESERVED:
                scores[:, : N_RESERVED - start] = -np.inf  # PAD, UNK
            inside = (ex_items >= start) & (ex_items < stop)
            if inside.any():
                scores[ex_rows[inside], ex_items[inside] - start] = -np.inf
            values, index = top_k(scores, min(kk, stop - start))
            index = index + start
            if best_scores is None or best_index is None:
                best_scores, best_index = values, index
            else:
                merged = np.concatenate([best_scores, values], axis=1)
                keep = np.argsort(-merged, axis=1, kind="stable")[:, :kk]
                best_scores = np.take_along_axis(merged, keep, axis=1)
                best_index = np.take_along_axis(
                    np.concatenate([best_index, index], axis=1), keep, axis=1
                )
        assert best_scores is not None and best_index is not None
        scores_np = best_scores.astype(np.float32, copy=True)
        index_np = best_index.astype(np.int64, copy=True)
        index_np[~np.isfinite(scores_np)] = -1
        scores_np[index_np < 0] = -np.inf
        return index_np, scores_np


class FaissIndex:
    """Approximate top-K with faiss over the real items (the reserved rows are left out).

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float32 item vectors by item index.
    kind : {"ivf", "hnsw", "flat"}, default "ivf"
        IVF: k-means cells, ``nprobe`` of them searched; HNSW: a navigable graph;
        flat: an exact scan (useful with int8 codes: a 4x smaller exact index).
    quantize : {"none", "int8"}, default "none"
        ``int8``: faiss 8-bit scalar quantiser codes instead of float32.
    nlist : int, optional
        IVF cells; default ``sqrt(n)`` (at most ``n / 39``, faiss' training minimum),
        trained by k-means on at most 64 items a cell (a million items: 1000 cells in a
        few seconds on two cores).
    nprobe : int, default 32
        IVF cells searched per query.
    hnsw_m, ef_search : int
        HNSW links per node and search breadth.
    seed : int, default 0
        Seed of the k-means training sample.

    Raises
    ------
    ImportError
        faiss is not installed (``pip install recpipe[ann]``).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        *,
        kind: str = "ivf",
        quantize: str = "none",
        nlist: int | None = None,
        nprobe: int = 32,
        hnsw_m: int = 32,
        ef_search: int = 128,
        seed: int = 0,
    ) -> None:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] <= N_RESERVED:
            raise ValueError(
                f"vectors must be (n_items, D) with more than {N_RESERVED} rows, got "
                f"shape {vectors.shape}"
            )
        if kind not in ("ivf", "hnsw", "flat"):
            raise ValueError(f"kind must be 'ivf', 'hnsw' or 'flat', got {kind!r}")
        if quantize not in ("none", "int8"):
            raise ValueError(f"quantize must be 'none' or 'int8', got {quantize!r}")
        self.n_items, self.dim = int(vectors.shape[0]), int(vectors.shape[1])
        self.kind = f"faiss-{kind}"
        self.quantize = quantize
        real = vectors[N_RESERVED:]
        n, d = real.shape
        ip = faiss.METRIC_INNER_PRODUCT
        sq = faiss.ScalarQuantizer.QT_8bit
        start = time.perf_counter()
        self.settings: dict[str, Any] = {}
        if kind == "ivf":
            nlist = int(nlist or max(1, round(math.sqrt(n))))
            nlist = max(1, min(nlist, n // 39 or 1))
            quantizer = faiss.IndexFlatIP(d)
            if quantize == "int8":
                index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, sq, ip)
            else:
                index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
            sample = real
            if n > 64 * nlist:  # k-means needs ~40-256 points a cell; a sample is enough
                rng = np.random.default_rng(seed)
                sample = real[np.sort(rng.choice(n, 64 * nlist, replace=False))]
            index.train(sample)
            index.nprobe = min(int(nprobe), nlist)
            self.settings = {"nlist": nlist, "nprobe": int(index.nprobe)}
            self._keep = quantizer
        elif kind == "hnsw":
            if quantize == "int8":
                index = faiss.IndexHNSWSQ(d, sq, int(hnsw_m), ip)
                index.train(real)
            else:
                index = faiss.IndexHNSWFlat(d, int(hnsw_m), ip)
            index.hnsw.efSearch = int(ef_search)
            self.settings = {"m": int(hnsw_m), "ef_search": int(ef_search)}
        else:
            index = (
                faiss.IndexScalarQuantizer(d, sq, ip)
                if quantize == "int8"
                else faiss.IndexFlatIP(d)
            )
            if quantize == "int8":
                index.train(real)
        index.add(real)
        self._index = index
        try:
            self._code_size = int(index.sa_code_size())
        except RuntimeError:  # HNSW has no standalone codec: its storage's code size
            self._code_size = d if quantize == "int8" else 4 * d
        if kind == "hnsw":  # level-0 links dominate the graph: 2 M neighbours of 4 bytes
            self.settings["graph_mb"] = round(n * 2 * int(hnsw_m) * 4 / 2**20, 3)
        self.build_seconds = round(time.perf_counter() - start, 3)
        log.info(
            "faiss %s index (%s) over %d items of dim %d built in %.1f s",
            kind,
            quantize,
            n,
            d,
            self.build_seconds,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "quantize": self.quantize,
            "n_items": self.n_items - N_RESERVED,
            "dim": self.dim,
            "vector_mb": round((self.n_items - N_RESERVED) * self._code_size / 2**20, 3),
            "build_s": self.build_seconds,
            **self.settings,
        }

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` (same contract as :meth:`ExactIndex.search`)."""
        q = _check_queries(queries, self.dim)
        b = q.shape[0]
        kk = max(0, min(int(k), self.n_items - N_RESERVED))
        out_index = np.full((b, kk), -1, np.int64)
        out_scores = np.full((b, kk), -np.inf, np.float32)
        if b == 0 or kk == 0:
            return out_index, out_scores
        lists = (
            [np.asarray(e, np.int64).reshape(-1) for e in exclude]
            if exclude is not None
            else [np.zeros(0, np.int64)] * b
        )
        if len(lists) != b:
            raise ValueError(f"exclude must hold one array per query ({b}), got {len(lists)}")
        extra = max((len(e) for e in lists), default=0)
        fetch = min(kk + extra, self.n_items - N_RESERVED)
        scores, labels = self._index.search(q, fetch)
        labels = np.where(labels >= 0, labels + N_RESERVED, -1)
        for row in range(b):
            found, found_scores = labels[row], scores[row]
            keep = found >= 0
            if len(lists[row]):
                keep &= ~np.isin(found, lists[row])
            found, found_scores = found[keep][:kk], found_scores[keep][:kk]
            out_index[row, : len(found)] = found
            out_scores[row, : len(found)] = found_scores
        return out_index, out_scores


def build_index(
    vectors: np.ndarray,
    *,
    ann_min_items: int = 200_000,
    ann_index: str = "ivf",
    quantize: str = "none",
    nlist: int | None = None,
    nprobe: int = 32,
    hnsw_m: int = 32,
    ef_search: int = 128,
    transposed: np.ndarray | None = None,
) -> ExactIndex | FaissIndex:
    """The index a catalogue of this size gets (see the module docstring).

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float32 item vectors by item index.
    ann_min_items : int
        Catalogues with at least this many real items use faiss (``ann_index``).
    ann_index, quantize, nlist, nprobe, hnsw_m, ef_search
        As for :class:`FaissIndex` (``quantize`` also applies to :class:`ExactIndex`).
    transposed : numpy.ndarray, optional
        The vectors transposed, for :class:`ExactIndex` (shared instead of copied).
    """
    n_real = int(np.shape(vectors)[0]) - N_RESERVED
    if n_real >= ann_min_items:
        if faiss_available():
            return FaissIndex(
                vectors,
                kind=ann_index,
                quantize=quantize,
                nlist=nlist,
                nprobe=nprobe,
                hnsw_m=hnsw_m,
                ef_search=ef_search,
            )
        log.warning(
            "%d items call for the faiss ANN index (serve.ann_min_items=%d), but faiss is not "
            "installed (pip install 'recpipe[ann]'); using exact top-K",
            n_real,
            ann_min_items,
        )
    return ExactIndex(vectors, quantize=quantize, transposed=transposed)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (B, K) that ``found`` (B, K) also holds.

    ``-1`` entries (rows that ran out) count as misses in ``found`` and are not counted
    in ``truth``.
    """
    found, truth = np.asarray(found), np.asarray(truth)
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"found has {found.shape[0]} rows, truth {truth.shape[0]}")
    shares = []
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        if len(t):
            shares.append(np.isin(t, f[f >= 0]).mean())
    return float(np.mean(shares)) if shares else 1.0


def index_report(
    vectors: np.ndarray,
    index: ExactIndex | FaissIndex,
    *,
    k: int = 20,
    n_queries: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """What an index costs and loses against exact float32 search.

    The queries are the vectors of ``n_queries`` random real items (similar-item
    requests), each excluding itself.

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float32 item vectors the index was built from.
    index : ExactIndex or FaissIndex
        The index to judge.
    k : int, default 20
        K of recall@K.

    Returns
    -------
    dict
        :meth:`describe` of the index, plus ``float32_mb`` (the exact float32 vectors),
        ``recall@K`` against exact float32 search and ``exact_ms`` / ``index_ms`` per
        query (batched).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n_real = vectors.shape[0] - N_RESERVED
    report = dict(index.describe())
    report["float32_mb"] = round(n_real * vectors.shape[1] * 4 / 2**20, 3)
    if isinstance(index, ExactIndex) and index.quantize == "none":
        report[f"recall@{k}"] = 1.0
        return report
    rng = np.random.default_rng(seed)
    items = N_RESERVED + rng.choice(n_real, size=min(n_queries, n_real), replace=False)
    exclude = [np.array([i]) for i in items]
    exact = ExactIndex(vectors)
    start = time.perf_counter()
    truth, _ = exact.search(vectors[items], k, exclude)
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    found, _ = index.search(vectors[items], k, exclude)
    index_s = time.perf_counter() - start
    report[f"recall@{k}"] = round(recall_at_k(found, truth), 4)
    report["exact_ms"] = round(1000 * exact_s / len(items), 4)
    report["index_ms"] = round(1000 * index_s / len(items), 4)
    return report
