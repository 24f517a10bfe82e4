"""The registry's pyfunc answers as the service: the same requests through
``mlflow.pyfunc.load_model`` of a registered bundle and through the predictor the Bento
runs (``Predictor.from_artifact``) give identical lists, strategies included.

Planted data (tests/contract/planted.py, ids ``i<index>`` / ``u<index>``): users 2-7
like items 4-7, item 12 is always followed by item 13.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recpipe.errors import RequestError
from recpipe.gates.registry import BUNDLE_KEY, Registry
from recpipe.serve.predictor import Predictor
from recpipe.serve.pyfunc import bundle_code
from tests.serve.helpers import item_id, make_bundle, user_id

#: Requests as pyfunc rows: known users (with and without recent items), an unknown
#: user with and without context, sessions of known, unknown and no items.
ROWS: list[dict[str, Any]] = [
    {"user_id": user_id(3), "items": None},
    {"user_id": user_id(9), "items": [item_id(8)]},
    {"user_id": "someone-new", "items": None},
    {"user_id": "someone-new", "items": [item_id(4), item_id(5)]},
    {"user_id": None, "items": [item_id(12)]},
    {"user_id": None, "items": [item_id(4), item_id(5), item_id(6)]},
    {"user_id": None, "items": ["never-seen"]},
    {"user_id": None, "items": []},
]


def _service_answer(predictor: Predictor, row: dict[str, Any], k: int, exclude: bool) -> Any:
    """What POST /recommend or /recommend/session answers for the row."""
    if row["user_id"] is not None:
        context = {"items": row["items"] or []}
        return predictor.recommend(row["user_id"], k=k, exclude_seen=exclude, context=context)
    return predictor.recommend_session(row["items"], k=k, exclude_seen=exclude)


def _register(tmp: Path, name: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """A bundle of a planted model registered as ``name``'s v1: the loaded pyfunc, the
    bundle's predictor, the registry and the version."""
    import mlflow

    bundle = make_bundle(tmp / name / BUNDLE_KEY, name, config)
    registry = Registry(f"sqlite:///{tmp / 'mlflow.db'}", name)
    before = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(registry.tracking_uri)
        if (experiment := mlflow.get_experiment_by_name("pyfunc")) is None:  # files in tmp
            experiment_id = mlflow.create_experiment("pyfunc", (tmp / "mlruns").as_uri())
        else:
            experiment_id = experiment.experiment_id
        with mlflow.start_run(experiment_id=experiment_id):
            version = registry.register(
                bundle / "model",
                {"test": "yes"},
                code=bundle_code(bundle),
                details={"model": name},
            )
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    finally:
        mlflow.set_tracking_uri(before)
    return {
        "pyfunc": model,
        "predictor": Predictor.from_artifact(bundle),
        "registry": registry,
        "version": version,
    }


@pytest.fixture(autouse=True)
def _global_tracking_uri() -> Any:
    """MLflow's global tracking URI as it was (the registry points it at its store)."""
    import mlflow

    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("pyfunc")
    gru = {"layers": [16], "epochs": 3, "n_sample": 0, "seed": 0}
    return {"mf_bpr": _register(tmp, "mf_bpr", None), "gru4rec": _register(tmp, "gru4rec", gru)}


@pytest.mark.parametrize("name", ["mf_bpr", "gru4rec"])
@pytest.mark.parametrize("exclude", [True, False])
def test_pyfunc_and_service_give_identical_answers(registered, name: str, exclude: bool) -> None:
    model, predictor = registered[name]["pyfunc"], registered[name]["predictor"]
    frame = pd.DataFrame(
        {"user_id": [r["user_id"] for r in ROWS], "items": [r["items"] for r in ROWS]}
    )
    out = model.predict(frame, params={"k": 5, "exclude_seen": exclude})
    assert list(out.columns) == ["items", "scores", "strategy", "reason"]
    assert len(out) == len(ROWS)
    strategies = set()
    for i, row in enumerate(ROWS):
        expected = _service_answer(predictor, row, 5, exclude)
        assert list(out["items"][i]) == expected.items, (name, row)
        assert list(out["scores"][i]) == pytest.approx(expected.scores, rel=1e-6)
        assert (out["strategy"][i], out["reason"][i]) == (expected.strategy, expected.reason)
        strategies.add(expected.strategy)
    assert "model" in strategies and len(strategies) >= 2  # the rows take several routes


def test_a_known_user_gets_the_model_without_the_items_they_had(registered) -> None:
    model, predictor = registered["mf_bpr"]["pyfunc"], registered["mf_bpr"]["predictor"]
    user = 3
    seen = predictor.seen.indices[predictor.seen.indptr[user] : predictor.seen.indptr[user + 1]]
    seen_ids = {item_id(i) for i in seen}
    assert seen_ids
    frame = pd.DataFrame({"user_id": [user_id(user)], "items": [[]]})  # the README's request
    out = model.predict(frame, params={"k": 10})
    n_items = predictor.model.meta.n_real_items
    assert out["strategy"][0] == "model" and len(out["items"][0]) == min(10, n_items - len(seen))
    assert not set(out["items"][0]) & seen_ids
    everything = model.predict(frame, params={"k": 10, "exclude_seen": False})
    assert set(everything["items"][0]) & seen_ids  # they would rank high otherwise


def test_limits_and_the_stored_artifact_and_record(registered, tmp_path) -> None:
    from recpipe.models.registry import load_model

    entry = registered["mf_bpr"]
    with pytest.raises(RequestError, match="k: may be at most 10"):
        entry["pyfunc"].predict(pd.DataFrame({"user_id": [user_id(3)]}), params={"k": 11})
    registry, version = entry["registry"], entry["version"]
    # the gate and the package stage read the model inside the bundle
    artifact = registry.download(version, tmp_path)
    assert artifact.parts[-2:] == (BUNDLE_KEY, "model")
    assert load_model(artifact).name == "mf_bpr"
    assert registry.details(version) == {"model": "mf_bpr"}
