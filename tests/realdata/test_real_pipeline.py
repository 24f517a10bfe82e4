"""The real data sets through ingest, validate, sessions and features (stage functions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recpipe.config import load_params
from recpipe.paths import Paths
from recpipe.stages import STAGES, run_stage

pytestmark = pytest.mark.realdata

CASES = {
    "movielens-100k": ("ml-100k", ["user_temporal", "global_temporal", "leave_last_out"]),
    "session-tsv": ("yoochoose-rsc15-100k", ["session"]),
    "diginetica": ("diginetica", ["session"]),
}


@pytest.mark.parametrize("source", sorted(CASES))
def test_real_data_through_features(source: str, real_data: Path, tmp_path: Path) -> None:
    folder, built = CASES[source]
    params = load_params(None, [f"data.source={source}", f"data.path={real_data / folder}"])
    paths = Paths.at(tmp_path)
    for name in ("ingest", "validate", "sessions", "features"):
        assert name in STAGES
        run_stage(name, params, paths)

    report = json.loads(paths.splits_json.read_text())
    for kind in built:
        entry = report["splits"][kind]
        assert "skipped" not in entry, entry
        assert entry["leakage"] and all(entry["leakage"].values()), entry["leakage"]
        parts = entry["stats"]["parts"]
        assert parts["test"]["rows"] > 0 and parts["train"]["rows"] > parts["test"]["rows"]
        meta = json.loads((paths.features_dir / kind / "meta.json").read_text())
        # test items of the session split are all known to the id map (unseen were dropped)
        if kind == "session":
            assert meta["parts"]["test"]["unknown_item_share"] == 0.0
    if source != "movielens-100k":
        # session-only data: no user ids, so user splits are skipped with a reason
        for kind in ("user_temporal", "leave_last_out"):
            assert "skipped" in report["splits"][kind] or source == "diginetica"
