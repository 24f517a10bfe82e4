"""Row-sparse optimiser steps (recpipe.train.sparse) and MF's row-gradient step: they
must train as the dense optimiser step does, for the optimisers where that is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from recpipe.errors import TrainingError
from recpipe.features.inputs import TripletBatch
from recpipe.models.data import Queries
from recpipe.models.registry import build_model
from recpipe.train.loop import TrainConfig, make_optimizer
from recpipe.train.sparse import RowSparseStep, row_sparse_reason, segments
from tests.contract.planted import planted

CPU = torch.device("cpu")
#: the two optimisers whose update is row-sparse, as model config overrides
ROW_SPARSE = {
    "adagrad": {"optimizer": "adagrad", "learning_rate": 0.05},
    "sgd": {"optimizer": "sgd", "momentum": 0.0, "learning_rate": 0.5},
}


def _fit(name, config, *, dense, **fit_options):
    train, valid, meta = planted()
    model = build_model(name, config, meta)
    if dense:  # the same model without its row step: the loop's dense optimiser step
        model._row_sparse_step = lambda: None
    return model.fit(train, valid, **fit_options)


def _assert_same_params(got, want, **tolerance):
    for (key, p), (_, q) in zip(
        got.module.state_dict().items(), want.module.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(p, q, msg=key, **tolerance)


# ---------------------------------------------------------------------- the whole fit
@pytest.mark.parametrize("name", ["mf_bpr", "mf_bce"])
@pytest.mark.parametrize("optimizer", sorted(ROW_SPARSE))
@pytest.mark.parametrize("negatives", [1, 4])
@pytest.mark.parametrize("grad_clip", [None, 1e-3])
def test_the_row_sparse_fit_equals_the_dense_optimiser(name, optimizer, negatives, grad_clip):
    # batches of 16 over 12 users and 16 items: every batch repeats users and items, so
    # the rows' gradients add up; grad_clip 1e-3 clips every step, None never does
    config = {
        **ROW_SPARSE[optimizer],
        "epochs": 4,
        "patience": None,
        "batch_size": 16,
        "negatives": negatives,
        "grad_clip": grad_clip,
    }
    sparse = _fit(name, config, dense=False)
    dense = _fit(name, config, dense=True)
    assert sparse.training.extra["update"] == "rows"
    assert dense.training.extra["update"] == "dense"
    assert dense.training.extra["gradient"] == sparse.training.extra["gradient"] == "grad_step"
    _assert_same_params(sparse, dense, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        [r["loss"] for r in sparse.training.history],
        [r["loss"] for r in dense.training.history],
        rtol=1e-5,
    )
    # the parameters moved (a test of nothing otherwise)
    initial = build_model(name, config, planted()[2])._build_module().item.weight
    assert not torch.allclose(sparse.module.item.weight, initial)


def test_the_row_sparse_fit_resumes_after_a_kill_with_the_same_weights_and_state(tmp_path):
    config = {**ROW_SPARSE["adagrad"], "epochs": 5, "patience": None, "batch_size": 32}
    whole = _fit("mf_bpr", config, dense=False)

    class Killed(Exception):
        pass

    def die_at_epoch_2(record):
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        _fit("mf_bpr", config, dense=False, checkpoint_dir=tmp_path, on_epoch=die_at_epoch_2)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["optimizer"]["state"]
    assert {"sum", "step"} <= set(state[1])  # Adagrad's own state went into the checkpoint
    resumed = _fit("mf_bpr", config, dense=False, checkpoint_dir=tmp_path)
    assert resumed.training.resumed_from == 2
    assert resumed.training.extra["update"] == "rows"
    q = Queries.for_users([2, 5, 9])
    np.testing.assert_array_equal(resumed.score(q), whole.score(q))
    _assert_same_params(resumed, whole, rtol=0, atol=0)


def test_optimisers_that_move_rows_without_gradient_keep_the_dense_step():
    for config in (
        {},  # the default: adam
        {"optimizer": "adamw"},
        {"optimizer": "sgd"},  # momentum 0.9
        {"optimizer": "adagrad", "weight_decay": 1e-4},
    ):
        model = _fit("mf_bpr", {**config, "epochs": 1}, dense=False)
        assert model.training.extra["update"] == "dense", config
    hashed = {"id_embedding": {"kind": "hashed", "buckets": 0.5, "hashes": 2}}
    assert (
        build_model("mf_bpr", {**ROW_SPARSE["adagrad"], **hashed}, planted()[2])._row_sparse_step()
        is None
    )


# ---------------------------------------------------------------------- one step
def _batch_with_repeats(negatives: int) -> TripletBatch:
    rng = np.random.default_rng(negatives)
    users = rng.integers(2, 6, size=40)
    return TripletBatch(
        users, rng.integers(2, 8, size=40), rng.integers(2, 8, size=(40, negatives))
    )


@pytest.mark.parametrize("name", ["mf_bpr", "mf_bce"])
@pytest.mark.parametrize("negatives", [1, 4])
@pytest.mark.parametrize("l2", [0.1, 0.0])
def test_the_row_gradients_are_the_dense_gradients_rows(name, negatives, l2):
    train, _, meta = planted()
    model = build_model(name, {"l2": l2, "negatives": negatives}, meta)
    model._prepare(train, None)
    torch.manual_seed(0)
    module = model._build_module()
    with torch.no_grad():
        module.item_bias.weight.normal_()
        module.user_bias.weight.normal_()
    batch = _batch_with_repeats(negatives)
    module.zero_grad(set_to_none=True)
    want_loss, _ = model._closed_form_step(module, batch, CPU)
    loss, count, blocks = model._row_step(module, batch, CPU)
    assert count == 40
    torch.testing.assert_close(loss, want_loss)
    covered = set()
    for block in blocks:
        dense = torch.zeros_like(block.param)
        if block.rows is None:
            dense += block.grad
        else:
            assert block.rows.unique().numel() == block.rows.numel()  # distinct rows
            dense[block.rows] = block.grad
            if block.values is not None:
                torch.testing.assert_close(block.values, block.param.detach()[block.rows])
        torch.testing.assert_close(dense, block.param.grad, atol=1e-7, rtol=1e-5)
        covered.add(id(block.param))
    for param in module.parameters():  # the parameters left out have no gradient
        if id(param) not in covered:
            assert not param.grad.any()


@pytest.mark.parametrize("optimizer", sorted(ROW_SPARSE))
def test_a_row_sparse_step_moves_only_the_rows_with_a_gradient(optimizer):
    train, _, meta = planted()
    model = build_model("mf_bpr", {**ROW_SPARSE[optimizer], "negatives": 2}, meta)
    model._prepare(train, None)
    module = model._build_module()
    opt = make_optimizer(model.config.train_options(), module)
    update = RowSparseStep(opt, list(module.parameters()))
    batch = _batch_with_repeats(2)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    _, _, blocks = model._row_step(module, batch, CPU)
    update.step(blocks)
    touched_items = np.unique(np.concatenate([batch.positives, batch.negatives.ravel()]))
    untouched = np.setdiff1d(np.arange(meta.n_items), touched_items)
    after = module.state_dict()
    assert torch.equal(after["item.weight"][untouched], before["item.weight"][untouched])
    assert not torch.equal(
        after["item.weight"][touched_items], before["item.weight"][touched_items]
    )
    assert torch.equal(after["user_bias.weight"], before["user_bias.weight"])  # BPR: no gradient
    if optimizer == "adagrad":
        for value in opt.state_dict()["state"].values():
            assert int(value["step"]) == 1  # every parameter's counter, as the dense step
        item_sum = opt.state[module.item.weight]["sum"]
        assert not item_sum[untouched].any() and item_sum[touched_items].all()


# ---------------------------------------------------------------------- the pieces
def test_segments_group_ids_in_batch_order():
    ids = np.array([5, 2, 5, 9, 2, 5, 0])
    seg = segments(ids, 10)
    np.testing.assert_array_equal(seg.rows.numpy(), [0, 2, 5, 9])
    np.testing.assert_array_equal(seg.counts, [1, 2, 3, 1])
    np.testing.assert_array_equal(seg.offsets, [0, 1, 3, 6])
    np.testing.assert_array_equal(seg.order, [6, 1, 4, 0, 2, 5, 3])  # stable within a group
    big = np.array([70_000, 3, 70_000])  # a table beyond the 16-bit radix sort
    seg = segments(big, 100_000)
    np.testing.assert_array_equal(seg.rows.numpy(), [3, 70_000])
    np.testing.assert_array_equal(seg.order, [1, 0, 2])


def test_which_optimisers_are_row_sparse():
    module = torch.nn.Embedding(4, 2)
    reason = lambda **kw: row_sparse_reason(make_optimizer(TrainConfig(**kw), module))  # noqa: E731
    assert reason(optimizer="adagrad") is None
    assert reason(optimizer="sgd", momentum=0.0) is None
    assert "momentum 0.9" in reason(optimizer="sgd")
    assert "weight_decay" in reason(optimizer="adagrad", weight_decay=0.1)
    assert "Adam" in reason(optimizer="adam")
    with pytest.raises(TrainingError, match="Adam"):
        RowSparseStep(make_optimizer(TrainConfig(), module), list(module.parameters()))


def test_momentum_is_sgds_option():
    assert TrainConfig().momentum == 0.9  # the default sgd is unchanged
    module = torch.nn.Embedding(4, 2)
    opt = make_optimizer(TrainConfig(optimizer="sgd", momentum=0.5), module)
    assert opt.param_groups[0]["momentum"] == 0.5
    with pytest.raises(ValidationError, match=r"momentum 0\.5 applies to optimizer 'sgd' only"):
        TrainConfig(optimizer="adam", momentum=0.5)
