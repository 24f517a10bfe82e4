"""Item and user content encoders on synthetic tables: vocabularies, hashing, cold start."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recpipe.config import FeaturesParams, SynthParams
from recpipe.data.synth import generate
from recpipe.errors import ArtifactError, RecpipeError
from recpipe.features.content import (
    DEFAULT_USER_BUCKET_EDGES,
    ContentEncoder,
    ItemContent,
    UserContent,
    UserEncoder,
    align,
    fit_vocab,
)
from recpipe.features.hashing import hash_texts
from recpipe.features.idmap import N_RESERVED, IdMap

PARAMS = FeaturesParams(text_buckets=1 << 12, word_ngrams=[1, 2], char_ngrams=[3], hash_seed=5)


@pytest.fixture(scope="module")
def tables():
    return generate(SynthParams(n_users=50, n_items=40, n_sessions=200))


@pytest.fixture(scope="module")
def encoder(tables):
    return ContentEncoder.from_params(PARAMS).fit(tables.items)


def _dense(m) -> np.ndarray:
    return m.toarray()


def test_from_params_copies_hashing_settings():
    enc = ContentEncoder.from_params(PARAMS)
    assert (enc.text_buckets, enc.word_ngrams, enc.char_ngrams, enc.hash_seed) == (
        1 << 12,
        (1, 2),
        (3,),
        5,
    )
    assert not enc.is_fitted
    with pytest.raises(RecpipeError, match="not fitted"):
        enc.transform(pd.DataFrame({"item_id": ["a"]}))
    assert ContentEncoder.from_params().text_buckets == FeaturesParams().text_buckets


def test_fit_vocab_orders_by_count_then_name():
    assert fit_vocab(pd.Series(["b", "a", "c", "a", None, "b", "a"])) == ["a", "b", "c"]
    assert fit_vocab(pd.Series(["b", "a", "a"]), min_count=2) == ["a"]


def test_categories_multi_hot(tables, encoder):
    items = tables.items
    content = encoder.transform(items)
    assert isinstance(content, ItemContent) and len(content) == len(items)
    assert content.item_ids.tolist() == items["item_id"].tolist()
    cats = encoder.category_vocab
    assert set(cats) == {c for cell in items["categories"] for c in cell}
    assert content.categories.shape == (len(items), len(cats) + 1)
    assert content.categories.dtype == np.float32
    dense = _dense(content.categories)
    for row, cell in enumerate(items["categories"]):
        expected = np.zeros(len(cats) + 1)
        expected[[cats.index(c) + 1 for c in cell]] = 1.0
        assert np.array_equal(dense[row], expected)
    assert dense[:, 0].sum() == 0  # every category is known at fit time


def test_text_is_hashed_title_plus_text(tables, encoder):
    items = tables.items
    content = encoder.transform(items)
    assert content.text.shape == (len(items), 1 << 12)
    expected = hash_texts(items["title"], 1 << 12, (1, 2), (3,), seed=5) + hash_texts(
        items["text"], 1 << 12, (1, 2), (3,), seed=5
    )
    assert (content.text != expected).nnz == 0
    assert content.text.has_canonical_format
    assert (np.asarray(content.text.sum(axis=1)).ravel() > 0).all()


def test_numeric_standardised_with_missing_indicator(tables, encoder):
    content = encoder.transform(tables.items)
    assert encoder.numeric_columns == ["price"]
    assert content.numeric_names == ["price", "price_missing"]
    assert content.numeric.dtype == np.float32
    price = content.numeric[:, 0]
    assert abs(price.mean()) < 1e-5 and abs(price.std() - 1.0) < 1e-5
    raw = tables.items["price"].to_numpy()
    np.testing.assert_allclose(price, (raw - raw.mean()) / raw.std(), rtol=1e-5)
    assert (content.numeric[:, 1] == 0).all()


def test_cold_start_items(encoder):
    known = encoder.category_vocab[0]
    new = pd.DataFrame(
        {
            "item_id": ["new1", "new2", "new3"],
            "title": ["Brand new gadget", None, ""],
            "text": [None, "unheard of words", None],
            "categories": [[known, "never-seen"], [], None],
            "price": [np.nan, 10.0, np.inf],
        }
    )
    content = encoder.transform(new)
    cats = _dense(content.categories)
    assert cats[0, 0] == 1.0 and cats[0, 1] == 1.0 and cats[0].sum() == 2.0  # unknown -> col 0
    assert cats[1].sum() == 0 and cats[2].sum() == 0
    assert content.text[0].nnz > 0 and content.text[1].nnz > 0 and content.text[2].nnz == 0
    assert content.numeric[:, 1].tolist() == [1.0, 0.0, 1.0]  # NaN and inf are missing
    assert content.numeric[0, 0] == 0.0 and content.numeric[2, 0] == 0.0
    # absent columns: zeros and missing indicators, no error
    bare = encoder.transform(pd.DataFrame({"item_id": ["x"]}))
    assert bare.categories.nnz == 0 and bare.text.nnz == 0
    assert bare.numeric.tolist() == [[0.0, 1.0]]


def test_categories_survive_a_parquet_round_trip(tables, encoder, tmp_path):
    path = tmp_path / "items.parquet"
    tables.items.to_parquet(path, index=False)
    reread = pd.read_parquet(path)  # list cells come back as numpy arrays
    a, b = encoder.transform(tables.items), encoder.transform(reread)
    assert (a.categories != b.categories).nnz == 0
    assert (a.text != b.text).nnz == 0
    assert np.array_equal(a.numeric, b.numeric)


def test_encoder_save_load_round_trip(tables, encoder, tmp_path):
    path = encoder.save(tmp_path / "item_encoder")
    assert path.suffix == ".json"
    loaded = ContentEncoder.load(tmp_path / "item_encoder")
    assert loaded == encoder
    a, b = encoder.transform(tables.items), loaded.transform(tables.items)
    assert (a.categories != b.categories).nnz == 0 and (a.text != b.text).nnz == 0
    assert np.array_equal(a.numeric, b.numeric)
    assert json.loads(path.read_text())["category_vocab"] == encoder.category_vocab
    assert encoder.summary()["n_categories"] == encoder.n_categories


def test_encoder_load_errors(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        ContentEncoder.load(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "item_encoder.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        ContentEncoder.load(bad)
    (bad / "item_encoder.json").write_text(
        json.dumps({"format": "recpipe.item_encoder", "version": 1})
    )
    with pytest.raises(ArtifactError, match="incomplete"):
        ContentEncoder.load(bad)
    (bad / "user_encoder.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ArtifactError, match=r"not a recpipe\.user_encoder"):
        UserEncoder.load(bad)


def test_item_content_save_load_round_trip(tables, encoder, tmp_path):
    content = encoder.transform(tables.items)
    content.save(tmp_path / "items")
    loaded = ItemContent.load(tmp_path / "items")
    assert loaded.item_ids.tolist() == content.item_ids.tolist()
    assert (loaded.categories != content.categories).nnz == 0
    assert (loaded.text != content.text).nnz == 0
    assert np.array_equal(loaded.numeric, content.numeric)
    assert loaded.numeric_names == content.numeric_names
    with pytest.raises(ArtifactError):
        ItemContent.load(tmp_path / "nothing")


def test_align_to_id_map(tables, encoder, tmp_path):
    items = tables.items
    content = encoder.transform(items)
    # an id map over some catalogue items plus one id without content
    events = pd.Series(["i05", "i05", "i01", "ghost", "i30", "i30", "i30"], dtype="string")
    idmap = IdMap.fit(events)
    aligned = align(content, idmap)
    assert isinstance(aligned, ItemContent) and len(aligned) == len(idmap)
    assert aligned.item_ids.tolist() == [None, None, "i30", "i05", "ghost", "i01"]
    cats, text = _dense(aligned.categories), _dense(aligned.text)
    assert not cats[:N_RESERVED].any() and not text[:N_RESERVED].any()
    assert not aligned.numeric[:N_RESERVED].any()
    assert not cats[4].any() and not text[4].any() and not aligned.numeric[4].any()  # ghost
    row = {i: k for k, i in enumerate(items["item_id"])}
    for index in (2, 3, 5):
        src = row[aligned.item_ids[index]]
        assert np.array_equal(cats[index], _dense(content.categories)[src])
        assert np.array_equal(text[index], _dense(content.text)[src])
        assert np.array_equal(aligned.numeric[index], content.numeric[src])
    # a model indexes content by the encoded item index
    idx = idmap.encode(["i01", "i30"])
    assert np.array_equal(aligned.numeric[idx], content.numeric[[row["i01"], row["i30"]]])
    aligned.save(tmp_path / "aligned")
    assert ItemContent.load(tmp_path / "aligned").item_ids.tolist() == aligned.item_ids.tolist()


def test_align_rejects_duplicate_content_rows(tables, encoder):
    doubled = encoder.transform(pd.concat([tables.items, tables.items.iloc[:2]]))
    with pytest.raises(ValueError, match="repeated"):
        align(doubled, IdMap.fit(tables.items["item_id"]))


def test_user_encoder_on_synthetic_users(tables):
    users = tables.users
    enc = UserEncoder().fit(users)
    content = enc.transform(users)
    assert isinstance(content, UserContent)
    assert content.columns == ["home_category", "country", "age_band"]
    assert content.codes.dtype == np.int32 and content.codes.shape == (len(users), 3)
    for j, col in enumerate(content.columns):
        vocab = enc.vocabs[col]
        assert content.cardinalities[j] == len(vocab) + 1
        assert content.codes[:, j].tolist() == [vocab.index(v) + 1 for v in users[col]]
    cold = pd.DataFrame({"user_id": ["new"], "home_category": ["nowhere"], "country": [None]})
    assert enc.transform(cold).codes.tolist() == [[0, 0, 0]]  # unknown, null, absent


def test_user_encoder_numeric_buckets_and_quantiles():
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(10)],
            "age": pd.Series([7, 17, 18, 24, 25, 44, 49, 50, 56, None], dtype="Int64"),
            "score": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            "vip": [True, False] * 5,
        }
    )
    enc = UserEncoder(n_quantile_buckets=2).fit(users)
    assert enc.edges["age"] == list(DEFAULT_USER_BUCKET_EDGES["age"])
    assert enc.edges["score"] == [4.5]  # the median
    assert enc.vocabs["vip"] == ["False", "True"]  # booleans are categories
    content = enc.transform(users)
    # <18 -> 1, 18-24 -> 2, 25-34 -> 3, 35-44 -> 4, 45-49 -> 5, 50-55 -> 6, 56+ -> 7, NA -> 0
    assert content.column("age").tolist() == [1, 1, 2, 2, 3, 4, 5, 6, 7, 0]
    assert content.column("score").tolist() == [1] * 5 + [2] * 5
    assert content.cardinalities == [8, 3, 3]
    custom = UserEncoder(bucket_edges={"age": (30,)}).fit(users)
    assert custom.transform(users).column("age").tolist()[:6] == [1, 1, 1, 1, 1, 2]
    with pytest.raises(KeyError, match="no user attribute"):
        content.column("height")


def test_user_encoder_save_load_and_align(tables, tmp_path):
    enc = UserEncoder(min_count=2).fit(tables.users)
    enc.save(tmp_path / "user_encoder")
    loaded = UserEncoder.load(tmp_path / "user_encoder")
    assert loaded == enc
    a, b = enc.transform(tables.users), loaded.transform(tables.users)
    assert np.array_equal(a.codes, b.codes)
    assert enc.summary()["columns"]["country"]["kind"] == "categorical"
    idmap = IdMap.fit(tables.events["user_id"])
    aligned = align(a, idmap)
    assert isinstance(aligned, UserContent) and aligned.codes.shape == (len(idmap), 3)
    assert not aligned.codes[:N_RESERVED].any()
    row = {u: k for k, u in enumerate(tables.users["user_id"])}
    for index in range(N_RESERVED, len(idmap)):
        assert np.array_equal(aligned.codes[index], a.codes[row[aligned.user_ids[index]]])
    with pytest.raises(TypeError):
        align("not content", idmap)  # type: ignore[arg-type]
