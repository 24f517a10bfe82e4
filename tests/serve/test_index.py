"""Item indexes: exact top-K against brute force, int8 and faiss recall, the size switch."""

from __future__ import annotations

import numpy as np
import pytest

from recpipe.features.idmap import N_RESERVED
from recpipe.serve import index as index_module
from recpipe.serve.index import (
    ExactIndex,
    FaissIndex,
    build_index,
    faiss_available,
    index_report,
    quantize_int8,
    recall_at_k,
    top_k,
)

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss not installed (extra ann)")


def clustered(n: int, dim: int = 16, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """(n + reserved, dim) unit vectors around a few centres, like trained item factors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    v = centres[rng.integers(clusters, size=n + N_RESERVED)] + 0.3 * rng.normal(
        size=(n + N_RESERVED, dim)
    )
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def brute_force(vectors, queries, k, exclude=None):
    scores = queries @ vectors.T
    scores[:, :N_RESERVED] = -np.inf
    for row, items in enumerate(exclude or []):
        scores[row, items] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(scores, top, axis=1)


def test_exact_index_matches_brute_force_across_chunks(monkeypatch):
    vectors = clustered(500)
    queries = clustered(7, seed=1)[:7]
    exclude = [np.array([i + 2, i + 40]) for i in range(7)]
    monkeypatch.setattr(index_module, "_MAX_SCORES_PER_CHUNK", 7 * 64)  # 8 chunks
    idx, scores = ExactIndex(vectors).search(queries, 10, exclude)
    want_idx, want_scores = brute_force(vectors, queries, 10, exclude)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    assert (idx == want_idx).mean() > 0.95  # ties may swap
    assert not np.isin(idx, [0, 1]).any()
    for row, items in enumerate(exclude):
        assert not np.isin(idx[row], items).any()


@pytest.mark.parametrize("n", [20_000, 20_000 + 77, 300])
def test_top_k_two_pass_search_is_exact(n):
    """The block-maximum pass finds exactly torch.topk's values, ``-inf`` included."""
    import torch

    rng = np.random.default_rng(n)
    scores = rng.normal(size=(6, n)).astype(np.float32)
    scores[1, : n - 5] = -np.inf  # only 5 finite columns left: the rest pad with -inf
    scores[2, ::2] = -np.inf
    scores[3, -3:] = 9.0  # the best items in the last, partial block
    for k in (1, 20, 100):
        values, columns = top_k(scores, k)
        want = torch.topk(torch.from_numpy(scores), k, dim=1).values.numpy()
        np.testing.assert_array_equal(values, want)
        np.testing.assert_array_equal(np.take_along_axis(scores, columns, axis=1), values)
        assert all(len(set(row)) == k for row in columns.tolist())  # no column twice
    assert sorted(top_k(scores, 3)[1][3].tolist()) == [n - 3, n - 2, n - 1]
    with pytest.raises(ValueError, match="k must be in"):
        top_k(scores, n + 1)


def test_exact_index_pads_rows_that_run_out():
    vectors = clustered(3)
    idx, scores = ExactIndex(vectors).search(vectors[:1], 10, [np.array([2])])
    assert idx.shape == (1, 3)
    assert sorted(idx[0, :2].tolist()) == [3, 4] and idx[0, 2] == -1
    assert np.isneginf(scores[0, 2])
    with pytest.raises(ValueError, match="queries must be"):
        ExactIndex(vectors).search(np.zeros((1, 5), np.float32), 2)


def test_int8_codes_are_small_and_keep_the_ranking():
    vectors = clustered(2000, dim=32)
    codes, scales = quantize_int8(vectors)
    assert codes.dtype == np.int8 and np.abs(codes).max() <= 127
    np.testing.assert_allclose(codes * scales[:, None], vectors, atol=0.01)
    index = ExactIndex(vectors, quantize="int8")
    assert index.nbytes < 0.3 * vectors.nbytes
    report = index_report(vectors, index, k=20, n_queries=100)
    assert report["quantize"] == "int8" and report["recall@20"] >= 0.9
    assert report["vector_mb"] < report["float32_mb"]


def test_build_index_switches_on_catalogue_size():
    vectors = clustered(300)
    assert isinstance(build_index(vectors, ann_min_items=301), ExactIndex)
    chosen = build_index(vectors, ann_min_items=300)
    assert isinstance(chosen, FaissIndex if faiss_available() else ExactIndex)


def test_recall_at_k():
    truth = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    found = np.array([[4, 3, 9, 8], [6, 5, 7, -1]])
    assert recall_at_k(found, truth) == pytest.approx((0.5 + 1.0) / 2)


@needs_faiss
@pytest.mark.parametrize(
    ("kind", "quantize"), [("ivf", "none"), ("ivf", "int8"), ("hnsw", "none"), ("flat", "int8")]
)
def test_faiss_recall_against_exact(kind, quantize):
    vectors = clustered(3000, dim=16)
    index = FaissIndex(vectors, kind=kind, quantize=quantize, nprobe=8)
    report = index_report(vectors, index, k=20, n_queries=100)
    assert report["kind"] == f"faiss-{kind}"
    assert report["recall@20"] >= 0.9, report
    idx, scores = index.search(vectors[[5, 6]], 5, [np.array([5]), np.array([6, 7])])
    assert idx.shape == (2, 5) and (idx >= N_RESERVED).all()
    assert 5 not in idx[0] and not np.isin(idx[1], [6, 7]).any()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_numpy_and_torch_products_give_the_same_exact_top_k(quantize, monkeypatch):
    vectors = clustered(3_000, dim=32)
    queries = clustered(9, dim=32, seed=2)[:9]
    exclude = [np.array([i + 5]) for i in range(9)]
    monkeypatch.setattr(index_module, "_MAX_SCORES_PER_CHUNK", 9 * 500)  # 7 chunks, aligned
    answers = {}
    for backend in ("numpy", "torch"):
        index = ExactIndex(vectors, quantize=quantize, backend=backend)
        assert index.describe()["backend"] == ("numpy" if quantize == "int8" else backend)
        answers[backend] = index.search(queries, 12, exclude)
    np.testing.assert_allclose(answers["torch"][1], answers["numpy"][1], rtol=1e-5, atol=1e-6)
    assert (answers["torch"][0] == answers["numpy"][0]).mean() > 0.95  # ties may swap
    if quantize == "none":
        want_idx, _ = brute_force(vectors, queries, 12, exclude)
        assert (answers["torch"][0] == want_idx).mean() > 0.95
    assert not np.isin(answers["torch"][0], [0, 1]).any()


def test_the_product_backend_is_picked_once_for_large_catalogues(monkeypatch):
    picked = []

    def pick(vectors_t):
        picked.append(vectors_t.shape)
        return "torch"

    monkeypatch.setattr(index_module, "_faster_backend", pick)
    monkeypatch.setattr(index_module, "_CALIBRATE_MIN_ITEMS", 1_000)
    assert ExactIndex(clustered(500)).backend == "numpy"  # small: no timing, numpy
    assert ExactIndex(clustered(2_000, dim=8)).backend == "torch"
    assert picked == [(8, 2_000 + N_RESERVED)]
    assert index_module._faster_backend(clustered(2_000).T.copy()) in ("numpy", "torch")
    with pytest.raises(ValueError, match="backend"):
        ExactIndex(clustered(10), backend="cuda")
