"""Paired bootstrap: interval coverage on simulated data, p-values, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from recpipe.evaluate import significance
from recpipe.evaluate.significance import BootstrapResult, paired_bootstrap


def bernoulli_pair(seed: int, n: int, rate_a: float, rate_b: float):
    """Hit arrays of two models on the same n queries; the true mean difference is known."""
    rng = np.random.default_rng(seed)
    # a shared per-query difficulty makes the pair correlated, as real models are
    easy = rng.random(n)
    a = (easy < rate_a).astype(float)
    b = (easy < rate_b).astype(float)
    flip = rng.random(n) < 0.3  # plus some independent noise
    a[flip] = rng.random(flip.sum()) < rate_a
    b[flip] = rng.random(flip.sum()) < rate_b
    return a, b


def test_hand_computed_mean_and_identical_inputs():
    r = paired_bootstrap(np.array([1.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 0.0]))
    assert isinstance(r, BootstrapResult)
    assert r.mean_diff == 0.5 and r.n == 4  # differences 1, 0, 0, 1
    assert 0.0 <= r.low <= 0.5 <= r.high <= 1.0
    same = paired_bootstrap(np.arange(10.0), np.arange(10.0))
    # zero difference everywhere: every resample mean is 0
    assert (same.mean_diff, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not same.significant()


def test_interval_covers_true_difference_at_stated_rate():
    true_diff, covered = 0.05, 0
    n_sims = 200
    for seed in range(n_sims):
        a, b = bernoulli_pair(seed, 400, 0.30, 0.25)
        r = paired_bootstrap(a, b, n_resamples=500, confidence=0.95, seed=seed)
        covered += r.low <= true_diff <= r.high
    # expected 0.95; the binomial sd over 200 runs is ~0.015
    assert 0.90 <= covered / n_sims <= 0.99, covered


def test_zero_difference_contains_zero_and_p_values_are_calibrated():
    contains, rejected = 0, 0
    n_sims = 200
    for seed in range(n_sims):
        a, b = bernoulli_pair(1000 + seed, 400, 0.3, 0.3)
        r = paired_bootstrap(a, b, n_resamples=500, seed=seed)
        contains += r.low <= 0.0 <= r.high
        rejected += r.significant(0.05)
    assert contains / n_sims >= 0.90, contains
    assert rejected / n_sims <= 0.10, rejected


def test_clear_difference_is_significant():
    a, b = bernoulli_pair(7, 2000, 0.40, 0.25)
    r = paired_bootstrap(a, b)
    assert r.low > 0.0 and r.significant()
    assert r.p_value == pytest.approx(2 / 1001)  # no resample at or below zero
    flipped = paired_bootstrap(b, a)
    assert flipped.mean_diff == pytest.approx(-r.mean_diff) and flipped.high < 0.0


def test_seeded_and_chunking_does_not_change_the_result(monkeypatch):
    a, b = bernoulli_pair(3, 300, 0.3, 0.28)
    r1 = paired_bootstrap(a, b, n_resamples=300, seed=5)
    assert paired_bootstrap(a, b, n_resamples=300, seed=5) == r1
    assert paired_bootstrap(a, b, n_resamples=300, seed=6) != r1
    monkeypatch.setattr(significance, "_CHUNK_ELEMENTS", 1000)  # 3 resamples per chunk
    assert paired_bootstrap(a, b, n_resamples=300, seed=5) == r1


def test_input_errors():
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(np.array([np.nan]), np.array([0.0]))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(np.zeros(3), np.zeros(3), confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap(np.zeros(3), np.zeros(3), n_resamples=0)
