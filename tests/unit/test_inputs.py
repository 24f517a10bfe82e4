"""Triplet and CTR model inputs: coverage, sharding, labels, context and hashed crosses."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recpipe.features.inputs import (
    CtrExamples,
    cross_columns,
    ctr_batches,
    ctr_examples,
    hash_cross,
    shard_order,
    triplet_batches,
)
from recpipe.features.sampling import N_RESERVED, NegativeSampler

N_ITEMS = 40
N_USERS = 15


@pytest.fixture
def sampler() -> NegativeSampler:
    counts = np.arange(N_ITEMS, dtype=np.int64)  # item i has count i
    return NegativeSampler(counts, alpha=1.0, seed=0, cache_size=1000)


@pytest.fixture
def interactions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    users = rng.integers(N_RESERVED, N_USERS, size=103)
    items = rng.integers(N_RESERVED, N_ITEMS, size=103)
    return users, items


# ---------------------------------------------------------------------- shard_order
@settings(max_examples=100, deadline=None, database=None)
@given(
    n=st.integers(min_value=0, max_value=60),
    batch_size=st.integers(min_value=1, max_value=8),
    world_size=st.integers(min_value=1, max_value=4),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
)
def test_shard_order_disjoint_cover(n, batch_size, world_size, shuffle, drop_last):
    shards = [
        shard_order(
            n,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=4,
            rank=r,
            world_size=world_size,
            drop_last=drop_last,
        )
        for r in range(world_size)
    ]
    union = np.concatenate(shards)
    assert len(np.unique(union)) == len(union)  # disjoint
    if drop_last:
        n_batches = {len(s) // batch_size for s in shards}
        assert len(n_batches) == 1  # the same number of full batches everywhere
        assert all(len(s) % batch_size == 0 for s in shards)
        assert n - len(union) < batch_size * world_size
    else:
        assert sorted(union.tolist()) == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


# ---------------------------------------------------------------------- triplets
def test_triplets_cover_every_pair_once(interactions, sampler):
    users, items = interactions
    batches = list(
        triplet_batches(users, items, n_negatives=3, batch_size=16, sampler=sampler, seed=1)
    )
    assert [len(b) for b in batches] == [16] * 6 + [7]
    for b in batches:
        assert b.users.shape == b.positives.shape == (len(b),)
        assert b.negatives.shape == (len(b), 3)
        assert b.negatives.dtype == np.int64
        assert b.negatives.min() >= N_RESERVED
    emitted = Counter(
        (int(u), int(i)) for b in batches for u, i in zip(b.users, b.positives, strict=True)
    )
    assert emitted == Counter(zip(users.tolist(), items.tolist(), strict=True))


def test_triplets_shuffle_is_seeded(interactions, sampler):
    users, items = interactions

    def epoch(seed: int, shuffle: bool = True) -> list[int]:
        fresh = sampler.reseeded(0)
        return [
            u
            for b in triplet_batches(
                users,
                items,
                n_negatives=1,
                batch_size=10,
                sampler=fresh,
                seed=seed,
                shuffle=shuffle,
            )
            for u in b.users.tolist()
        ]

    assert epoch(1) == epoch(1)
    assert epoch(1) != epoch(2)
    assert epoch(1, shuffle=False) == users.tolist()


def test_triplets_sharded_disjoint_and_complete(interactions, sampler):
    users, items = interactions
    index = np.arange(len(users))  # pass row ids as "users" to track rows exactly
    seen = []
    for rank in range(3):
        for b in triplet_batches(
            index,
            items,
            n_negatives=2,
            batch_size=8,
            sampler=sampler,
            seed=5,
            rank=rank,
            world_size=3,
        ):
            assert np.array_equal(b.positives, items[b.users])
            seen += b.users.tolist()
    assert sorted(seen) == index.tolist()


def test_triplets_drop_last_and_exclude_positive(interactions, sampler):
    users, items = interactions
    counts = []
    for rank in range(2):
        batches = list(
            triplet_batches(
                users,
                items,
                n_negatives=5,
                batch_size=16,
                sampler=sampler,
                seed=0,
                rank=rank,
                world_size=2,
                drop_last=True,
                exclude_positive=True,
            )
        )
        assert all(len(b) == 16 for b in batches)
        for b in batches:
            assert not np.any(b.negatives == b.positives[:, None])
        counts.append(len(batches))
    assert counts == [3, 3]  # 103 // 32 = 3 full batches per rank


def test_bad_arguments_fail_on_the_call_not_at_the_first_batch(sampler):
    with pytest.raises(ValueError, match="item_idx has 2 entries, expected 3"):
        triplet_batches(np.arange(3), np.arange(2), n_negatives=1, batch_size=2, sampler=sampler)
    with pytest.raises(ValueError, match="batch_size"):
        triplet_batches(np.arange(3), np.arange(3), n_negatives=1, batch_size=0, sampler=sampler)
    with pytest.raises(ValueError, match="rank"):
        triplet_batches(
            np.arange(3), np.arange(3), n_negatives=1, batch_size=2, sampler=sampler, rank=1
        )


# ---------------------------------------------------------------------- CTR
@pytest.fixture
def item_category() -> np.ndarray:
    return np.arange(N_ITEMS) % 5  # category of each item index


@pytest.fixture
def context(interactions) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    n = len(interactions[0])
    return {
        "event_type": rng.integers(0, 4, n),
        "hour": rng.integers(0, 24, n),
        "dow": rng.integers(0, 7, n),
    }


def test_ctr_implicit_labels_negatives_and_context(interactions, sampler, item_category, context):
    users, items = interactions
    k = 4
    ex = ctr_examples(
        users,
        items,
        negatives_per_positive=k,
        sampler=sampler,
        seed=3,
        item_category=item_category,
        context=context,
    )
    n = len(users)
    assert len(ex) == n * (1 + k)
    assert ex.label.dtype == np.float32
    assert ex.positive_rate == pytest.approx(1 / (1 + k))

    def grid(col: np.ndarray) -> np.ndarray:  # (n * (1 + k),) -> (n, 1 + k)
        return col.reshape(n, 1 + k)

    assert np.all(grid(ex.label)[:, 0] == 1) and np.all(grid(ex.label)[:, 1:] == 0)
    assert np.array_equal(grid(ex.fields["item"])[:, 0], items)
    negatives = grid(ex.fields["item"])[:, 1:]
    assert negatives.min() >= N_RESERVED
    assert not np.any(negatives == items[:, None])  # the positive is never its own negative
    # Negatives share the user and the context of their positive.
    assert np.array_equal(ex.fields["user"], users[ex.source])
    for name, col in context.items():
        assert np.array_equal(ex.fields[name], col[ex.source])
        assert np.all(grid(ex.fields[name]) == col[:, None])
    assert np.array_equal(ex.fields["category"], item_category[ex.fields["item"]])
    # Same seed, same table; the sampler passed in is not advanced.
    before = sampler.reseeded(0).sample(5)
    again = ctr_examples(
        users,
        items,
        negatives_per_positive=k,
        sampler=sampler,
        seed=3,
        item_category=item_category,
        context=context,
    )
    assert np.array_equal(again.fields["item"], ex.fields["item"])
    other = ctr_examples(users, items, negatives_per_positive=k, sampler=sampler, seed=4)
    assert not np.array_equal(other.fields["item"], ex.fields["item"])
    assert np.array_equal(sampler.reseeded(0).sample(5), before)


def test_ctr_crosses_are_consistent_and_rebuildable(interactions, sampler, item_category, context):
    users, items = interactions
    ex = ctr_examples(
        users,
        items,
        negatives_per_positive=2,
        sampler=sampler,
        seed=0,
        item_category=item_category,
        context=context,
        n_cross_buckets=1024,
        hash_seed=7,
    )
    assert ex.crosses == (
        ("user", "category"),
        ("category", "hour"),
        ("category", "dow"),
        ("hour", "dow"),
    )
    names = [f"cross_{a}_{b}" for a, b in ex.crosses]
    assert list(ex.fields)[-4:] == names
    for (a, b), name in zip(ex.crosses, names, strict=True):
        col = ex.fields[name]
        assert col.dtype == np.int64
        assert col.min() >= 0 and col.max() < 1024
        # Equal field pairs always hash to the same bucket.
        bucket_of: dict[tuple[int, int], int] = {}
        for x, y, h in zip(ex.fields[a], ex.fields[b], col, strict=True):
            assert bucket_of.setdefault((int(x), int(y)), int(h)) == int(h)
    # Serving rebuilds the crosses from the recorded crosses, buckets and seed.
    base = {k: v for k, v in ex.fields.items() if not k.startswith("cross_")}
    rebuilt = cross_columns(base, ex.crosses, n_buckets=ex.n_cross_buckets, seed=ex.hash_seed)
    for name in names:
        assert np.array_equal(rebuilt[name], ex.fields[name])
    # Another hash seed gives other buckets.
    other = cross_columns(base, ex.crosses, n_buckets=1024, seed=8)
    assert not np.array_equal(other[names[0]], ex.fields[names[0]])


def test_ctr_default_crosses_only_where_fields_exist(interactions, sampler):
    users, items = interactions
    ex = ctr_examples(users, items, negatives_per_positive=1, sampler=sampler)
    assert ex.crosses == ()
    assert sorted(ex.fields) == ["item", "user"]
    custom = ctr_examples(
        users, items, negatives_per_positive=1, sampler=sampler, crosses=[("user", "item")]
    )
    assert "cross_user_item" in custom.fields
    with pytest.raises(ValueError, match="needs fields"):
        ctr_examples(
            users, items, negatives_per_positive=1, sampler=sampler, crosses=[("user", "hour")]
        )


def test_ctr_explicit_labels_no_sampling(interactions, item_category):
    users, items = interactions
    ratings = np.random.default_rng(2).integers(1, 6, len(users))
    ex = ctr_examples(
        users, items, negatives_per_positive=0, labels=ratings >= 4, item_category=item_category
    )
    assert len(ex) == len(users)
    assert np.array_equal(ex.fields["item"], items)
    assert np.array_equal(ex.label, (ratings >= 4).astype(np.float32))
    assert "cross_user_category" in ex.fields
    with pytest.raises(ValueError, match="expected 0"):
        ctr_examples(users, items, negatives_per_positive=2, labels=ratings >= 4)
    with pytest.raises(ValueError, match="needs a sampler"):
        ctr_examples(users, items, negatives_per_positive=2)
    with pytest.raises(ValueError, match="reserved"):
        ctr_examples(
            users, items, negatives_per_positive=0, labels=ratings >= 4, context={"item": items}
        )


def test_ctr_batches_cover_rows_once_across_ranks(interactions, sampler, context):
    users, items = interactions
    ex = ctr_examples(users, items, negatives_per_positive=3, sampler=sampler, context=context)
    assert isinstance(ex, CtrExamples)
    orders = []
    for rank in range(2):
        batches = list(ctr_batches(ex, 50, shuffle=True, seed=1, rank=rank, world_size=2))
        assert all(len(b) <= 50 for b in batches)
        order = shard_order(len(ex), batch_size=50, shuffle=True, seed=1, rank=rank, world_size=2)
        orders.append(order)
        # Batches are the rows of this rank's shard, in order, with every column aligned.
        for name, col in ex.fields.items():
            assert all(b.fields[name].shape == (len(b),) for b in batches)
            assert np.array_equal(np.concatenate([b.fields[name] for b in batches]), col[order])
        assert np.array_equal(np.concatenate([b.label for b in batches]), ex.label[order])
    assert sorted(np.concatenate(orders).tolist()) == list(range(len(ex)))
    unshuffled = list(ctr_batches(ex, 1000, shuffle=False))
    assert len(unshuffled) == 1 and np.array_equal(unshuffled[0].label, ex.label)


# ---------------------------------------------------------------------- hash
def test_hash_cross_spreads_pairs_over_buckets():
    a, b = np.meshgrid(np.arange(300), np.arange(300))
    h = hash_cross(a.ravel(), b.ravel(), n_buckets=64, seed=0, name="x")
    counts = np.bincount(h, minlength=64)
    expected = a.size / 64
    assert counts.min() > 0.9 * expected and counts.max() < 1.1 * expected
    # Stable values (the hash is part of saved models): pin a few.
    pinned = hash_cross(
        np.array([0, 1, 2]),
        np.array([5, 5, 5]),
        n_buckets=1 << 20,
        seed=0,
        name="cross_user_category",
    )
    assert pinned.tolist() == [65443, 377109, 191283]
    # int32 and int64 inputs hash alike; the name salts the hash.
    assert np.array_equal(
        hash_cross(
            np.array([0, 1, 2], dtype=np.int32),
            np.array([5, 5, 5], dtype=np.int8),
            n_buckets=1 << 20,
            seed=0,
            name="cross_user_category",
        ),
        pinned,
    )
    assert not np.array_equal(
        hash_cross(
            np.array([0, 1, 2]),
            np.array([5, 5, 5]),
            n_buckets=1 << 20,
            seed=0,
            name="cross_item_hour",
        ),
        pinned,
    )
    with pytest.raises(ValueError, match="n_buckets"):
        hash_cross(a, b, n_buckets=0)
