"""Model names and options in params are checked against the registry when params load,
before any stage runs, with the key's full path and the allowed keys."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from recpipe.cli import app
from recpipe.errors import ConfigError
from recpipe.paths import Paths
from recpipe.pipeline import check_models, workspace_params


def test_a_misspelt_option_names_its_path_and_the_allowed_keys(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        workspace_params(Paths.at(tmp_path), None, ["train.model_configs.gru4rec.hiden_size=32"])
    message = str(info.value)
    assert "train.model_configs.gru4rec.hiden_size: unknown option of model 'gru4rec'" in message
    assert "'layers'" in message and "'dropout_hidden'" in message  # the allowed keys


def test_bad_values_and_unknown_models_are_all_reported(tmp_path) -> None:
    overrides = [
        "train.model_configs.mf_bpr.factors=-3",
        "train.candidates=[mf_bpr, nosuch]",
        "evaluate.models=[pop, foo]",
        "evaluate.model_configs.als.factorz=8",
    ]
    with pytest.raises(ConfigError) as info:
        workspace_params(Paths.at(tmp_path), None, overrides)
    message = str(info.value)
    assert "train.model_configs.mf_bpr.factors:" in message and "-3" in message
    assert "train.candidates: unknown model 'nosuch'" in message
    assert "evaluate.models: unknown model 'foo'" in message
    assert "evaluate.model_configs.als.factorz: unknown option of model 'als'" in message


def test_the_defaults_and_params_yaml_pass() -> None:
    from recpipe.config import load_params

    check_models(load_params(None))
    root = Paths.at(__import__("pathlib").Path(__file__).resolve().parents[2])
    workspace_params(root)


@pytest.mark.parametrize("command", [["run"], ["stage", "ingest"]])
def test_the_cli_fails_before_ingest(tmp_path, command) -> None:
    result = CliRunner().invoke(
        app,
        [*command, "--root", str(tmp_path), "--set", "train.model_configs.gru4rec.hiden_size=32"],
    )
    assert result.exit_code == 2  # the CLI's exit status for bad params
    assert "train.model_configs.gru4rec.hiden_size" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "data").exists()  # no stage ran


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("evaluate.ks=[]", "ks must list cut-offs of 1 or more"),
        ("evaluate.ks=[0, 20]", "ks must list cut-offs of 1 or more"),
        ("gate.metric=foo@20", "gate.metric must be metric@K with metric one of"),
        ("evaluate.primary_metric=recall@50", "needs K=50 among evaluate.ks [5, 10, 20]"),
        ("gate.metric=ndcg", "gate.metric must be metric@K"),
    ],
)
def test_cut_offs_and_metrics_are_checked_when_params_load(override, message) -> None:
    from recpipe.config import load_params

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_params(None, [override])


def test_the_metric_names_params_accept_are_the_ranking_metrics() -> None:
    from recpipe.config import RANKING_METRICS, load_params
    from recpipe.evaluate.metrics import NEXT_ITEM_METRICS, TOPK_METRICS

    assert set(RANKING_METRICS) == set(NEXT_ITEM_METRICS) | set(TOPK_METRICS)
    assert load_params(None, ["gate.metric=ndcg@10"]).gate.metric == "ndcg@10"
