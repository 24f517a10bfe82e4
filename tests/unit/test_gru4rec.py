"""GRU4Rec and the contextual session RNN: losses by hand, batching, scoring, planted data."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from recpipe.evaluate.protocols import next_item
from recpipe.features.context import EVENT_TYPE_INDEX
from recpipe.features.idmap import N_RESERVED
from recpipe.models.data import DataMeta, Interactions, Queries
from recpipe.models.gru4rec import CONTEXT_UNKNOWN, GRU4Rec, context_codes
from recpipe.models.registry import build_model, load_model
from recpipe.models.session_losses import (
    LOSSES,
    accidental_hits,
    bpr,
    bpr_max,
    cross_entropy,
    cross_entropy_hits,
    negative_mask,
    top1,
    top1_max,
)
from tests.contract.planted import A, B, encoded_frame, interactions, planted

FAST = {"layers": [16], "n_sample": 16, "device": "cpu"}


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


# ---------------------------------------------------------------------- losses by hand
# Two rows, one sampled negative: columns (target 0, target 1, sample 0).
LOGITS = [[2.0, 0.5, -1.0], [1.0, 0.0, 0.5]]
# row b: (positive, [negatives])
ROWS = [(2.0, [0.5, -1.0]), (0.0, [1.0, 0.5])]


def _hand(kind: str, rows, *, bpreg: float = 0.0) -> float:
    """The mean over rows of each loss, written out."""
    out = []
    for pos, negs in rows:
        n = len(negs)
        if kind == "top1":
            out.append(sum(_sig(r - pos) + _sig(r * r) for r in negs) / n)
        elif kind == "bpr":
            out.append(-sum(math.log(_sig(pos - r)) for r in negs) / n)
        elif kind == "top1_max":
            s = _softmax(negs)
            out.append(sum(w * (_sig(r - pos) + _sig(r * r)) for w, r in zip(s, negs, strict=True)))
        elif kind == "bpr_max":
            s = _softmax(negs)
            ranked = sum(w * _sig(pos - r) for w, r in zip(s, negs, strict=True))
            reg = sum(w * r * r for w, r in zip(s, negs, strict=True))
            out.append(-math.log(ranked) + bpreg * reg)
    return sum(out) / len(out)


def _full_mask(b: int, n: int) -> torch.Tensor:
    mask = torch.ones(b, b + n, dtype=torch.bool)
    mask[:, :b].fill_diagonal_(False)
    return mask


@pytest.mark.parametrize("kind", ["top1", "bpr", "top1_max", "bpr_max"])
def test_ranking_losses_by_hand(kind):
    logits = torch.tensor(LOGITS)
    got = LOSSES[kind](logits, _full_mask(2, 1), bpreg=0.5)
    assert got.item() == pytest.approx(_hand(kind, ROWS, bpreg=0.5), rel=1e-6)


def test_bpr_max_regularisation_by_hand():
    logits = torch.tensor(LOGITS)
    plain = bpr_max(logits, _full_mask(2, 1), bpreg=0.0).item()
    # row 0: softmax over (0.5, -1.0); row 1: over (1.0, 0.5)
    s0, s1 = _softmax([0.5, -1.0]), _softmax([1.0, 0.5])
    reg = (s0[0] * 0.25 + s0[1] * 1.0 + s1[0] * 1.0 + s1[1] * 0.25) / 2
    assert bpr_max(logits, _full_mask(2, 1), bpreg=2.0).item() == pytest.approx(
        plain + 2.0 * reg, rel=1e-6
    )


def test_cross_entropy_with_logq_by_hand():
    logits = torch.tensor(LOGITS)
    log_q = torch.tensor([math.log(0.5), math.log(0.2), math.log(0.1)])
    plain = [
        -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5) + math.exp(-1.0))),
        -math.log(math.exp(0.0) / (math.exp(1.0) + math.exp(0.0) + math.exp(0.5))),
    ]
    assert cross_entropy(logits, _full_mask(2, 1)).item() == pytest.approx(sum(plain) / 2)
    c = [2.0 - math.log(0.5), 0.5 - math.log(0.2), -1.0 - math.log(0.1)]
    d = [1.0 - math.log(0.5), 0.0 - math.log(0.2), 0.5 - math.log(0.1)]
    corrected = [
        -math.log(math.exp(c[0]) / sum(math.exp(x) for x in c)),
        -math.log(math.exp(d[1]) / sum(math.exp(x) for x in d)),
    ]
    got = cross_entropy(logits, _full_mask(2, 1), log_q=log_q).item()
    assert got == pytest.approx(sum(corrected) / 2, rel=1e-6)


def test_negative_mask_drops_the_target_duplicates_and_inactive_rows():
    targets = torch.tensor([5, 6, 7])
    samples = torch.tensor([6, 9])
    mask = negative_mask(targets, samples, torch.tensor([True, True, False]))
    expected = [
        [False, True, False, True, True],  # row 0: col 2 is an inactive row's target
        [True, False, False, False, True],  # row 1: the sample 6 is its own target
        [True, True, False, True, True],  # row 2 (inactive: its loss does not count)
    ]
    assert mask.tolist() == expected
    assert negative_mask(torch.tensor([4, 4])).tolist() == [[False, False], [False, False]]


def test_accidental_hits_are_the_sparse_duplicates_of_the_mask():
    rng = np.random.default_rng(0)
    targets = rng.integers(2, 12, size=16)
    samples = rng.integers(2, 12, size=40)
    columns = np.concatenate([targets, samples])
    rows, cols = accidental_hits(targets, columns)
    dense = columns[None, :] == targets[:, None]
    np.fill_diagonal(dense[:, :16], False)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == sorted(
        zip(*np.nonzero(dense), strict=True)
    )
    empty = accidental_hits(np.array([3, 4]), np.array([3, 4, 5]))
    assert empty[0].size == 0 and empty[1].size == 0


def test_the_cross_entropy_fast_path_equals_the_masked_loss_and_its_gradient():
    rng = np.random.default_rng(1)
    b, n = 8, 30
    targets = rng.integers(2, 10, size=b)
    samples = rng.integers(2, 10, size=n)
    active = torch.from_numpy(rng.random(b) > 0.25)
    log_q = torch.from_numpy(rng.normal(size=b + n)).float()
    base = torch.from_numpy(rng.normal(size=(b, b + n))).float()

    dense_logits = base.clone().requires_grad_()
    mask = negative_mask(torch.from_numpy(targets), torch.from_numpy(samples), active)
    dense = cross_entropy(dense_logits, mask, active, log_q=log_q)
    dense.backward()

    fast_logits = base.clone().requires_grad_()
    offset = -log_q.clone()
    offset[:b] = offset[:b].masked_fill(~active, float("-inf"))
    rows, cols = accidental_hits(targets, np.concatenate([targets, samples]))
    fast = cross_entropy_hits(
        fast_logits + offset, torch.from_numpy(rows), torch.from_numpy(cols), active
    )
    fast.backward()
    assert fast.item() == pytest.approx(dense.item(), rel=1e-6)
    torch.testing.assert_close(fast_logits.grad, dense_logits.grad)


# Three rows, two samples; row 2 inactive, row 1's sample 6 is its target (see above).
MASKED_LOGITS = [
    [1.5, 0.2, 9.0, -0.3, 0.7],
    [0.4, -0.5, 9.0, 2.0, 1.1],
    [9.0, 9.0, 9.0, 9.0, 9.0],
]
MASKED_ROWS = [(1.5, [0.2, -0.3, 0.7]), (-0.5, [0.4, 1.1])]


@pytest.mark.parametrize("kind", ["top1", "bpr", "top1_max", "bpr_max", "cross_entropy"])
def test_masked_rows_and_columns_by_hand(kind):
    logits = torch.tensor(MASKED_LOGITS, requires_grad=True)
    active = torch.tensor([True, True, False])
    mask = negative_mask(torch.tensor([5, 6, 7]), torch.tensor([6, 9]), active)
    got = LOSSES[kind](logits, mask, active, bpreg=0.5)
    if kind == "cross_entropy":
        expected = sum(
            -math.log(math.exp(p) / (math.exp(p) + sum(math.exp(r) for r in negs)))
            for p, negs in MASKED_ROWS
        ) / len(MASKED_ROWS)
    else:
        expected = _hand(kind, MASKED_ROWS, bpreg=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    assert torch.all(grad[2] == 0) and torch.all(grad[:, 2] == 0)  # the inactive row
    assert grad[1, 3] == 0  # row 1's duplicate of its target


@pytest.mark.parametrize("loss", [top1, bpr, top1_max, bpr_max, cross_entropy])
def test_rows_without_negatives_give_a_finite_zero(loss):
    logits = torch.tensor([[0.3, 1.0]], requires_grad=True)  # one row, its only sample = target
    mask = negative_mask(torch.tensor([4]), torch.tensor([4]))
    got = loss(logits, mask)
    got.backward()
    assert got.item() == 0.0 and torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------- data helpers
def second_order_sessions(seed: int, reps: int, groups: int = 4) -> list[list[int]]:
    """Item x follows (a, b) and item y follows (c, b): the last item alone is ambiguous."""
    rng = np.random.default_rng(seed)
    sessions = []
    for _ in range(reps):
        for g in range(groups):
            a, c, b, x, y = (2 + 5 * g + np.arange(5)).tolist()
            sessions += [[a, b, x], [c, b, y]]
    return [sessions[i] for i in rng.permutation(len(sessions))]


def iid_sessions(seed: int, n: int, n_items: int = 30) -> list[list[int]]:
    """Sessions of items drawn independently from a Zipf popularity: no sequence at all."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1)
    return [(2 + rng.choice(n_items, size=5, p=p / p.sum())).tolist() for _ in range(n)]


VIEW, CART = EVENT_TYPE_INDEX["view"], EVENT_TYPE_INDEX["cart"]


def cart_sessions(seed: int, n: int) -> Interactions:
    """After a view of item i comes i + 1; after a cart of i comes i + 5 (mod 10).

    The event type of each event is random (40% carts), so the item sequence alone
    cannot tell which successor is next; the current event's type can.
    """
    rng = np.random.default_rng(seed)
    sessions, types = [], []
    for _ in range(n):
        item, s, t = int(rng.integers(0, 10)), [], []
        for _ in range(5):
            cart = bool(rng.random() < 0.4)
            s.append(2 + item)
            t.append(CART if cart else VIEW)
            item = (item + 5) % 10 if cart else (item + 1) % 10
        sessions.append(s)
        types.append(t)
    frame = encoded_frame(sessions)
    frame["event_type_idx"] = np.concatenate(types).astype("int8")
    return Interactions.from_frame(frame)


@pytest.fixture(scope="module")
def planted_data():
    return planted()


@pytest.fixture(scope="module")
def fitted(planted_data):
    train, valid, meta = planted_data
    return build_model("gru4rec", {**FAST, "epochs": 3, "batch_size": 8}, meta).fit(train, valid)


# ---------------------------------------------------------------------- training
def test_every_event_is_fed_once_per_epoch_in_session_order(planted_data):
    # sessions of several lengths, one of length 1 (no pair: never fed)
    sessions = [[2, 3, 4, 5, 6], [7, 8], [9], [10, 11, 12], [4, 6, 8, 10, 12, 2, 3], [5, 5]]
    train = interactions(sessions)
    meta = DataMeta.from_interactions(train, n_items=14)
    model = build_model("gru4rec", {**FAST, "epochs": 2, "batch_size": 3}, meta)
    seen = defaultdict(lambda: defaultdict(list))  # epoch -> session -> inputs
    targets = defaultdict(lambda: defaultdict(list))
    real_step = model._step
    epoch = {"n": -1}
    steps = []

    def spy(module, batch, device):
        if model._hidden is None:  # the first step of an epoch starts from zero states
            epoch["n"] += 1
        for lane in np.flatnonzero(batch.active):
            s = int(batch.session[lane])
            assert batch.reset[lane] == (len(seen[epoch["n"]][s]) == 0)
            seen[epoch["n"]][s].append(int(batch.inputs[lane]))
            targets[epoch["n"]][s].append(int(batch.targets[lane]))
        steps.append(batch)
        return real_step(module, batch, device)

    model._step = spy
    model.fit(train)
    assert epoch["n"] == 1
    for e in (0, 1):
        assert set(seen[e]) == {0, 1, 3, 4, 5}
        for s, items in enumerate(sessions):
            if len(items) >= 2:
                assert seen[e][s] == items[:-1]
                assert targets[e][s] == items[1:]
    assert all(len(b.negatives) == 16 for b in steps)
    assert model._hidden is None  # dropped after fit


def test_batches_are_a_function_of_the_epoch(planted_data):
    train, _valid, meta = planted_data
    model = build_model("gru4rec", FAST, meta)
    model._prepare(train, None)

    def epoch(e):
        return [(b.inputs.tolist(), b.negatives.tolist()) for b in model._batches(e)]

    assert epoch(1) == epoch(1)
    assert epoch(1) != epoch(2)


@pytest.mark.parametrize("embedding", ["onehot", "separate", "tied"])
def test_every_input_mode_learns(embedding, planted_data):
    train, _valid, meta = planted_data
    config = {
        **FAST,
        "embedding": embedding,
        "embedding_dim": 8,
        "epochs": 8,
        "patience": None,
        "batch_size": 8,
    }
    model = build_model("gru4rec", config, meta).fit(train)
    losses = [r["loss"] for r in model.training.history]
    assert losses[-1] < 0.8 * losses[0], losses
    if embedding == "tied":
        assert not hasattr(model.module, "item_in") and not hasattr(model.module, "item_gates")
    assert model.score(Queries.from_item_lists([[A]])).argmax() == B


@pytest.mark.parametrize("loss", ["top1", "bpr", "top1_max", "bpr_max", "cross_entropy"])
def test_every_loss_trains(loss, planted_data):
    train, _valid, meta = planted_data
    config = {**FAST, "loss": loss, "epochs": 6, "patience": None, "batch_size": 8, "logq": 1.0}
    model = build_model("gru4rec", config, meta).fit(train)
    losses = [r["loss"] for r in model.training.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_logq_is_the_log_of_the_candidate_mixture(planted_data):
    train, _valid, meta = planted_data
    cfg = {**FAST, "logq": 0.5, "batch_size": 4, "n_sample": 12, "sample_alpha": 0.5}
    model = build_model("gru4rec", cfg, meta)
    model._prepare(train, None)
    counts = meta.item_counts.astype(float)
    pop = counts / counts.sum()
    alpha = counts**0.5 / (counts**0.5).sum()
    q = (4 * pop + 12 * alpha) / 16
    real = counts > 0
    np.testing.assert_allclose(
        model._log_q.numpy()[real], 0.5 * np.log(q[real]), rtol=1e-5, atol=1e-6
    )


def test_validation_reports_recall_and_mrr(fitted):
    history = fitted.training.history
    assert fitted.training.monitor == "recall@20"
    assert {"recall@20", "mrr@20"} <= set(history[0]["metrics"])
    assert all(0.0 <= r["metrics"]["mrr@20"] <= r["metrics"]["recall@20"] for r in history)


# ---------------------------------------------------------------------- scoring
def _step_through(model: GRU4Rec, items: list[int], codes: np.ndarray | None = None) -> np.ndarray:
    """Scores after stepping the module through ``items`` one at a time (no padding)."""
    module = model.module
    hidden = module.initial_state(1, torch.device("cpu"))
    context = None
    with torch.no_grad():
        for t, item in enumerate(items):
            c = None if codes is None else torch.from_numpy(codes[None, t])
            context = module.embed_context(c)
            hidden, output = module.step(torch.tensor([item]), hidden, context)
        if not items:
            output = module.readout(hidden[-1], None)
        return module.score_all(output)[0].numpy()


def test_scoring_a_prefix_equals_stepping_through_it(fitted):
    prefixes_ = [[A], [2, 5, A], [9, 10, 11, 4], [6, 6]]
    scores = fitted.score(Queries.from_item_lists(prefixes_))
    for row, items in zip(scores, prefixes_, strict=True):
        np.testing.assert_allclose(
            row[N_RESERVED:], _step_through(fitted, items)[N_RESERVED:], rtol=1e-5, atol=1e-5
        )


def test_left_padding_and_batching_do_not_change_scores(fitted):
    prefixes_ = [[A], [2, 5, A], [9, 10, 11, 4]]
    tight = fitted.score(Queries.from_item_lists(prefixes_))
    padded = fitted.score(Queries.from_item_lists(prefixes_, max_len=9))
    np.testing.assert_allclose(padded, tight, rtol=1e-5, atol=1e-6)
    alone = np.vstack([fitted.score(Queries.from_item_lists([p])) for p in prefixes_])
    np.testing.assert_allclose(alone, tight, rtol=1e-5, atol=1e-6)
    # an item query is a one-item session
    np.testing.assert_allclose(
        fitted.score(Queries.for_items([A])), tight[:1], rtol=1e-5, atol=1e-6
    )


def test_only_the_last_max_len_items_count(planted_data):
    train, valid, meta = planted_data
    model = build_model("gru4rec", {**FAST, "epochs": 1, "max_len": 2}, meta).fit(train, valid)
    long = model.score(Queries.from_item_lists([[9, 10, 11, 4, 5]]))
    short = model.score(Queries.from_item_lists([[4, 5]]))
    np.testing.assert_allclose(long, short, rtol=1e-5, atol=1e-6)


def test_an_empty_prefix_scores_from_the_zero_state(fitted):
    scores = fitted.score(Queries.from_item_lists([[], [A]], max_len=3))
    assert np.all(np.isfinite(scores[:, N_RESERVED:]))
    np.testing.assert_allclose(scores[0, N_RESERVED:], _step_through(fitted, [])[N_RESERVED:])


def test_context_scoring_equals_stepping_through_it(planted_data):
    train = cart_sessions(0, 30)
    meta = DataMeta.from_interactions(train, n_items=12)
    config = {
        **FAST,
        "epochs": 1,
        "context_input": "multiply",
        "context_recurrent": True,
        "context_output": "multiply",
    }
    model = build_model("gru4rec_ctx", config, meta).fit(train)
    items = np.array([[0, 3, 4, 9]])
    types = np.array([[0, VIEW, CART, VIEW]])
    hours = np.array([[0, 5, 6, 30]])  # 30 is out of range: clipped to the last row
    q = Queries.for_sessions(items, event_type_idx=types, hour=hours)
    codes = context_codes({"event_type_idx": types[0, 1:], "hour": hours[0, 1:]}, (3,))
    assert codes[:, 2].tolist() == [5, 6, 24] and codes[0, 3] == CONTEXT_UNKNOWN["dow"]
    expected = _step_through(model, [3, 4, 9], codes)
    np.testing.assert_allclose(model.score(q)[0, N_RESERVED:], expected[N_RESERVED:], rtol=1e-5)
    # the context matters, and queries without it use the unknown codes
    plain = model.score(Queries.from_item_lists([[3, 4, 9]]))
    assert not np.allclose(plain, model.score(q))
    unknown = context_codes({}, (3,))
    np.testing.assert_allclose(
        plain[0, N_RESERVED:], _step_through(model, [3, 4, 9], unknown)[N_RESERVED:], rtol=1e-5
    )


# ---------------------------------------------------------------------- persistence
@pytest.mark.parametrize("name", ["gru4rec", "gru4rec_ctx"])
def test_save_load_round_trip(name, planted_data, tmp_path):
    train, valid, meta = planted_data
    model = build_model(name, {**FAST, "epochs": 1, "embedding": "onehot"}, meta)
    model.fit(train, valid)
    loaded = load_model(model.save(tmp_path / name))
    assert type(loaded) is type(model) and loaded.config == model.config
    q = Queries.from_item_lists([[A], [2, 5, A], []])
    np.testing.assert_array_equal(loaded.score(q), model.score(q))


def test_training_resumes_after_a_kill_with_the_same_scores(planted_data, tmp_path):
    train, valid, meta = planted_data
    config = {**FAST, "epochs": 4, "patience": None, "batch_size": 8, "dropout_hidden": 0.2}
    whole = build_model("gru4rec", config, meta).fit(train, valid)

    class Killed(Exception):
        pass

    def die_at_epoch_2(record):
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        build_model("gru4rec", config, meta).fit(
            train, valid, checkpoint_dir=tmp_path, on_epoch=die_at_epoch_2
        )
    resumed = build_model("gru4rec", config, meta).fit(train, valid, checkpoint_dir=tmp_path)
    assert resumed.training.resumed_from == 2
    q = Queries.from_item_lists([[A], [2, 5, A], [9, 10]])
    np.testing.assert_array_equal(resumed.score(q), whole.score(q))
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------- planted structure
def test_second_order_structure_beats_the_markov_chain():
    train = interactions(second_order_sessions(0, 20))
    test = interactions(second_order_sessions(1, 2))
    meta = DataMeta.from_interactions(train, n_items=2 + 20)
    gru = build_model("gru4rec", {"epochs": 10, "patience": None, "device": "cpu"}, meta)
    gru.fit(train)
    markov = build_model("markov", {}, meta).fit(train)
    ours = next_item(gru, test, meta, ks=(1, 5)).metrics
    theirs = next_item(markov, test, meta, ks=(1, 5)).metrics
    # the Markov chain ties x and y after b: it gets half of those targets
    assert theirs["hitrate@1"] == pytest.approx(0.5)
    assert ours["hitrate@1"] >= 0.8
    assert ours["mrr@5"] > theirs["mrr@5"] + 0.1


def test_no_sequential_structure_is_invented():
    train, valid = interactions(iid_sessions(0, 300)), interactions(iid_sessions(2, 100))
    test = interactions(iid_sessions(1, 200))
    meta = DataMeta.from_interactions(train, n_items=32)
    gru = build_model("gru4rec", {"epochs": 10, "device": "cpu"}, meta).fit(train, valid)
    pop = build_model("pop", {}, meta).fit(train)
    ours = next_item(gru, test, meta, ks=(10,)).per_query["mrr@10"]
    theirs = next_item(pop, test, meta, ks=(10,)).per_query["mrr@10"]
    noise = 2.0 * np.std(ours - theirs) / math.sqrt(ours.shape[0])
    assert ours.mean() <= theirs.mean() + noise


def test_the_event_type_of_the_current_event_helps_the_contextual_model():
    train, test = cart_sessions(0, 200), cart_sessions(1, 40)
    meta = DataMeta.from_interactions(train, n_items=12)
    config = {"epochs": 10, "patience": None, "device": "cpu", "layers": [32], "n_sample": 64}
    plain = build_model("gru4rec", config, meta).fit(train)
    ctx = build_model("gru4rec_ctx", config, meta).fit(train)
    plain_m = next_item(plain, test, meta, ks=(1,)).metrics["hitrate@1"]
    ctx_m = next_item(ctx, test, meta, ks=(1,)).metrics["hitrate@1"]
    # the item alone leaves the two successors to chance; the cart flag decides
    assert ctx_m >= 0.9
    assert ctx_m > plain_m + 0.2
