"""The sampled-negatives ranking: labelled, draws only untouched items, ranks ties
against the target."""

from __future__ import annotations

import numpy as np
import pytest

from recpipe.evaluate import sampled
from recpipe.evaluate.sampled import LABEL, sampled_user_topk
from recpipe.features.idmap import N_RESERVED
from recpipe.models.registry import build_model
from tests.contract.planted import planted


class Oracle:
    """Scores each user's test target above everything (or ties it with everything)."""

    name = "oracle"
    query_kinds = frozenset({"user"})

    def __init__(self, targets: dict[int, int], n_items: int, tie: bool = False) -> None:
        self.targets, self.n_items, self.tie = targets, n_items, tie

    def score(self, queries):
        out = np.zeros((len(queries.users), self.n_items))
        if not self.tie:
            for row, u in enumerate(queries.users):
                out[row, self.targets[int(u)]] = 1.0
        return out


def _targets(test) -> dict[int, int]:
    order = np.lexsort((test.timestamp, test.user_idx))
    return {int(test.user_idx[i]): int(test.item_idx[i]) for i in order}


def test_a_perfect_scorer_hits_at_one_and_a_tie_counts_against(monkeypatch) -> None:
    train, valid, meta = planted()
    test = valid  # the planted valid part serves as a test part here
    drawn: list[np.ndarray] = []
    real_take = np.take_along_axis

    def spy(scores, idx, axis):
        drawn.append(idx.copy())
        return real_take(scores, idx, axis)

    monkeypatch.setattr(sampled.np, "take_along_axis", spy)
    oracle = Oracle(_targets(test), meta.n_items)
    result = sampled_user_topk(oracle, test, meta, touched=[train], n_negatives=3, ks=[1, 3])
    assert result.metrics["sampled3/hit@1"] == 1.0
    assert result.metrics["sampled3/ndcg@1"] == 1.0
    assert LABEL in result.protocol
    users = np.array(sorted(oracle.targets))
    touched = sampled._touched([train, test], users, meta.n_items)
    cands = np.concatenate(drawn)
    assert (cands[:, 1:] >= N_RESERVED).all()
    for row, items in enumerate(touched):  # no negative is an item the user touched
        assert not set(cands[row, 1:].tolist()) & items
    tied = sampled_user_topk(
        Oracle({}, meta.n_items, tie=True), test, meta, touched=[train], n_negatives=3, ks=[3]
    )
    assert tied.metrics["sampled3/hit@3"] == 0.0  # 3 negatives tie: rank 3


def test_negatives_are_items_the_user_never_touched() -> None:
    train, valid, meta = planted()
    model = build_model("pop", {}, meta).fit(train, valid)
    with pytest.raises(ValueError, match="too many items"):
        sampled_user_topk(model, valid, meta, touched=[train], n_negatives=meta.n_items)
    result = sampled_user_topk(model, valid, meta, touched=[train], n_negatives=2, ks=[1])
    assert 0.0 <= result.metrics["sampled2/hit@1"] <= 1.0 and result.n_queries > 0


def test_the_evaluate_suite_adds_labelled_sampled_metrics_on_leave_last_out() -> None:
    from recpipe.config import EvaluateParams
    from recpipe.evaluate.leaderboard import leaderboard_markdown
    from recpipe.evaluate.suite import evaluate_split, leaderboard_columns
    from recpipe.models.dataset import SplitData

    train, valid, meta = planted()
    data = SplitData(meta=meta, parts={"train": train, "valid": valid, "test": valid})
    ep = EvaluateParams(models=["pop", "markov"], ks=[1, 5], sampled_negatives=3)
    results, _ = evaluate_split("leave_last_out", data, ep, {}, {})
    assert "sampled3/hit@1" in results["pop"]["metrics"]
    assert "recall@5" in results["pop"]["metrics"]  # the full ranking as always
    off, _ = evaluate_split("leave_last_out", data, EvaluateParams(models=["pop"], ks=[1]), {}, {})
    assert not any(k.startswith("sampled") for k in off["pop"]["metrics"])
    columns = leaderboard_columns([1, 5])
    text = leaderboard_markdown({"leave_last_out": results}, "recall@5", columns)
    assert LABEL in text and "| pop |" in text.split(LABEL)[1]
