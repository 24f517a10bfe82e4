"""Ranks with conservative ties, exclusion of seen items, top-K lists, relevant ranks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recpipe.evaluate import ranking
from recpipe.evaluate.ranking import (
    chunked_ranks,
    chunked_top_k,
    csr_rows,
    relevant_ranks,
    target_ranks,
    top_k,
)


def as_csr(sets: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of a list of item lists (kept as given: unsorted, duplicates)."""
    indptr = np.cumsum([0] + [len(s) for s in sets]).astype(np.int64)
    indices = np.array([i for s in sets for i in s], dtype=np.int64)
    return indptr, indices


# Brute-force references, written from the definitions in the module docstring.


def candidates(n: int, excluded: set[int], keep: set[int], n_reserved: int) -> list[int]:
    return [j for j in range(n) if (j >= n_reserved and j not in excluded) or j in keep]


def brute_rank(row: np.ndarray, target: int, excluded: set[int], n_reserved: int = 0) -> int:
    cands = candidates(len(row), excluded, {target}, n_reserved)
    # every other candidate not strictly below the target counts against it
    return 1 + sum(1 for j in cands if j != target and not row[j] < row[target])


def brute_ranking(row: np.ndarray, rel: set[int], excluded: set[int], n_reserved: int = 0) -> list:
    cands = candidates(len(row), excluded, rel, n_reserved)
    return sorted(cands, key=lambda j: (-row[j], j in rel, j))


def random_case(seed: int, n_rows: int = 6, n_cols: int = 12, levels: int = 4):
    """Integer scores with many ties, random targets, exclusions and relevant sets."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(n_rows, n_cols)).astype(np.float32)
    targets = rng.integers(0, n_cols, size=n_rows)
    excl = [list(rng.choice(n_cols, size=rng.integers(0, 5), replace=True)) for _ in range(n_rows)]
    rel = [list(rng.choice(n_cols, size=rng.integers(1, 5), replace=False)) for _ in range(n_rows)]
    return scores, targets, excl, rel


# --------------------------------------------------------------------------- target_ranks


def test_hand_computed_ranks_with_ties():
    scores = np.array([[0.1, 0.5, 0.5, 0.2]])
    # target 1 (0.5): item 2 ties with it and counts against it -> 1 + 0 + 1 = 2
    # target 2 (0.5): item 1 ties -> 2 as well (both tied items get the worse rank)
    # target 3 (0.2): items 1, 2 above -> 3; target 0 (0.1): everything above -> 4
    for target, expected in [(1, 2), (2, 2), (3, 3), (0, 4)]:
        assert target_ranks(scores, np.array([target])).tolist() == [expected]


def test_constant_scorer_ranks_last():
    scores = np.zeros((3, 7))
    assert target_ranks(scores, np.array([0, 3, 6])).tolist() == [7, 7, 7]
    # seen items leave the candidate set: N - #excluded (the target is never excluded)
    excl = as_csr([[1, 2], [3, 4], []])
    assert target_ranks(scores, np.array([0, 3, 6]), excl).tolist() == [5, 6, 7]
    # reserved slots are not items: N - n_reserved - #excluded; row 0 excludes a reserved
    # slot (never counted anyway) and its own target -> 7 - 2 - 0 = 5
    assert target_ranks(scores, np.array([2, 3, 6]), excl, n_reserved=2).tolist() == [5, 4, 5]


def test_perfect_scorer_ranks_first():
    rng = np.random.default_rng(0)
    scores = rng.random((50, 30))
    targets = rng.integers(0, 30, size=50)
    scores[np.arange(50), targets] = 2.0  # strictly above every other item
    assert np.all(target_ranks(scores, targets) == 1)


def test_exclusion_of_seen_items():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    target = np.array([3])
    assert target_ranks(scores, target).tolist() == [4]  # items 0, 1, 2 above
    # excluding two of the items above lifts the target by two
    assert target_ranks(scores, target, as_csr([[0, 2]])).tolist() == [2]
    # excluding items below changes nothing; duplicates count once
    assert target_ranks(scores, target, as_csr([[4, 4, 0, 0]])).tolist() == [3]


def test_target_is_never_excluded():
    scores = np.array([[0.9, 0.8, 0.7], [0.1, 0.1, 0.1]])
    targets = np.array([1, 2])
    excl = as_csr([[1], [2, 0]])  # each row lists its own target
    # row 0: item 0 above, the target stays -> 2; row 1: only item 1 left, tied -> 2
    assert target_ranks(scores, targets, excl).tolist() == [2, 2]


def test_scipy_exclusion_equals_tuple():
    scores, targets, excl, _ = random_case(1)
    tup = as_csr(excl)
    m = sp.csr_matrix(
        (np.ones(len(tup[1])), tup[1], tup[0]), shape=scores.shape
    )  # duplicates are summed by scipy: still one entry
    assert np.array_equal(target_ranks(scores, targets, tup), target_ranks(scores, targets, m))
    assert np.array_equal(
        target_ranks(scores, targets, tup), target_ranks(scores, targets, sp.csr_array(m))
    )


def test_reserved_columns_never_count_unless_target():
    scores = np.array([[5.0, 5.0, 1.0, 2.0, 3.0]])
    assert target_ranks(scores, np.array([2]), n_reserved=2).tolist() == [3]
    assert target_ranks(scores, np.array([2])).tolist() == [5]
    # a reserved target (e.g. the unknown slot) is still ranked among the real items
    assert target_ranks(scores, np.array([1]), n_reserved=2).tolist() == [1]


@pytest.mark.parametrize("n_reserved", [0, 2])
def test_ranks_match_brute_force(n_reserved):
    for seed in range(20):
        scores, targets, excl, _ = random_case(seed)
        got = target_ranks(scores, targets, as_csr(excl), n_reserved=n_reserved)
        want = [
            brute_rank(scores[b], int(targets[b]), set(excl[b]), n_reserved)
            for b in range(len(targets))
        ]
        assert got.tolist() == want, seed
        assert got.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 5).flatmap(
        lambda n_rows: st.tuples(
            st.lists(
                st.lists(st.integers(-2, 2), min_size=6, max_size=6),
                min_size=n_rows,
                max_size=n_rows,
            ),
            st.lists(st.integers(0, 5), min_size=n_rows, max_size=n_rows),
        )
    )
)
def test_ranks_property(case):
    rows, targets = case
    scores = np.array(rows, dtype=np.float64)
    got = target_ranks(torch.tensor(scores), np.array(targets))
    assert got.tolist() == [brute_rank(scores[b], t, set()) for b, t in enumerate(targets)]


def test_nan_scores_count_against_the_target():
    scores = np.array([[0.5, np.nan, 0.1], [np.nan, 0.9, 0.1]])
    # row 0: NaN is not below the target -> counts against it; row 1: NaN target -> last
    assert target_ranks(scores, np.array([0, 0])).tolist() == [2, 3]


def test_torch_and_numpy_agree():
    scores, targets, excl, rel = random_case(3, n_rows=20, n_cols=40)  # small integers
    ex, rl = as_csr(excl), as_csr(rel)

    def results(s, t):
        return (
            target_ranks(s, t, ex),
            top_k(s, 5, ex, relevant=rl),
            relevant_ranks(s, rl, ex, n_reserved=1).data,
        )

    ref = results(scores, targets)
    read_only = scores.copy()
    read_only.flags.writeable = False
    for s in (
        torch.from_numpy(scores),
        torch.from_numpy(scores).requires_grad_(),
        torch.from_numpy(scores).to(torch.float16),
        torch.from_numpy(scores).to(torch.bfloat16),
        torch.from_numpy(scores).to(torch.int32),
        scores.astype(np.float64),
        scores.astype(np.int64),
        scores.astype(np.uint16),
        np.fliplr(np.fliplr(scores)),  # negative strides
        np.asfortranarray(scores),
        read_only,
    ):
        for got, want in zip(results(s, torch.from_numpy(targets)), ref, strict=True):
            assert np.array_equal(got, want), s.dtype


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_cpu():
    scores, targets, excl, rel = random_case(4, n_rows=30, n_cols=50)
    s = torch.from_numpy(scores).cuda()
    assert np.array_equal(
        target_ranks(s, targets, as_csr(excl)), target_ranks(scores, targets, as_csr(excl))
    )
    assert np.array_equal(top_k(s, 5, as_csr(excl)), top_k(scores, 5, as_csr(excl)))
    got = relevant_ranks(s, as_csr(rel), as_csr(excl))
    assert np.array_equal(got.data, relevant_ranks(scores, as_csr(rel), as_csr(excl)).data)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_equals_unchunked(chunk_size):
    rng = np.random.default_rng(5)
    n_queries, n_items = 130, 90
    queries = torch.randn(n_queries, 8)
    items = torch.randn(n_items, 8)
    full = (queries @ items.T).round(decimals=1)  # coarse scores: plenty of ties
    targets = rng.integers(0, n_items, size=n_queries)
    excl = as_csr(
        [list(rng.integers(0, n_items, size=rng.integers(0, 6))) for _ in range(n_queries)]
    )
    calls = []

    def score_fn(sl: slice) -> torch.Tensor:
        calls.append(sl)
        return (queries[sl] @ items.T).round(decimals=1)

    got = chunked_ranks(score_fn, n_queries, targets, chunk_size, excl, n_reserved=2)
    assert np.array_equal(got, target_ranks(full, targets, excl, n_reserved=2))
    assert len(calls) == -(-n_queries // chunk_size)
    assert all(sl.stop - sl.start <= chunk_size for sl in calls)
    rel = as_csr([[t] for t in targets])
    lists = chunked_top_k(score_fn, n_queries, 10, chunk_size, excl, relevant=rel, n_reserved=2)
    assert np.array_equal(lists, top_k(full, 10, excl, relevant=rel, n_reserved=2))


def test_chunked_rejects_wrong_block_shape():
    with pytest.raises(ValueError, match="returned shape"):
        chunked_ranks(lambda sl: np.zeros((1, 4)), 5, np.zeros(5, dtype=int), 2)


def test_input_errors():
    scores = np.zeros((2, 4))
    with pytest.raises(ValueError, match="targets must lie"):
        target_ranks(scores, np.array([0, 4]))
    with pytest.raises(ValueError, match="shape"):
        target_ranks(scores, np.array([0]))
    with pytest.raises(ValueError, match="2-D"):
        target_ranks(np.zeros(4), np.array([0]))
    with pytest.raises(ValueError, match="indptr"):
        target_ranks(scores, np.array([0, 1]), (np.array([0, 1]), np.array([1])))
    with pytest.raises(ValueError, match="item indices"):
        target_ranks(scores, np.array([0, 1]), as_csr([[9], []]))
    with pytest.raises(ValueError, match="n_reserved"):
        target_ranks(scores, np.array([0, 1]), n_reserved=4)


def test_csr_rows_canonical():
    indptr, indices = csr_rows(as_csr([[3, 1, 3], [], [2]]), 3, 5)
    assert indptr.tolist() == [0, 2, 2, 3]
    assert indices.tolist() == [1, 3, 2]
    m = sp.csr_matrix(([1.0, 0.0, 1.0], [1, 2, 0], [0, 2, 3]), shape=(2, 4))
    indptr, indices = csr_rows(m, 2, 4)  # stored zeros are not members
    assert indptr.tolist() == [0, 1, 2] and indices.tolist() == [1, 0]


# --------------------------------------------------------------------------- top_k


def test_top_k_ties_lowest_index_first():
    scores = np.array([[0.2, 0.9, 0.2, 0.2, 0.5]])
    assert top_k(scores, 4).tolist() == [[1, 4, 0, 2]]
    assert top_k(np.zeros((2, 5)), 3).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_top_k_ties_against_relevant_items():
    scores = np.array([[0.2, 0.9, 0.2, 0.2, 0.9]])
    rel = as_csr([[0, 1]])
    # 0.9: irrelevant 4 before relevant 1; 0.2: irrelevant 2, 3 before relevant 0
    assert top_k(scores, 5, relevant=rel).tolist() == [[4, 1, 2, 3, 0]]
    # a constant scorer puts every relevant item after every irrelevant one
    assert top_k(np.zeros((1, 5)), 5, relevant=rel).tolist() == [[2, 3, 4, 0, 1]]


def test_top_k_exclusion_reserved_and_padding():
    scores = np.array([[9.0, 8.0, 3.0, 2.0, 1.0]])
    assert top_k(scores, 2, as_csr([[2]]), n_reserved=2).tolist() == [[3, 4]]
    # fewer candidates than k: padded with -1
    assert top_k(scores, 4, as_csr([[2]]), n_reserved=2).tolist() == [[3, 4, -1, -1]]
    assert top_k(scores, 7).tolist() == [[0, 1, 2, 3, 4, -1, -1]]
    # relevant items are never excluded
    assert top_k(scores, 2, as_csr([[2]]), relevant=as_csr([[2]]), n_reserved=2).tolist() == [
        [2, 3]
    ]
    # -inf scores are real candidates, unlike excluded items
    inf = np.array([[0.0, -np.inf, -np.inf]])
    assert top_k(inf, 3, as_csr([[1]])).tolist() == [[0, 2, -1]]


@pytest.mark.parametrize("k", [1, 3, 12])
@pytest.mark.parametrize("max_overfetch", [128, 2, 0])  # 2, 0: rows with exclusions go slow
@pytest.mark.parametrize("levels", [4, 1000])  # many ties / almost none
def test_top_k_matches_brute_force(k, max_overfetch, levels, monkeypatch):
    monkeypatch.setattr(ranking, "_MAX_OVERFETCH", max_overfetch)
    for seed in range(20):
        scores, _, excl, rel = random_case(seed, levels=levels)
        got = top_k(scores, k, as_csr(excl), relevant=as_csr(rel), n_reserved=1)
        plain = top_k(scores, k, as_csr(excl))
        for b in range(len(scores)):
            want = brute_ranking(scores[b], set(rel[b]), set(excl[b]), n_reserved=1)[:k]
            assert got[b].tolist() == want + [-1] * (k - len(want)), seed
            want = brute_ranking(scores[b], set(), set(excl[b]))[:k]
            assert plain[b].tolist() == want + [-1] * (k - len(want)), seed


def test_top_k_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[0.1, np.nan]]), 1)


# --------------------------------------------------------------------------- relevant_ranks


def test_relevant_ranks_hand_computed():
    scores = np.array([[0.2, 0.9, 0.2, 0.2, 0.5]])
    # order: 1 (0.9), 4 (0.5), then the 0.2 ties: irrelevant 3, relevant 0, relevant 2
    got = relevant_ranks(scores, as_csr([[2, 0, 1]]))
    assert got.indices.tolist() == [0, 1, 2]
    assert got.data.tolist() == [4, 1, 5]
    assert got.toarray().tolist() == [[4, 1, 5, 0, 0]]


def test_relevant_ranks_match_brute_force_and_top_k():
    for seed in range(20):
        scores, _, excl, rel = random_case(seed)
        got = relevant_ranks(scores, as_csr(rel), as_csr(excl), n_reserved=2)
        lists = top_k(scores, 12, as_csr(excl), relevant=as_csr(rel), n_reserved=2)
        for b in range(len(scores)):
            ranking = brute_ranking(scores[b], set(rel[b]), set(excl[b]), n_reserved=2)
            lo, hi = got.indptr[b], got.indptr[b + 1]
            assert sorted(got.indices[lo:hi].tolist()) == sorted(set(rel[b]))
            for item, rank in zip(got.indices[lo:hi], got.data[lo:hi], strict=True):
                assert rank == ranking.index(item) + 1, seed
                assert lists[b, rank - 1] == item  # rank <= K exactly when in the top-K list


def test_relevant_ranks_with_one_item_equal_target_ranks():
    scores, targets, excl, _ = random_case(7, n_rows=25, n_cols=30)
    rel = as_csr([[t] for t in targets])
    got = relevant_ranks(torch.from_numpy(scores), rel, as_csr(excl), n_reserved=2)
    assert np.array_equal(got.data, target_ranks(scores, targets, as_csr(excl), n_reserved=2))


def test_relevant_ranks_empty_rows_and_infinite_scores():
    scores = np.array([[-np.inf, 1.0, -np.inf, 0.0], [1.0, 2.0, 3.0, 4.0]])
    got = relevant_ranks(scores, as_csr([[2], []]), as_csr([[0], [1]]))
    # row 0: item 0 excluded; candidates 1, 3 above item 2 (-inf) -> 3
    assert got.indptr.tolist() == [0, 1, 1] and got.data.tolist() == [3]
    assert relevant_ranks(scores, as_csr([[], []])).nnz == 0
    with pytest.raises(ValueError, match="NaN"):
        relevant_ranks(np.array([[np.nan, 1.0]]), as_csr([[0]]))
