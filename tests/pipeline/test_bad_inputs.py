"""Bad inputs found by trying many (issue 24): each is a clear report or a bad row, never a
traceback, and loses nothing."""

from __future__ import annotations

import hashlib
import json
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


def test_a_features_stage_that_fails_partway_leaves_the_previous_features_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stage writes beside its outputs and swaps them in (issue 24): a failure in
    the second split's features (a kill alike) keeps the first run's features and report
    byte for byte, and leaves no staging folder."""
    from recpipe.features import build

    paths = Paths.at(tmp_path)
    params = load_params(None, SMALL)
    for stage in (stages.ingest, stages.validate, stages.sessions, stages.features):
        stage(params, paths)
    before = _digest(paths.features_dir), paths.features_json.read_bytes()
    assert len(before[0]) >= 10
    real, calls = build.stream_split_features, []

    def failing_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "stream_split_features", failing_second)
    with pytest.raises(OSError, match="simulated"):
        stages.features(params, paths)
    assert (_digest(paths.features_dir), paths.features_json.read_bytes()) == before
    assert not [p.name for p in paths.data_dir.iterdir() if p.name.startswith(".")]


def test_a_report_write_that_fails_keeps_the_previous_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recpipe.workspace import write_json

    path = tmp_path / "reports" / "x.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object.__new__(_Unwritable)})
    assert json.loads(path.read_text()) == {"a": 1}

    def failing_replace(self, target):
        raise OSError("killed mid-write (simulated)")

    monkeypatch.setattr(Path, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


class _Unwritable:
    def __str__(self) -> str:
        raise TypeError("cannot be written")


# --- errors name their full path; missing candidates are listed (case 9) --------------


def test_a_relative_file_name_in_an_os_error_is_shown_as_a_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from recpipe.errors import WorkspaceError

    monkeypatch.chdir(tmp_path)
    try:
        raise OSError(errno.EROFS, "Read-only file system", "data.npz")
    except OSError as exc:
        error = WorkspaceError.from_os_error(exc, "stage train")
    assert error.path == str(tmp_path / "data.npz")
    assert f"cannot write {tmp_path / 'data.npz'}: read-only file system" in str(error).lower()


def test_candidates_without_an_artifact_are_listed_on_the_leaderboard_with_why(
    tmp_path: Path,
) -> None:
    from tests.unit.gate_workspace import SPLIT, build_workspace, small_params

    paths = build_workspace(tmp_path)  # markov trained on the session split
    paths.model_dir("sr").mkdir()  # a training that never completed: an empty folder
    (paths.model_dir("mf_bpr") / SPLIT).mkdir(parents=True)  # no meta.json
    (paths.model_dir("gru4rec")).mkdir()
    (paths.model_dir("gru4rec") / "training.json").write_text(
        json.dumps({"splits": {SPLIT: {"skipped": "no GPU today"}}})
    )
    params = small_params(tmp_path, "train.candidates=[markov, sr, mf_bpr, gru4rec, sasrec]")
    report = stages.evaluate(params, paths)
    results = report["results"][SPLIT]
    assert "metrics" in results["markov"]
    why = {n: results[n]["skipped"] for n in ("sr", "mf_bpr", "gru4rec", "sasrec")}
    assert f"{paths.model_dir('sr')} is empty: its training did not complete" in why["sr"]
    assert "holds no meta.json: an incomplete artifact" in why["mf_bpr"]
    assert why["gru4rec"] == "not trained on this split: no GPU today"
    assert f"{paths.model_dir('sasrec')} does not exist (run the train stage)" in why["sasrec"]
    board = paths.leaderboard_md.read_text()
    assert f"sr ({why['sr']})" in board and f"sasrec ({why['sasrec']})" in board
    assert json.loads(paths.evaluation_json.read_text())["results"][SPLIT]["sr"]["skipped"]


# --- bad params are refused before anything runs (case 6) ----------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.candidates=[mf_bpr, nosuch]", "train.candidates: unknown model 'nosuch'"),
        ("gate.primary_metric=recall@20", "gate.primary_metric: unknown key"),
        ("gate.metric=bogus@20", "gate.metric must be metric@K with metric one of"),
    ],
)
@pytest.mark.parametrize("command", [["run"], ["stage", "ingest"]])
def test_bad_candidates_and_gate_metrics_fail_before_ingest(
    tmp_path: Path, override: str, expected: str, command: list[str]
) -> None:
    res = runner.invoke(app, [*command, "--root", str(tmp_path), "--set", override])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert expected in " ".join(res.output.split())
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()
