"""The cold_start split through the sessions, features and evaluate stages."""

from __future__ import annotations

import json

import pandas as pd

from recpipe.config import load_params
from recpipe.data.schema import write_tables
from recpipe.data.synth import generate
from recpipe.features.idmap import N_RESERVED, UNK, IdMap
from recpipe.paths import Paths
from recpipe.pipeline import run_stage
from tests.pipeline.conftest import SMALL


def test_cold_start_split_features_and_evaluation(workspace: Paths) -> None:
    params = load_params(
        None,
        [
            *SMALL,
            "sessions.splits=[cold_start]",
            "evaluate.splits=[cold_start]",
            "evaluate.models=[pop, markov]",
            "train.candidates=[]",
        ],
    )
    # the validated tables straight from the generator (validation is tested elsewhere)
    write_tables(generate(params.synth), workspace.validated_dir)
    run_stage("sessions", params, workspace)
    entry = json.loads(workspace.splits_json.read_text())["splits"]["cold_start"]
    assert all(entry["leakage"].values()), entry["leakage"]
    cold = entry["stats"]["cold"]
    assert cold["items"]["held_out"] > 0 and cold["users"]["held_out"] > 0
    split_dir = workspace.split_dir("cold_start")
    cold_items = pd.read_parquet(split_dir / "cold_items.parquet")
    cold_users = pd.read_parquet(split_dir / "cold_users.parquet")
    assert len(cold_items) == cold["items"]["cold"] and len(cold_users) == cold["users"]["cold"]

    run_stage("features", params, workspace)
    folder = workspace.features_dir / "cold_start"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["n_cold_items"] == len(cold_items) and meta["n_cold_users"] == len(cold_users)
    assert meta["n_cold_items_indexed"] == len(cold_items)  # synthetic items have content
    items = IdMap.load(folder / "item_map.parquet")
    cold_idx = items.encode(cold_items["item_id"])
    assert (cold_idx >= N_RESERVED).all() and (items.counts[cold_idx] == 0).all()
    assert meta["n_items"] == len(items)
    test = pd.read_parquet(folder / "test.parquet")
    on_cold = test["item_idx"].isin(cold_idx)
    assert on_cold.sum() == cold["items"]["test_rows"]
    of_cold_users = test["user_id"].isin(cold_users["user_id"])
    assert (test.loc[of_cold_users, "user_idx"] == UNK).all()
    assert (test.loc[~of_cold_users, "user_idx"] >= N_RESERVED).all()

    run_stage("evaluate", params, workspace)
    results = json.loads(workspace.evaluation_json.read_text())["results"]["cold_start"]
    pop, markov = results["pop"], results["markov"]
    assert pop["protocol"] == "cold_start"
    for key in ("recall@20", "cold_items/recall@20", "cold_items/ndcg@20", "cold_users/ndcg@20"):
        assert 0.0 <= pop["metrics"][key] <= 1.0, key
    assert pop["slices"]["cold_items"]["n"] > 0 and pop["slices"]["cold_users"]["n"] > 0
    assert "recall@20" not in markov["metrics"] and "cold_users/recall@20" in markov["metrics"]
    assert set(markov["skipped_protocols"]) == {"user_topk", "cold_items"}
    board = workspace.leaderboard_md.read_text()
    assert "| cold_items/recall@20 | cold_items/ndcg@20 | cold_users/recall@20 |" in board
    assert "Protocols not run: markov user_topk" in board
