"""When the tune stage tunes: only with tune.use, only out-of-date configs (not tuned,
search changed, data grew); a study on other data starts afresh; an interrupted trial is
recorded as failed; parallel workers share one study and its budget."""

from __future__ import annotations

import pytest
import yaml

from recpipe.models.dataset import clear_cache, load_split
from recpipe.tuning.configs import read_tuned_file, tuned_path
from recpipe.tuning.policy import retune_reasons, split_fingerprint
from recpipe.tuning.study import Budget, tune_model
from tests.unit.gate_workspace import SPLIT, build_workspace, small_params, tune_sr

optuna = pytest.importorskip("optuna")

#: markov (a candidate) and sr (a baseline) both have search spaces; pop has none.
OVERRIDES = ["train.candidates=[markov]", "evaluate.models=[pop, sr]", "train.model_splits={}"]


@pytest.fixture
def workspace(tmp_path):
    clear_cache()
    paths = build_workspace(tmp_path)
    yield paths
    clear_cache()


def test_the_tune_stage_tunes_only_what_is_out_of_date(workspace, tmp_path) -> None:
    import mlflow

    from recpipe import stages

    paths = workspace
    before = mlflow.get_tracking_uri()
    try:
        off = stages.tune_stage(small_params(tmp_path, *OVERRIDES, "tune.trials=2"), paths)
        assert off["tuned"] == [] and paths.tuned_dir.is_dir()
        assert not any(paths.tuned_dir.rglob("*.yaml"))  # tune.use false: nothing tuned
        use = [*OVERRIDES, "tune.trials=2", "tune.use=true", "tune.retune_growth=0.5"]
        first = stages.tune_stage(small_params(tmp_path, *use), paths)
        assert first["tuned"] == ["markov", "sr"]
        assert first["reasons"] == {"markov": "not tuned yet", "sr": "not tuned yet"}
        files = {n: tuned_path(paths.tuned_dir, SPLIT, n).read_text() for n in ("markov", "sr")}
        # nothing changed: both configs are reused, their files untouched
        again = stages.tune_stage(small_params(tmp_path, *use), paths)
        assert again["tuned"] == [] and again["models"]["sr"]["reused"]
        assert {n: tuned_path(paths.tuned_dir, SPLIT, n).read_text() for n in files} == files
        # sr's base options changed: sr alone is tuned again
        changed = [*use, "evaluate.model_configs={sr: {max_steps: 5}}"]
        third = stages.tune_stage(small_params(tmp_path, *changed), paths)
        assert third["tuned"] == ["sr"] and "search changed" in third["reasons"]["sr"]
        assert read_tuned_file(paths.tuned_dir, SPLIT, "sr")["best_config"]["max_steps"] == 5
        # the data grew by half since markov was tuned: markov is tuned again
        path = tuned_path(paths.tuned_dir, SPLIT, "markov")
        entry = yaml.safe_load(path.read_text())
        entry["data"]["train_events"] = entry["data"]["train_events"] * 2 // 3
        path.write_text(yaml.safe_dump(entry))
        fourth = stages.tune_stage(small_params(tmp_path, *changed), paths)
        assert fourth["tuned"] == ["markov"] and "grew by 50%" in fourth["reasons"]["markov"]
        # force (the flow's tune.every turn) tunes every model
        forced = stages.tune_stage(small_params(tmp_path, *changed), paths, force=True)
        assert forced["tuned"] == ["markov", "sr"]
    finally:
        mlflow.set_tracking_uri(before)


def test_retune_reasons_without_a_growth_rule(workspace) -> None:
    paths = workspace
    data = split_fingerprint(paths.features_dir / SPLIT)
    assert data["train_events"] > 0 and len(data["hash"]) == 40
    path = tuned_path(paths.tuned_dir, SPLIT, "sr")
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({"key": "k1", "data": {"train_events": 1}}))
    assert retune_reasons(paths.tuned_dir, SPLIT, {"sr": "k1"}, data, None) == {}
    grown = retune_reasons(paths.tuned_dir, SPLIT, {"sr": "k1"}, data, 0.1)
    assert "grew" in grown["sr"]
    assert retune_reasons(paths.tuned_dir, SPLIT, {"sr": "k2"}, data, None) == {
        "sr": "its search changed (search space, base options or metric)"
    }


def test_a_study_on_other_data_starts_afresh(workspace, tmp_path) -> None:
    data = load_split(workspace.features_dir / SPLIT)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    one = tune_sr(data, storage, trials=2, data_info={"hash": "a" * 40, "train_events": 10})
    same = tune_sr(data, storage, trials=2, data_info={"hash": "a" * 40, "train_events": 10})
    other = tune_sr(data, storage, trials=2, data_info={"hash": "b" * 40, "train_events": 12})
    assert one.study == same.study != other.study
    assert same.trials == {"complete": 2}  # resumed: the budget was spent
    assert other.trials == {"complete": 2} and other.data["train_events"] == 12
    assert len(optuna.get_all_study_names(storage)) == 2


def test_an_interrupted_trial_is_recorded_as_failed(workspace, tmp_path) -> None:
    data = load_split(workspace.features_dir / SPLIT)
    storage = f"sqlite:///{tmp_path / 'i.db'}"
    first = tune_sr(data, storage, trials=1)
    killed = optuna.load_study(study_name=first.study, storage=storage)
    killed.ask()  # a trial left RUNNING, as by a killed process
    resumed = tune_sr(data, storage, trials=3)
    assert resumed.trials == {"complete": 2, "fail": 1}  # the killed one counts as used


@pytest.mark.parametrize("parallel", ["processes", pytest.param("dask", marks=pytest.mark.slow)])
def test_parallel_workers_share_one_study_and_its_budget(workspace, tmp_path, parallel) -> None:
    if parallel == "dask":
        pytest.importorskip("distributed")
    data = load_split(workspace.features_dir / SPLIT)
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    result = tune_sr(
        data,
        storage,
        trials=5,
        workers=2,
        parallel=parallel,
        folder=workspace.features_dir / SPLIT,
    )
    assert result.budget["used_trials"] == 5 and result.budget["workers"] == 2
    assert result.trials == {"complete": 5}
    found = optuna.load_study(study_name=result.study, storage=storage)
    assert sum(t.user_attrs.get("default", False) for t in found.trials) == 1


def test_with_workers_the_queued_default_runs_once_before_them(workspace, tmp_path) -> None:
    # Two workers could both pop the queued default from SQLite and run it as one
    # trial; the parent runs it first, so a budget of one trial spawns no worker at all.
    data = load_split(workspace.features_dir / SPLIT)
    result = tune_sr(
        data,
        f"sqlite:///{tmp_path / 'd.db'}",
        trials=1,
        workers=2,
        folder=workspace.features_dir / SPLIT,
    )
    assert result.trials == {"complete": 1} and result.default_value == result.best_value


def test_parallel_workers_need_the_split_folder(workspace, tmp_path) -> None:
    from recpipe.errors import ConfigError

    data = load_split(workspace.features_dir / SPLIT)
    with pytest.raises(ConfigError, match="needs the split's folder"):
        tune_sr(data, f"sqlite:///{tmp_path / 'x.db'}", workers=2)


def test_the_pruner_cuts_only_the_bottom_quarter(tmp_path) -> None:
    from recpipe.tuning.trials import PRUNE_WARMUP_EPOCHS, Job, open_study

    job = Job(
        model="sr",
        split=SPLIT,
        study_name="p",
        storage=f"sqlite:///{tmp_path / 'q.db'}",
        metric="recall@20",
        ks=(20,),
        base={},
        seed=0,
        prune=True,
        deadline=None,
    )
    study = open_study(job, 0)
    step = PRUNE_WARMUP_EPOCHS
    for value in (1.0, 2.0, 3.0, 4.0, 5.0):  # five finished trials: pruning starts
        trial = study.ask()
        trial.report(value, step)
        study.tell(trial, value)

    def pruned(value: float) -> bool:
        trial = study.ask()
        trial.report(value, step)
        out = trial.should_prune()
        study.tell(trial, value)
        return out

    assert pruned(1.5)  # below the 25th percentile (2.0)
    assert not pruned(2.5)  # below the median, above the bottom quarter: kept


def test_a_model_whose_every_trial_fails_is_skipped_and_the_others_tune(
    workspace, tmp_path, monkeypatch
) -> None:
    from recpipe.evaluate.leaderboard import split_query_kinds
    from recpipe.tuning import trials
    from recpipe.tuning.study import tune_split

    data = load_split(workspace.features_dir / SPLIT)
    real = trials._validation_value

    def broken_for_sr(model, *args, **kwargs):
        if model.name == "sr":
            raise RuntimeError("sr is broken")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(trials, "_validation_value", broken_for_sr)
    out = tune_split(
        ["sr", "markov"],
        SPLIT,
        data,
        base_options={},
        needed=split_query_kinds(SPLIT),
        metric="recall@20",
        ks=[20],
        budget=Budget(trials=2),
        storage=f"sqlite:///{tmp_path / 'f.db'}",
    )
    assert "no trial finished" in out["sr"]["skipped"] and "sr is broken" in out["sr"]["skipped"]
    assert out["markov"]["trials"] == {"complete": 2}


def test_the_first_trial_always_runs_even_when_setup_spent_the_budget(workspace, tmp_path) -> None:
    data = load_split(workspace.features_dir / SPLIT)
    result = tune_model(
        "sr",
        SPLIT,
        data,
        metric="recall@20",
        ks=[20],
        budget=Budget(trials=None, timeout=1e-6),
        storage=f"sqlite:///{tmp_path / 'd.db'}",
    )
    assert result.trials == {"complete": 1}


def test_past_the_deadline_an_epoch_stops_the_trial_once_one_has_finished(tmp_path) -> None:
    import time

    from recpipe.tuning.trials import _epoch_reporter

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'e.db'}", direction="maximize")
    first = study.ask()
    on_epoch = _epoch_reporter(first, None, deadline=time.time() - 1)
    on_epoch({"epoch": 1, "metrics": {}})  # nothing finished yet: the first one goes on
    study.tell(first, 0.5)
    second = study.ask()
    with pytest.raises(optuna.TrialPruned, match="time budget spent after epoch 2"):
        _epoch_reporter(second, None, deadline=time.time() - 1)({"epoch": 2, "metrics": {}})
    assert second.user_attrs["stopped"] == "time budget spent after epoch 2"
    _epoch_reporter(second, None, deadline=time.time() + 60)({"epoch": 3, "metrics": {}})
