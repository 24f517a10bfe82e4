"""The packaged champion in Python and on the command line (`recpipe recommend`): the
same predictor the Bento runs, found from the workspace alone."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from recpipe import stages
from recpipe.cli import app
from recpipe.errors import ArtifactError
from recpipe.paths import Paths
from tests.unit.gate_workspace import build_workspace, small_params

pytestmark = pytest.mark.slow

pytest.importorskip("bentoml")

runner = CliRunner()


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """The gate tests' tiny workspace (markov on the session split), packaged."""
    import mlflow

    before = mlflow.get_tracking_uri()
    paths = build_workspace(tmp_path_factory.mktemp("champion-ws"))  # with sessionized events
    params = small_params(paths.root, "gate.registered_model=champion-test")
    stages.gate(params, paths)
    stages.package(params, paths)
    yield paths
    mlflow.set_tracking_uri(before)


def test_load_champion_is_the_packaged_bundles_predictor(packaged: Paths) -> None:
    import bentoml

    from recpipe.serve.champion import champion_bundle, load_champion
    from recpipe.serve.predictor import Predictor

    tag = json.loads(packaged.package_json.read_text())["model_tag"]
    assert str(champion_bundle(packaged.root)) == bentoml.models.get(tag).path
    champion = load_champion(packaged.root)
    reference = Predictor.from_artifact(bentoml.models.get(tag).path)
    got = champion.recommend_session(["i03", "i04"], k=5)
    assert got.strategy == "model" and got == reference.recommend_session(["i03", "i04"], k=5)
    user = champion.recommend("u1", k=5)  # markov answers sessions: the user's fallback
    assert user == reference.recommend("u1", k=5)


def test_recommend_on_the_command_line(packaged: Paths) -> None:
    from recpipe.serve.champion import load_champion

    champion = load_champion(packaged.root)
    root = ["--root", str(packaged.root)]
    result = runner.invoke(
        app, ["recommend", "--session", "i03", "--session", "i04", "-k", "4", *root]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output[result.output.index("{") :])
    assert answer == champion.recommend_session(["i03", "i04"], k=4).model_dump()
    result = runner.invoke(app, ["recommend", "--user", "u2", "-k", "3", *root])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{") :])["items"] == (
        champion.recommend("u2", k=3).items
    )


def test_every_users_top_k_into_a_file_seen_items_excluded(packaged: Paths, tmp_path) -> None:
    from recpipe.serve.champion import load_champion

    out = tmp_path / "topk.parquet"
    result = runner.invoke(
        app,
        ["recommend", "--all-users", "--out", str(out), "-k", "3", "--root", str(packaged.root)],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    champion = load_champion(packaged.root)
    users = [str(u) for u in champion.user_map.ids]
    assert sorted(table["user_id"].unique()) == sorted(users)
    assert list(table.columns) == ["user_id", "rank", "item_id", "score", "strategy"]
    first = table[table["user_id"] == users[0]]
    assert first["item_id"].tolist() == champion.recommend(users[0], k=3).items
    assert first["rank"].tolist() == list(range(1, len(first) + 1))  # (few unseen items left)
    seen = champion.seen
    for user, group in table.groupby("user_id"):  # never an item the user already had
        row = champion._user_index[user]
        had = {str(champion._ids[i]) for i in seen.indices[seen.indptr[row] : seen.indptr[row + 1]]}
        assert not had & set(group["item_id"]), user


def test_clear_errors_without_a_package_or_with_a_bad_request(packaged: Paths, tmp_path) -> None:
    from recpipe.serve.champion import load_champion

    with pytest.raises(ArtifactError, match="has packaged no champion"):
        load_champion(tmp_path)
    result = runner.invoke(app, ["recommend", "--user", "u1", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "packaged no champion" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["recommend", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "give one of" in result.output
    result = runner.invoke(app, ["recommend", "--all-users", "--root", str(packaged.root)])
    assert result.exit_code == 2 and "--out" in result.output
    result = runner.invoke(
        app, ["recommend", "--user", "u1", "-k", "100000", "--root", str(packaged.root)]
    )
    assert result.exit_code == 1 and "k: may be at most" in result.output
