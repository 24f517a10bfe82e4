"""Matrix factorization models: their losses by hand, the exact Gramian loss, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recpipe.features.idmap import N_RESERVED
from recpipe.models.data import DataMeta, Queries
from recpipe.models.losses import (
    bpr_loss,
    mse_loss,
    sampled_bce_loss,
    weighted_full_loss,
    weighted_full_loss_bruteforce,
)
from recpipe.models.mf import MFModule
from recpipe.models.registry import build_model
from tests.contract.planted import HELD_OUT_ITEM, HELD_OUT_USER, N_ITEMS, interactions, planted


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------- losses by hand
def test_mse_by_hand():
    got = mse_loss(torch.tensor([3.0, 1.0]), torch.tensor([4.0, 1.5]))
    assert got.item() == pytest.approx((1.0 + 0.25) / 2)


def test_sampled_bce_by_hand():
    pos = torch.tensor([2.0, -1.0])
    neg = torch.tensor([[0.5, -3.0], [1.0, 0.0]])
    expected = (
        -(
            math.log(_sig(2.0))
            + math.log(_sig(-1.0))
            + math.log(1 - _sig(0.5))
            + math.log(1 - _sig(-3.0))
            + math.log(1 - _sig(1.0))
            + math.log(1 - _sig(0.0))
        )
        / 6
    )
    assert sampled_bce_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_bpr_by_hand():
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[1.0, 3.0], [-1.0, 0.0]])
    diffs = [1.0, -1.0, 1.0, 0.0]
    expected = -sum(math.log(_sig(d)) for d in diffs) / 4
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_loss_by_hand():
    # one user p = (1, 0); items q0 = (0.5, 0), q1 = (0, 2), q2 = (1, 1); observed: q2 with c=3
    users = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[0.5, 0.0], [0.0, 2.0], [1.0, 1.0]])
    rows, cols, conf = torch.tensor([0]), torch.tensor([2]), torch.tensor([3.0])
    # scores 0.5, 0, 1: observed 3 * (1 - 1)^2 = 0; unobserved 0.1 * (0.25 + 0)
    expected = 0.1 * 0.25
    for fn in (weighted_full_loss, weighted_full_loss_bruteforce):
        assert fn(users, items, rows, cols, conf, 0.1).item() == pytest.approx(expected)


def test_gramian_loss_equals_the_brute_force_sum_over_all_items():
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    items = torch.randn(40, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    cells = torch.randperm(7 * 40, generator=gen)[:60]
    rows, cols = cells // 40, cells % 40
    conf = 1 + 4 * torch.rand(60, generator=gen, dtype=torch.float64)
    fast = weighted_full_loss(users, items, rows, cols, conf, 0.3)
    slow = weighted_full_loss_bruteforce(users, items, rows, cols, conf, 0.3)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-10)
    g_fast = torch.autograd.grad(fast, (users, items))
    g_slow = torch.autograd.grad(slow, (users, items))
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b)


def test_augmented_vectors_fold_the_biases_in():
    module = MFModule(6, 9, 4, init_std=0.5)
    with torch.no_grad():
        module.user_bias.weight.normal_()
        module.item_bias.weight.normal_()
        module.global_bias.fill_(0.7)
    users = torch.tensor([2, 5])
    p, q = module.augmented(users, slice(2, None))
    torch.testing.assert_close(p @ q.T, module.score_all(users)[:, 2:])
    torch.testing.assert_close(
        module(users, torch.tensor([3, 8])), module.score_all(users)[[0, 1], [3, 8]]
    )


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("name", ["mf_bce", "mf_bpr", "mf_wals"])
def test_loss_falls_when_overfitting_one_batch(name):
    train, _, meta = planted()
    model = build_model(name, {"batch_size": 100_000, "learning_rate": 0.05}, meta)
    model._prepare(train, None)
    torch.manual_seed(0)
    module = model._build_module()
    batch = next(iter(model._batches(0)))
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss, _ = model._step(module, batch, torch.device("cpu"))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("name", ["mf_bce", "mf_bpr"])
def test_one_lookup_step_equals_the_forward_and_penalty_and_their_gradients(name):
    # the step looks each table up once and reuses the rows for the L2 term; it must give
    # the loss and every gradient of the forward pass plus the separately looked-up penalty
    from recpipe.models.losses import bpr_loss, sampled_bce_loss

    train, _, meta = planted()
    model = build_model(name, {"l2": 0.1, "batch_size": 64}, meta)
    model._prepare(train, None)
    torch.manual_seed(0)
    module = model._build_module()
    with torch.no_grad():  # non-zero biases, so a dropped bias would show
        for table in (module.user_bias, module.item_bias):
            table.weight.normal_()
        module.global_bias.fill_(0.3)
    batch = next(iter(model._batches(0)))
    device = torch.device("cpu")

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        module.zero_grad(set_to_none=False)
        loss.backward()
        return [p.grad.clone() for p in module.parameters()]

    users = torch.from_numpy(batch.users)
    items = torch.cat(
        [torch.from_numpy(batch.positives)[:, None], torch.from_numpy(batch.negatives)], dim=1
    )
    scores = module(users, items)
    loss_fn = bpr_loss if name == "mf_bpr" else sampled_bce_loss
    reference = loss_fn(scores[:, 0], scores[:, 1:]) + model._penalty(
        module, users, items.reshape(-1)
    )
    want = grads(reference)
    loss, count = model._step(module, batch, device)
    assert count == len(batch)
    torch.testing.assert_close(loss, reference)
    for got, expected in zip(grads(loss), want, strict=True):
        torch.testing.assert_close(got, expected)


def test_training_resumes_after_a_kill_with_the_same_weights(tmp_path):
    train, valid, meta = planted()
    config = {"epochs": 6, "patience": None, "device": "cpu"}
    whole = build_model("mf_bpr", config, meta).fit(train, valid)

    class Killed(Exception):
        pass

    def die_at_epoch_3(record):
        if record["epoch"] == 3:
            raise Killed

    with pytest.raises(Killed):
        build_model("mf_bpr", config, meta).fit(
            train, valid, checkpoint_dir=tmp_path, on_epoch=die_at_epoch_3
        )
    resumed = build_model("mf_bpr", config, meta).fit(train, valid, checkpoint_dir=tmp_path)
    assert resumed.training.resumed_from == 3
    q = Queries.for_users([2, 5, 9])
    np.testing.assert_array_equal(resumed.score(q), whole.score(q))
    assert not any(tmp_path.iterdir())  # the checkpoint goes once the run completes


def test_popularity_sampling_and_uniform_differ():
    train, valid, meta = planted()
    q = Queries.for_users([2, 9])
    uni = build_model("mf_bce", {"epochs": 3}, meta).fit(train, valid).score(q)
    pop = build_model("mf_bce", {"epochs": 3, "sampling": "popularity"}, meta)
    assert not np.array_equal(pop.fit(train, valid).score(q), uni)


def test_explicit_mf_learns_ratings():
    """Users 2..7 rate block A high and block B low; users 8..13 the other way round."""
    rng = np.random.default_rng(0)
    sessions, users, values = [], [], []
    for user in range(2, 14):
        likes_a = user < 8
        for _ in range(6):
            items = rng.choice(np.arange(4, 12), size=3, replace=False).tolist()
            if user == HELD_OUT_USER:
                items = [i for i in items if i != HELD_OUT_ITEM] or [4]
            sessions.append(items)
            users.append(user)
            values.append([5.0 if (i < 8) == likes_a else 1.0 for i in items])
    train = interactions(sessions, users=users, values=values)
    meta = DataMeta.from_interactions(train, n_items=N_ITEMS, n_users=14)
    valid = interactions([[4, 9], [5, 10]], users=[3, 12], values=[[5.0, 1.0], [1.0, 5.0]])
    model = build_model("mf_explicit", {"epochs": 60, "learning_rate": 0.02}, meta)
    model.fit(train, valid)
    assert model.training.monitor == "rmse"
    scores = model.score(Queries.for_users([HELD_OUT_USER, 12]))
    assert scores[0, HELD_OUT_ITEM] > 3.5  # a block-A item the user never rated
    assert scores[0, 9] < 2.5 and scores[1, 9] > 3.5


def test_implicit_models_refuse_data_without_known_pairs():
    train = interactions([[1, 1]], users=[1])  # UNK users and items only
    meta = DataMeta.from_interactions(train, n_items=N_ITEMS, n_users=14)
    for name in ("mf_bpr", "mf_wals"):
        with pytest.raises(ValueError, match="no \\(known user, known item\\) pair"):
            build_model(name, {}, meta).fit(train)


def test_the_weighted_loss_gradient_is_the_same_on_every_multithreaded_run():
    """issue 24, case 11: the backward of ``users[rows]`` (index_put_ with accumulate)
    adds in thread order on the CPU, so mf_wals's weights differed run to run."""
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(256, 66, generator=gen, requires_grad=True)
    items = torch.randn(3000, 66, generator=gen, requires_grad=True)
    rows = torch.randint(0, 256, (100_000,), generator=gen)
    cols = torch.randint(0, 3000, (100_000,), generator=gen)
    conf = torch.rand(100_000, generator=gen) + 1
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = set()
        for _ in range(8):
            users.grad = items.grad = None
            weighted_full_loss(users, items, rows, cols, conf, 0.2).backward()
            grads.add((users.grad.numpy().tobytes(), items.grad.numpy().tobytes()))
    finally:
        torch.set_num_threads(threads)
    assert len(grads) == 1


# ---------------------------------------------------------------------- closed-form gradient
def _triplets_with_repeats(n_negatives: int):
    """A batch whose users and items repeat (within a row and across rows), so the
    gradient rows of one id must add up."""
    from recpipe.features.inputs import TripletBatch

    rng = np.random.default_rng(n_negatives)
    users = rng.integers(2, 6, size=40)  # 4 users over 40 rows
    positives = rng.integers(2, 8, size=40)
    negatives = rng.integers(2, 8, size=(40, n_negatives))
    negatives[0] = positives[0]  # a row whose negative is its own positive
    return TripletBatch(users, positives, negatives)


def _module_with_biases(model):
    torch.manual_seed(0)
    module = model._build_module()
    with torch.no_grad():  # non-zero biases, so a dropped bias term would show
        for table in (module.user_bias, module.item_bias):
            table.weight.normal_()
        module.global_bias.fill_(0.3)
    return module


@pytest.mark.parametrize("name", ["mf_bpr", "mf_bce"])
@pytest.mark.parametrize("negatives", [1, 4])
@pytest.mark.parametrize("l2", [0.1, 1e-30, 0.0])
def test_the_closed_form_gradient_is_autograds(name, negatives, l2):
    train, _, meta = planted()
    model = build_model(name, {"l2": l2, "negatives": negatives}, meta)
    model._prepare(train, None)
    module = _module_with_biases(model)
    batch = _triplets_with_repeats(negatives)
    device = torch.device("cpu")

    module.zero_grad(set_to_none=True)
    want_loss, count = model._step(module, batch, device)
    want_loss.backward()
    want = {k: p.grad.clone() for k, p in module.named_parameters()}

    module.zero_grad(set_to_none=True)
    step = model._grad_step()
    assert step is not None
    loss, got_count = step(module, batch, device)
    assert got_count == count == 40
    assert not loss.requires_grad  # no graph was built
    torch.testing.assert_close(loss, want_loss.detach())
    for key, param in module.named_parameters():
        assert param.grad is not None and param.grad.shape == param.shape, key
        torch.testing.assert_close(param.grad, want[key], atol=1e-7, rtol=1e-5, msg=key)
    # the repeats matter: a gradient row gathers several of the batch's rows
    assert np.unique(batch.users).size < len(batch)


def test_the_closed_form_gradient_adds_into_existing_gradients():
    # index_add_ into .grad: a second step without zeroing accumulates, as backward does
    train, _, meta = planted()
    model = build_model("mf_bpr", {"negatives": 2}, meta)
    model._prepare(train, None)
    module = _module_with_biases(model)
    batch = _triplets_with_repeats(2)
    step = model._grad_step()
    module.zero_grad(set_to_none=True)
    step(module, batch, torch.device("cpu"))
    once = module.item.weight.grad.clone()
    step(module, batch, torch.device("cpu"))
    torch.testing.assert_close(module.item.weight.grad, 2 * once)


def test_autograd_runs_where_the_closed_form_does_not_apply():
    _, _, meta = planted()
    hashed = {"id_embedding": {"kind": "hashed", "buckets": 0.5, "hashes": 2}}
    assert build_model("mf_bpr", hashed, meta)._grad_step() is None
    assert build_model("mf_bce", {"gradient": "autograd"}, meta)._grad_step() is None
    assert build_model("mf_bpr", {}, meta)._grad_step() is not None


@pytest.mark.parametrize("name", ["mf_bpr", "mf_bce"])
def test_a_fit_follows_the_same_curve_with_either_gradient(name):
    train, _, meta = planted()
    # items new to their users, so that the validation's Recall@20 has something to find
    valid = interactions([[HELD_OUT_ITEM, 9], [4, 15]], users=[HELD_OUT_USER, 9])
    runs = {}
    for gradient in ("autograd", "closed_form"):
        config = {"epochs": 8, "patience": None, "negatives": 2, "batch_size": 32}
        model = build_model(name, {**config, "gradient": gradient}, meta).fit(train, valid)
        assert model.training.extra["gradient"] == (
            "grad_step" if gradient == "closed_form" else "autograd"
        )
        runs[gradient] = model
    auto, closed = runs["autograd"].training.history, runs["closed_form"].training.history
    assert len(auto) == len(closed) == 8 and all("metrics" in r for r in auto + closed)
    assert [r["examples"] for r in auto] == [r["examples"] for r in closed]
    np.testing.assert_allclose(
        [r["loss"] for r in closed], [r["loss"] for r in auto], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        [r["metrics"]["recall@20"] for r in closed],
        [r["metrics"]["recall@20"] for r in auto],
        atol=1e-6,
    )
    # BPR's loss has the same value for any user bias: autograd's zero gradient of it is
    # rounding residue, which Adam turns into steps of about learning_rate; the closed
    # form's is exactly zero. So scores may differ by one constant per user (ranking
    # unchanged): compare them centred per user.
    q = Queries.for_users([2, 5, 9])
    got, want = (runs[g].score(q)[:, N_RESERVED:] for g in ("closed_form", "autograd"))
    if name == "mf_bpr":
        got, want = got - got.mean(1, keepdims=True), want - want.mean(1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_the_closed_form_fit_is_bit_identical_run_to_run_with_threads():
    train, valid, meta = planted()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        scores = set()
        for _ in range(2):
            model = build_model("mf_bpr", {"epochs": 3, "batch_size": 16}, meta).fit(train, valid)
            scores.add(model.score(Queries.for_users([2, 5, 9])).tobytes())
    finally:
        torch.set_num_threads(threads)
    assert len(scores) == 1
