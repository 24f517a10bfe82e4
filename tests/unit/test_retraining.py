"""A retraining run's params (data drop, model subset), outcome line and links."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from recpipe.errors import ConfigError, SchedulerError
from recpipe.paths import Paths
from recpipe.retraining import (
    mlflow_links,
    mlflow_markdown,
    outcome_message,
    registry_markdown,
    registry_rows,
    run_params,
)
from recpipe.scheduling import api_url, check_api, flow_run_url, server_command, ui_url


def test_models_pick_a_subset_of_the_candidates(tmp_path: Path) -> None:
    params, overrides = run_params(
        Paths.at(tmp_path), overrides=["synth.seed=7"], models=["mf_bpr", "gru4rec", "mf_bpr"]
    )
    assert params.train.candidates == ["mf_bpr", "gru4rec"]
    assert params.synth.seed == 7 and overrides[0] == "synth.seed=7"
    assert 'train.candidates=["mf_bpr", "gru4rec"]' in overrides


def test_unknown_models_name_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        run_params(Paths.at(tmp_path), models=["mf_bpr", "transformer"])
    message = str(err.value)
    assert "'transformer'" in message and "train.candidates" in message
    assert "'mf_bpr'" in message and "'gru4rec'" in message  # the valid names
    with pytest.raises(ConfigError, match="models is empty"):
        run_params(Paths.at(tmp_path), models=[])
    # the subset is checked against the run's own candidates (params file and overrides)
    with pytest.raises(ConfigError, match="gru4rec"):
        run_params(Paths.at(tmp_path), overrides=["train.candidates=[mf_bpr]"], models=["gru4rec"])


def test_a_data_drop_sets_the_path_and_keeps_the_source(tmp_path: Path) -> None:
    drop = tmp_path / "drop.parquet"
    drop.write_bytes(b"")
    (tmp_path / "params.yaml").write_text("data:\n  source: parquet\n")
    params, _ = run_params(Paths.at(tmp_path), data_path=drop)
    assert params.data.source == "parquet" and params.data.path == str(drop)
    params, _ = run_params(Paths.at(tmp_path), data_path=drop, data_source="csv")
    assert params.data.source == "csv" and params.data.path == str(drop)


def test_a_data_drop_needs_a_real_path_and_a_file_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        run_params(Paths.at(tmp_path), data_path=tmp_path / "missing.csv", data_source="csv")
    with pytest.raises(ConfigError, match=r"'synthetic'.*data_source"):
        run_params(Paths.at(tmp_path), data_path=tmp_path)  # default source: synthetic
    with pytest.raises(ConfigError, match=r"data.source"):
        run_params(Paths.at(tmp_path), data_path=tmp_path, data_source="excel")


def test_no_options_change_nothing(tmp_path: Path) -> None:
    params, overrides = run_params(Paths.at(tmp_path), overrides=["synth.seed=3"])
    assert overrides == ["synth.seed=3"] and params.synth.seed == 3


def test_the_outcome_says_promoted_or_not_promoted() -> None:
    failed = {"passed": False}
    message = "not promoted: the gate failed (beats_baseline); no alias moved"
    assert outcome_message(failed, {"promoted": False, "message": message}) == message
    passed = {"passed": True}
    assert outcome_message(passed, {"promoted": True, "message": "v2 is the champion"}) == (
        "promoted: v2 is the champion"
    )
    same = outcome_message(passed, {"promoted": False, "message": "v2 already is the champion"})
    assert same.startswith("not promoted") and "v2 already is the champion" in same


def test_mlflow_links_point_at_the_run() -> None:
    links = mlflow_links("sqlite:////w/mlflow.db", "3", "abc")
    assert links["run_url"] == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert links["ui_command"] == "mlflow ui --backend-store-uri sqlite:////w/mlflow.db"
    text = mlflow_markdown(links)
    assert "[abc](http://127.0.0.1:5000/#/experiments/3/runs/abc)" in text
    assert "sqlite:////w/mlflow.db" in text
    server = mlflow_links("http://mlflow.internal:8080/", "1", "r")
    assert server["run_url"] == "http://mlflow.internal:8080/#/experiments/1/runs/r"
    assert "ui_command" not in server


def test_registry_rows_name_each_version_role() -> None:
    registry = {
        "registered_model": "recpipe",
        "versions": {
            "mf_bpr/user_temporal": "3",
            "gru4rec/session": "4",
            "deepfm/user_temporal": "5",
        },
        "candidate_version": "4",
        "champion": "3",
        "previous": None,
    }
    rows = registry_rows(registry)
    assert [r["role"] for r in rows] == ["champion", "candidate (not promoted)", "registered"]
    assert rows[0] == {
        "model": "mf_bpr",
        "split": "user_temporal",
        "version": "3",
        "role": "champion",
    }
    text = registry_markdown(registry, "not promoted: ...")
    assert text.startswith("# Registry: not promoted") and "| gru4rec | session | v4 |" in text


class _Health(http.server.BaseHTTPRequestHandler):
    body = b"true"

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(self.body if self.path == "/api/health" else b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_check_api_accepts_a_healthy_server_and_explains_the_rest(health_server: str) -> None:
    assert check_api(f"{health_server}/api/") == f"{health_server}/api"
    with pytest.raises(SchedulerError, match=r"PREFECT_API_URL is not set.*recpipe server"):
        check_api(None)
    with pytest.raises(SchedulerError, match="expected true"):
        check_api(health_server)  # not the API: /health there is a 404
    with pytest.raises(SchedulerError, match=r"no Prefect server answers.*recpipe server --port 9"):
        check_api("http://127.0.0.1:9/api", timeout=2)


def test_server_urls_and_command() -> None:
    api = api_url(4300)
    assert api == "http://127.0.0.1:4300/api" and ui_url(api) == "http://127.0.0.1:4300"
    assert flow_run_url(api, "x") == "http://127.0.0.1:4300/runs/flow-run/x"
    command = server_command(4300)
    assert command[1:] == [
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        "4300",
    ]


def test_a_server_on_another_port_points_its_ui_at_its_own_api() -> None:
    import subprocess
    import sys

    from recpipe.scheduling import server_env

    # an inherited PREFECT_API_URL (e.g. another server's) must not leak into the UI
    env = server_env({"PREFECT_API_URL": "http://10.0.0.9:4200/api"}, port=4321)
    assert env["PREFECT_SERVER_API_PORT"] == "4321"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    probe = (
        "import prefect.settings as s; "
        "print(s.PREFECT_UI_API_URL.value(), s.PREFECT_SERVER_API_PORT.value())"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert shown == ["http://127.0.0.1:4321/api", "4321"]


def test_a_run_parses_its_params_once(tmp_path, monkeypatch) -> None:
    import recpipe.pipeline as pipeline

    calls: list[list[str]] = []
    real = pipeline.load_params

    def counting(path, overrides=None):
        calls.append(list(overrides or []))
        return real(path, overrides)

    monkeypatch.setattr(pipeline, "load_params", counting)
    paths = Paths.at(tmp_path)
    params_file = tmp_path / "params.yaml"
    params_file.write_text("synth:\n  seed: 3\n")
    first, _ = run_params(paths, overrides=["synth.days=2"])  # the CLI's check
    again, _ = run_params(paths, overrides=["synth.days=2"])  # the flow, same process
    assert again is first and len(calls) == 1
    params_file.write_text("synth:\n  seed: 4\n")  # an edited file is read again
    os.utime(params_file, ns=(0, params_file.stat().st_mtime_ns + 1_000_000))
    edited, _ = run_params(paths, overrides=["synth.days=2"])
    assert edited.synth.seed == 4 and len(calls) == 2


def test_the_flow_tunes_on_its_first_run_and_every_nth(tmp_path) -> None:
    from recpipe.config import load_params
    from recpipe.retraining import tune_due

    paths = Paths.at(tmp_path)
    assert [tune_due(load_params(None), paths) for _ in range(3)] == [False] * 3  # every: 0
    every3 = load_params(None, ["tune.every=3"])
    assert [tune_due(every3, paths) for _ in range(7)] == [
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]


def test_the_candidate_clock_counts_and_estimates_the_time_left() -> None:
    from recpipe.retraining import CandidateClock

    ticks = iter([0.0, 120.0, 300.0])
    clock = CandidateClock(["a", "b", "c"], clock=ticks.__next__)
    assert clock.starting("a") == "candidate 1 of 3: a"  # nothing done: no estimate yet
    clock.finished()
    assert clock.starting("b") == (
        "candidate 2 of 3: b (1 done in 2.0 min; about 4.0 min left at that pace)"
    )
    clock.finished()
    assert clock.starting("c").endswith("(2 done in 5.0 min; about 2.5 min left at that pace)")


def test_the_stage_clock_counts_stages_and_estimates_from_the_last_run(tmp_path) -> None:
    from recpipe.paths import Paths
    from recpipe.retraining import StageClock, save_stage_times, stage_times

    paths = Paths.at(tmp_path)
    assert stage_times(paths, 2) == {}  # no run yet: no estimate
    ticks = iter([0.0, 0.0, 10.0, 10.0, 250.0, 250.0, 256.0])
    first = StageClock(["ingest", "train", "gate"], stage_times(paths, 2), clock=ticks.__next__)
    assert first.starting("ingest") == "stage 1 of 3: ingest"
    first.finished("ingest")
    assert first.starting("train") == "stage 2 of 3: train (10 s so far)"
    first.finished("train")
    first.starting("gate")
    first.finished("gate")
    assert first.seconds == {"ingest": 10.0, "train": 240.0, "gate": 6.0}
    save_stage_times(paths, first.seconds, candidates=2)
    # the next run trains 4 candidates: its train step is expected to take twice as long
    assert stage_times(paths, 4) == {"ingest": 10.0, "gate": 6.0, "train": 480.0}
    ticks = iter([0.0, 0.0, 12.0, 12.0])
    second = StageClock(["ingest", "train", "gate"], stage_times(paths, 4), clock=ticks.__next__)
    assert second.starting("ingest") == (
        "stage 1 of 3: ingest (about 8.3 min left, as the last run took)"
    )
    second.finished("ingest")
    assert second.starting("train") == (
        "stage 2 of 3: train (12 s so far; about 8.1 min left, as the last run took)"
    )
    (tmp_path / ".recpipe" / "stage_times.json").write_text("{not json")
    assert stage_times(paths, 1) == {}  # an unreadable record: no estimate, no error
