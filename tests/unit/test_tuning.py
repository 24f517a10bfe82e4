"""Tuning: search spaces fit their configs; seeded studies reproduce; a killed study
resumes; a failing trial is recorded and the study goes on; budgets hold; bad input gets
a clear error; the tuned config drives the train and evaluate stages."""

from __future__ import annotations

import pytest
import yaml

from recpipe.errors import ConfigError
from recpipe.models.dataset import clear_cache, load_split
from recpipe.models.names import NAMES
from recpipe.models.registry import get_model
from recpipe.models.space import Choice, Float, Int, to_option
from recpipe.tuning import trials as tuning
from recpipe.tuning.configs import read_tuned, write_tuned
from recpipe.tuning.study import Budget, TuneResult, check_tunable, tune_model
from tests.unit.gate_workspace import SPLIT, build_workspace, small_params, tune_sr

optuna = pytest.importorskip("optuna")

#: The tune-stage test's workspace: one candidate (markov), a baseline with nothing to
#: tune (pop) and one with a search space (sr).
STAGE_OVERRIDES = [
    "train.candidates=[markov]",
    "evaluate.models=[pop, sr]",
    "train.model_splits={}",
]


@pytest.mark.parametrize("name", NAMES)
def test_every_search_space_fits_its_config(name: str) -> None:
    cls = get_model(name)
    for key, dim in cls.search_space.items():
        assert key in cls.Config.model_fields, f"{name}: {key} is not an option"
        if isinstance(dim, Choice):
            values = list(dim.options)
        else:
            assert isinstance(dim, Int | Float)
            values = [dim.low, dim.high]
        for value in values:
            cls.parse_config({key: to_option(dim, value)})  # raises on a bad value


@pytest.fixture
def split(tmp_path):
    clear_cache()
    paths = build_workspace(tmp_path)
    yield paths, load_split(paths.features_dir / SPLIT)
    clear_cache()


def _trial_params(storage: str, study: str) -> list[dict]:
    found = optuna.load_study(study_name=study, storage=storage)
    return [t.params for t in found.trials]


def test_a_seeded_study_reproduces(split, tmp_path) -> None:
    _, data = split
    one = tune_sr(data, f"sqlite:///{tmp_path / 'a.db'}")
    two = tune_sr(data, f"sqlite:///{tmp_path / 'b.db'}")
    assert one.best_config == two.best_config and one.best_value == two.best_value
    assert one.study == two.study
    assert _trial_params(f"sqlite:///{tmp_path / 'a.db'}", one.study) == _trial_params(
        f"sqlite:///{tmp_path / 'b.db'}", two.study
    )
    assert one.trials == {"complete": 4} and one.default_value is not None
    assert one.best_value >= one.default_value  # the defaults are trial 0


def test_a_killed_study_resumes_and_the_budget_holds(split, tmp_path) -> None:
    _, data = split
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    first = tune_sr(data, storage, trials=2)
    assert first.budget["used_trials"] == 2
    resumed = tune_sr(data, storage, trials=5)
    assert resumed.budget["used_trials"] == 5  # 3 more, not 5 more
    again = tune_sr(data, storage, trials=5)
    assert again.budget["used_trials"] == 5  # the budget is spent: no new trial


def test_a_failing_trial_is_recorded_and_the_study_goes_on(split, tmp_path, monkeypatch) -> None:
    _, data = split
    real, calls = tuning._validation_value, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in trial 1")
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "_validation_value", flaky)
    result = tune_sr(data, f"sqlite:///{tmp_path / 'f.db'}", trials=3)
    assert result.trials == {"complete": 2, "fail": 1}


def test_a_torch_model_reports_its_epochs(split, tmp_path) -> None:
    _, data = split
    storage = f"sqlite:///{tmp_path / 't.db'}"
    result = tune_model(
        "gru4rec",
        SPLIT,
        data,
        metric="recall@20",
        ks=[20],
        budget=Budget(trials=2),
        storage=storage,
        base_options={"epochs": 2, "n_sample": 0, "device": "cpu"},
    )
    assert result.trials == {"complete": 2}
    found = optuna.load_study(study_name=result.study, storage=storage)
    assert all(len(t.intermediate_values) == 2 for t in found.trials)  # one per epoch


def test_bad_input_gets_clear_errors(split, tmp_path) -> None:
    _, data = split
    with pytest.raises(ConfigError, match="needs trials or timeout"):
        Budget(trials=None, timeout=None)
    with pytest.raises(ConfigError, match="must be >= 1"):
        Budget(trials=0)
    with pytest.raises(ConfigError, match="declare no search space"):
        check_tunable(["pop"], SPLIT)
    with pytest.raises(ConfigError, match="unknown model"):
        check_tunable(["nosuch"], SPLIT)
    with pytest.raises(ConfigError, match="cold_start"):
        check_tunable(["sr"], "cold_start")
    with pytest.raises(ConfigError, match="no search space"):
        tune_model(
            "pop",
            SPLIT,
            data,
            metric="recall@20",
            ks=[20],
            budget=Budget(1),
            storage=f"sqlite:///{tmp_path / 'x.db'}",
        )


def test_the_tune_stage_writes_configs_that_drive_train_and_evaluate(
    split, tmp_path, monkeypatch
) -> None:
    import mlflow

    from recpipe import stages
    from recpipe.evaluate import leaderboard

    seen_configs: list[dict] = []
    real = leaderboard.evaluate_models

    def spy(*args, **kwargs):
        seen_configs.append(dict(args[4]))
        return real(*args, **kwargs)

    paths, _ = split
    params = small_params(tmp_path, *STAGE_OVERRIDES, "tune.trials=3")
    before = mlflow.get_tracking_uri()
    try:
        report = stages.tune(params, paths)
        runs = mlflow.search_runs(
            experiment_names=[params.tracking.experiment], output_format="list"
        )
    finally:
        mlflow.set_tracking_uri(before)
    assert set(report["models"]) == {"markov", "sr"}  # pop has nothing to tune
    # MLflow: a tune run, a nested run per study, a run per trial nested in its study
    by_name = {r.info.run_name: r for r in runs}
    assert {"tune", "tune-markov-session", "tune-sr-session"} <= set(by_name)
    studies = {by_name[f"tune-{m}-session"].info.run_id: m for m in ("markov", "sr")}
    trials = [r for r in runs if r.info.run_name.startswith("trial-")]
    assert len(trials) == 6
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == set(studies)
    assert all(r.data.tags["trial.state"] == "complete" and r.data.metrics for r in trials)
    # the human report, with Optuna's plots
    markdown = (paths.reports_dir / "tuning.md").read_text()
    assert "| markov | recall@20 |" in markdown and "| sr | recall@20 |" in markdown
    assert (paths.reports_dir / "tuning" / f"{SPLIT}_sr_history.png").is_file()
    assert f"![{SPLIT}_sr_history](tuning/{SPLIT}_sr_history.png)" in markdown
    assert report["budget"] == {"trials": 3, "timeout": None, "workers": 1}
    for name in ("markov", "sr"):
        assert report["models"][name]["budget"]["used_trials"] == 3  # equal budgets
        assert read_tuned(paths.tuned_dir, SPLIT, name) == report["models"][name]["best_config"]
    # a tuned config (here written by hand) drives train and evaluate with tune.use
    tuned = dict(report["models"]["markov"])
    tuned["best_config"] = {"pruning": 7}
    write_tuned(paths.tuned_dir, TuneResult(**tuned))
    sr = dict(report["models"]["sr"])
    sr["best_config"] = {"pruning": 9, "max_steps": 3}
    write_tuned(paths.tuned_dir, TuneResult(**sr))
    try:
        stages.train(params, paths)
        used = small_params(tmp_path, *STAGE_OVERRIDES, "tune.use=true")
        stages.train(used, paths)
        monkeypatch.setattr(leaderboard, "evaluate_models", spy)
        stages.evaluate(used, paths)
        monkeypatch.setattr(leaderboard, "evaluate_models", real)
        gate = stages.gate(used, paths)
    finally:
        mlflow.set_tracking_uri(before)
    config = yaml.safe_load((paths.model_dir("markov") / SPLIT / "config.json").read_text())
    assert config["pruning"] == 7
    assert seen_configs == [{"pop": {}, "sr": {"pruning": 9, "max_steps": 3}}]
    # the gate report names the tuned configs and their budget
    said = gate["tuning"]
    assert said["use"] is True
    assert said["models"]["markov"]["tuned"] and said["models"]["markov"]["budget"]["trials"] == 3
    assert said["models"]["markov"]["file"] == f"tuned/{SPLIT}/markov.yaml"
    markdown = paths.gate_md.read_text()
    assert f"Config of markov: tuned (`tuned/{SPLIT}/markov.yaml`), budget 3 trials" in markdown


def test_recpipe_tune_prints_default_and_tuned(split, tmp_path) -> None:
    from typer.testing import CliRunner

    from recpipe.cli import app

    paths, _ = split
    args = ["tune", "--root", str(paths.root), "--model", "sr", "--split", SPLIT, "--trials", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sr" in result.output and "complete 2" in result.output
    assert read_tuned(paths.tuned_dir, SPLIT, "sr") is not None
    bad = CliRunner().invoke(app, ["tune", "--root", str(paths.root), "--model", "pop"])
    assert bad.exit_code == 2 and "no search space" in " ".join(bad.output.split())
