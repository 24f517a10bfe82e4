"""EASE against a direct least-squares solve, RP3beta against its formula, and EASE's
memory guard."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recpipe.baselines.ease import ease_weights
from recpipe.baselines.rp3beta import rp3beta_weights
from recpipe.models.registry import build_model
from tests.contract.planted import planted

X = np.array(
    [
        [1, 1, 0, 0, 1],
        [0, 1, 1, 0, 0],
        [1, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
        [1, 1, 1, 0, 0],
        [0, 1, 0, 1, 1],
    ],
    dtype=np.float64,
)


def test_ease_equals_a_direct_solve_per_column() -> None:
    l2 = 0.7
    got = ease_weights(sp.csr_matrix(X), l2)
    n = X.shape[1]
    for j in range(n):  # column j: ridge regression of item j on the other items
        others = [i for i in range(n) if i != j]
        a = X[:, others]
        coef = np.linalg.solve(a.T @ a + l2 * np.eye(n - 1), a.T @ X[:, j])
        np.testing.assert_allclose(got[others, j], coef, rtol=1e-10, atol=1e-12)
        assert got[j, j] == 0.0


def test_rp3beta_equals_its_formula() -> None:
    alpha, beta = 0.8, 0.4
    got = rp3beta_weights(sp.csr_matrix(X), alpha, beta, neighbours=5).toarray()
    users, items = X.shape
    deg_u, deg_i = X.sum(axis=1), X.sum(axis=0)
    want = np.zeros((items, items))
    for i in range(items):
        for j in range(items):
            if i == j:
                continue
            walk = sum(
                (X[u, i] / deg_i[i]) ** alpha * (X[u, j] / deg_u[u]) ** alpha
                for u in range(users)
                if X[u, i] and X[u, j]
            )
            want[i, j] = walk / deg_i[j] ** beta
    np.testing.assert_allclose(got, want, rtol=1e-6)
    top1 = rp3beta_weights(sp.csr_matrix(X), alpha, beta, neighbours=1).toarray()
    assert ((top1 > 0).sum(axis=1) <= 1).all()


def test_ease_refuses_a_catalogue_past_max_items_with_the_memory_it_would_need() -> None:
    train, valid, meta = planted()
    with pytest.raises(ValueError, match=r"exceed max_items=5; the fit would need about"):
        build_model("ease", {"max_items": 5}, meta).fit(train, valid)
