"""NegativeSampler: popularity^alpha frequencies, reserved slots, seeding, cache refills."""

from __future__ import annotations

import numpy as np
import pytest

from recpipe.features.sampling import N_RESERVED, NegativeSampler, _GuidedSearch

N_DRAWS = 200_000
# Counts aligned to indices: two reserved slots, one zero-count item, a long tail.
COUNTS = np.array([50, 50, 400, 200, 100, 0, 60, 30, 20, 10, 5, 1], dtype=np.int64)


def expected_probabilities(counts: np.ndarray, alpha: float) -> np.ndarray:
    w = np.ones(len(counts)) if alpha == 0 else counts.astype(float) ** alpha
    w[:N_RESERVED] = 0.0
    return w / w.sum()


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.75, 1.0])
def test_frequencies_match_popularity_power(alpha):
    sampler = NegativeSampler(COUNTS, alpha=alpha, seed=1, cache_size=50_000)
    p = expected_probabilities(COUNTS, alpha)
    assert np.allclose(sampler.probabilities, p)
    draws = sampler.sample(N_DRAWS)
    assert draws.dtype == np.int64
    freq = np.bincount(draws, minlength=len(COUNTS)) / N_DRAWS
    # 5 standard errors of a binomial proportion, per item.
    tol = 5 * np.sqrt(p * (1 - p) / N_DRAWS) + 1e-9
    assert np.all(np.abs(freq - p) <= tol), (freq, p)
    assert freq[:N_RESERVED].sum() == 0
    if alpha > 0:
        assert freq[5] == 0  # a zero count is never drawn
    else:
        assert freq[5] > 0  # uniform covers the whole catalogue
    assert sampler.n_refills == N_DRAWS // 50_000


def test_never_reserved_and_probabilities_read_only():
    sampler = NegativeSampler(np.ones(3), alpha=1.0, seed=0, cache_size=1000)
    assert set(np.unique(sampler.sample(10_000)).tolist()) == {2}
    assert sampler.probabilities.tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        sampler.probabilities[0] = 1.0
    assert NegativeSampler(np.ones(6), n_reserved=4, cache_size=100).sample(1000).min() == 4


def test_seeded_determinism():
    a = NegativeSampler(COUNTS, seed=7, cache_size=1000).sample(5000)
    b = NegativeSampler(COUNTS, seed=7, cache_size=1000).sample(5000)
    c = NegativeSampler(COUNTS, seed=8, cache_size=1000).sample(5000)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stream_does_not_depend_on_request_sizes_across_refills():
    whole = NegativeSampler(COUNTS, seed=3, cache_size=7).sample(100)
    sampler = NegativeSampler(COUNTS, seed=3, cache_size=7)
    parts = [sampler.sample(n) for n in (3, 5, 0, 20, 1, 71)]
    assert np.array_equal(np.concatenate(parts), whole)
    assert sampler.n_refills == 15  # ceil(100 / 7)


def test_cache_is_lazy_and_refilled_when_used_up():
    sampler = NegativeSampler(COUNTS, seed=0, cache_size=10)
    assert sampler.n_refills == 0
    sampler.sample(10)
    assert sampler.n_refills == 1
    sampler.sample(1)
    assert sampler.n_refills == 2
    sampler.sample(25)  # larger than the cache: several refills in one request
    assert sampler.n_refills == 4


def test_sample_matrix_is_the_stream_reshaped():
    m = NegativeSampler(COUNTS, seed=4, cache_size=64).sample_matrix(6, 5)
    flat = NegativeSampler(COUNTS, seed=4, cache_size=64).sample(30)
    assert m.shape == (6, 5)
    assert np.array_equal(m.ravel(), flat)


def test_sample_excluding_never_returns_the_positive():
    # Item 2 holds 2/3 of the mass, so collisions are frequent.
    counts = np.array([0, 0, 200, 50, 50])
    sampler = NegativeSampler(counts, seed=5, cache_size=1000)
    pos = np.array([2, 3, 4, 2] * 5000)
    neg = sampler.sample_excluding(pos, 4)
    assert neg.shape == (20_000, 4)
    assert not np.any(neg == pos[:, None])
    assert neg.min() >= N_RESERVED
    # Conditional distribution: given positive 2, items 3 and 4 equally likely.
    rows = neg[pos == 2]
    share = np.mean(rows == 3)
    assert abs(share - 0.5) < 0.02


def test_sample_excluding_refuses_a_positive_holding_all_mass():
    sampler = NegativeSampler(np.array([0, 0, 5, 0]), seed=0, cache_size=10)
    with pytest.raises(ValueError, match="all the sampling mass"):
        sampler.sample_excluding(np.array([2]), 3)


def test_reseeded_shares_the_distribution_not_the_state():
    base = NegativeSampler(COUNTS, alpha=0.5, seed=1, cache_size=100)
    base.sample(37)
    child = base.reseeded(9, cache_size=50)
    assert child.probabilities is base.probabilities
    assert child.cache_size == 50
    expected = NegativeSampler(COUNTS, alpha=0.5, seed=9, cache_size=50).sample(120)
    assert np.array_equal(child.sample(120), expected)
    # The parent's stream is unaffected by the child.
    again = NegativeSampler(COUNTS, alpha=0.5, seed=1, cache_size=100)
    again.sample(37)
    assert np.array_equal(base.sample(10), again.sample(10))


@pytest.mark.parametrize(
    ("counts", "kwargs", "match"),
    [
        (np.ones((2, 3)), {}, "1-D"),
        (np.ones(2), {}, "reserved"),
        (np.array([1, 1, -1, 2]), {}, "non-negative"),
        (np.array([1, 1, 0, 0]), {"alpha": 1.0}, "every non-reserved count is zero"),
        (np.ones(4), {"alpha": -1.0}, "alpha"),
        (np.ones(4), {"cache_size": 0}, "cache_size"),
    ],
)
def test_bad_arguments(counts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        NegativeSampler(counts, **kwargs)


def test_zero_counts_with_uniform_alpha_are_allowed():
    sampler = NegativeSampler(np.zeros(5), alpha=0.0, cache_size=100)
    assert sampler.probabilities.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 3, 1 / 3])


def test_reserved_slots_agree_with_the_id_map_convention():
    idmap = pytest.importorskip("recpipe.features.idmap")
    from recpipe.sessions.batching import PAD

    assert N_RESERVED == idmap.N_RESERVED
    assert PAD == idmap.PAD


@pytest.mark.parametrize("kind", ["zipf", "one_heavy", "sparse", "tiny_tail"])
def test_guided_search_equals_binary_search(kind):
    rng = np.random.default_rng(0)
    n = 5000
    if kind == "zipf":
        w = rng.zipf(1.2, n).astype(float)
    elif kind == "one_heavy":
        w = np.full(n, 1e-9)
        w[1234] = 1e6
    elif kind == "sparse":
        w = np.where(rng.random(n) < 0.01, rng.random(n), 0.0)
    else:
        w = np.geomspace(1.0, 1e-12, n)
    w[:2] = 0.0
    cdf = np.cumsum(w)
    search = _GuidedSearch(cdf)
    u = np.concatenate([rng.random(200_000), [0.0, np.nextafter(1.0, 0.0)]])
    expected = np.searchsorted(cdf, np.minimum(u * cdf[-1], search.u_max), side="right")
    got = search(u)
    assert np.array_equal(got, expected)
    assert np.all(w[got] > 0)
