"""The ``jsonl`` source on an OTTO-like file (one session a line with an events array)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recpipe.config import load_params
from recpipe.data.sources import import_source
from recpipe.errors import DataImportError
from recpipe.paths import Paths
from recpipe.pipeline import run_stage

OTTO = [
    "data.source=jsonl",
    "data.columns.session_id=session",
    "data.columns.item_id=aid",
    "data.columns.timestamp=ts",
    "data.columns.event_type=type",
    "data.columns.user_id=null",
    "data.columns.value=null",
    "data.timestamp_unit=ms",
]
T0 = 1_661_724_000_000  # 2022-08-28T22:00:00Z in ms, OTTO's first week


def write_otto(path: Path, n_sessions: int = 40) -> Path:
    """OTTO's layout: {"session": s, "events": [{"aid", "ts", "type"}, ...]} a line."""
    kinds = ["clicks", "clicks", "carts", "orders"]
    with path.open("w") as out:
        for s in range(n_sessions):
            events = [
                {"aid": 1000 + (s + j) % 25, "ts": T0 + s * 3_600_000 + j * 60_000, "type": k}
                for j, k in enumerate(kinds[: 2 + s % 3])
            ]
            out.write(json.dumps({"session": s, "events": events}) + "\n")
    return path


def test_otto_sessions_become_canonical_events(tmp_path: Path) -> None:
    path = write_otto(tmp_path / "train.jsonl", n_sessions=3)
    params = load_params(None, [*OTTO, f"data.path={path}"])
    events = import_source("jsonl", path, params.data).events
    # session 0: 2 events, 1: 3, 2: 4
    assert events["session_id"].tolist() == ["0"] * 2 + ["1"] * 3 + ["2"] * 4
    assert events["item_id"].tolist()[:2] == ["1000", "1001"]  # ids as written, no ".0"
    assert events["event_type"].tolist()[2:5] == ["click", "click", "cart"]
    assert events["event_type"].iloc[-1] == "purchase"  # orders
    assert events["timestamp"].iloc[0] == pd.Timestamp("2022-08-28T22:00:00Z")
    assert events["user_id"].isna().all()


def test_an_otto_file_passes_ingest_and_validation(tmp_path: Path) -> None:
    path = write_otto(tmp_path / "otto.jsonl")
    params = load_params(None, [*OTTO, f"data.path={path}"])
    paths = Paths.at(tmp_path / "ws")
    manifest = run_stage("ingest", params, paths)
    assert manifest["rows"]["events"] == sum(2 + s % 3 for s in range(40))
    report = run_stage("validate", params, paths)
    assert report["passed"], report


def test_flat_lines_and_a_folder_of_files(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    for name, item in (("a.jsonl", "x"), ("b.json", "y")):
        row = {"user_id": "u1", "item_id": item, "timestamp": "2024-01-01T00:00:00Z"}
        (folder / name).write_text(json.dumps(row) + "\n")
    params = load_params(None, ["data.source=jsonl", f"data.path={folder}"])
    events = import_source("jsonl", folder, params.data).events
    assert events["item_id"].tolist() == ["x", "y"]
    assert events["event_type"].tolist() == ["click", "click"]  # data.default_event_type


def test_clear_errors(tmp_path: Path) -> None:
    path = write_otto(tmp_path / "otto.jsonl", n_sessions=2)
    plain = load_params(None, ["data.source=jsonl", f"data.path={path}"])
    with pytest.raises(DataImportError, match=r"data\.columns\.<column>=FIELD.*item_id=aid"):
        import_source("jsonl", path, plain.data)  # OTTO's fields without the mapping
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"session": 1, "events": []}\n{not json\n')
    with pytest.raises(DataImportError, match="line 2 is not valid JSON"):
        import_source("jsonl", bad, load_params(None, [*OTTO, f"data.path={bad}"]).data)
    with pytest.raises(DataImportError, match="does not exist"):
        import_source("jsonl", tmp_path / "nowhere.jsonl", plain.data)
