"""The shared torch blocks of the CTR models (recpipe.models.layers)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recpipe.models.layers import MLP, Bag, FieldEmbedding, FMInteraction, LinearWide, bag_from_csr


def test_fm_interaction_equals_the_sum_over_field_pairs():
    torch.manual_seed(0)
    v = torch.randn(3, 4, 5, dtype=torch.float64)
    brute = torch.zeros(3, dtype=torch.float64)
    for f, g in itertools.combinations(range(4), 2):
        brute += (v[:, f] * v[:, g]).sum(dim=1)
    torch.testing.assert_close(FMInteraction()(v), brute)


def test_fm_interaction_of_one_field_is_zero_and_shape_is_checked():
    assert FMInteraction()(torch.ones(2, 1, 3)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="B, F, D"):
        FMInteraction()(torch.ones(2, 3))


def test_field_embedding_offsets_and_bag_mean():
    emb = FieldEmbedding([3, 4], dim=2, bag_size=5)
    ids = torch.tensor([[0, 0], [2, 3]])
    # rows 2 and 0 and 1: mean of bag ids {1, 3}, then an empty row, then {4}
    bag = Bag(torch.tensor([1, 3, 4]), torch.tensor([0, 2]), torch.tensor([0.5, 0.5, 1.0]))
    out = emb(ids, bag)
    assert out.shape == (2, 3, 2)
    table = emb.table.weight
    torch.testing.assert_close(out[0, 0], table[0])
    torch.testing.assert_close(out[0, 1], table[3])  # item 0 lives after the 3 users
    torch.testing.assert_close(out[1, 1], table[3 + 3])
    torch.testing.assert_close(out[0, 2], emb.bag_table.weight[[1, 3]].mean(dim=0))
    torch.testing.assert_close(out[1, 2], emb.bag_table.weight[4])
    torch.testing.assert_close(emb.field_weight(1), table[3:7])
    torch.testing.assert_close(emb.field(1, torch.tensor([2])), table[[5]])
    empty = emb.bag(Bag(torch.tensor([1]), torch.tensor([0, 1])))
    assert empty[1].abs().sum() == 0  # an empty row pools to zeros


def test_field_embedding_checks_inputs():
    emb = FieldEmbedding([3], dim=2)
    assert emb(torch.tensor([[1], [2]])).shape == (2, 1, 2)
    with pytest.raises(ValueError, match=r"\(B, 1\)"):
        emb(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="no bag"):
        emb.bag(Bag(torch.tensor([0]), torch.tensor([0])))
    with pytest.raises(ValueError, match="bag="):
        FieldEmbedding([3], dim=2, bag_size=2)(torch.tensor([[1]]))
    with pytest.raises(ValueError, match="cardinality"):
        FieldEmbedding([3, 0], dim=2)


def test_linear_wide_sums_weights_and_bias():
    wide = LinearWide([3, 4], bag_size=6)
    with torch.no_grad():
        wide.table.weight.copy_(torch.arange(7, dtype=torch.float32)[:, None])
        wide.bag_table.weight.copy_(10.0 * torch.arange(6, dtype=torch.float32)[:, None])
        wide.bias.fill_(0.5)
    ids = torch.tensor([[1, 2], [0, 0]])
    bag = Bag(torch.tensor([5, 1, 2]), torch.tensor([0, 1]), torch.tensor([1.0, 0.5, 0.5]))
    out = wide(ids, bag)
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx([0.5 + 1 + (3 + 2) + 50, 0.5 + 0 + 3 + 15])
    assert wide(ids).tolist() == pytest.approx([6.5, 3.5])
    assert wide.pool(bag).tolist() == pytest.approx([50.0, 15.0])
    torch.testing.assert_close(wide.field_weight(1), torch.arange(3, 7, dtype=torch.float32))
    cross = LinearWide([], bag_size=8, bias=False)
    assert cross(bag=bag).tolist() == [0.0, 0.0]  # zero init, no bias
    with pytest.raises(ValueError, match="pass ids"):
        wide()


def test_hashed_fields_share_hash_functions_and_leave_the_rest_fused():
    from recpipe.models.hashed import HashedEmbedding, IdEmbeddingConfig

    spec = IdEmbeddingConfig(kind="hashed", buckets=0.5, hashes=2, tables=("item",))
    torch.manual_seed(0)
    emb = FieldEmbedding([5, 40], dim=3, names=("user", "item"), id_embedding=spec)
    wide = LinearWide([5, 40], names=("user", "item"), id_embedding=spec)
    assert emb.table is not None and emb.table.weight.shape == (5, 3)  # users only
    assert wide.table is not None and wide.table.weight.shape == (5, 1)
    hashed, hashed_w = emb.hashed["item"], wide.hashed["item"]
    assert isinstance(hashed, HashedEmbedding) and isinstance(hashed_w, HashedEmbedding)
    assert hashed.n_buckets == 19  # half of the 38 real ids
    torch.testing.assert_close(hashed.index, hashed_w.index, rtol=0, atol=0)
    with torch.no_grad():
        wide.hashed["item"].table.copy_(torch.randn_like(wide.hashed["item"].table))
        wide.table.weight.copy_(torch.randn_like(wide.table.weight))
    ids = torch.tensor([[0, 0], [4, 39], [2, 7]])
    out = emb(ids)
    torch.testing.assert_close(out[:, 0], emb.table.weight[ids[:, 0]])
    torch.testing.assert_close(out[:, 1], hashed(ids[:, 1]))
    torch.testing.assert_close(emb.field_weight(1)[ids[:, 1]], out[:, 1])
    torch.testing.assert_close(emb.field(1, ids[:, 1]), out[:, 1])
    expected = wide.field_weight(0)[ids[:, 0]] + wide.field_weight(1)[ids[:, 1]]
    torch.testing.assert_close(wide(ids), expected)
    torch.testing.assert_close(wide.field(1, ids[:, 1]), wide.field_weight(1)[ids[:, 1]])
    every = IdEmbeddingConfig(kind="hashed", buckets=4)
    all_hashed = FieldEmbedding([5, 40], dim=3, id_embedding=every)
    assert all_hashed.table is None and sorted(all_hashed.hashed) == ["0", "1"]
    assert all_hashed(ids).shape == (3, 2, 3)
    assert LinearWide([5, 40], id_embedding=every, bias=False)(ids).tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="2 distinct field names"):
        FieldEmbedding([5, 40], dim=3, names=("user",))


def test_mlp_shapes_and_first_layer_split():
    torch.manual_seed(0)
    mlp = MLP(6, [8, 4], dropout=0.2, out_dim=3).eval()
    x = torch.randn(5, 6)
    assert mlp(x).shape == (5, 3)
    assert mlp(torch.randn(2, 7, 6)).shape == (2, 7, 3)
    split = mlp.first_partial(x[:, :2], slice(0, 2), bias=True) + mlp.first_partial(
        x[:, 2:], slice(2, 6)
    )
    torch.testing.assert_close(mlp.tail(split), mlp(x))
    linear = MLP(6, [], out_dim=1)
    assert linear(x).shape == (5, 1)
    torch.testing.assert_close(linear.tail(linear.first(x)), linear(x))
    with pytest.raises(ValueError, match="dropout"):
        MLP(6, [4], dropout=1.0)
    with pytest.raises(ValueError, match="widths"):
        MLP(6, [0])


def test_bag_from_csr_matches_rows():
    m = sp.csr_matrix(np.array([[0, 1, 1], [0, 0, 0], [2, 0, 0]], dtype=np.float32))
    bag = bag_from_csr(m.indptr, m.indices, m.data)
    assert bag.indices.tolist() == [1, 2, 0]
    assert bag.offsets.tolist() == [0, 2, 2]
    assert bag.weights.tolist() == [1.0, 1.0, 2.0]
    table = torch.nn.EmbeddingBag(3, 1, mode="sum")
    with torch.no_grad():
        table.weight.copy_(torch.tensor([[1.0], [10.0], [100.0]]))
    out = table(bag.indices, bag.offsets, per_sample_weights=bag.weights)[:, 0]
    assert out.tolist() == [110.0, 0.0, 2.0]
    assert bag.shifted(3).indices.tolist() == [4, 5, 3]
