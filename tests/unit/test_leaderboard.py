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


def test_identical_and_tied_rows_get_footnotes() -> None:
    from recpipe.evaluate.leaderboard import leaderboard_markdown

    same = {"recall@20": 0.5, "ndcg@20": 0.3}
    results = {
        "user_temporal": {
            "pop": {"metrics": dict(same), "n_queries": 9, "fit_s": 0, "eval_s": 0},
            "context_pop": {"metrics": dict(same), "n_queries": 9, "fit_s": 0, "eval_s": 0},
            "ease": {
                "metrics": {"recall@20": 0.25, "ndcg@20": 0.2},
                "n_queries": 9,
                "fit_s": 0,
                "eval_s": 0,
            },
            "mf_bpr": {
                "role": "candidate",
                "metrics": {"recall@20": 0.25, "ndcg@20": 0.1},
                "n_queries": 9,
                "fit_s": 0,
                "eval_s": 0,
            },
            "sknn": {
                "metrics": {"recall@20": 0.1, "ndcg@20": 0.05},
                "n_queries": 9,
                "fit_s": 0,
                "eval_s": 0,
            },
        }
    }
    text = leaderboard_markdown(results, "recall@20", ["recall@20", "ndcg@20"])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if "|" in line}
    assert "pop †" in rows and "context_pop †" in rows
    assert "ease ‡" in rows and "mf_bpr \\* ‡" in rows and "sknn" in rows
    assert (
        "† pop = context_pop: identical figures on every metric (most likely the same "
        "recommendations for this split's queries)"
    ) in text
    assert "‡ ease, mf_bpr: tied on recall@20 at the four decimals shown" in text
    assert "sknn" not in text.split("‡ ")[1]


def test_cold_start_plots_have_a_panel_per_query_set_and_data_for_dvc(tmp_path) -> None:
    import csv

    from recpipe.evaluate.plots import metric_rows, training_rows, twins, write_plots

    metrics = {
        f"{p}recall@{k}": k / 40 + len(p) / 100
        for p in ("", "cold_items/", "cold_users/")
        for k in (5, 20)
    }
    results = {
        "cold_start": {
            "pop": {"metrics": dict(metrics)},
            "context_pop": {"metrics": dict(metrics)},
            "markov": {"metrics": {k: v for k, v in metrics.items() if "cold_users" in k}},
        }
    }
    assert twins(results["cold_start"], ["pop", "context_pop", "markov"]) == {"context_pop": "pop"}
    rows = metric_rows(results, [5, 20])
    assert {r["panel"] for r in rows} == {
        "cold_start: all test queries",
        "cold_start: cold items",
        "cold_start: cold users",
    }
    cold_users = [r for r in rows if r["queries"] == "cold users" and r["model"] == "markov"]
    assert [(r["k"], r["recall"]) for r in cold_users] == [(5, 0.125 + 0.11), (20, 0.5 + 0.11)]
    training = {
        "gru4rec": {
            "splits": {
                "session": {
                    "monitor": "recall@20",
                    "history": [
                        {"epoch": 0, "loss": 2.0, "metrics": {"recall@20": 0.1}},
                        {"epoch": 1, "loss": 1.5, "metrics": {"recall@20": 0.2}},
                    ],
                },
                "cold_start": {"skipped": "no sessions"},
            }
        }
    }
    assert [(r["epoch"], r["loss"], r["valid_metric"]) for r in training_rows(training)] == [
        (1, 2.0, 0.1),
        (2, 1.5, 0.2),
    ]
    written = {p.name for p in write_plots(results, [5, 20], training, tmp_path)}
    assert written == {
        "cold_start_recall.png",
        "metric_at_k.csv",
        "training_curves.csv",
        "training_session.png",
    }
    with open(tmp_path / "training_curves.csv") as fh:
        assert next(csv.DictReader(fh))["monitor"] == "recall@20"
    assert (tmp_path / "cold_start_recall.png").read_bytes()[:4] == b"\x89PNG"
