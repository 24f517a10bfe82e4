"""The evaluate stage ranks a large user top-K test part by blocks of users, with the
figures of the whole part."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recpipe.config import Params, load_params
from recpipe.evaluate.leaderboard import evaluate_models
from recpipe.evaluate.protocols import evaluate_model
from recpipe.evaluate.suite import open_split
from recpipe.models.data import Interactions
from recpipe.models.dataset import BlockedPart, block_bounds, clear_cache, load_split
from recpipe.models.registry import build_model
from recpipe.paths import Paths
from recpipe.pipeline import run_stage

SPLITS = ("user_temporal", "leave_last_out")
SMALL = [
    "synth.n_users=80",
    "synth.n_items=60",
    "synth.n_categories=5",
    "synth.n_sessions=400",
    "synth.days=6",
    f"sessions.splits=[session, {', '.join(SPLITS)}]",
]
#: Test events per block: 1 and 3 cut most users' rows, 10**9 is the whole part.
BLOCK_ROWS = (1, 3, 17, 10**9)
TIMINGS = ("fit_s", "eval_s")


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """The features stage's output on a small synthetic log."""
    paths = Paths.at(tmp_path_factory.mktemp("ws"))
    params = load_params(None, SMALL)
    for stage in ("ingest", "validate", "sessions", "features"):
        run_stage(stage, params, paths)
    return paths


def test_block_bounds_cut_users_in_order_and_never_split_one() -> None:
    counts = np.array([2, 1, 5, 0, 1, 1, 1])
    assert block_bounds(counts, 3).tolist() == [0, 2, 3, 7]  # 0 + 1 + 1 + 1 rows
    assert block_bounds(counts, 1).tolist() == [0, 1, 2, 3, 5, 6, 7]
    assert block_bounds(counts, 100).tolist() == [0, 7]
    assert block_bounds(np.zeros(0, np.int64), 5).tolist() == [0]
    with pytest.raises(ValueError, match="block_rows must be >= 1; got 0"):
        block_bounds(counts, 0)


@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
def test_blocks_cover_the_part_once_and_hold_whole_users(features: Paths, block_rows: int) -> None:
    path = features.features_dir / "user_temporal" / "test.parquet"
    test = Interactions.from_parquet(path)
    n_users = load_split(path.parent).meta.n_users
    part = BlockedPart(path, n_users, block_rows, batch_rows=7)
    assert len(part) == len(test)
    if block_rows == 3:  # a cut every 3 rows would split users with more
        assert np.bincount(test.user_idx).max() > 3
    seen: set[int] = set()
    for users, items in part.blocks():
        distinct = set(np.unique(users).tolist())
        assert not distinct & seen  # no user in two blocks
        seen |= distinct
        assert len(users) <= block_rows or len(distinct) == 1
        mask = np.isin(test.user_idx, users)
        np.testing.assert_array_equal(users, test.user_idx[mask])  # file order kept
        np.testing.assert_array_equal(items, test.item_idx[mask])
    assert seen == set(np.unique(test.user_idx).tolist())


def test_a_blocked_part_checks_its_arguments(features: Paths, tmp_path: Path) -> None:
    from recpipe.errors import ArtifactError

    path = features.features_dir / "user_temporal" / "test.parquet"
    with pytest.raises(ValueError, match="block_rows and batch_rows must be >= 1; got 0"):
        BlockedPart(path, 10, 0)
    with pytest.raises(ArtifactError, match="do not exist"):
        BlockedPart(tmp_path / "none.parquet", 10, 5)
    part = BlockedPart(path, 2, 5)  # a user table smaller than the indices in the file
    with pytest.raises(ArtifactError, match="expected \\[0, 2\\)"):
        list(part.blocks())


def _fitted(split: Any) -> dict[str, Any]:
    """A deep candidate and a CTR model (its AUC reads the test part whole)."""
    out = {}
    for name, config in (("mf_bpr", {"epochs": 1}), ("wide_deep", {"epochs": 1})):
        model = build_model(name, config, split.meta)
        out[name] = model.fit(split.parts["train"], split.parts["valid"])
    return out


def _without_timings(results: dict[str, Any]) -> dict[str, Any]:
    return {n: {k: v for k, v in e.items() if k not in TIMINGS} for n, e in results.items()}


@pytest.mark.slow
@pytest.mark.parametrize("kind", SPLITS)
def test_evaluate_models_by_blocks_equals_the_whole_test_part(features: Paths, kind: str) -> None:
    split = load_split(features.features_dir / kind)
    path = features.features_dir / kind / "test.parquet"
    fitted = _fitted(split)
    baselines = ["pop", "itemknn", "ease", "markov"]  # markov: skipped (session queries)
    whole, whole_q = evaluate_models(
        kind, split.parts, split.meta, baselines, {}, (5, 10, 20), fitted=fitted
    )
    assert "auc" in whole["wide_deep"]["metrics"] and "skipped" in whole["markov"]
    for block_rows in BLOCK_ROWS:
        part = BlockedPart(path, split.meta.n_users, block_rows, batch_rows=5)
        parts = {**split.parts, "test": part}
        blocked, blocked_q = evaluate_models(
            kind, parts, split.meta, baselines, {}, (5, 10, 20), fitted=fitted
        )
        assert _without_timings(blocked) == _without_timings(whole)
        assert blocked_q.keys() == whole_q.keys()
        for name, arrays in whole_q.items():  # the per-user arrays of the bootstrap
            assert blocked_q[name].keys() == arrays.keys()
            for key, values in arrays.items():
                np.testing.assert_array_equal(blocked_q[name][key], values, err_msg=key)
        if block_rows == 3:  # the stage keeps only the bootstrapped metric's arrays
            _, kept = evaluate_models(
                kind, parts, split.meta, ["pop"], {}, (20,), keep_per_query=["recall@20"]
            )
            assert kept["pop"].keys() == {"recall@20"}
            np.testing.assert_array_equal(kept["pop"]["recall@20"], whole_q["pop"]["recall@20"])
        # the gate's champion re-evaluation goes through evaluate_model as well
        for name in ("mf_bpr", "pop"):
            model = fitted.get(name) or build_model(name, {}, split.meta).fit(split.parts["train"])
            a = evaluate_model(model, kind, parts, split.meta, (5, 10, 20))
            b = evaluate_model(model, kind, split.parts, split.meta, (5, 10, 20))
            assert (a.metrics, a.n_queries, a.skipped_users) == (
                b.metrics,
                b.n_queries,
                b.skipped_users,
            )


def _params(*overrides: str) -> Params:
    return load_params(
        None,
        [
            *SMALL,
            "train.candidates=[mf_bpr]",
            "train.splits=[user_temporal]",
            "train.model_splits={}",
            "train.model_configs={mf_bpr: {epochs: 2}}",
            "evaluate.models=[pop, itemknn, ease, sr]",
            f"evaluate.splits=[{', '.join(SPLITS)}, session]",
            "evaluate.sampled_negatives=5",
            "gate.split=user_temporal",
            "gate.latency_requests=20",
            "gate.latency_p99_ms=1000000",  # timings vary between runs; figures must not
            *overrides,
        ],
    )


def _rows(leaderboard: str) -> list[str]:
    """The leaderboard's table rows without the two timing columns."""
    rows = [line for line in leaderboard.splitlines() if line.startswith("| ")]
    return [re.sub(r"\| [0-9.]+ \| [0-9.]+ \|$", "|", row) for row in rows]


@pytest.mark.slow
def test_the_evaluate_and_gate_stages_give_the_same_figures_by_blocks(
    features: Paths, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow

    from recpipe import stages

    before = mlflow.get_tracking_uri()
    try:
        stages.train(_params(), features)
        runs: dict[str, tuple[Any, str, dict[str, Any]]] = {}
        for name, extra in [
            ("whole", []),
            *[
                (
                    f"blocks of {n}",
                    ["evaluate.stream_min_rows=0", f"evaluate.stream_block_rows={n}"],
                )
                for n in BLOCK_ROWS[:3]
            ],
        ]:
            params = _params(*extra)
            clear_cache()  # nothing left in memory by an earlier read: read as a new process
            caplog.clear()
            with caplog.at_level("INFO", logger="recpipe.evaluate.suite"):
                report = stages.evaluate(params, features)
            streamed = [r.message for r in caplog.records if "ranked by blocks" in r.message]
            assert len(streamed) == (0 if name == "whole" else len(SPLITS)), streamed
            gate = stages.gate(params, features)
            runs[name] = (report, features.leaderboard_md.read_text(), gate)
    finally:
        mlflow.set_tracking_uri(before)
    whole_report, whole_board, whole_gate = runs.pop("whole")
    assert whole_gate["candidate"]["model"] == "mf_bpr" and _rows(whole_board)
    assert "sampled5/hit@10" in whole_report["results"]["leave_last_out"]["pop"]["metrics"]
    for report, board, gate in runs.values():
        assert report["significance"] == whole_report["significance"]  # the bootstrap CIs
        for kind, results in whole_report["results"].items():
            assert _without_timings(report["results"][kind]) == _without_timings(results)
        assert _rows(board) == _rows(whole_board)
        for key in ("passed", "reasons", "candidate", "champion", "baseline", "bootstrap"):
            left, right = gate.get(key), whole_gate.get(key)
            if isinstance(left, dict):  # the candidate's latency is measured anew
                left, right = (
                    {k: v for k, v in d.items() if k != "latency"} for d in (left, right)
                )
            assert left == right, key
        rules = [[r for r in g["rules"] if r["name"] != "latency"] for g in (gate, whole_gate)]
        assert rules[0] == rules[1]


def test_open_split_reads_small_and_non_user_splits_whole(features: Paths) -> None:
    clear_cache()
    ep = load_params(None, ["evaluate.stream_min_rows=0"]).evaluate
    streamed = open_split(features.features_dir / "user_temporal", ep)
    assert isinstance(streamed.parts["test"], BlockedPart)
    assert set(streamed.parts) == {"train", "valid", "test"}
    assert streamed.parts["test"].n_users == streamed.meta.n_users
    assert "test" not in load_split(features.features_dir / "user_temporal", ("train",)).parts
    session = open_split(features.features_dir / "session", ep)
    assert isinstance(session.parts["test"], Interactions)  # next-item: read whole
    default = load_params(None, []).evaluate
    assert isinstance(
        open_split(features.features_dir / "user_temporal", default).parts["test"], Interactions
    )
    assert isinstance(
        open_split(features.features_dir / "user_temporal", ep).parts["test"], Interactions
    )  # already in memory
    clear_cache()
