"""Content models for cold start: content tensors, the tower, MF factors, content2cf and
content2vec on a planted data set whose held-out items are known by their content alone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recpipe.errors import ArtifactError, ConfigError
from recpipe.features.content import ContentEncoder, ItemContent, align
from recpipe.features.idmap import N_RESERVED, PAD, UNK, IdMap
from recpipe.models.content import (
    ContentColumns,
    ContentTower,
    MissingContentError,
    content_tensors,
    usable_rows,
)
from recpipe.models.content2vec import cooccurring_pairs
from recpipe.models.data import DataMeta, Queries
from recpipe.models.registry import build_model, load_model
from tests.contract.planted import interactions, planted

MODELS = ("content2cf", "content2vec")

# ---------------------------------------------------------------------- planted groups
K, PER_GROUP, HELD_OUT_PER_GROUP, USERS_PER_GROUP = 3, 8, 2, 8
N_ITEMS = N_RESERVED + K * PER_GROUP
NO_EVENTS_USER = N_RESERVED + K * USERS_PER_GROUP  # a user index without events
N_USERS = NO_EVENTS_USER + 1
WORDS = (("red", "apple"), ("blue", "whale"), ("green", "tractor"))

FAST = {
    "content2cf": {
        "factors_config": {"factors": 8, "epochs": 30, "learning_rate": 0.05},
        "factors_early_stopping": False,
        "epochs": 40,
        "learning_rate": 0.01,
        "hidden": [16],
    },
    "content2vec": {
        "epochs": 10,
        "batch_size": 64,
        "temperature": 0.3,
        "id_dim": 8,
        "dim": 16,
    },
}


def group_items(g: int) -> np.ndarray:
    """(PER_GROUP,) item indices of group g; the last HELD_OUT_PER_GROUP are held out."""
    return N_RESERVED + g * PER_GROUP + np.arange(PER_GROUP)


def held_out(g: int) -> np.ndarray:
    return group_items(g)[-HELD_OUT_PER_GROUP:]


def group_users(g: int) -> np.ndarray:
    return N_RESERVED + g * USERS_PER_GROUP + np.arange(USERS_PER_GROUP)


def items_frame(items: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """An items table: each group its category, two words, a price range; one word per item."""
    return pd.DataFrame(
        {
            "item_id": [str(i) for i in items],
            "categories": [[f"group{g}"] for g in groups],
            "title": [
                f"{WORDS[g][0]} {WORDS[g][1]} model{i}" for i, g in zip(items, groups, strict=True)
            ],
            "price": [10.0 * (g + 1) + rng.normal() for g in groups],
        }
    )


def grouped(seed: int = 0):
    """(train, valid, meta): users stay in their group; held-out items never occur."""
    rng = np.random.default_rng(seed)

    def sessions(per_user: int):
        out, users = [], []
        for _ in range(per_user):
            for g in range(K):
                warm = group_items(g)[:-HELD_OUT_PER_GROUP]
                for u in group_users(g):
                    out.append(rng.choice(warm, size=4, replace=False).tolist())
                    users.append(int(u))
        return out, users

    train_s, train_u = sessions(4)
    valid_s, valid_u = sessions(1)
    train = interactions(train_s, users=train_u)
    t0 = int(train.timestamp.max()) + 3_600 * 10**9
    valid = interactions(
        valid_s, users=valid_u, start_ns=[t0 + s * 10**12 for s in range(len(valid_s))]
    )
    meta = DataMeta.from_interactions(train, n_items=N_ITEMS, n_users=N_USERS, split="grouped")
    all_items = np.arange(N_RESERVED, N_ITEMS)
    frame = items_frame(all_items, (all_items - N_RESERVED) // PER_GROUP, rng)
    encoder = ContentEncoder(text_buckets=512, word_ngrams=(1,), char_ngrams=()).fit(frame)
    idmap = IdMap(
        ids=np.array([str(i) for i in all_items], dtype=object),
        id_counts=meta.item_counts[N_RESERVED:],
    )
    content = align(encoder.transform(frame), idmap)
    meta = DataMeta(
        n_items=N_ITEMS,
        n_users=N_USERS,
        item_counts=meta.item_counts,
        split="grouped",
        item_content=content,
        item_encoder=encoder,
    )
    return train, valid, meta


@pytest.fixture(scope="module")
def data():
    return grouped()


@pytest.fixture(scope="module", params=MODELS)
def fitted(request, data):
    train, valid, meta = data
    return build_model(request.param, FAST[request.param], meta).fit(train, valid)


# ---------------------------------------------------------------------- tensors, tower
def small_content() -> ItemContent:
    cats = np.array([[0, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    text = np.array([[0, 0, 0, 0], [2, 0, 0, 1], [0, 0, 0, 0], [0, 3, 1, 0]], dtype=np.float32)
    return ItemContent(
        item_ids=np.array([None, "a", "b", "c"], dtype=object),
        categories=sp.csr_matrix(cats),
        text=sp.csr_matrix(text),
        numeric=np.array([[0, 0], [0.5, 0], [-1, 0], [0, 1]], dtype=np.float32),
        numeric_names=["price", "price_missing"],
    )


def test_content_tensors_by_hand():
    content = small_content()
    batch = content_tensors(content, np.array([3, 0, 1]))
    cats = batch.categories
    assert cats.indices.tolist() == [2, 1, 2]  # row 3: {2}; row 0: {}; row 1: {1, 2}
    assert cats.offsets.tolist() == [0, 1, 1]
    np.testing.assert_allclose(cats.weights.numpy(), [1.0, 0.5, 0.5])
    text = batch.text
    assert text.indices.tolist() == [1, 2, 0, 3]
    assert text.offsets.tolist() == [0, 2, 2]
    w3 = np.log1p([3.0, 1.0]) / np.log1p([3.0, 1.0]).sum()
    w1 = np.log1p([2.0, 1.0]) / np.log1p([2.0, 1.0]).sum()
    np.testing.assert_allclose(text.weights.numpy(), [*w3, *w1], rtol=1e-6)
    np.testing.assert_array_equal(batch.numeric.numpy(), content.numeric[[3, 0, 1]])
    assert batch.n_rows == 3


def test_content_columns_keep_the_training_items_columns():
    content = small_content()
    cols = ContentColumns.fit(content, np.array([1]), numeric=False)
    assert cols.categories.tolist() == [1, 2] and cols.text.tolist() == [0, 3]
    assert cols.n_numeric == 0
    batch = content_tensors(content, np.array([2, 3]), columns=cols)
    # row 2's category 0 and row 3's text columns 1, 2 are not read
    assert batch.categories.indices.tolist() == [1] and batch.categories.offsets.tolist() == [0, 0]
    assert batch.text.indices.tolist() == [] and batch.numeric is None
    np.testing.assert_array_equal(usable_rows(content, cols), [False, True, False, True])
    np.testing.assert_array_equal(usable_rows(content), [False, True, True, True])
    again = ContentColumns.from_arrays(cols.to_arrays())
    assert again.categories.tolist() == [1, 2] and again.text_width == 4
    with pytest.raises(ValueError, match="widths"):
        cols.check(
            ItemContent(
                item_ids=np.array(["x"], dtype=object),
                categories=sp.csr_matrix((1, 5), dtype=np.float32),
                text=sp.csr_matrix((1, 4), dtype=np.float32),
                numeric=np.zeros((1, 0), dtype=np.float32),
            )
        )


def test_content_tower_shapes_and_mean_pooling():
    torch.manual_seed(0)
    content = small_content()
    tower = ContentTower(3, 4, 2, out_dim=5, hidden=[7], category_dim=3, text_dim=4)
    batch = content_tensors(content, np.array([0, 1, 2, 3]))
    assert tower(batch).shape == (4, 5)
    feats = tower.features(batch)
    assert feats.shape == (4, 3 + 4 + 16) and tower.in_dim == 23
    table = tower.categories.weight
    torch.testing.assert_close(feats[1, :3], (table[1] + table[2]) / 2)
    torch.testing.assert_close(feats[0, :7], torch.zeros(7))  # empty rows pool to zeros
    with_id = ContentTower(3, 0, 0, out_dim=2, hidden=[], extra_dim=6)
    only_cats = content_tensors(
        content,
        np.array([1, 2]),
        columns=ContentColumns.fit(content, np.array([1, 2]), text=False, numeric=False),
    )
    assert with_id(only_cats, torch.zeros(2, 6)).shape == (2, 2)
    with pytest.raises(ValueError, match="extra"):
        with_id(only_cats)
    with pytest.raises(ValueError, match="at least one"):
        ContentTower(0, 0, 0, out_dim=2)


def test_mf_factors_reproduce_the_scores():
    train, valid, meta = planted()
    for name in ("mf_wals", "mf_bpr"):
        model = build_model(name, {"epochs": 2, "factors": 4}, meta).fit(train, valid)
        users, items = model.factors()
        assert users.shape == (meta.n_users, 6) and items.shape == (meta.n_items, 6)
        every = np.arange(N_RESERVED, meta.n_users)
        scores = model.score(Queries.for_users(every))[:, N_RESERVED:]
        np.testing.assert_allclose(users[every] @ items[N_RESERVED:].T, scores, atol=1e-5)
        # without the last column the scores move by a per-user constant only
        short = users[every, :-1] @ items[N_RESERVED:, :-1].T
        diff = scores - short
        np.testing.assert_allclose(diff, diff[:, :1].repeat(diff.shape[1], 1), atol=1e-5)


def test_cooccurring_pairs_by_hand():
    data = interactions([[2, 3, 4, 1, 5], [6, 6, 7]])
    a, b = cooccurring_pairs(data, window=2)
    pairs = sorted(zip(a.tolist(), b.tolist(), strict=True))
    # UNK (1) and self pairs are left out (4 and 5 stay 2 apart), sessions are not crossed
    assert pairs == [(2, 3), (2, 4), (3, 4), (4, 5), (6, 7), (6, 7)]


# ---------------------------------------------------------------------- content in DataMeta
def test_meta_checks_the_content_shape():
    _, _, meta = grouped()
    with pytest.raises(ValueError, match="one row per item index"):
        DataMeta(
            n_items=N_ITEMS + 1,
            n_users=3,
            item_counts=np.zeros(N_ITEMS + 1),
            item_content=meta.item_content,
        )
    other = ContentEncoder(text_buckets=64, word_ngrams=(1,), char_ngrams=()).fit(
        pd.DataFrame({"item_id": ["x"], "title": ["x"]})
    )
    with pytest.raises(ValueError, match="does not match item_encoder"):
        DataMeta(
            n_items=N_ITEMS,
            n_users=3,
            item_counts=np.zeros(N_ITEMS),
            item_content=meta.item_content,
            item_encoder=other,
        )


def test_meta_from_features_reads_content(tmp_path):
    items = IdMap.fit(pd.Series(["b", "a", "b"]))  # b -> 2, a -> 3
    split = tmp_path / "features" / "session"
    split.mkdir(parents=True)
    items.save(split / "item_map.parquet")
    IdMap.fit(pd.Series(["u"])).save(split / "user_map.parquet")
    (split / "meta.json").write_text(json.dumps({"split": "session", "n_items": 4, "n_users": 3}))
    table = pd.DataFrame(
        {
            "item_id": ["a", "b", "zzz"],
            "categories": [["x"], ["y"], ["x"]],
            "title": ["an apple", "a boat", "a car"],
        }
    )
    enc = ContentEncoder(text_buckets=64, word_ngrams=(1,), char_ngrams=()).fit(table)
    enc.save(tmp_path / "features" / "content" / "item_encoder")
    enc.transform(table).save(tmp_path / "features" / "content" / "items")
    meta = DataMeta.from_features(split)
    assert len(meta.item_content) == 4 and meta.item_encoder is not None
    assert meta.item_content.item_ids.tolist() == [None, None, "b", "a"]  # aligned to the map
    np.testing.assert_array_equal(
        meta.item_content.categories.toarray(), meta.item_categories.toarray()
    )
    assert meta.item_encoder.category_vocab == enc.category_vocab


def test_models_need_content():
    train, _, meta = grouped()
    bare = DataMeta.from_interactions(train, n_items=N_ITEMS, n_users=N_USERS)
    for name in MODELS:
        with pytest.raises(MissingContentError, match=f"{name} needs item content") as info:
            build_model(name, {}, bare)
        assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
        off = {"use_categories": False, "use_text": False, "use_numeric": False}
        with pytest.raises(MissingContentError, match="needs item content"):
            build_model(name, off, meta)
    with pytest.raises(ConfigError, match="no_such_option"):
        build_model("content2cf", {"factors_config": {"no_such_option": 1}}, meta)
    with pytest.raises(ConfigError, match="residual"):
        build_model("content2vec", {"residual": True}, meta)


# ---------------------------------------------------------------------- planted cold start
def test_held_out_items_have_their_group_mates_as_neighbours(fitted):
    for g in range(K):
        mates = set(group_items(g).tolist())
        scores = fitted.score(Queries.for_items(held_out(g)))
        top = np.argsort(-scores, axis=1)[:, : PER_GROUP - 1]
        share = np.isin(top, list(mates)).mean()
        assert share >= 0.8, (fitted.name, g, top)


def test_users_rank_their_groups_held_out_items_first(fitted):
    cold = np.concatenate([held_out(g) for g in range(K)])
    for g in range(K):
        scores = fitted.score(Queries.for_users(group_users(g)), cold)
        mine = np.isin(cold, held_out(g))
        assert np.all(scores[:, mine].min(axis=1) > scores[:, ~mine].max(axis=1)), fitted.name


def test_cold_items_get_vectors_and_new_items_embed_alike(fitted, data):
    _, _, meta = data
    vectors = fitted.item_vectors()
    assert vectors.shape[0] == N_ITEMS
    assert np.all(np.linalg.norm(vectors[N_RESERVED:], axis=1) > 0)
    assert np.all(vectors[:N_RESERVED] == 0)
    # a brand-new item of group 1, encoded by the meta's encoder, lands near group 1
    new = meta.item_encoder.transform(
        items_frame(np.array([999]), np.array([1]), np.random.default_rng(1))
    )
    emb = fitted.embed_content(new)[0]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
    sims = unit[N_RESERVED:] @ (emb / np.linalg.norm(emb))
    best = N_RESERVED + np.argsort(-sims)[:PER_GROUP]
    assert np.isin(best, group_items(1)).mean() >= 0.75
    nothing = meta.item_content  # rows of items without content are all zeros
    np.testing.assert_array_equal(fitted.embed_content(nothing)[:N_RESERVED], 0.0)
    with pytest.raises(ValueError, match="item_encoder"):
        fitted.embed_content(small_content())


def test_unknown_ids_fall_back_to_popularity(fitted, data):
    _, _, meta = data
    pop_order = meta.item_counts[N_RESERVED:]
    queries = [
        Queries.for_users([UNK, NO_EVENTS_USER]),
        Queries.for_items([UNK, PAD]),
        Queries.from_item_lists([[], [UNK], [PAD, UNK]], max_len=3),
    ]
    for q in queries:
        scores = fitted.score(q)
        assert np.all(np.isfinite(scores[:, N_RESERVED:]))
        for row in scores[:, N_RESERVED:]:
            # the popularity order: a more popular item never scores lower
            order = np.argsort(-pop_order, kind="stable")
            assert np.all(np.diff(row[order]) <= 1e-7)


def test_artifact_round_trip(fitted, data, tmp_path):
    path = fitted.save(tmp_path / "model")
    files = json.loads((path / "meta.json").read_text())["files"]
    assert "item_content/item_content.npz" in files
    assert "item_encoder/item_encoder.json" in files
    loaded = load_model(path)
    assert loaded.meta.item_encoder is not None
    np.testing.assert_array_equal(
        loaded.meta.item_content.text.toarray(), fitted.meta.item_content.text.toarray()
    )
    for q in (
        Queries.for_users(np.arange(N_USERS)),
        Queries.for_items(np.arange(N_ITEMS)),
        Queries.from_item_lists([[2, 3], [], [held_out(0)[0]]]),
    ):
        np.testing.assert_array_equal(loaded.score(q), fitted.score(q))
    content = data[2].item_content
    np.testing.assert_allclose(loaded.embed_content(content), fitted.embed_content(content))
    # a corrupt content file is an artifact error
    (path / "item_content" / "item_content.npz").write_bytes(b"garbage")
    with pytest.raises(ArtifactError):
        load_model(path)


def test_other_models_artifacts_carry_no_content(data, tmp_path):
    train, valid, meta = data
    path = build_model("pop", {}, meta).fit(train, valid).save(tmp_path / "pop")
    assert not (path / "item_content").exists() and not (path / "item_encoder").exists()
    assert load_model(path).meta.item_content is None


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("content2cf", {"loss": "cosine", "warm_items": "predicted", "factors_model": "mf_bpr"}),
        ("content2vec", {"hidden": [8], "residual": True, "similarity": "dot", "id_dim": 0}),
        ("content2vec", {"use_categories": False, "use_numeric": False, "remind": True}),
    ],
)
def test_other_options_fit_and_score(name, options, data):
    train, valid, meta = data
    config = {**FAST[name], "epochs": 3, **options}
    if name == "content2cf":
        config["factors_config"] = {"factors": 4, "epochs": 3}
    model = build_model(name, config, meta).fit(train, valid)
    for q in (
        Queries.for_users([2, UNK]),
        Queries.for_items([2, 3]),
        Queries.for_sessions(np.array([[2, 3]])),
    ):
        scores = model.score(q)
        assert np.all(np.isfinite(scores[:, N_RESERVED:]))
    if options.get("remind"):  # the prefix's items are not pushed down
        assert model.score(Queries.for_items([2]))[0, 2] > -1.0
    else:
        assert model.score(Queries.for_items([2]))[0, 2] == pytest.approx(-2.0, abs=1e-3)
    if name == "content2cf":
        assert set(np.unique(model.item_sources()[N_RESERVED:])) == {2}  # all predicted


def test_content2vec_keeps_each_users_last_items_in_time_order(data):
    train, valid, meta = data
    model = build_model("content2vec", {**FAST["content2vec"], "epochs": 1, "history": 3}, meta)
    model.fit(train, valid)
    for user in (2, 9, NO_EVENTS_USER):
        mine = train.user_idx == user
        expected = train.item_idx[mine][np.argsort(train.timestamp[mine], kind="stable")][-3:]
        start, end = model._history_indptr[user], model._history_indptr[user + 1]
        np.testing.assert_array_equal(model._history_items[start:end], expected)
