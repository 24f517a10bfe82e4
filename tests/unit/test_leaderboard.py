"""Leaderboard helpers: significance against the best model, Markdown rendering."""

from __future__ import annotations

import numpy as np

from recpipe.evaluate.leaderboard import (
    GLOSSARY,
    compare_to_best,
    evaluate_models,
    leaderboard_markdown,
    split_query_kinds,
)
from tests.unit.test_protocols import SessionOnly, UserOnly, cold_items_case


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


def test_leaderboard_cold_start_columns_and_protocols_not_run() -> None:
    entry = {"n_queries": 5, "fit_s": 0, "eval_s": 0}
    results = {
        "cold_start": {
            "pop": {
                **entry,
                "metrics": {"recall@20": 0.5, "cold_items/recall@20": 0.25},
                "skipped_protocols": {"cold_users": "cannot score 'session' queries"},
            },
            "markov": {**entry, "n_queries": 0, "metrics": {"cold_users/recall@20": 0.75}},
        }
    }
    columns = ["recall@20", "cold_items/recall@20", "cold_users/recall@20"]
    text = leaderboard_markdown(results, "recall@20", columns, {"cold_start": {"versus": {}}})
    assert "| cold_items/recall@20 | cold_users/recall@20 |" in text
    assert "| pop | 0.5000 | 0.2500 |  | best |" in text
    assert "| markov |  |  | 0.7500 |  |" in text  # no primary metric: not "best"
    assert "Protocols not run: pop cold_users (cannot score 'session' queries)" in text


def test_evaluate_models_on_the_cold_start_split() -> None:
    assert split_query_kinds("cold_start") == {"user", "session"}
    assert split_query_kinds("session") == {"session"}
    train, test, meta = cold_items_case()
    fitted = {
        "user_only": UserOnly(None, meta).fit(train),
        "session_only": SessionOnly(None, meta).fit(train),
    }
    data = {"train": train, "valid": train, "test": test}
    out, per_query = evaluate_models("cold_start", data, meta, [], {}, [1, 3], fitted=fitted)
    user = out["user_only"]
    assert user["protocol"] == "cold_start" and user["role"] == "candidate"
    assert {"recall@3", "cold_items/recall@3", "cold_items/ndcg@3"} <= set(user["metrics"])
    assert user["slices"]["cold_items"]["n"] == 2.0
    assert "cold_users" in user["skipped_protocols"]
    assert "cold_items/recall@3" in per_query["user_only"]
    # no unknown user with a target in this test part: the session-only model is skipped
    assert "no cold_start protocol can run" in out["session_only"]["skipped"]


def test_each_split_opens_with_candidate_against_baseline_and_ends_with_a_glossary() -> None:
    entry = {"n_queries": 5, "fit_s": 0, "eval_s": 0}
    results = {
        "user_temporal": {
            "ease": {**entry, "metrics": {"recall@20": 0.40}},
            "mf_bpr": {**entry, "role": "candidate", "metrics": {"recall@20": 0.30}},
            "deepfm": {**entry, "role": "candidate", "metrics": {"recall@20": 0.20}},
            "pop": {**entry, "metrics": {"recall@20": 0.10}},
        },
        "session": {"pop": {**entry, "metrics": {"recall@20": 0.1}}},
    }
    versus = {"mf_bpr": {"mean_diff": -0.1, "low": -0.15, "high": -0.05}}
    sig = {"user_temporal": {"versus": versus}}
    text = leaderboard_markdown(results, "recall@20", ["recall@20"], sig)
    assert (
        "Best candidate **mf_bpr** recall@20 0.3000 against the best baseline **ease** "
        "0.4000: lift -25.0%; mf_bpr vs ease: -0.1000 [-0.1500, -0.0500]."
    ) in text
    assert "Best baseline **pop**, recall@20 0.1000 (no deep candidate)." in text
    assert text.rstrip().endswith(GLOSSARY[-2]) and "## Glossary" in text


def test_metric_plot_of_many_models_with_a_candidate(tmp_path) -> None:
    from recpipe.evaluate.leaderboard import plot_metric_curves

    models = {
        f"m{i:02d}": {"metrics": {"recall@5": i / 100, "recall@20": i / 50}} for i in range(25)
    }
    models["mf_bpr"] = {"role": "candidate", "metrics": {"recall@5": 0.1, "recall@20": 0.3}}
    models["skipped"] = {"skipped": "no users"}
    out = plot_metric_curves(models, "recall", [5, 20], tmp_path / "p.png", "a split")
    assert out == tmp_path / "p.png" and out.read_bytes()[:4] == b"\x89PNG"
    assert (
        plot_metric_curves({"x": {"skipped": "-"}}, "recall", [5], tmp_path / "q.png", "") is None
    )
