"""Model health flags: collapse towards popularity, identical results; shown in the
leaderboard and the gate report."""

from __future__ import annotations

from recpipe.evaluate.health import health_flags, health_markdown
from recpipe.gates.report import gate_markdown


def _entry(recall: float, coverage: float, bias: float) -> dict:
    return {
        "metrics": {
            "recall@20": recall,
            "coverage@20": coverage,
            "popularity_bias@20": bias,
        }
    }


def test_a_model_that_ranks_like_popularity_is_flagged() -> None:
    results = {
        "pop": _entry(0.30, 0.04, 0.99),
        "deepfm": _entry(0.303, 0.08, 0.97),  # 2x pop's coverage, popular items
        "itemknn": _entry(0.35, 0.60, 0.70),
        "ease": _entry(0.40, 0.10, 0.95),  # popular items, but far more accurate than pop
        "mf_wals": _entry(0.33, 0.40, 0.80),
        "content2cf": _entry(0.33, 0.40, 0.80),  # the same rankings as mf_wals
        "recent_pop": _entry(0.25, 0.04, 0.99),  # popularity by design: never flagged
        "markov": {"skipped": "no user queries"},
    }
    flags = health_flags(results)
    assert set(flags) == {"deepfm", "mf_wals", "content2cf"}
    assert "collapses towards popularity" in flags["deepfm"][0]
    assert "coverage@20 0.080 (pop: 0.040)" in flags["deepfm"][0]
    assert flags["content2cf"] == ["every metric equals mf_wals's (the same rankings)"]
    assert any("deepfm" in line for line in health_markdown(flags))


def test_without_pop_a_low_absolute_coverage_counts() -> None:
    flags = health_flags({"deepfm": _entry(0.3, 0.05, 0.95), "als": _entry(0.3, 0.5, 0.95)})
    assert set(flags) == {"deepfm"}


def test_the_gate_report_prints_the_candidates_warnings() -> None:
    report = {
        "passed": False,
        "reasons": ["lift too small"],
        "candidate": {"model": "deepfm", "value": 0.303, "artifact": "x", "size_mb": 1.0},
        "champion": None,
        "split": "user_temporal",
        "metric": "recall@20",
        "rules": [],
        "health": ["top-20 collapses towards popularity: coverage@20 0.080"],
    }
    text = gate_markdown(report)
    assert "Health warning for deepfm: top-20 collapses towards popularity" in text


def test_the_leaderboard_prints_the_warnings() -> None:
    from recpipe.evaluate.leaderboard import leaderboard_markdown

    results = {"pop": _entry(0.30, 0.04, 0.99), "deepfm": _entry(0.303, 0.08, 0.97)}
    for entry in results.values():
        entry.update(n_queries=10, fit_s=0.1, eval_s=0.1, role="baseline")
    results["deepfm"]["health"] = health_flags(results)["deepfm"]
    text = leaderboard_markdown({"user_temporal": results}, "recall@20", ["recall@20"])
    assert "Health warnings:" in text and "**deepfm**: top-20 collapses" in text
