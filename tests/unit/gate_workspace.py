"""A tiny workspace for gate and registry tests, built directly (no pipeline run).

Sessions walk a ring of items (``i00 -> i01 -> ... -> i39 -> i00``) with a few random
jumps, so a Markov model is nearly perfect and popularity is not. The workspace holds
what the gate stage reads: ``data/features/session/`` (id maps, encoded parts,
meta.json), ``models/markov/session/`` (the "candidate"), ``reports/evaluation.json``
(the candidate against the ``pop`` baseline, with the evaluate stage's paired
bootstrap), ``reports/validation.json`` and what the register step reads besides
(``data/sessions/events.parquet``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recpipe.config import Params, load_params
from recpipe.evaluate.leaderboard import compare_to_best, evaluate_models
from recpipe.features.encode import encode_events
from recpipe.features.idmap import IdMap
from recpipe.models.data import DataMeta, Interactions
from recpipe.models.registry import build_model
from recpipe.paths import Paths

N_ITEMS = 40
SPLIT = "session"
PARTS = ("train", "valid", "test")


def ring_sessions(seed: int = 0, n_sessions: int = 150, n_users: int = 6) -> pd.DataFrame:
    """Canonical events: sessions of 3-6 steps along the item ring, one hour apart."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-03-01", tz="UTC")
    rows = []
    for s in range(n_sessions):
        item = int(rng.integers(N_ITEMS))
        user = f"u{int(rng.integers(n_users))}"
        for j in range(int(rng.integers(3, 7))):
            rows.append(
                {
                    "session_id": f"s{s:04d}",
                    "user_id": user,
                    "item_id": f"i{item:02d}",
                    "timestamp": t0 + pd.Timedelta(hours=s, minutes=j),
                    "event_type": "view",
                    "value": 1.0,
                }
            )
            item = (item + 1) % N_ITEMS if rng.random() < 0.9 else int(rng.integers(N_ITEMS))
    frame = pd.DataFrame(rows)
    return frame.astype({c: "string" for c in ("session_id", "user_id", "item_id", "event_type")})


def write_features(paths: Paths, seed: int = 0) -> tuple[DataMeta, dict[str, Interactions]]:
    """``data/features/session/`` from :func:`ring_sessions` (70/10/20 by session)."""
    events = ring_sessions(seed)
    order = events["session_id"].str.slice(1).astype(int)
    n = int(order.max()) + 1
    cut = {
        "train": (0, int(0.7 * n)),
        "valid": (int(0.7 * n), int(0.8 * n)),
        "test": (int(0.8 * n), n),
    }
    parts = {
        p: events[(order >= lo) & (order < hi)].reset_index(drop=True)
        for p, (lo, hi) in cut.items()
    }
    items = IdMap.fit(parts["train"]["item_id"])
    users = IdMap.fit(parts["train"]["user_id"])
    folder = paths.features_dir / SPLIT
    folder.mkdir(parents=True, exist_ok=True)
    items.save(folder / "item_map.parquet")
    users.save(folder / "user_map.parquet")
    for part, frame in parts.items():
        encode_events(frame, items, users, gap_buckets=8).to_parquet(
            folder / f"{part}.parquet", index=False
        )
    meta = {"split": SPLIT, "n_items": len(items), "n_users": len(users)}
    (folder / "meta.json").write_text(json.dumps(meta))
    data = {p: Interactions.from_parquet(folder / f"{p}.parquet") for p in PARTS}
    return DataMeta.from_features(folder), data


def small_params(root: Path, *overrides: str) -> Params:
    """Params of the tiny workspace: one candidate (markov), one baseline (pop)."""
    return load_params(
        None,
        [
            "train.candidates=[markov]",
            f"train.splits=[{SPLIT}]",
            "evaluate.models=[pop]",
            f"evaluate.splits=[{SPLIT}]",
            f"gate.split={SPLIT}",
            "gate.latency_requests=20",
            *overrides,
        ],
    )


def build_workspace(root: Path, seed: int = 0) -> Paths:
    """Features, the candidate artifact, evaluation and validation reports under ``root``."""
    paths = Paths.at(root)
    meta, data = write_features(paths, seed)
    model = build_model("markov", {}, meta).fit(data["train"], data["valid"])
    model.save(paths.model_dir("markov") / SPLIT)
    results, per_query = evaluate_models(
        SPLIT, data, meta, ["pop"], {}, [5, 10, 20], fitted={"markov": model}
    )
    evaluation = {
        "primary_split": SPLIT,
        "results": {SPLIT: results},
        "significance": {SPLIT: compare_to_best(per_query, "recall@20", n_resamples=200)},
        "skipped_splits": {},
    }
    paths.reports_dir.mkdir(parents=True, exist_ok=True)
    paths.evaluation_json.write_text(json.dumps(evaluation))
    paths.validation_json.write_text(json.dumps({"passed": True}))
    # the sessionized events the register step builds each version's serving bundle from
    paths.sessions_dir.mkdir(parents=True, exist_ok=True)
    ring_sessions(seed).to_parquet(paths.sessions_dir / "events.parquet", index=False)
    manifest = paths.manifest_json
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"source": "test", "content_hash": f"hash-{seed}"}))
    return paths


def tune_sr(data, storage: str, trials: int = 4, **kwargs):
    """A study of ``sr`` (fast, with a search space) on the workspace's split."""
    from recpipe.tuning.study import Budget, tune_model

    return tune_model(
        "sr",
        SPLIT,
        data,
        metric="recall@20",
        ks=[20],
        budget=Budget(trials=trials),
        storage=storage,
        **kwargs,
    )
