"""The model contract, checked for every registered model on a planted data set.

A model joins this suite by registration in ``recpipe.models.registry.MODELS`` alone. Models
that rank by popularity only are listed in ``NON_PERSONALISED`` and checked on the
popular item instead of the sequential / collaborative answers; slow models may get
lighter settings in ``CONTRACT_CONFIGS``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recpipe.errors import ArtifactError, ConfigError
from recpipe.features.idmap import N_RESERVED
from recpipe.models.base import NotFittedError, Recommender
from recpipe.models.data import QUERY_KINDS, Queries
from recpipe.models.registry import MODELS, build_model, get_model, load_model
from tests.contract.planted import (
    BLOCK_B,
    HELD_OUT_ITEM,
    HELD_OUT_USER,
    N_ITEMS,
    POPULAR,
    A,
    B,
    planted,
)

MODEL_NAMES = sorted(MODELS)
#: Models that give everyone the same ranking: their planted answer is the popular item.
#: ``bias`` predicts ratings, and every planted value is 1.0: all its biases are 0 and
#: every item ties at the global mean, so it cannot find the block-mates' item. Its
#: all-tie ranking passes the popular-item check only because argmax breaks ties
#: towards the lowest index, which is POPULAR (2); it is checked properly in
#: tests/unit/test_rating.py. The planted data has no item categories and one context
#: (every event at hour 0 of the same weekday, one event type): there ``category_pop`` is
#: plain popularity and ``context_pop`` global popularity (checked in
#: tests/unit/test_cold_baselines.py on data with categories and contexts).
NON_PERSONALISED = {"pop", "recent_pop", "bias", "category_pop", "context_pop"}
#: Rating regressors: every planted value is 1.0, so the planted ranking is noise for
#: them; their ranking of held-out ratings is checked in tests/unit/test_mf.py.
RATING_ONLY = {"mf_explicit"}
#: Settings that keep a model's fit within the suite's time budget (defaults otherwise).
CONTRACT_CONFIGS: dict[str, dict] = {
    # POPULAR is in every session that holds A, exactly as often as B: plain V-SKNN ties
    # them (and the popularity prior then picks POPULAR); the IDF item weighting breaks it.
    # A is always followed by B; with remind, A (in every neighbour) would tie with B.
    "sknn": {"idf_weighting": 1.0, "remind": False},
    "stan": {"idf_weighting": 1.0, "remind": False},
    # 12 users and 48 sessions: 64 factors memorise the matrix (unseen items score 0);
    # a low rank makes the factorisations generalise to the held-out item.
    "als": {"factors": 4, "regularization": 0.1},
    # the planted sequential answer (A then B) lives in sessions; user histories hold
    # POPULAR with A as often as B
    "ease": {"context": "session"},
    "rp3beta": {"context": "session"},
    "bpr": {"factors": 2, "learning_rate": 0.05, "iterations": 200},
    # ~70 planted positives make one default batch an epoch: smaller batches and a higher
    # rate give the CTR models enough steps to learn the block structure
    "wide_deep": {
        "epochs": 25,
        "batch_size": 32,
        "learning_rate": 0.01,
        "embedding_dim": 16,
        "hidden": [32],
        "n_cross_buckets": 1024,
    },
    "deepfm": {
        "epochs": 25,
        "batch_size": 32,
        "learning_rate": 0.01,
        "embedding_dim": 16,
        "hidden": [32],
    },
    # 16 real items: validation Recall@20 is 1.0 from the first epoch on, so early
    # stopping keeps epoch 1; fewer lanes give that epoch enough steps (~25)
    "gru4rec": {"batch_size": 8, "epochs": 2},
    "gru4rec_ctx": {"batch_size": 8, "epochs": 2},
    # POPULAR, A and B are seen by every user, so the user-item factors cannot tell them
    # apart: warm items are scored by their factors as predicted from the planted
    # content (shared by A and B), which is what the model is for. The MF early-stops on
    # a validation Recall@20 of 1.0 from the first epoch on (16 real items), which keeps
    # untrained factors: fit it without early stopping.
    "content2cf": {
        "warm_items": "predicted",
        "factors_config": {"factors": 8, "epochs": 30, "learning_rate": 0.05},
        "factors_early_stopping": False,
        "epochs": 30,
        "learning_rate": 0.01,
        "hidden": [16],
    },
    # ~400 co-occurring pairs: smaller batches give enough steps; a prefix weighs its last
    # item most (decay 0.5), so [POPULAR, 5, A] is answered by A's partner B
    "content2vec": {
        "epochs": 10,
        "batch_size": 64,
        "decay": 0.5,
        "temperature": 0.3,
        "id_dim": 8,
        "dim": 16,
    },
}


def make(name: str, meta) -> Recommender:
    return build_model(name, CONTRACT_CONFIGS.get(name, {}), meta)


def queries(kind: str) -> Queries:
    """A few queries of each kind, edge cases included (an empty prefix, an unseen item)."""
    if kind == "user":
        return Queries.for_users([HELD_OUT_USER, 9, 1])  # 1 = UNK user
    if kind == "item":
        return Queries.for_items([A, 4, POPULAR, 15])  # 15 never occurs in train
    return Queries.from_item_lists([[A], [POPULAR, 5, A], [9, 10], [], [1, 16]], max_len=4)


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module", params=MODEL_NAMES)
def fitted(request, data) -> Recommender:
    train, valid, meta = data
    return make(request.param, meta).fit(train, valid)


# ---------------------------------------------------------------------- registry, config
def test_registry_names_match_classes():
    for name, cls in MODELS.items():
        assert cls.name == name
        assert get_model(name) is cls
        cls.check_contract()


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'nope'; known: \[") as info:
        get_model("nope")
    for name in MODEL_NAMES:
        assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope", {}, planted()[2])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_defaults_and_unknown_keys(name, data):
    cls = get_model(name)
    assert cls.Config().seed == 0  # every option has a default
    with pytest.raises(ConfigError, match="no_such_option") as info:
        build_model(name, {"no_such_option": 1}, data[2])
    assert name in str(info.value)
    with pytest.raises(ConfigError, match="seed"):
        build_model(name, {"seed": "not a number"}, data[2])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_unfitted_model_refuses_to_score_or_save(name, data, tmp_path):
    model = make(name, data[2])
    assert not model.is_fitted
    kind = sorted(model.query_kinds)[0]
    with pytest.raises(NotFittedError, match="not fitted"):
        model.score(queries(kind))
    with pytest.raises(NotFittedError):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------- scoring
def test_fit_returns_self(data):
    train, valid, meta = data
    for name in MODEL_NAMES:
        model = make(name, meta)
        assert model.fit(train, valid) is model
        assert model.is_fitted


def test_score_shape_reserved_and_finite(fitted):
    for kind in sorted(fitted.query_kinds):
        q = queries(kind)
        scores = fitted.score(q)
        assert scores.shape == (len(q), N_ITEMS)
        assert scores.dtype == np.float32
        assert np.all(scores[:, :N_RESERVED] == -np.inf)
        assert np.all(np.isfinite(scores[:, N_RESERVED:]))


def test_candidates_gather_the_full_scores(fitted):
    rng = np.random.default_rng(0)
    for kind in sorted(fitted.query_kinds):
        q = queries(kind)
        full = fitted.score(q)
        cand = rng.integers(0, N_ITEMS, size=(len(q), 7))
        cand[:, 0] = 1  # a reserved slot
        got = fitted.score(q, cand)
        assert got.shape == cand.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got, np.take_along_axis(full, cand, axis=1))
        assert np.all(got[:, 0] == -np.inf)
        shared = np.array([A, B, 0])
        np.testing.assert_array_equal(fitted.score(q, shared), full[:, shared])
        with pytest.raises(ValueError, match="candidates"):
            fitted.score(q, np.array([N_ITEMS]))
        with pytest.raises(ValueError, match="candidates"):
            fitted.score(q, cand[:1])


def test_scores_are_fresh_arrays(fitted):
    for kind in sorted(fitted.query_kinds):
        q = queries(kind)
        first = fitted.score(q)
        expected = first.copy()
        first[:] = 123.0  # the caller owns the result
        np.testing.assert_array_equal(fitted.score(q), expected)


def test_unsupported_query_kinds_raise(fitted):
    for kind in sorted(QUERY_KINDS - fitted.query_kinds):
        with pytest.raises(ValueError, match="supports") as info:
            fitted.score(queries(kind))
        for supported in fitted.query_kinds:
            assert repr(supported) in str(info.value)


def test_out_of_range_queries_raise(fitted):
    for kind in sorted(fitted.query_kinds):
        bad = {
            "user": Queries.for_users([fitted.meta.n_users]),
            "item": Queries.for_items([N_ITEMS]),
            "session": Queries.from_item_lists([[2, N_ITEMS + 3]]),
        }[kind]
        with pytest.raises(ValueError, match=r"must lie in \[0, "):
            fitted.score(bad)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_scores(name, data):
    train, valid, meta = data
    first = make(name, meta).fit(train, valid)
    second = make(name, meta).fit(train, valid)
    for kind in sorted(first.query_kinds):
        np.testing.assert_array_equal(first.score(queries(kind)), second.score(queries(kind)))


# ---------------------------------------------------------------------- planted answers
def test_planted_answer_ranks_first(fitted, data):
    train = data[0]
    kinds = fitted.query_kinds
    if fitted.name in RATING_ONLY:
        pytest.skip(f"{fitted.name} regresses ratings; checked on ratings in tests/unit/test_mf.py")
    if fitted.name in NON_PERSONALISED:
        for kind in sorted(kinds):
            top = fitted.score(queries(kind)).argmax(axis=1)
            assert np.all(top == POPULAR), (kind, top)
        return
    if "session" in kinds:
        scores = fitted.score(Queries.from_item_lists([[A], [POPULAR, 5, A]]))
        assert scores.argmax(axis=1).tolist() == [B, B]
    if "item" in kinds:
        assert fitted.score(Queries.for_items([A])).argmax(axis=1).tolist() == [B]
    if "user" in kinds:
        # among the items the user has not seen, the one their block-mates like wins
        scores = fitted.score(Queries.for_users([HELD_OUT_USER]))[0]
        seen = train.item_idx[train.user_idx == HELD_OUT_USER]
        scores[seen] = -np.inf
        assert scores.argmax() == HELD_OUT_ITEM
        assert scores[HELD_OUT_ITEM] > scores[list(BLOCK_B)].max()


# ---------------------------------------------------------------------- artifacts
def test_save_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "artifact")
    assert (path / "meta.json").is_file() and (path / "config.json").is_file()
    meta = json.loads((path / "meta.json").read_text())
    assert meta["model"] == fitted.name
    assert meta["data"] == {"split": "planted", "n_items": N_ITEMS, "n_users": 14}
    assert {"recpipe_version", "created_at"} <= set(meta)

    for load in (load_model, type(fitted).load):
        loaded = load(path)
        assert type(loaded) is type(fitted)
        assert loaded.is_fitted
        assert loaded.config == fitted.config
        np.testing.assert_array_equal(loaded.meta.item_counts, fitted.meta.item_counts)
        for kind in sorted(fitted.query_kinds):
            q = queries(kind)
            np.testing.assert_array_equal(loaded.score(q), fitted.score(q))
    # saving again replaces the artifact and leaves no temporary folder behind
    fitted.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def _corrupt_state(path: Path) -> None:
    for f in path.rglob("*"):  # item_content/ of content models included
        if f.is_file() and f.suffix not in {".json", ".parquet"} and f.name != "data.npz":
            f.write_bytes(b"this is not the state file")


def _drop_state(path: Path) -> None:
    for f in path.iterdir():
        if f.is_dir():  # item_content/ of content models
            shutil.rmtree(f)
        elif f.name not in {"meta.json", "config.json", "data.npz"}:
            f.unlink()


def _edit_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


CORRUPTIONS = {
    "no directory": lambda p: shutil.rmtree(p),
    "no meta.json": lambda p: (p / "meta.json").unlink(),
    "meta.json not JSON": lambda p: (p / "meta.json").write_text("{not json"),
    "foreign format": lambda p: _edit_meta(p, format="something.else"),
    "newer format version": lambda p: _edit_meta(p, format_version=99),
    "unknown model": lambda p: _edit_meta(p, model="no_such_model"),
    "bad config key": lambda p: (p / "config.json").write_text('{"no_such_option": 1}'),
    "state file missing": _drop_state,
    "state file garbage": _corrupt_state,
    "counts missing": lambda p: (p / "data.npz").unlink(),
    "sizes disagree": lambda p: _edit_meta(p, data={"split": "x", "n_items": 99, "n_users": 14}),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_broken_artifact_raises_artifact_error(fitted, tmp_path, corruption):
    path = fitted.save(tmp_path / "artifact")
    CORRUPTIONS[corruption](path)
    for load in (load_model, type(fitted).load):
        with pytest.raises(ArtifactError):
            load(path)


def test_loading_as_another_model_class_fails(fitted, tmp_path):
    path = fitted.save(tmp_path / "artifact")
    others = [cls for cls in MODELS.values() if not issubclass(type(fitted), cls)]
    for cls in others:
        with pytest.raises(ArtifactError, match=f"holds a '{fitted.name}' model"):
            cls.load(path)


def test_save_never_replaces_a_foreign_directory(fitted, tmp_path):
    target = tmp_path / "not_an_artifact"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="refusing"):
        fitted.save(target)
    assert (target / "notes.txt").read_text() == "keep me"
