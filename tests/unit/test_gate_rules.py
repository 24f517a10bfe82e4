"""The gate rules as a truth table: pure functions of figures, each with its reason."""

from __future__ import annotations

import itertools
import math

import pytest

from recpipe.gates import rules
from recpipe.gates.report import gate_json, gate_markdown
from recpipe.gates.rules import ChampionFigures, RuleResult

M = "recall@20"


def _ci(low: float, high: float) -> dict[str, float]:
    return {"mean_diff": (low + high) / 2, "low": low, "high": high, "p_value": 0.01}


# ---------------------------------------------------------------------- beats_baseline
@pytest.mark.parametrize(
    ("cand", "base", "low", "min_lift", "passed", "why"),
    [
        (0.60, 0.50, 0.02, 0.10, True, "above zero"),  # +20% lift, significant
        (0.60, 0.50, -0.01, 0.10, False, "lower bound is not above zero"),  # lift, not sig.
        (0.52, 0.50, 0.01, 0.10, False, "lift below the minimum"),  # sig., lift 4% < 10%
        (0.52, 0.50, -0.01, 0.10, False, "lift below the minimum and"),  # neither
        (0.50, 0.50, 0.00, 0.00, False, "not better than the best baseline"),  # a tie fails
        (0.40, 0.50, -0.2, 0.00, False, "not better than the best baseline and"),
        (0.55, 0.50, 0.01, 0.10, True, "above zero"),  # exactly the minimum lift
        (0.10, 0.00, 0.05, 0.50, True, "unbounded"),  # a zero baseline: any gain passes
    ],
)
def test_beats_baseline_truth_table(cand, base, low, min_lift, passed, why):
    result = rules.beats_baseline(M, "gru4rec", cand, "markov", base, _ci(low, 0.2), min_lift)
    assert result.name == "beats_baseline"
    assert result.passed is passed
    assert why in result.reason
    assert "gru4rec" in result.reason and "markov" in result.reason
    assert result.figures["baseline"] == "markov" and result.figures["ci_low"] == low


def test_beats_baseline_without_baseline_or_bootstrap_fails():
    none = rules.beats_baseline(M, "gru4rec", 0.9, None, None, None, 0.0)
    assert not none.passed and "no baseline was evaluated" in none.reason
    no_ci = rules.beats_baseline(M, "gru4rec", 0.9, "pop", 0.1, None, 0.0)
    assert not no_ci.passed and "no paired bootstrap" in no_ci.reason


# ---------------------------------------------------------------------- champion
@pytest.mark.parametrize(
    ("cand", "champ", "tol", "passed"),
    [
        (0.80, 0.80, 0.01, True),  # equal
        (0.792, 0.80, 0.01, True),  # exactly the tolerance
        (0.79, 0.80, 0.01, False),  # beyond it
        (0.90, 0.80, 0.00, True),  # better
        (0.7999, 0.80, 0.00, False),  # no tolerance
    ],
)
def test_champion_truth_table(cand, champ, tol, passed):
    champion = ChampionFigures(version="3", model="gru4rec", split="session", value=champ)
    result = rules.not_worse_than_champion(M, "sknn", cand, champion, tol)
    assert result.name == "champion" and result.passed is passed
    assert "v3" in result.reason and "re-evaluated on the same split" in result.reason
    assert math.isclose(result.figures["threshold"], champ * (1 - tol))
    assert ("worse than the champion" in result.reason) is (not passed)


def test_no_champion_passes_and_an_unevaluable_one_fails_with_its_error():
    first = rules.not_worse_than_champion(M, "gru4rec", 0.5, None, 0.01)
    assert first.passed and "no champion yet" in first.reason
    broken = ChampionFigures(version="7", model="gru4rec", error="ArtifactError: bad meta.json")
    result = rules.not_worse_than_champion(M, "gru4rec", 0.5, broken, 0.01)
    assert not result.passed
    assert "champion v7 (gru4rec) could not be evaluated" in result.reason
    assert "ArtifactError: bad meta.json" in result.reason
    assert result.figures["error"] == "ArtifactError: bad meta.json"


# ---------------------------------------------------------------------- budgets, validation
@pytest.mark.parametrize(("p99", "passed"), [(10.0, True), (50.0, True), (50.01, False)])
def test_latency_budget(p99, passed):
    result = rules.latency_budget(p99, 50.0, 20, 200)
    assert result.passed is passed and result.figures["p99_ms"] == p99
    assert ("over budget" in result.reason) is (not passed)


@pytest.mark.parametrize(("size", "passed"), [(1.0, True), (200.0, True), (200.5, False)])
def test_artifact_size_budget(size, passed):
    result = rules.artifact_size_budget(size, 200.0)
    assert result.passed is passed and "MiB" in result.reason


@pytest.mark.parametrize(
    ("validated", "required", "passed", "why"),
    [
        (True, True, True, "passed"),
        (False, True, False, "failed"),
        (None, True, False, "no data validation report"),
        (False, False, True, "not required"),
        (None, False, True, "not required"),
    ],
)
def test_data_validated(validated, required, passed, why):
    result = rules.data_validated(validated, required)
    assert result.passed is passed and why in result.reason


# ---------------------------------------------------------------------- decide
@pytest.mark.parametrize("outcomes", list(itertools.product([True, False], repeat=5)))
def test_decide_passes_only_when_every_rule_passes(outcomes):
    names = ["beats_baseline", "champion", "latency", "artifact_size", "validation"]
    checks = [
        RuleResult(n, ok, f"{n} {'ok' if ok else 'bad'}")
        for n, ok in zip(names, outcomes, strict=True)
    ]
    result = rules.decide("gru4rec", None, checks)
    assert result.passed is all(outcomes)
    assert result.failed_rules() == [n for n, ok in zip(names, outcomes, strict=True) if not ok]
    if result.passed:
        assert result.reasons == [c.reason for c in checks]  # why it passed
    else:
        assert result.reasons == [
            f"{n} bad" for n, ok in zip(names, outcomes, strict=True) if not ok
        ]


def test_decide_without_candidate_fails():
    result = rules.decide(None, None, [RuleResult("validation", True, "ok")])
    assert not result.passed and result.candidate is None
    assert result.reasons == ["no candidate was evaluated on the gate split"]


# ---------------------------------------------------------------------- selection
RESULTS = {
    "pop": {"role": "baseline", "metrics": {M: 0.30}},
    "markov": {"role": "baseline", "metrics": {M: 0.80}},
    "bias": {"skipped": "scores ['user'] queries"},
    "gru4rec": {"role": "candidate", "metrics": {M: 0.85}},
    "gru4rec_ctx": {"role": "candidate", "metrics": {M: 0.85}},
    "broken": {"role": "candidate", "metrics": {M: float("nan")}},
    "mf": {"role": "candidate", "metrics": {"rmse": 1.0}},
}


def test_select_candidate_and_best_baseline():
    assert rules.select_candidate(RESULTS, M) == "gru4rec"  # a tie goes to the first name
    assert rules.best_baseline(RESULTS, M) == "markov"
    assert rules.select_candidate(RESULTS, "ndcg@20") is None
    assert rules.best_baseline({"x": {"role": "candidate", "metrics": {M: 1.0}}}, M) is None


def test_bootstrap_vs_baseline_from_the_evaluate_stage():
    versus = {"mean_diff": -0.05, "low": -0.08, "high": -0.02, "p_value": 0.002}
    # the candidate is the best: the baseline's interval (baseline - best) is negated
    sig = {"best": "gru4rec", "metric": M, "versus": {"markov": versus}}
    assert rules.bootstrap_vs_baseline(sig, "gru4rec", "markov") == {
        "mean_diff": 0.05,
        "low": 0.02,
        "high": 0.08,
        "p_value": 0.002,
    }
    # the baseline is the best: the candidate's own entry
    sig = {"best": "markov", "metric": M, "versus": {"gru4rec": versus}}
    assert rules.bootstrap_vs_baseline(sig, "gru4rec", "markov")["low"] == -0.08
    # a third model is the best: no paired interval of these two
    sig = {"best": "sr", "metric": M, "versus": {"gru4rec": versus, "markov": versus}}
    assert rules.bootstrap_vs_baseline(sig, "gru4rec", "markov") is None


def test_reports_name_the_decision_and_every_rule():
    checks = [
        rules.beats_baseline(M, "gru4rec", 0.7, "markov", 0.8, _ci(-0.1, -0.05), 0.0),
        rules.not_worse_than_champion(M, "gru4rec", 0.7, None, 0.01),
        rules.latency_budget(3.0, 50.0, 20, 200),
        rules.artifact_size_budget(0.5, 200.0),
        rules.data_validated(True, True),
    ]
    result = rules.decide("gru4rec", None, checks)
    candidate = {
        "model": "gru4rec",
        "split": "session",
        "artifact": "models/gru4rec/session",
        "metric": M,
        "value": 0.7,
        "size_mb": 0.5,
        "latency": {"p50_ms": 1.0, "p99_ms": 3.0, "n": 200, "k": 20},
    }
    report = gate_json(result, {"candidate": candidate, "split": "session", "metric": M})
    assert report["passed"] is False
    assert report["candidate"]["model"] == "gru4rec" and report["champion"] is None
    assert report["rules"][0]["name"] == "beats_baseline"
    assert len(report["reasons"]) == 1 and "markov" in report["reasons"][0]
    text = gate_markdown(report)
    assert text.startswith("# Gate: NOT PASSED")
    assert "**not promoted**" in text and "| beats_baseline | FAIL |" in text
    assert "Champion: none yet." in text and "p99 3.00 ms" in text
