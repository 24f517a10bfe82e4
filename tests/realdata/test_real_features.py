"""Feature building blocks on MovieLens 100K (skipped when the data is absent)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recpipe.config import FeaturesParams
from recpipe.data.movielens import ML100K_GENRES
from recpipe.data.sources import import_source
from recpipe.features.content import ContentEncoder, UserEncoder, align
from recpipe.features.context import context_features
from recpipe.features.idmap import N_RESERVED, UNK, IdMap

pytestmark = pytest.mark.realdata


@pytest.fixture
def ml100k(real_data):
    folder = real_data / "ml-100k"
    if not folder.is_dir():
        pytest.skip(f"MovieLens 100K not found at {folder}")
    return import_source("movielens-100k", folder)


def test_item_content(ml100k):
    items = ml100k.items
    enc = ContentEncoder.from_params(FeaturesParams(text_buckets=1 << 16)).fit(items)
    assert sorted(enc.category_vocab) == sorted(ML100K_GENRES)  # 19 genres ("unknown" is one)
    assert enc.n_categories == 19 + 1
    assert enc.numeric_columns == ["release_year"]
    content = enc.transform(items)
    assert content.categories.shape == (1682, 20)
    per_item = np.asarray(content.categories.sum(axis=1)).ravel()
    assert per_item.tolist() == items["categories"].map(len).tolist()
    assert content.categories[:, 0].nnz == 0
    assert content.text.shape == (1682, 1 << 16)
    assert (content.text.getnnz(axis=1) > 0).sum() >= 1681  # every titled movie
    year = content.numeric[:, 0]
    missing = content.numeric[:, 1].astype(bool)
    assert missing.sum() == items["release_year"].isna().sum()
    assert abs(year[~missing].mean()) < 1e-4 and abs(year[~missing].std() - 1) < 1e-4

    idmap = IdMap.fit(ml100k.events["item_id"])
    assert len(idmap) == 1682 + N_RESERVED
    aligned = align(content, idmap)
    toy_story = idmap.encode(["1"])[0]
    genres = [enc.category_vocab[c - 1] for c in aligned.categories[toy_story].indices]
    assert sorted(genres) == ["Animation", "Children's", "Comedy"]


def test_user_content(ml100k):
    users = ml100k.users
    enc = UserEncoder().fit(users)
    content = enc.transform(users)
    assert content.columns == ["age", "gender", "occupation", "zip_code"]
    card = dict(zip(content.columns, content.cardinalities, strict=True))
    assert card["age"] == 7 + 1  # <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ and missing
    assert card["gender"] == 2 + 1
    assert card["occupation"] == 21 + 1
    expected_age = pd.cut(
        users["age"].astype(float),
        bins=[-np.inf, 18, 25, 35, 45, 50, 56, np.inf],
        right=False,
        labels=False,
    )
    assert content.column("age").tolist() == (expected_age + 1).astype(int).tolist()
    assert (content.codes > 0).all()  # nothing unknown on the fit table


def test_id_maps_and_context(ml100k):
    events = ml100k.events
    users = IdMap.fit(events["user_id"], min_count=20)
    encoded = users.encode(events["user_id"])
    counts = events["user_id"].value_counts()
    assert users.n_ids == int((counts >= 20).sum())
    assert (encoded == UNK).sum() == counts[counts < 20].sum()
    assert users.counts.sum() == counts[counts >= 20].sum()
    ctx = context_features(events, 16)
    assert (ctx["event_type_idx"] == 5).all()  # all ratings
    assert (ctx["gap_bucket"] == 0).all()  # no sessions yet: every event stands alone
    assert ctx["hour"].tolist() == events["timestamp"].dt.hour.tolist()
