"""Leaderboard helpers: significance against the best model, Markdown rendering."""

from __future__ import annotations

import numpy as np

from recpipe.evaluate.leaderboard import compare_to_best, leaderboard_markdown


def test_compare_to_best_names_the_best_and_signs_the_difference() -> None:
    rng = np.random.default_rng(0)
    strong = (rng.random(2000) < 0.6).astype(float)
    weak = (rng.random(2000) < 0.3).astype(float)
    out = compare_to_best({"a": {"recall@20": weak}, "b": {"recall@20": strong}}, "recall@20")
    assert out["best"] == "b"
    v = out["versus"]["a"]
    assert v["low"] < v["mean_diff"] < v["high"] < 0
    assert abs(v["mean_diff"] - (weak.mean() - strong.mean())) < 1e-12
    assert compare_to_best({}, "recall@20") == {"best": None, "metric": "recall@20", "versus": {}}


def test_leaderboard_orders_by_primary_metric_and_lists_skipped() -> None:
    results = {
        "session": {
            "pop": {"metrics": {"recall@20": 0.1}, "n_queries": 5, "fit_s": 0, "eval_s": 0},
            "markov": {"metrics": {"recall@20": 0.8}, "n_queries": 5, "fit_s": 0, "eval_s": 0},
            "als": {"skipped": "no users"},
        }
    }
    sig = {"session": {"versus": {"pop": {"mean_diff": -0.7, "low": -0.8, "high": -0.6}}}}
    text = leaderboard_markdown(results, "recall@20", ["recall@20"], sig)
    assert text.index("| markov |") < text.index("| pop |")
    assert "-0.7000 [-0.8000, -0.6000]" in text
    assert "als (no users)" in text
