"""The bundle's memory-mapped exact-index vectors (shared by the service's workers): written
when serving builds an exact float32 index, used only when they match the model."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from recpipe.config import ServeParams
from recpipe.serve.bundle import INDEX_FILE, read_index_vectors
from recpipe.serve.predictor import Predictor
from tests.serve.helpers import item_id, make_bundle

SESSIONS = [[item_id(12)], [item_id(4), item_id(30)], [item_id(7), "ghost"], []]


def answers(predictor: Predictor) -> list:
    out = [predictor.recommend_session(items, k=5) for items in SESSIONS]
    out.append(predictor.similar(item_id(9), k=5))
    return [(a.items, a.scores, a.strategy) for a in out]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("index") / "bundle")


def test_the_index_vectors_are_mapped_and_answer_as_a_private_copy(bundle, tmp_path) -> None:
    import shutil

    assert (bundle / INDEX_FILE).is_file()
    mapped = Predictor.from_artifact(bundle)
    assert mapped.index is not None and mapped.index.describe()["memory_map"] is True
    vectors = mapped.policy.unit_vectors
    np.testing.assert_array_equal(read_index_vectors(bundle), vectors.T)
    private_bundle = tmp_path / "private"
    shutil.copytree(bundle, private_bundle)
    (private_bundle / INDEX_FILE).unlink()
    private = Predictor.from_artifact(private_bundle)
    assert private.index.describe()["memory_map"] is False
    assert answers(mapped) == answers(private)


def test_index_vectors_that_do_not_match_the_model_are_ignored(bundle, tmp_path, caplog) -> None:
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    vectors = np.load(tampered / INDEX_FILE)
    np.save(tampered / INDEX_FILE, vectors[:, ::-1].copy())  # same shape, other items
    with caplog.at_level(logging.WARNING):
        predictor = Predictor.from_artifact(tampered)
    assert "do not match" in caplog.text
    assert predictor.index.describe()["memory_map"] is False
    assert answers(predictor) == answers(Predictor.from_artifact(bundle))
    (tampered / INDEX_FILE).write_bytes(b"not an array")
    assert read_index_vectors(tampered) is None  # unreadable: ignored, with a warning


@pytest.mark.parametrize(
    "serve",
    [
        ServeParams(max_k=10, max_session_length=8, quantize="int8"),
        ServeParams(max_k=10, max_session_length=8, ann_min_items=10),
    ],
    ids=["int8", "ann-sized"],
)
def test_no_index_vectors_where_serving_builds_no_float32_exact_index(serve, tmp_path) -> None:
    bundle = make_bundle(tmp_path / "bundle", serve=serve)
    assert not (bundle / INDEX_FILE).exists()
    assert Predictor.from_artifact(bundle).recommend_session([item_id(12)], k=3).items


def test_no_index_vectors_for_a_model_without_item_vectors(tmp_path) -> None:
    bundle = make_bundle(tmp_path / "bundle", name="pop", config={})
    assert not (bundle / INDEX_FILE).exists()
