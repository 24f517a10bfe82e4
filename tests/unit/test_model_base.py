"""The contract's data classes (DataMeta, Interactions, Queries), configs, array I/O, loading."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recpipe.baselines.itemknn import ItemKNN
from recpipe.baselines.popularity import Popularity
from recpipe.errors import ArtifactError, ConfigError
from recpipe.features.encode import ENCODED_COLUMNS, encode_events
from recpipe.features.idmap import IdMap
from recpipe.models.artifact import csr_from_arrays, csr_to_arrays, load_arrays, save_arrays
from recpipe.models.base import Recommender
from recpipe.models.data import DataMeta, Interactions, Queries
from recpipe.models.registry import build_model, load_model
from recpipe.sessions.batching import prefixes
from tests.contract.planted import encoded_frame, interactions


def canonical_events() -> pd.DataFrame:
    ts = pd.to_datetime(
        ["2024-01-01 10:00", "2024-01-01 10:05", "2024-01-01 11:00", "2024-01-02 09:00"], utc=True
    )
    return pd.DataFrame(
        {
            "session_id": pd.array(["s1", "s1", "s2", "s3"], dtype="string"),
            "user_id": pd.array(["u1", "u1", "u2", "u1"], dtype="string"),
            "item_id": pd.array(["a", "b", "a", "zzz"], dtype="string"),
            "timestamp": ts,
            "event_type": pd.array(["view", "purchase", "view", "view"], dtype="string"),
            "value": np.ones(4, dtype=np.float32),
        }
    )


# ---------------------------------------------------------------------- Interactions
def test_interactions_from_encoded_parquet(tmp_path):
    events = canonical_events()
    items, users = IdMap.fit(events["item_id"].iloc[:3]), IdMap.fit(events["user_id"])
    encoded = encode_events(events, items, users, gap_buckets=8)
    assert tuple(encoded.columns) == ENCODED_COLUMNS
    encoded.to_parquet(tmp_path / "train.parquet", index=False)
    data = Interactions.from_parquet(tmp_path / "train.parquet")
    assert len(data) == 4 and data.n_sessions == 3
    np.testing.assert_array_equal(data.offsets, [0, 2, 3, 4])
    np.testing.assert_array_equal(data.item_idx, items.encode(events["item_id"]))
    assert data.item_idx[-1] == 1  # unknown item -> UNK
    assert data.timestamp.dtype == np.int64
    assert data.timestamp[0] == events["timestamp"].iloc[0].value
    np.testing.assert_array_equal(data.event_type_idx, encoded["event_type_idx"])
    np.testing.assert_array_equal(data.gap_bucket, encoded["gap_bucket"])
    np.testing.assert_array_equal(data.session_index, [0, 0, 1, 2])
    with pytest.raises(ArtifactError, match="features stage"):
        Interactions.from_parquet(tmp_path / "missing.parquet")


def test_interactions_optional_columns_and_int_timestamps():
    frame = pd.DataFrame(
        {"session_id": ["x", "x", "y"], "user_idx": [2, 2, 3], "item_idx": [2, 3, 2]}
    )
    frame["timestamp"] = [5, 7, 1]
    data = Interactions.from_frame(frame)
    np.testing.assert_array_equal(data.value, [1, 1, 1])
    np.testing.assert_array_equal(data.hour, [0, 0, 0])
    np.testing.assert_array_equal(data.timestamp, [5, 7, 1])  # time may restart per session


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"session_id": ["a", "b", "a"]}, "grouped by session"),
        ({"timestamp": [2, 1, 3]}, "sorted by time"),
        ({"item_idx": [2, -1, 3]}, "non-negative"),
    ],
)
def test_interactions_reject_bad_frames(change, message):
    frame = pd.DataFrame(
        {"session_id": ["a", "a", "b"], "user_idx": [2, 2, 2], "item_idx": [2, 3, 4]}
    )
    frame["timestamp"] = [1, 2, 3]
    for col, values in change.items():
        frame[col] = values
    with pytest.raises(ValueError, match=message):
        Interactions.from_frame(frame)


def test_interactions_reject_missing_columns():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['timestamp'\]"):
        Interactions.from_frame(pd.DataFrame({"session_id": [], "user_idx": [], "item_idx": []}))


def test_empty_interactions():
    full = encoded_frame([[2, 3]])
    data = Interactions.from_frame(full.iloc[:0])
    assert len(data) == 0 and data.n_sessions == 0
    assert data.user_item_matrix(3, 4).shape == (3, 4)


def test_user_and_session_item_matrices():
    data = interactions([[2, 3, 3], [3]], users=[2, 4], values=[[1, 2, 3], [4]])
    binary = data.user_item_matrix(5, 4)
    np.testing.assert_array_equal(binary.toarray()[[2, 4]], [[0, 0, 1, 1], [0, 0, 0, 1]])
    assert data.user_item_matrix(5, 4) is binary  # cached
    weighted = data.user_item_matrix(5, 4, weighted=True)
    np.testing.assert_array_equal(weighted.toarray()[2], [0, 0, 1, 5])
    sessions = data.session_item_matrix(4, weighted=True)
    np.testing.assert_array_equal(sessions.toarray(), [[0, 0, 1, 5], [0, 0, 0, 4]])
    with pytest.raises(ValueError, match="item_idx must lie in"):
        data.user_item_matrix(5, 3)


# ---------------------------------------------------------------------- Queries
def test_queries_from_item_lists_left_pads_and_truncates():
    q = Queries.from_item_lists([[2, 3, 4, 5], [6], []], max_len=3)
    np.testing.assert_array_equal(q.items, [[3, 4, 5], [0, 0, 6], [0, 0, 0]])
    np.testing.assert_array_equal(q.last_items, [5, 6, 0])
    assert len(q) == 3 and q.kind == "session"
    assert len(q.take(slice(1, 3))) == 2


def test_queries_validation():
    with pytest.raises(ValueError, match="left-padded"):
        Queries.for_sessions(np.array([[2, 0]]))
    with pytest.raises(ValueError, match="query kind"):
        Queries(kind="basket", items=np.array([2]))
    with pytest.raises(ValueError, match="shape"):
        Queries.for_sessions(np.array([[2, 3]]), hour=np.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match="unknown context"):
        Queries.for_sessions(np.array([[2, 3]]), weather=np.array([[1, 2]]))
    with pytest.raises(ValueError, match="integers"):
        Queries.for_items(np.array([2.5]))
    with pytest.raises(ValueError, match="users"):
        Queries(kind="user", items=np.array([2]))
    with pytest.raises(ValueError, match="session queries"):
        Queries(kind="item", items=np.array([2]), hour=np.array([[1]]))


def test_session_prefixes_match_the_events():
    data = interactions([[2, 3, 4, 5], [6, 7], [2]], users=[3, 4, 5])
    ends, targets = prefixes(data.offsets)
    q = Queries.session_prefixes(data, ends, max_len=2)
    np.testing.assert_array_equal(q.items, [[0, 2], [2, 3], [3, 4], [0, 6]])
    np.testing.assert_array_equal(data.item_idx[targets], [3, 4, 5, 7])
    np.testing.assert_array_equal(q.users, [3, 3, 3, 4])
    np.testing.assert_array_equal(q.gap_bucket, [[0, 0], [0, 5], [5, 5], [0, 0]])
    np.testing.assert_array_equal(q.timestamps[:, -1], data.timestamp[ends])
    assert q.timestamps[0, 0] == 0  # padding


# ---------------------------------------------------------------------- DataMeta
def _features_dir(tmp_path, n_items=None):
    items, users = IdMap.fit(["a", "a", "b"]), IdMap.fit(["u"])
    items.save(tmp_path / "item_map.parquet")
    users.save(tmp_path / "user_map.parquet")
    meta = {"split": "session", "n_items": n_items or len(items), "n_users": len(users)}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    return tmp_path


def test_data_meta_from_features(tmp_path):
    meta = DataMeta.from_features(_features_dir(tmp_path))
    assert (meta.n_items, meta.n_users, meta.split) == (4, 3, "session")
    np.testing.assert_array_equal(meta.item_counts, [0, 0, 2, 1])
    assert meta.item_map is not None and meta.item_map.decode([2])[0] == "a"
    assert not meta.item_counts.flags.writeable


def test_data_meta_from_features_errors(tmp_path):
    with pytest.raises(ArtifactError, match=r"features meta .* does not exist"):
        DataMeta.from_features(tmp_path)
    with pytest.raises(ArtifactError, match="inconsistent"):
        DataMeta.from_features(_features_dir(tmp_path, n_items=9))


def test_data_meta_from_interactions_and_validation():
    data = interactions([[2, 3, 3], [1]])
    meta = DataMeta.from_interactions(data, n_items=6)
    np.testing.assert_array_equal(meta.item_counts, [0, 0, 1, 2, 0, 0])  # UNK not counted
    assert meta.n_users == 3
    with pytest.raises(ValueError, match="reserved"):
        DataMeta(n_items=2, n_users=3, item_counts=np.zeros(2))
    with pytest.raises(ValueError, match="item_counts"):
        DataMeta(n_items=4, n_users=3, item_counts=np.zeros(3))


# ---------------------------------------------------------------------- config, arrays
def test_build_model_config_errors_name_the_key():
    meta = DataMeta(n_items=4, n_users=3, item_counts=np.zeros(4))
    with pytest.raises(ConfigError, match=r"neighbors: unknown key \(not an option of 'itemknn'\)"):
        build_model("itemknn", {"neighbors": 5}, meta)
    with pytest.raises(ConfigError, match="neighbours: Input should be greater than or equal"):
        build_model("itemknn", {"neighbours": 0}, meta)
    with pytest.raises(ConfigError, match="takes a ItemKNNConfig"):
        build_model("itemknn", build_model("pop", {}, meta).config, meta)
    model = build_model("itemknn", {"neighbours": 5}, meta)
    assert model.config.neighbours == 5
    assert "not fitted" in repr(model)


def test_array_files(tmp_path):
    import scipy.sparse as sp

    m = sp.random(5, 4, density=0.5, random_state=0, format="csr")
    save_arrays(tmp_path / "a.npz", x=np.arange(3), **csr_to_arrays("m", m))
    arrays = load_arrays(tmp_path / "a.npz", ["x", "m_data", "m_indices", "m_indptr", "m_shape"])
    np.testing.assert_array_equal(csr_from_arrays(arrays, "m", (5, 4)).toarray(), m.toarray())
    with pytest.raises(ArtifactError, match="expected"):
        csr_from_arrays(arrays, "m", (4, 4))
    with pytest.raises(ArtifactError, match=r"lacks array\(s\) \['y'\]"):
        load_arrays(tmp_path / "a.npz", ["y"])
    broken = dict(arrays, m_indices=arrays["m_indices"] + 10)
    with pytest.raises(ArtifactError, match="corrupt"):
        csr_from_arrays(broken, "m", (5, 4))
    with pytest.raises(TypeError, match="pickle"):
        save_arrays(tmp_path / "b.npz", x=np.array(["a", None], dtype=object))


# ---------------------------------------------------------------------- loading, imports
def test_loading_needs_a_concrete_class_or_the_registry(tmp_path):
    data = interactions([[2, 3, 3], [2]])
    model = build_model("pop", {}, DataMeta.from_interactions(data)).fit(data)
    path = model.save(tmp_path / "pop")
    assert type(load_model(path)) is Popularity
    assert type(Popularity.load(path)) is Popularity
    with pytest.raises(TypeError, match=r"recpipe\.models\.registry\.load_model"):
        Recommender.load(path)
    with pytest.raises(ArtifactError, match="holds a 'pop' model, not a ItemKNN"):
        ItemKNN.load(path)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps(meta | {"model": "no_such_model"}))
    with pytest.raises(ArtifactError, match=r"unknown model 'no_such_model'; known: \[.*'pop'"):
        load_model(path)


def test_the_contract_imports_no_model():
    code = (
        "import sys, recpipe.models.base, recpipe.models.registry; "
        "loaded = [m for m in sys.modules if m.startswith('recpipe.baselines') or m == 'torch'"
        " or m.startswith('recpipe.models.') and m.rsplit('.', 1)[1] not in "
        "{'base', 'data', 'artifact', 'registry', 'names', 'space'}]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
