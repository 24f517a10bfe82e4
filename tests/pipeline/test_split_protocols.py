"""Protocol rules of the sessions stage: the item-support filter belongs to the session
split (user splits keep every item); prepared session-tsv data are not filtered again."""

from __future__ import annotations

import pandas as pd

from recpipe.config import load_params
from recpipe.paths import Paths
from recpipe.pipeline import run_stage
from tests.pipeline.conftest import SMALL


def _items(folder) -> set[str]:
    parts = [pd.read_parquet(folder / f"{p}.parquet") for p in ("train", "valid", "test")]
    return set(pd.concat(parts)["item_id"].astype(str))


def test_user_splits_keep_every_item_and_the_session_split_filters(tmp_path) -> None:
    params = load_params(
        None,
        [*SMALL, "sessions.splits=[session, user_temporal]", "sessions.min_item_support=20"],
    )
    paths = Paths.at(tmp_path)
    for stage in ("ingest", "validate", "sessions"):
        report = run_stage(stage, params, paths)
    everything = set(pd.read_parquet(paths.validated_dir / "events.parquet")["item_id"].astype(str))
    assert report["filter"]["dropped"]["item_support"] == 0  # nothing before the splits
    assert _items(paths.splits_dir / "user_temporal") == everything
    session = report["splits"]["session"]["stats"]
    assert session["dropped"]["item_support"] > 0  # the session split's own filter
    assert session["params"]["min_item_support"] == 20


def test_the_item_support_default_follows_the_source(tmp_path, monkeypatch) -> None:
    import pytest

    import recpipe.sessions.prepare as prepare
    from recpipe import stages

    seen = {}

    def spy(validated, events_out, splits_out, sp):
        seen["support"] = sp.min_item_support
        raise RuntimeError("stop")

    monkeypatch.setattr(prepare, "prepare_sessions", spy)
    cases = [
        (["data.source=synthetic"], 5),
        (["data.source=session-tsv"], 1),  # prepared data: evaluated as given
        (["data.source=session-tsv", "sessions.min_item_support=3"], 3),  # explicit wins
    ]
    for overrides, want in cases:
        with pytest.raises(RuntimeError, match="stop"):
            stages.sessions(load_params(None, [*SMALL, *overrides]), Paths.at(tmp_path))
        assert seen["support"] == want, overrides


def test_metrics_json_holds_the_gate_splits_headline(tmp_path) -> None:
    import json

    params = load_params(
        None,
        [
            *SMALL,
            "sessions.splits=[session, user_temporal]",
            "evaluate.splits=[session, user_temporal]",
            "evaluate.models=[pop, markov, itemknn]",
            "train.candidates=[]",
        ],
    )
    paths = Paths.at(tmp_path)
    for stage in ("ingest", "validate", "sessions", "features", "evaluate", "gate"):
        run_stage(stage, params, paths)
    headline = json.loads(paths.metrics_json.read_text())
    assert headline["split"] == "user_temporal" == params.gate.split  # not the first split
    # the compared models only: no candidate here, so the best baseline alone (markov
    # scores no user queries)
    assert set(headline["models"]) == {"itemknn"}
    assert set(headline["models"]["itemknn"]) == {
        "recall@20",
        "ndcg@20",
        "mrr@20",
        "coverage@20",
    }
    # no candidate, no champion: the decision says so
    assert headline["champion"] is None and headline["candidate"] is None
    assert headline["passed"] is False and headline["best_baseline"] == "itemknn"
    assert headline["best_baseline_value"] == headline["models"]["itemknn"]["recall@20"]
    assert headline["candidate_value"] is None


def test_valid_days_zero_runs_end_to_end(tmp_path) -> None:
    from recpipe.models.data import Interactions

    params = load_params(
        None,
        [
            *SMALL,
            "sessions.splits=[session]",
            "sessions.valid_days=0",
            "train.candidates=[gru4rec]",
            "train.splits=[session]",
            "train.model_splits={}",
            "evaluate.splits=[session]",
            "evaluate.models=[pop, markov]",
            "gate.split=session",
        ],
    )
    paths = Paths.at(tmp_path)
    for stage in ("ingest", "validate", "sessions", "features"):
        run_stage(stage, params, paths)
    folder = paths.features_dir / "session"
    train, valid = (pd.read_parquet(folder / f"{p}.parquet") for p in ("train", "valid"))
    assert len(valid) == 0 and dict(valid.dtypes) == dict(train.dtypes)
    Interactions.from_frame(pd.concat([train, valid]))  # the parts join
    run_stage("train", params, paths, model="gru4rec")
    report = run_stage("evaluate", params, paths)
    assert "metrics" in report["results"]["session"]["gru4rec"]


def _rating_log(path) -> None:
    """A MovieLens-like rating log: 40 users, each rating 15 movies in one evening, spread
    over 90 days (the last day holds one or two users)."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for user in range(40):
        start = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=user * 90 / 40)
        for j, item in enumerate(rng.choice(60, size=15, replace=False)):
            when = start + pd.Timedelta(minutes=2 * j)
            rows.append((f"u{user}", f"m{item}", when.isoformat(), float(rng.integers(1, 6))))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "value"])
    frame.to_csv(path, index=False)


def test_a_rating_log_skips_the_session_split_with_the_reason(tmp_path) -> None:
    import json

    _rating_log(tmp_path / "ratings.csv")
    params = load_params(
        None,
        [
            "data.source=csv",
            f"data.path={tmp_path / 'ratings.csv'}",
            "data.default_event_type=rating",
            "sessions.splits=[session, user_temporal]",
            "evaluate.splits=[session, user_temporal]",
            "evaluate.models=[pop, itemknn]",
            "train.candidates=[]",
        ],
    )
    paths = Paths.at(tmp_path / "ws")
    for stage in ("ingest", "validate", "sessions", "features", "evaluate"):
        run_stage(stage, params, paths)
    splits = json.loads(paths.splits_json.read_text())["splits"]
    assert "fewer than sessions.min_test_sessions=5" in splits["session"]["skipped"]
    assert "stats" in splits["user_temporal"]  # the user split runs, every item kept
    assert _items(paths.splits_dir / "user_temporal") == {f"m{i}" for i in range(60)} & set(
        pd.read_parquet(paths.validated_dir / "events.parquet")["item_id"].astype(str)
    )
    evaluation = json.loads(paths.evaluation_json.read_text())
    assert "min_test_sessions" in evaluation["skipped_splits"]["session"]
    assert "Split `session` not evaluated: skipped by the sessions stage" in (
        paths.leaderboard_md.read_text()
    )


def test_one_event_sessions_skip_the_session_split() -> None:
    import pytest

    from recpipe.config import SessionsParams
    from recpipe.errors import SplitNotApplicable
    from recpipe.sessions.splits import check_sequences

    with pytest.raises(SplitNotApplicable, match=r"1.00 events on average"):
        check_sequences(100, 100, SessionsParams())
    check_sequences(100, 100, SessionsParams(min_test_sessions=0))  # the rules off
    check_sequences(150, 100, SessionsParams())
