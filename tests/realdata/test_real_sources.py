"""Importers on the real public data sets in ../shared/data (skipped when absent)."""

from __future__ import annotations

import pandas as pd
import pytest

from recpipe.data.schema import read_tables, write_tables
from recpipe.data.sources import import_source

pytestmark = pytest.mark.realdata


def test_movielens_100k(real_data, tmp_path):
    tables = import_source("movielens-100k", real_data / "ml-100k")
    ev = tables.events
    assert len(ev) == 100_000
    assert ev["user_id"].nunique() == 943
    assert ev["item_id"].nunique() == 1_682
    assert (ev["event_type"] == "rating").all()
    assert ev["value"].value_counts().sort_index().tolist() == [
        6_110,
        11_370,
        27_145,
        34_174,
        21_201,
    ]
    assert ev["timestamp"].min() == pd.Timestamp(874724710, unit="s", tz="UTC")
    assert ev["timestamp"].max() == pd.Timestamp(893286638, unit="s", tz="UTC")

    items = tables.items.set_index("item_id")
    assert len(items) == 1_682
    assert set(items.index) == set(ev["item_id"])
    assert items.loc["1", "title"] == "Toy Story (1995)"
    assert items.loc["1", "categories"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["1", "release_year"] == 1995
    assert items["categories"].map(len).gt(0).all()  # every movie has a genre flag
    assert len(tables.users) == 943
    assert set(tables.users.columns) == {"user_id", "age", "gender", "occupation", "zip_code"}

    out = tmp_path / "interim"
    manifest = write_tables(tables, out)
    assert manifest["rows"] == {"events": 100_000, "items": 1_682, "users": 943}
    back = read_tables(out)
    pd.testing.assert_frame_equal(back.events, ev)
    assert len(back.items) == 1_682


def test_diginetica(real_data, tmp_path):
    tables = import_source("diginetica", real_data / "diginetica")
    ev = tables.events
    counts = ev["event_type"].value_counts().to_dict()
    assert counts == {"view": 12_391, "purchase": 18_025}
    views = ev[ev["event_type"] == "view"]
    assert views["session_id"].nunique() == 2_986
    assert views["item_id"].nunique() == 7_139
    assert int(views["user_id"].isna().sum()) == 7_681
    assert views["timestamp"].min().normalize() == pd.Timestamp("2016-01-03", tz="UTC")
    assert len(tables.items) == 184_047  # one category row per product
    assert tables.items["categories"].map(len).eq(1).all()
    assert set(ev["item_id"]) <= set(tables.items["item_id"])  # every item has a category
    shared = set(views["session_id"]) & set(ev.loc[ev["event_type"] == "purchase", "session_id"])
    assert len(shared) == 138

    write_tables(tables, tmp_path)
    back = read_tables(tmp_path)
    assert len(back.events) == 30_416
    assert back.events["event_type"].value_counts().to_dict() == counts


def test_yoochoose_sample_as_session_tsv(real_data):
    folder = real_data / "yoochoose-rsc15-100k"
    tables = import_source("session-tsv", folder)
    ev = tables.events
    # folder rule: train_full + test; train_tr / train_valid are re-splits of train_full
    assert [p.name for p in tables.input_files] == [
        "yoochoose-clicks-100k_train_full.txt",
        "yoochoose-clicks-100k_test.txt",
    ]
    assert len(ev) == 70_278 + 13_568
    assert (ev["event_type"] == "click").all()
    assert ev["user_id"].isna().all()
    first = ev.iloc[0]
    assert first["session_id"] == "3" and first["item_id"] == "214716935"
    assert first["timestamp"] == pd.Timestamp("2014-04-02 11:17:46.940", tz="UTC")

    train = import_source("session-tsv", folder / "yoochoose-clicks-100k_train_full.txt").events
    test = import_source("session-tsv", folder / "yoochoose-clicks-100k_test.txt").events
    assert (len(train), len(test)) == (70_278, 13_568)
    assert train["session_id"].nunique() == 17_794 and test["session_id"].nunique() == 3_416
    assert not set(train["session_id"]) & set(test["session_id"])
