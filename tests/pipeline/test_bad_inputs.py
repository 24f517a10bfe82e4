"""Bad inputs found by trying many (issue 24): each is a clear report or a bad row, never a
traceback, and loses nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from recpipe import stages
from recpipe.cli import app
from recpipe.config import load_params
from recpipe.errors import SplitError
from recpipe.paths import Paths
from tests.pipeline.conftest import SMALL

runner = CliRunner()


# --- times before 1677 or after 2262 (case 1) ----------------------------------------


@pytest.mark.parametrize(
    ("unit", "good", "bad", "shown"),
    [
        (None, "2020-01-01T00:00:00", "1500-01-01T00:00:00", "1500-01-01T00:00:00"),
        (None, "2020-01-01T00:00:00Z", "2300-06-01T00:00:00Z", "2300-06-01T00:00:00Z"),
        ("s", "1600000000", "99999999999", "99999999999"),
        ("ms", "1600000000000", "-9999999999999", "-9999999999999"),
        ("s", "1600000000.5", "1e30", "1e+30"),
    ],
)
def test_a_time_no_timestamp_holds_is_a_null_timestamp_not_a_crash(
    tmp_path: Path, unit: str | None, good: str, bad: str, shown: str
) -> None:
    cells = [good, bad, good]
    raw = tmp_path / "events.csv"
    raw.write_text(
        "user_id,item_id,timestamp\n" + "".join(f"{i},i{i},{c}\n" for i, c in enumerate(cells))
    )
    args = ["data", "import", "csv", str(raw), "--out", str(tmp_path / "out")]
    if unit is not None:
        args += ["--set", f"data.timestamp_unit={unit}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    events = pd.read_parquet(tmp_path / "out" / "events.parquet")
    assert len(events) == 3  # nothing dropped
    assert events["timestamp"].isna().tolist() == [False, True, False]
    assert str(events["timestamp"].dtype) == "datetime64[ns, UTC]"
    log = " ".join(res.output.split())
    assert f"{raw}: 1 value(s) in column 'timestamp' lie outside 1677-09-21 .. 2262-04-11" in log
    assert f"timestamp_not_null); examples: row 1: {shown}" in log


@pytest.mark.parametrize("engine", ["pandas", "arrow"])
def test_a_parquet_timestamp_column_beyond_2262_gives_the_same_bad_rows_on_both_engines(
    tmp_path: Path, engine: str
) -> None:
    source = tmp_path / "events.parquet"
    times = pa.array([1_600_000_000_000_000, 32_503_680_000_000_000, 1_600_000_100_000_000])
    table = pa.table(
        {
            "user_id": ["u1", "u2", "u3"],
            "item_id": ["a", "b", "c"],
            "timestamp": times.cast(pa.timestamp("us", tz="UTC")),  # 2020, 3000, 2020
        }
    )
    pq.write_table(table, source)
    paths = Paths.at(tmp_path / "ws")
    params = load_params(
        None,
        ["data.source=parquet", f"data.path={source}", f"prep.engine={engine}",
         "prep.batch_rows=2"],
    )  # fmt: skip
    stages.ingest(params, paths)
    events = pd.read_parquet(paths.interim_dir / "events.parquet")
    assert events["timestamp"].isna().tolist() == [False, True, False]
    assert events["user_id"].tolist() == ["u1", "u2", "u3"]
    # validation reports the row with its count and an example, like any other bad row
    res = runner.invoke(app, ["validate", str(paths.interim_dir), "--root", str(paths.root)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    text = " ".join(res.output.split())
    assert "timestamp_not_null" in text and "1 unexpected" in text
    assert "row 1: user_id='u2'" in text


# --- a drop that passes validation but is too small for the splits (case 3) ----------


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("engine", ["pandas", "arrow"])
def test_a_drop_too_small_for_the_splits_leaves_the_previous_sessions_and_splits(
    tmp_path: Path, engine: str
) -> None:
    paths = Paths.at(tmp_path)
    good = load_params(None, [*SMALL, f"prep.engine={engine}"])
    for stage in (stages.ingest, stages.validate, stages.sessions):
        stage(good, paths)
    before = {
        "sessions": _digest(paths.sessions_dir),
        "splits": _digest(paths.splits_dir),
        "report": paths.splits_json.read_bytes(),
    }
    assert len(before["splits"]) >= 10
    tiny = load_params(None, [*SMALL, f"prep.engine={engine}", "synth.n_sessions=3"])
    stages.ingest(tiny, paths)
    stages.validate(tiny, paths)  # it passes
    with pytest.raises(SplitError, match="session split: the test part is empty"):
        stages.sessions(tiny, paths)
    assert _digest(paths.sessions_dir) == before["sessions"]
    assert _digest(paths.splits_dir) == before["splits"]
    assert paths.splits_json.read_bytes() == before["report"]
    assert sorted(p.name for p in paths.data_dir.iterdir()) == [
        "interim",
        "quarantine",
        "sessions",
        "splits",
        "validated",
    ]  # fmt: skip  (no staging or scratch folder left)
