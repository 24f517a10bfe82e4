"""Id maps: reserved slots, deterministic order, unknown handling, persistence."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recpipe.errors import ArtifactError
from recpipe.features.idmap import N_RESERVED, PAD, UNK, IdMap

ids_text = st.text(min_size=0, max_size=12)


def test_reserved_constants():
    assert (PAD, UNK, N_RESERVED) == (0, 1, 2)


def test_fit_orders_by_count_then_id_and_ignores_nulls():
    values = pd.Series(["b", "c", "a", "c", None, "b", "c", "d"], dtype="string")
    m = IdMap.fit(values)
    assert m.ids.tolist() == ["c", "b", "a", "d"]  # 3, 2, then the 1s by id
    assert m.encode(["c", "b", "a", "d"]).tolist() == [2, 3, 4, 5]
    assert len(m) == 4 + N_RESERVED
    assert m.counts.tolist() == [0, 0, 3, 2, 1, 1]
    assert m.counts.dtype == np.int64


def test_min_count_sends_rare_ids_to_unk():
    m = IdMap.fit(pd.Series(["a", "a", "b", "c", "c", "c"]), min_count=2)
    assert m.ids.tolist() == ["c", "a"]
    assert m.encode(["a", "b", "c"]).tolist() == [3, UNK, 2]
    with pytest.raises(ValueError, match="min_count"):
        IdMap.fit(pd.Series(["a"]), min_count=0)


def test_unknown_and_null_encode_to_unk_never_crash():
    m = IdMap.fit(pd.Series(["x", "y"]))
    got = m.encode(pd.Series(["y", "nope", None, "x", ""], dtype="string"))
    assert got.tolist() == [3, UNK, UNK, 2, UNK]
    assert got.dtype == np.int64
    assert m.encode([]).shape == (0,)
    assert m.encode(np.array(["x"])).tolist() == [2]
    assert m.encode(pd.Series(["x", "zz"], dtype="category")).tolist() == [2, UNK]
    assert m.encode(pd.Series(["x", None], dtype=object)).tolist() == [2, UNK]


def test_non_string_ids_are_compared_as_strings():
    m = IdMap.fit(pd.Series([10, 20, 10]))
    assert m.ids.tolist() == ["10", "20"]
    assert m.encode(["10", "20"]).tolist() == m.encode(pd.Series([10, 20])).tolist() == [2, 3]


def test_decode_reserved_to_none_and_rejects_out_of_range():
    m = IdMap.fit(pd.Series(["a", "b", "b"]))
    assert m.decode([PAD, UNK, 2, 3]).tolist() == [None, None, "b", "a"]
    assert m.decode(np.array([[2, 3]])).shape == (1, 2)
    with pytest.raises(ValueError, match="outside"):
        m.decode([len(m)])
    with pytest.raises(ValueError, match="outside"):
        m.decode([-1])
    with pytest.raises(ValueError, match="integers"):
        m.decode([1.5])


def test_fit_is_deterministic_under_shuffling():
    rng = np.random.default_rng(0)
    values = pd.Series(rng.choice([f"i{k}" for k in range(50)], 2000), dtype="string")
    a = IdMap.fit(values)
    b = IdMap.fit(values.sample(frac=1.0, random_state=3).reset_index(drop=True))
    assert a == b
    assert np.array_equal(a.encode(values), b.encode(values))


def test_empty_and_all_null_fits():
    for values in (pd.Series([], dtype="string"), pd.Series([None, None], dtype="string")):
        m = IdMap.fit(values)
        assert len(m) == N_RESERVED and m.n_ids == 0
        assert m.encode(["a", None]).tolist() == [UNK, UNK]
        assert m.counts.tolist() == [0, 0]


def test_constructor_rejects_bad_ids():
    with pytest.raises(ValueError, match="distinct"):
        IdMap(ids=np.array(["a", "a"], dtype=object), id_counts=np.array([1, 1]))
    with pytest.raises(ValueError, match="null"):
        IdMap(ids=np.array(["a", None], dtype=object), id_counts=np.array([1, 1]))
    with pytest.raises(ValueError, match="shape"):
        IdMap(ids=np.array(["a"], dtype=object), id_counts=np.array([1, 1]))


def test_contains():
    m = IdMap.fit(pd.Series(["a"]))
    assert "a" in m and "b" not in m and 3 not in m


def test_save_load_round_trip(tmp_path):
    m = IdMap.fit(pd.Series(["é", "a b", "", "😀", "a b", "x" * 300]), min_count=1)
    path = m.save(tmp_path / "nested" / "item_map.parquet")
    loaded = IdMap.load(path)
    assert loaded == m
    assert loaded.ids.tolist() == m.ids.tolist()
    assert loaded.counts.tolist() == m.counts.tolist()
    assert loaded.min_count == m.min_count
    assert [p.name for p in path.parent.iterdir()] == ["item_map.parquet"]  # no temp file left


def test_save_load_keeps_min_count_and_empty_map(tmp_path):
    m = IdMap.fit(pd.Series(["a", "a", "b"]), min_count=2)
    assert IdMap.load(m.save(tmp_path / "m.parquet")).min_count == 2
    empty = IdMap.fit(pd.Series([], dtype="string"))
    assert IdMap.load(empty.save(tmp_path / "e.parquet")) == empty


def test_load_missing_or_corrupt_raises_artifact_error(tmp_path):
    missing = tmp_path / "nope.parquet"
    with pytest.raises(ArtifactError, match=r"nope\.parquet"):
        IdMap.load(missing)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ArtifactError, match=r"garbage\.parquet"):
        IdMap.load(garbage)
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), other)
    with pytest.raises(ArtifactError, match=r"other\.parquet"):
        IdMap.load(other)


def test_load_rejects_duplicate_ids(tmp_path):
    path = IdMap.fit(pd.Series(["a", "b"])).save(tmp_path / "m.parquet")
    table = pq.read_table(path)
    broken = pa.table({"id": ["a", "a"], "count": [1, 1]}).replace_schema_metadata(
        table.schema.metadata
    )
    pq.write_table(broken, path)
    with pytest.raises(ArtifactError, match="corrupt"):
        IdMap.load(path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(ids_text, st.none()), max_size=40), st.integers(1, 3))
def test_property_fit_encode_decode(values, min_count):
    m = IdMap.fit(pd.Series(values, dtype="string"), min_count=min_count)
    codes = m.encode(values)
    assert codes.shape == (len(values),)
    assert ((codes >= UNK) & (codes < len(m))).all()
    assert PAD not in codes
    # every real index decodes to an id that encodes back to the same index
    valid = np.arange(N_RESERVED, len(m))
    assert m.encode(m.decode(valid)).tolist() == valid.tolist()
    # known values decode to themselves; everything else is UNK
    counts = pd.Series([v for v in values if v is not None], dtype=object).value_counts()
    for v, code in zip(values, codes, strict=True):
        if v is not None and counts[v] >= min_count:
            assert m.decode([code])[0] == v
        else:
            assert code == UNK
    assert sum(m.counts) == sum(c for c in counts if c >= min_count)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(ids_text, st.none()), max_size=30))
def test_property_any_strings_encode(values):
    m = IdMap.fit(pd.Series(["a", "b", "c", "a"]))
    codes = m.encode(values)
    assert codes.shape == (len(values),)
    assert set(codes.tolist()) <= {UNK, 2, 3, 4}


@settings(max_examples=25, deadline=None)
@given(st.lists(ids_text, max_size=20))
def test_property_save_load_round_trip(values):
    m = IdMap.fit(pd.Series(values, dtype="string"))
    with tempfile.TemporaryDirectory() as tmp:
        assert IdMap.load(m.save(Path(tmp) / "m.parquet")) == m


def test_extend_appends_new_ids_with_count_zero(tmp_path):
    m = IdMap.fit(pd.Series(["b", "a", "b", "c"]), min_count=1)
    before = m.encode(["b", "a", "c"]).tolist()
    ext = m.extend(pd.Series(["z", "a", None, "y", "z", "b"], dtype="string"))
    assert ext.ids.tolist() == ["b", "a", "c", "y", "z"]  # new ids after the known, by id
    assert ext.counts.tolist() == [0, 0, 2, 1, 1, 0, 0]
    assert ext.encode(["b", "a", "c"]).tolist() == before  # known indices unchanged
    assert ext.encode(["y", "z", "nope", None]).tolist() == [5, 6, UNK, UNK]
    assert ext.min_count == m.min_count
    assert m.ids.tolist() == ["b", "a", "c"]  # the original is untouched
    assert IdMap.load(ext.save(tmp_path / "m.parquet")) == ext
    # nothing new: an equal map; an empty map gains everything
    assert m.extend(["a", None]) == m
    assert m.extend([]) == m
    empty = IdMap.fit(pd.Series([], dtype="string")).extend(["q", "p"])
    assert empty.ids.tolist() == ["p", "q"] and empty.counts.tolist() == [0, 0, 0, 0]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.one_of(ids_text, st.none()), max_size=30),
    st.lists(st.one_of(ids_text, st.none()), max_size=30),
)
def test_property_extend(train, extra):
    m = IdMap.fit(pd.Series(train, dtype="string"))
    ext = m.extend(pd.Series(extra, dtype="string"))
    assert ext.ids[: m.n_ids].tolist() == m.ids.tolist()
    added = ext.ids[m.n_ids :].tolist()
    assert added == sorted({v for v in extra if v is not None} - set(m.ids.tolist()))
    assert ext.id_counts[m.n_ids :].tolist() == [0] * len(added)
    real = [v for v in [*train, *extra] if v is not None]
    assert (ext.encode(real) >= N_RESERVED).all()


# --------------------------------------------------------------------- hashed lookups
def _index_in(m: IdMap, values: object) -> np.ndarray:
    """What encode gives through pyarrow's index_in (the path for many values)."""
    import pyarrow.compute as pc

    from recpipe.features.idmap import as_arrow_strings

    pos = pc.index_in(as_arrow_strings(values), value_set=m._value_set)
    return pos.fill_null(UNK - N_RESERVED).to_numpy(zero_copy_only=False) + N_RESERVED


def test_encoding_few_values_against_a_large_map_equals_index_in() -> None:
    rng = np.random.default_rng(3)
    words = ["", "a", "ab", "ba", "é", "日本", "a\x00b", "x" * 300, "1", "01", "10"]
    ids = words + [f"id{i}" for i in rng.permutation(5000)]
    m = IdMap.fit(pd.Series(ids * 2 + ids[:100], dtype="str"))
    queries = [
        *words,
        None,
        "zz",
        "id",
        "id5000",
        "id00",
        *[f"id{i}" for i in rng.integers(0, 6000, 300)],
    ]
    queries = [queries[i] for i in rng.permutation(len(queries))]
    series = pd.Series(queries, dtype="str")
    assert len(series) < m.n_ids  # the hashed path
    got = m.encode(series)
    np.testing.assert_array_equal(got, _index_in(m, series))
    assert got[queries.index("")] == m.encode(pd.Series([""] * 10000, dtype="str"))[0] >= 2
    assert got[queries.index(None)] == UNK
    sliced = pa.array(queries, pa.large_string()).slice(7, 200)
    np.testing.assert_array_equal(m.encode(sliced.to_pandas()), _index_in(m, sliced.to_pandas()))


def test_a_hash_shared_by_two_ids_falls_back_to_index_in(monkeypatch: pytest.MonkeyPatch) -> None:
    import recpipe.features.idmap as idmap

    monkeypatch.setattr(idmap, "string_hashes", lambda values: np.zeros(len(values), np.uint64))
    m = IdMap.fit(pd.Series(["a", "b", "c", "d"]))
    np.testing.assert_array_equal(m.encode(["b", "zz", None]), [3, UNK, UNK])
    assert m._hash_index is False


def test_string_hashes_are_equal_for_equal_strings_and_differ_otherwise() -> None:
    from recpipe.features.idmap import string_hashes

    values = pa.array(["ab", "ba", "", "ab", "a", "b", "", "abc"], pa.large_string())
    h = string_hashes(values)
    assert h[0] == h[3] and h[2] == h[6]
    assert len(set(h.tolist())) == 6
    many = pa.array([str(i) for i in range(200_000)], pa.large_string())
    assert len(np.unique(string_hashes(many))) == 200_000
    np.testing.assert_array_equal(string_hashes(many.slice(5, 10)), string_hashes(many)[5:15])
    np.testing.assert_array_equal(string_hashes(values.cast(pa.string())), h)
