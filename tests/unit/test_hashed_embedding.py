"""Hashed id embeddings: stable buckets, collisions, parameters, PAD, gradients, models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recpipe.errors import ConfigError
from recpipe.features.hashing import hash_ids
from recpipe.features.idmap import N_RESERVED, PAD, UNK
from recpipe.models.data import DataMeta, Queries
from recpipe.models.hashed import (
    HashedEmbedding,
    IdEmbeddingConfig,
    embedding_rows,
    embedding_table,
    make_id_embedding,
)
from recpipe.models.mf import MFModule
from recpipe.models.registry import build_model, load_model
from tests.contract.planted import interactions, planted

REPO_ROOT = Path(__file__).resolve().parents[2]
HASHED = {"kind": "hashed", "buckets": 0.5, "hashes": 2}

#: Bucket rows of ids 2..5 of HashedEmbedding(1000, ., n_buckets=97, n_hashes=3, seed=7,
#: name="item"): rows of ``table``, i.e. N_RESERVED + the bucket. Any change to the hash
#: changes these, and breaks every saved hashed model.
PINNED_ROWS = [[59, 12, 54], [6, 57, 60], [98, 61, 76], [76, 97, 78]]

# the module's rows are N_RESERVED + hash_ids(...): probe the hash alone (no torch import)
_PROBE = """
import json
import numpy as np
from recpipe.features.hashing import hash_ids
print(json.dumps((2 + hash_ids(np.arange(2, 6), 97, 3, 7, name="item")).tolist()))
"""


# ---------------------------------------------------------------------- hashing
def test_buckets_are_pinned_and_equal_in_another_process():
    emb = HashedEmbedding(1000, 4, n_buckets=97, n_hashes=3, seed=7, name="item")
    assert emb.index[2:6].tolist() == PINNED_ROWS
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert json.loads(out.stdout) == PINNED_ROWS


def test_hash_ids_columns_are_hash_pairs_and_depend_on_seed_and_name():
    ids = np.arange(2, 50)
    a = hash_ids(ids, 1000, n_hashes=2, seed=0, name="item")
    assert a.shape == (48, 2) and a.dtype == np.int64
    assert ((a >= 0) & (a < 1000)).all()
    np.testing.assert_array_equal(a, hash_ids(ids, 1000, n_hashes=2, seed=0, name="item"))
    assert not np.array_equal(a, hash_ids(ids, 1000, n_hashes=2, seed=1, name="item"))
    assert not np.array_equal(a, hash_ids(ids, 1000, n_hashes=2, seed=0, name="user"))
    # hash function 0 does not depend on how many functions there are
    np.testing.assert_array_equal(a[:, :1], hash_ids(ids, 1000, n_hashes=1, name="item"))
    with pytest.raises(ValueError, match="n_hashes must be a positive integer, got 0"):
        hash_ids(ids, 1000, n_hashes=0)


def test_buckets_spread_and_k_hashes_rarely_collide_on_every_bucket():
    n_ids, n_buckets = 20_000, 1_000
    one = hash_ids(np.arange(n_ids), n_buckets, n_hashes=1)
    two = hash_ids(np.arange(n_ids), n_buckets, n_hashes=2)
    # buckets are filled evenly: Poisson(20) loads per function
    for column in two.T:
        load = np.bincount(column, minlength=n_buckets)
        assert load.min() >= 3 and load.max() <= 45
        assert abs(load.std() - np.sqrt(n_ids / n_buckets)) < 1.0
    # the two functions are unrelated: equal buckets about 1 / n_buckets of the time
    assert np.mean(two[:, 0] == two[:, 1]) < 3.0 / n_buckets

    def shared(codes: np.ndarray) -> float:
        """Fraction of ids whose bucket set another id has too."""
        keys = np.sort(codes, axis=1)
        _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        return float(np.mean(counts[inverse.ravel()] > 1))

    assert shared(one) > 0.99  # 20 ids per bucket: every id shares its vector
    # k = 2: about n_ids / n_buckets**2 * 2 = 4% of ids share both buckets with another
    assert shared(two) < 0.08


# ---------------------------------------------------------------------- the module
def test_parameter_count_is_buckets_times_dim():
    emb = HashedEmbedding(100_000, 16, n_buckets=500, n_hashes=2)
    assert sum(p.numel() for p in emb.parameters()) == (N_RESERVED + 500) * 16
    assert emb.index.shape == (100_000, 2) and emb.index.dtype == torch.int32
    assert "index" not in emb.state_dict()  # recomputed from the config on load
    weighted = HashedEmbedding(100_000, 16, n_buckets=500, n_hashes=2, weights=True)
    assert sum(p.numel() for p in weighted.parameters()) == (N_RESERVED + 500) * 16 + 200_000
    assert (emb.num_embeddings, emb.embedding_dim) == (100_000, 16)


def test_vectors_are_the_sum_or_mean_of_the_bucket_rows():
    torch.manual_seed(0)
    for combine, scale in (("sum", 1.0), ("mean", 0.5)):
        emb = HashedEmbedding(50, 3, n_buckets=7, n_hashes=2, combine=combine)
        ids = torch.tensor([[2, 9], [49, 30]])
        rows = emb.index[ids.reshape(-1)].long()
        expected = scale * emb.table[rows].sum(dim=1)
        torch.testing.assert_close(emb(ids).reshape(-1, 3), expected)
        torch.testing.assert_close(emb.all_vectors()[ids.reshape(-1)], expected)
        torch.testing.assert_close(embedding_rows(emb, ids.reshape(-1)), expected)
    with pytest.raises(IndexError):
        emb(torch.tensor([50]))


def test_pad_is_zero_without_gradient_and_unk_has_its_own_row():
    emb = HashedEmbedding(30, 4, n_buckets=5, n_hashes=3, weights=True)
    out = emb(torch.tensor([PAD, UNK, UNK]))
    assert torch.equal(out[0], torch.zeros(4))
    torch.testing.assert_close(out[1], emb.table[UNK] * emb.importance[UNK, 0])
    out.sum().backward()
    grad = emb.table.grad
    assert torch.equal(grad[PAD], torch.zeros(4))
    assert torch.equal(grad[UNK], torch.full((4,), 2.0))
    assert torch.equal(grad[N_RESERVED:], torch.zeros(5, 4))  # no bucket was used
    assert torch.equal(emb.all_vectors()[PAD], torch.zeros(4))
    unpadded = HashedEmbedding(30, 4, n_buckets=5, padding_idx=None)
    torch.testing.assert_close(unpadded(torch.tensor([PAD]))[0], unpadded.table[PAD])


def test_gradient_reaches_only_the_buckets_used():
    emb = HashedEmbedding(1000, 4, n_buckets=200, n_hashes=2, weights=True)
    ids = torch.tensor([17, 503])
    (emb(ids) * torch.randn(2, 4)).sum().backward()
    used = set(emb.index[ids].reshape(-1).tolist())
    touched = set(torch.nonzero(emb.table.grad.abs().sum(dim=1)).reshape(-1).tolist())
    assert touched == used
    importance = set(torch.nonzero(emb.importance.grad.abs().sum(dim=1)).reshape(-1).tolist())
    assert importance == {17, 503}


def test_initialisation_matches_the_tables_spread():
    torch.manual_seed(0)
    for combine in ("sum", "mean"):
        emb = HashedEmbedding(20_000, 16, n_buckets=4_000, n_hashes=4, combine=combine)
        emb.init_normal_(0.1)
        assert emb.all_vectors()[N_RESERVED:].std().item() == pytest.approx(0.1, rel=0.1)
        emb.init_uniform_(0.3)
        uniform_std = 0.3 / np.sqrt(3.0)
        assert emb.all_vectors()[N_RESERVED:].std().item() == pytest.approx(uniform_std, rel=0.1)
        assert torch.equal(emb.all_vectors()[PAD], torch.zeros(16))


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="n_buckets must be an integer >= 1, got 0"):
        HashedEmbedding(10, 4, n_buckets=0)
    with pytest.raises(ValueError, match="combine must be 'sum' or 'mean', got 'max'"):
        HashedEmbedding(10, 4, n_buckets=3, combine="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding_idx must be a reserved id"):
        HashedEmbedding(10, 4, n_buckets=3, padding_idx=5)


# ---------------------------------------------------------------------- config
def test_config_bucket_count_and_tables():
    spec = IdEmbeddingConfig(kind="hashed", buckets=0.25, hashes=2)
    assert spec.n_buckets(1002) == 250 and spec.n_buckets(3) == 1
    assert IdEmbeddingConfig(kind="hashed", buckets=64).n_buckets(1002) == 64
    assert spec.hashes_table("user") and spec.hashes_table("item")
    only_items = IdEmbeddingConfig(kind="hashed", tables=("item",))
    assert only_items.hashes_table("item") and not only_items.hashes_table("user")
    assert not IdEmbeddingConfig().hashes_table("item")  # table is the default
    assert isinstance(
        make_id_embedding(IdEmbeddingConfig(), 10, 3, table="item"), torch.nn.Embedding
    )
    emb = make_id_embedding(spec, 1002, 3, table="item")
    assert isinstance(emb, HashedEmbedding) and emb.n_buckets == 250 and emb.name == "item"


def test_model_configs_validate_the_block():
    _, _, meta = planted()
    with pytest.raises(ConfigError, match=r"id_embedding.buckets"):
        build_model("mf_bpr", {"id_embedding": {"kind": "hashed", "buckets": 1.5}}, meta)
    with pytest.raises(ConfigError, match="unknown tables \\['session'\\]"):
        build_model("mf_bpr", {"id_embedding": {"kind": "hashed", "tables": ["session"]}}, meta)
    with pytest.raises(ConfigError, match="unknown tables \\['user'\\]"):
        build_model("gru4rec", {"id_embedding": {"kind": "hashed", "tables": ["user"]}}, meta)
    with pytest.raises(ConfigError, match=r"id_embedding\.hashs: unknown key"):
        build_model("gru4rec", {"id_embedding": {"hashs": 2}}, meta)


def test_default_mf_module_is_unchanged_and_hashed_one_is_smaller():
    table = MFModule(1000, 5000, 8, 0.1)
    assert sorted(table.state_dict()) == [
        "global_bias",
        "item.weight",
        "item_bias.weight",
        "user.weight",
        "user_bias.weight",
    ]
    spec = IdEmbeddingConfig(kind="hashed", buckets=0.1, hashes=2)
    hashed = MFModule(1000, 5000, 8, 0.1, spec)
    n_params = sum(p.numel() for p in hashed.parameters())
    assert n_params == (N_RESERVED + 100) * 9 + (N_RESERVED + 500) * 9 + 1
    users = torch.tensor([2, 7])
    torch.testing.assert_close(
        hashed(users, torch.tensor([[3, 4999]]).expand(2, 2)), hashed.score_all(users)[:, [3, 4999]]
    )
    p, q = hashed.augmented(users, slice(None))
    torch.testing.assert_close(p @ q.T, hashed.score_all(users))
    items_only = MFModule(1000, 5000, 8, 0.1, spec.model_copy(update={"tables": ("item",)}))
    assert isinstance(items_only.user, torch.nn.Embedding)
    assert isinstance(items_only.item, HashedEmbedding)
    assert embedding_table(items_only.user) is items_only.user.weight


# ---------------------------------------------------------------------- models
@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("mf_bpr", {"epochs": 3, "id_embedding": {**HASHED, "weights": True}}),
        ("mf_wals", {"epochs": 2, "id_embedding": {**HASHED, "tables": ["item"]}}),
        ("gru4rec", {"epochs": 1, "batch_size": 8, "n_sample": 16, "id_embedding": HASHED}),
        (
            "gru4rec",
            {"epochs": 1, "batch_size": 8, "embedding": "onehot", "id_embedding": HASHED},
        ),
    ],
)
def test_hashed_models_round_trip_with_identical_scores(name, config, tmp_path):
    train, valid, meta = planted()
    model = build_model(name, {**config, "device": "cpu"}, meta).fit(train, valid)
    kind = "user" if name.startswith("mf") else "session"
    queries = (
        Queries.for_users([2, 5, 9]) if kind == "user" else Queries.for_items(np.array([4, 8, 12]))
    )
    before = model.score(queries)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    assert loaded.config.id_embedding.kind == "hashed"
    np.testing.assert_array_equal(loaded.score(queries), before)
    assert np.isneginf(before[:, :N_RESERVED]).all() and np.isfinite(before[:, N_RESERVED:]).all()
    assert loaded.item_vectors().shape[0] == meta.n_items
    weights = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    assert not any(key.endswith(".index") for key in weights)


def _block_data(seed: int = 0):
    """200 items in 4 taste blocks, 120 users; each user rated 12 items of their block.

    Popularity is skewed (a Zipf-like weight inside each block) but block-blind, so a
    model must find the blocks to beat it. Two more block items per user are held out.
    """
    rng = np.random.default_rng(seed)
    n_blocks, per_block, n_users = 4, 50, 120
    weight = 1.0 / np.arange(1, per_block + 1) ** 0.8
    weight /= weight.sum()
    sessions, users, held = [], [], []
    for u in range(n_users):
        block = u % n_blocks
        items = N_RESERVED + block * per_block + rng.choice(per_block, 14, False, p=weight)
        sessions.append(items[:12].tolist())
        users.append(N_RESERVED + u)
        held.append(items[12:])
    train = interactions(sessions, users=users)
    meta = DataMeta.from_interactions(
        train, n_items=N_RESERVED + n_blocks * per_block, n_users=N_RESERVED + n_users
    )
    return train, meta, np.array(users), np.array(held), sessions


def _recall(scores: np.ndarray, seen: list[list[int]], held: np.ndarray, k: int = 10) -> float:
    scores = scores.copy()
    scores[:, :N_RESERVED] = -np.inf
    for row, items in enumerate(seen):
        scores[row, items] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean([np.isin(h, t).mean() for h, t in zip(held, top, strict=True)]))


def test_hashed_mf_learns_planted_blocks_better_than_popularity():
    train, meta, users, held, seen = _block_data()
    popularity = np.broadcast_to(meta.item_counts.astype(np.float32), (len(users), meta.n_items))
    pop_recall = _recall(popularity, seen, held)
    config = {
        "epochs": 10,
        "patience": None,
        "factors": 16,
        "batch_size": 128,
        "learning_rate": 0.02,
        "device": "cpu",
        "id_embedding": {"kind": "hashed", "buckets": 0.5, "hashes": 2},
    }
    model = build_model("mf_bpr", config, meta).fit(train)
    assert isinstance(model.module.item, HashedEmbedding)
    hashed_recall = _recall(model.score(Queries.for_users(users)), seen, held)
    # 0.15 against 0.083 (a plain table: 0.45; the collisions of 4 ids per bucket cost it)
    assert hashed_recall > pop_recall + 0.04, (hashed_recall, pop_recall)


def test_params_overrides_select_hashed_ids_per_model():
    from recpipe.config import load_params

    params = load_params(
        None,
        [
            "train.model_configs.mf_bpr.id_embedding.kind=hashed",
            "train.model_configs.mf_bpr.id_embedding.buckets=0.25",
            "train.model_configs.mf_bpr.id_embedding.tables=[item]",
        ],
    )
    _, _, meta = planted()
    model = build_model("mf_bpr", params.train.model_configs["mf_bpr"], meta)
    spec = model.config.id_embedding
    assert (spec.kind, spec.buckets, spec.tables) == ("hashed", 0.25, ("item",))
    module = model._build_module()
    assert isinstance(module.item, HashedEmbedding) and isinstance(module.user, torch.nn.Embedding)
    assert module.item.n_buckets == 4  # a quarter of the 16 real planted items
    assert build_model("gru4rec", {}, meta).config.id_embedding.kind == "table"
