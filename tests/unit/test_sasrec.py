"""SASRec: the causal mask lets no future item leak; each loss and its gradient equal a
direct computation on a tiny example; windows make each event a target once; user
queries read the kept history; the sequence kind follows the split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recpipe.features.idmap import N_RESERVED, PAD
from recpipe.models.data import Queries
from recpipe.models.registry import build_model
from recpipe.models.sasrec import (
    SASRecModule,
    bce,
    gbce_beta,
    sampled_softmax,
    sequence_windows,
)
from tests.contract.planted import planted

TINY = {"hidden": 8, "blocks": 2, "heads": 2, "max_len": 6, "batch_size": 4, "epochs": 1}


def _module(context: bool = False) -> SASRecModule:
    torch.manual_seed(0)
    module = SASRecModule(20, 5, d=8, blocks=2, heads=2, max_len=6, dropout=0.0, context=context)
    return module.eval()


def test_no_future_item_leaks_into_an_earlier_output() -> None:
    module = _module(context=True)
    items = torch.tensor([[0, 0, 4, 5, 6, 7], [3, 9, 8, 12, 4, 5]])
    codes = torch.randint(0, 4, (2, 6, 2))
    before = module.encode(items, codes)
    for cut in range(1, 6):  # change every item (and context) after position cut - 1
        later = items.clone()
        later[:, cut:] = torch.randint(N_RESERVED, 20, (2, 6 - cut))
        later_codes = codes.clone()
        later_codes[:, cut:] = torch.randint(0, 4, (2, 6 - cut, 2))
        after = module.encode(later, later_codes)
        real = items[:, :cut] != PAD
        assert torch.allclose(after[:, :cut][real], before[:, :cut][real], atol=1e-6), cut
        assert not torch.allclose(after[:, cut:], before[:, cut:])


def test_padding_does_not_change_an_output() -> None:
    module = _module()
    short = module.last(torch.tensor([[4, 5, 6]]))
    padded = module.last(torch.tensor([[0, 0, 0, 4, 5, 6]]))
    assert torch.allclose(short, padded, atol=1e-6)


def _tiny_problem():
    torch.manual_seed(1)
    h = torch.randn(5, 4, requires_grad=True)
    table = torch.randn(12, 4, requires_grad=True)
    targets = torch.tensor([3, 4, 5, 6, 3])
    columns = torch.tensor([7, 3, 8, 9])
    return h, table, targets, columns


def test_sampled_softmax_and_logq_equal_a_direct_computation() -> None:
    h, table, targets, columns = _tiny_problem()
    log_q = torch.log(torch.rand(12) + 0.1)
    loss = sampled_softmax(h, targets, table, columns, log_q[columns], log_q[targets])
    loss.backward()
    got = (h.grad.clone(), table.grad.clone())
    h.grad = table.grad = None
    direct = 0.0
    for m in range(5):  # row by row: the target column against the other columns
        logits = [h[m] @ table[targets[m]] - log_q[targets[m]]]
        for c in columns:
            if c != targets[m]:  # a column equal to the target is masked
                logits.append(h[m] @ table[c] - log_q[c])
        stacked = torch.stack(logits)
        direct = direct - (stacked[0] - torch.logsumexp(stacked, 0))
    direct = direct / 5
    direct.backward()
    assert torch.allclose(loss, direct, atol=1e-5)
    assert torch.allclose(got[0], h.grad, atol=1e-5)
    assert torch.allclose(got[1], table.grad, atol=1e-5)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_bce_and_gbce_equal_a_direct_computation(beta: float) -> None:
    h, table, targets, columns = _tiny_problem()
    pos = (h * table[targets]).sum(-1)
    neg = h @ table[columns].T
    loss = bce(pos, neg, beta)
    loss.backward()
    got = h.grad.clone()
    h.grad = table.grad = None
    sig = torch.sigmoid
    direct = 0.0
    for m in range(5):
        p = sig(h[m] @ table[targets[m]])
        direct = direct - torch.log(p**beta)
        for c in columns:
            direct = direct - torch.log(1 - sig(h[m] @ table[c]))
    (direct / 5).backward()
    assert torch.allclose(loss, direct / 5, atol=1e-5)
    assert torch.allclose(got, h.grad, atol=1e-5)


def test_gbce_beta_spans_bce_to_calibrated() -> None:
    assert gbce_beta(256, 1001, 0.0) == pytest.approx(1.0)  # plain BCE
    assert gbce_beta(256, 1001, 1.0) == pytest.approx(256 / 1000)  # beta = alpha
    assert 256 / 1000 < gbce_beta(256, 1001, 0.75) < 1.0


@pytest.mark.parametrize("loss", ["cross_entropy", "sampled_softmax", "bce", "gbce"])
def test_each_loss_in_a_training_step_equals_its_formula(loss: str) -> None:
    train, valid, meta = planted()
    options = {**TINY, "loss": loss, "dropout": 0.0, "n_negatives": 5, "logq": 0.0}
    model = build_model("sasrec", options, meta)
    model.set_histories(train)
    model._prepare(train, valid)
    module = model._build_module()
    batch = next(iter(model._batches(0)))
    got, n = model._step(module, batch, torch.device("cpu"))
    out = module.encode(torch.as_tensor(batch.inputs))
    table = module.item.weight
    terms = []
    for b, t in zip(*np.nonzero(batch.targets != PAD), strict=True):
        hv, y = out[b, t], int(batch.targets[b, t])
        if loss == "cross_entropy":
            logits = table[N_RESERVED:] @ hv
            terms.append(torch.logsumexp(logits, 0) - hv @ table[y])
        elif loss == "sampled_softmax":
            cols = [c for c in batch.negatives.tolist() if c != y]
            logits = torch.stack([hv @ table[y], *[hv @ table[c] for c in cols]])
            terms.append(torch.logsumexp(logits, 0) - logits[0])
        elif loss == "bce":
            neg = int(batch.negatives[b, t])
            terms.append(-torch.log(torch.sigmoid(hv @ table[y])))
            terms.append(-torch.log(1 - torch.sigmoid(hv @ table[neg])))
        else:
            beta = gbce_beta(5, meta.n_real_items, options.get("gbce_t", 0.75))
            terms.append(-beta * torch.log(torch.sigmoid(hv @ table[y])))
            assert batch.negatives.shape == (len(batch), 5)  # per sequence
            for c in batch.negatives[b].tolist():
                if c != y:
                    terms.append(-torch.log(1 - torch.sigmoid(hv @ table[c])))
    direct = torch.stack(terms).sum() / n
    assert n == int((batch.targets != PAD).sum())
    assert torch.allclose(got, direct, atol=1e-4), (float(got), float(direct))


def test_windows_make_each_event_after_the_first_a_target_once() -> None:
    order = np.arange(12)
    offsets = np.array([0, 1, 4, 12])  # lengths 1 (no window), 3, 8
    windows, owner = sequence_windows(order, offsets, width=4)
    targets = [int(w[j + 1]) for w in windows for j in range(3) if w[j] >= 0 and w[j + 1] >= 0]
    assert sorted(targets) == [2, 3, 5, 6, 7, 8, 9, 10, 11]
    assert set(owner.tolist()) == {1, 2}


def test_user_queries_read_the_kept_history() -> None:
    train, valid, meta = planted()
    model = build_model("sasrec", {**TINY, "epochs": 2}, meta).fit(train, valid)
    user = 3
    mine = np.flatnonzero(train.user_idx == user)
    mine = mine[np.argsort(train.timestamp[mine], kind="stable")][-TINY["max_len"] :]
    as_session = model.score(Queries.from_item_lists([train.item_idx[mine].tolist()]))
    as_user = model.score(Queries.for_users([user]))
    np.testing.assert_allclose(as_user, as_session, rtol=1e-5, atol=1e-5)
    assert model.item_vectors().shape == (meta.n_items, TINY["hidden"])


def test_the_sequence_kind_follows_the_split() -> None:
    _, _, meta = planted()
    model = build_model("sasrec", TINY, meta)
    assert model.by_session is (meta.split == "session")
    assert build_model("sasrec", {**TINY, "sequence": "session"}, meta).by_session
    with pytest.raises(Exception, match="multiple of heads"):
        SASRecModule(10, 2, d=6, blocks=1, heads=4, max_len=3, dropout=0.0, context=False)
    assert math.isclose(gbce_beta(10, 11, 1.0), 1.0)  # every item a negative: a = 1
