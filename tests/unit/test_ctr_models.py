"""Wide & Deep and DeepFM (recpipe.models.{ctr,wide_deep,deepfm}) and the ctr protocol."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recpipe.models.ctr as ctr_module
from recpipe.errors import ConfigError
from recpipe.evaluate.leaderboard import evaluate_models
from recpipe.evaluate.pointwise import ctr
from recpipe.features.idmap import N_RESERVED
from recpipe.features.inputs import hash_cross
from recpipe.models.data import Queries
from recpipe.models.deepfm import DeepFM, DeepFMNet
from recpipe.models.registry import build_model, load_model
from recpipe.models.torch_base import user_item_csr
from recpipe.models.wide_deep import WideAndDeep, WideAndDeepNet
from tests.contract.planted import BLOCK_A, BLOCK_B, N_ITEMS, N_USERS, POPULAR, A, B, planted

#: Small and quick, yet enough for the planted answer (as in the contract suite).
FAST = {
    "epochs": 25,
    "batch_size": 32,
    "patience": None,
    "embedding_dim": 16,
    "hidden": [32],
    "learning_rate": 0.01,
    "device": "cpu",
}
NAMES = ("wide_deep", "deepfm")


def fast(name: str, **changes) -> dict:
    cfg = {**FAST, **changes}
    if name == "wide_deep":
        cfg.setdefault("n_cross_buckets", 512)
    return cfg


def categories() -> sp.csr_matrix:
    """Multi-hot categories of the planted items: blocks, the A/B pair, two on POPULAR;
    items 14..17 and one block item have none (all-zero rows)."""
    rows = np.zeros((N_ITEMS, 4), dtype=np.float32)
    rows[POPULAR, [1, 2]] = 1.0
    rows[list(BLOCK_A[:3]), 1] = 1.0
    rows[list(BLOCK_B), 2] = 1.0
    rows[[A, B], 3] = 1.0
    rows[3, 0] = 1.0  # the "unknown" category
    return sp.csr_matrix(rows)


@pytest.fixture(scope="module")
def data():
    return planted()


def with_categories(meta, on: bool):
    return replace(meta, item_categories=categories() if on else None)


@pytest.fixture(scope="module", params=[(n, c) for n in NAMES for c in (True, False)])
def fitted(request, data):
    name, cats = request.param
    train, valid, meta = data
    return build_model(name, fast(name), with_categories(meta, cats)).fit(train, valid)


def _sigmoid_bce(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1.0 - y)))


def _hand_logits(model, batch) -> tuple[np.ndarray, float]:
    """Logits and embedding penalty of a batch from the module's weights, in numpy."""
    net = model.module
    p = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    n_users = model.meta.n_users
    users, items = batch.users, batch.items
    counts = model.meta.item_counts.astype(float)
    activity = model._user_activity.astype(float)
    d_user = np.log1p(activity[users]) / np.log1p(activity.max())
    d_item = np.log1p(counts[items]) / np.log1p(counts.max())
    cats = model.meta.item_categories
    table = p["embed.table.weight"]
    e_u, e_i = table[users], table[n_users + items]
    lin = p["linear.bias"] + p["linear.table.weight"][users, 0]
    lin = lin + p["linear.table.weight"][n_users + items, 0]
    fields = [e_u, e_i]
    cat_lists = [[] for _ in users]
    if cats is not None:
        dense = (cats.toarray() > 0).astype(float)
        cat_lists = [np.flatnonzero(dense[i]) for i in items]
        e_c = np.stack(
            [
                p["embed.bag_table.weight"][c].mean(axis=0) if len(c) else np.zeros(e_u.shape[1])
                for c in cat_lists
            ]
        )
        lin = lin + np.array(
            [p["linear.bag_table.weight"][c, 0].mean() if len(c) else 0.0 for c in cat_lists]
        )
        fields.append(e_c)
    x = np.concatenate([e_u, d_user[:, None], *fields[1:], d_item[:, None]], axis=1)
    h = x
    n_layers = len([k for k in p if k.startswith("mlp.layers.") and k.endswith(".weight")])
    for j in range(n_layers):
        h = h @ p[f"mlp.layers.{j}.weight"].T + p[f"mlp.layers.{j}.bias"]
        if j < n_layers - 1:
            h = np.maximum(h, 0.0)
    logit = lin + h[:, 0]
    if isinstance(model, DeepFM):
        for f in range(len(fields)):
            for g in range(f + 1, len(fields)):
                logit = logit + (fields[f] * fields[g]).sum(axis=1)
    else:
        cfg = model.config
        w = p["cross.bag_table.weight"][:, 0]
        bucket = np.floor(np.log2(1.0 + counts[items])).astype(np.int64)
        pop = hash_cross(
            users,
            bucket,
            n_buckets=cfg.n_cross_buckets,
            seed=cfg.hash_seed,
            name="cross_user_popularity",
        )
        logit = logit + w[pop]
        for r, (u, c) in enumerate(zip(users, cat_lists, strict=True)):
            if len(c):
                ids = hash_cross(
                    np.full(len(c), u),
                    c,
                    n_buckets=cfg.n_cross_buckets,
                    seed=cfg.hash_seed,
                    name="cross_user_category",
                )
                logit[r] += w[ids].mean()
    penalty = float(np.mean(sum((f**2).sum(axis=1) for f in fields)))
    return logit, penalty


# ---------------------------------------------------------------------- the loss
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cats", [True, False])
def test_batch_loss_equals_hand_computation(name, cats, data):
    train, _, meta = data
    cfg = fast(name, dropout=0.0, l2=0.01, hidden=[16, 8])
    model = build_model(name, cfg, with_categories(meta, cats))
    model._prepare(train, None)
    torch.manual_seed(1)
    module = model._build_module()
    with torch.no_grad():
        for param in module.parameters():  # weights away from their (zero) init
            param.copy_(0.3 * torch.randn_like(param))
    model.module = module
    batch = next(iter(model._batches(0)))
    loss, count = model._step(module, batch, torch.device("cpu"))
    assert count == len(batch)
    logits, penalty = _hand_logits(model, batch)
    expected = _sigmoid_bce(logits, batch.label) + 0.01 * penalty
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(
        module(batch.inputs(torch.device("cpu"))).detach().numpy(), logits, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls_when_overfitting_one_batch(name, data):
    train, _, meta = data
    cfg = fast(name, dropout=0.0, l2=0.0, batch_size=64)
    model = build_model(name, cfg, with_categories(meta, True))
    model._prepare(train, None)
    torch.manual_seed(0)
    module = model._build_module()
    batch = next(iter(model._batches(0)))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    losses = []
    for _ in range(200):
        optimizer.zero_grad()
        loss, _ = model._step(module, batch, torch.device("cpu"))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]


# ---------------------------------------------------------------------- training data
def test_epoch_batches_are_pure_and_negatives_unseen(data):
    train, _, meta = data
    model = build_model("wide_deep", fast("wide_deep", negatives=3), with_categories(meta, True))
    model._prepare(train, None)
    first = list(model._batches(0))
    again = list(model._batches(0))
    other = list(model._batches(1))
    assert len(first) == model._n_batches(0)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.crosses[0], b.crosses[0])
    items = np.concatenate([b.items for b in first])
    assert not np.array_equal(items, np.concatenate([b.items for b in other]))
    users = np.concatenate([b.users for b in first])
    label = np.concatenate([b.label for b in first])
    seen = user_item_csr(train, meta.n_users, meta.n_items)
    assert label.sum() == seen.nnz and len(label) == 4 * seen.nnz
    assert np.all(np.asarray(seen[users[label == 0], items[label == 0]]).ravel() == 0)
    assert np.all(np.asarray(seen[users[label == 1], items[label == 1]]).ravel() == 1)
    assert items.min() >= N_RESERVED and users.min() >= N_RESERVED


def test_negatives_without_exclude_seen_only_avoid_the_positive(data):
    train, _, meta = data
    model = build_model("deepfm", fast("deepfm", negatives=6, exclude_seen=False), meta)
    model._prepare(train, None)
    neg = model._negatives(0)
    assert neg.shape == (len(model._pos_items), 6)
    assert not np.any(neg == model._pos_items[:, None])
    seen = user_item_csr(train, meta.n_users, meta.n_items)
    users = np.repeat(model._pos_users, 6)
    assert np.asarray(seen[users, neg.ravel()]).sum() > 0  # other train items may be drawn


# ---------------------------------------------------------------------- scoring
def test_full_scores_equal_pairwise_logits(fitted):
    users = np.arange(N_USERS)
    scores = fitted.score(Queries.for_users(users))
    uu, ii = np.meshgrid(users, np.arange(N_RESERVED, N_ITEMS), indexing="ij")
    logits = fitted.predict_logit(uu.ravel(), ii.ravel()).reshape(uu.shape)
    np.testing.assert_allclose(scores[:, N_RESERVED:], logits, rtol=1e-5, atol=1e-5)
    proba = fitted.predict_proba(uu.ravel(), ii.ravel())
    np.testing.assert_allclose(proba, 1.0 / (1.0 + np.exp(-logits.ravel())), rtol=1e-12)
    assert np.all((proba >= 0) & (proba <= 1))


def test_chunked_scoring_gives_the_same_scores(fitted, monkeypatch):
    users = Queries.for_users(np.arange(N_USERS))
    whole = fitted.score(users)
    monkeypatch.setattr(ctr_module, "SCORE_CHUNK_BYTES", 1)  # one item per chunk
    np.testing.assert_allclose(fitted.score(users), whole, rtol=1e-6, atol=1e-6)


def test_save_load_round_trip_gives_identical_scores(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    loaded = load_model(path)
    assert type(loaded) is type(fitted)
    assert (loaded.meta.item_categories is None) == (fitted.meta.item_categories is None)
    q = Queries.for_users(np.arange(N_USERS))
    np.testing.assert_array_equal(loaded.score(q), fitted.score(q))
    users, items = np.array([2, 5, 9, 13]), np.array([7, 2, 9, 17])
    np.testing.assert_array_equal(
        loaded.predict_proba(users, items), fitted.predict_proba(users, items)
    )


def test_planted_block_mates_item_ranks_first(fitted, data):
    train = data[0]
    scores = fitted.score(Queries.for_users([2]))[0]
    scores[train.item_idx[train.user_idx == 2]] = -np.inf
    assert scores.argmax() == 7


def test_predict_proba_checks_its_input(fitted):
    with pytest.raises(ValueError, match="aligned"):
        fitted.predict_proba(np.array([2, 3]), np.array([4]))
    with pytest.raises(ValueError, match="items must lie"):
        fitted.predict_proba(np.array([2]), np.array([N_ITEMS]))
    assert fitted.predict_proba(np.zeros(0, int), np.zeros(0, int)).shape == (0,)


def test_unfitted_predict_proba_raises(data):
    from recpipe.models.base import NotFittedError

    with pytest.raises(NotFittedError):
        build_model("deepfm", {}, data[2]).predict_proba(np.array([2]), np.array([3]))


def test_config_options(data):
    meta = data[2]
    assert WideAndDeep.Config().negatives >= 1 and DeepFM.Config().hidden
    model = build_model("deepfm", {"hidden": [32, 16, 8]}, meta)
    assert model.config.hidden == (32, 16, 8)
    assert WideAndDeep.predicts_ctr and DeepFM.predicts_ctr
    with pytest.raises(ConfigError, match="n_cross_buckets"):
        build_model("deepfm", {"n_cross_buckets": 8}, meta)  # a wide_deep-only option
    with pytest.raises(ConfigError, match="dropout"):
        build_model("wide_deep", {"dropout": 1.5}, meta)
    with pytest.raises(ConfigError, match="hidden"):
        build_model("wide_deep", {"hidden": [16, 0]}, meta)


@pytest.mark.parametrize("name", NAMES)
def test_no_hidden_layer_scores_consistently(name, data):
    train, _, meta = data
    model = build_model(name, fast(name, epochs=2, hidden=[]), with_categories(meta, True))
    model.fit(train)
    users = np.repeat(np.arange(2, N_USERS), N_ITEMS - N_RESERVED)
    items = np.tile(np.arange(N_RESERVED, N_ITEMS), N_USERS - 2)
    scores = model.score(Queries.for_users(np.arange(2, N_USERS)))[:, N_RESERVED:]
    np.testing.assert_allclose(
        scores.ravel(), model.predict_logit(users, items), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_sampling_alpha_and_fit_without_validation(alpha, data):
    train, _, meta = data
    model = build_model("deepfm", fast("deepfm", epochs=2, sampling_alpha=alpha), meta)
    model.fit(train)
    assert np.all(np.isfinite(model.score(Queries.for_users([2, 3]))[:, N_RESERVED:]))


# ---------------------------------------------------------------------- the ctr protocol
class _FakeCtr:
    """Click probabilities from a lookup: 0.9 for the given pairs, else ``other``."""

    name: ClassVar[str] = "fake"

    def __init__(self, pairs: set[tuple[int, int]], other=None, seed: int = 0) -> None:
        self.pairs = pairs
        self.other = other
        self.rng = np.random.default_rng(seed)

    def predict_proba(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self.other == "random":
            return self.rng.uniform(0.01, 0.99, size=len(users))
        hit = [(int(u), int(i)) in self.pairs for u, i in zip(users, items, strict=True)]
        return np.where(hit, 0.9, 0.1)


def test_ctr_protocol_auc_of_perfect_and_random_models(data):
    train, valid, meta = data
    pairs = set(zip(valid.user_idx.tolist(), valid.item_idx.tolist(), strict=True))
    perfect = ctr(_FakeCtr(pairs), train, valid, meta, negatives=4, seed=0)
    assert perfect.protocol == "ctr"
    assert perfect.metrics["auc"] == pytest.approx(1.0)
    assert perfect.metrics["logloss"] == pytest.approx(-np.log(0.9))
    assert perfect.n_queries == len(pairs)
    assert np.all(perfect.per_query["pair_auc"] == 1.0)
    random = ctr(_FakeCtr(pairs, other="random"), train, valid, meta, negatives=4, seed=0)
    assert 0.35 < random.metrics["auc"] < 0.65
    assert set(random.per_query) == {"pair_auc", "logloss"}


def test_ctr_protocol_negatives_are_unseen_and_seeded(data):
    train, valid, meta = data
    calls = []

    class Recorder(_FakeCtr):
        def predict_proba(self, users, items):
            calls.append((users.copy(), items.copy()))
            return super().predict_proba(users, items)

    ctr(Recorder(set()), train, valid, meta, negatives=3, seed=5)
    ctr(Recorder(set()), train, valid, meta, negatives=3, seed=5)
    np.testing.assert_array_equal(calls[0][1], calls[1][1])
    users, items = calls[0]
    n_pos = len(set(zip(valid.user_idx.tolist(), valid.item_idx.tolist(), strict=True)))
    seen = (
        user_item_csr(train, meta.n_users, meta.n_items)
        + user_item_csr(valid, meta.n_users, meta.n_items)
    ).tocsr()
    neg_u, neg_i = users[n_pos:], items[n_pos:]
    assert len(neg_u) == 3 * n_pos
    assert np.all(np.asarray(seen[neg_u, neg_i]).ravel() == 0)
    assert neg_i.min() >= N_RESERVED


def test_ctr_protocol_errors(data):
    train, valid, meta = data
    with pytest.raises(ValueError, match="predict_proba"):
        ctr(object(), train, valid, meta)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negatives"):
        ctr(_FakeCtr(set()), train, valid, meta, negatives=0)


def test_ctr_protocol_on_a_trained_model(fitted, data):
    train, valid, _ = data
    result = ctr(fitted, train, valid, fitted.meta)
    assert result.metrics["auc"] > 0.6
    assert np.isfinite(result.metrics["logloss"])


def test_leaderboard_adds_ctr_metrics(data):
    train, valid, meta = data
    parts = {"train": train, "valid": valid, "test": valid}
    cfg = {"deepfm": fast("deepfm", epochs=2)}
    out, _ = evaluate_models("user_temporal", parts, meta, ["deepfm", "pop"], cfg, [5])
    assert {"auc", "logloss", "recall@5"} <= set(out["deepfm"]["metrics"])
    assert "auc" not in out["pop"]["metrics"]


# ---------------------------------------------------------------------- hashed ids
HASHED = {"kind": "hashed", "buckets": 0.5, "hashes": 2}


@pytest.fixture(scope="module", params=[(n, t) for n in NAMES for t in (None, ("item",))])
def hashed_fit(request, data):
    name, tables = request.param
    train, valid, meta = data
    spec = {**HASHED, "tables": tables}
    cfg = fast(name, epochs=4, id_embedding=spec)
    return build_model(name, cfg, with_categories(meta, True)).fit(train, valid)


def test_hashed_full_scores_equal_pairwise_logits(hashed_fit):
    from recpipe.models.hashed import HashedEmbedding

    net = hashed_fit.module
    assert isinstance(net.embed.hashed["item"], HashedEmbedding)
    assert ("user" in net.embed.hashed) == (hashed_fit.config.id_embedding.tables is None)
    users = np.arange(N_USERS)
    scores = hashed_fit.score(Queries.for_users(users))
    uu, ii = np.meshgrid(users, np.arange(N_RESERVED, N_ITEMS), indexing="ij")
    logits = hashed_fit.predict_logit(uu.ravel(), ii.ravel()).reshape(uu.shape)
    np.testing.assert_allclose(scores[:, N_RESERVED:], logits, rtol=1e-5, atol=1e-5)


def test_hashed_save_load_round_trip_gives_identical_scores(hashed_fit, tmp_path):
    path = hashed_fit.save(tmp_path / "model")
    loaded = load_model(path)
    assert loaded.config == hashed_fit.config
    assert loaded.config.id_embedding.kind == "hashed"
    q = Queries.for_users(np.arange(N_USERS))
    np.testing.assert_array_equal(loaded.score(q), hashed_fit.score(q))
    users, items = np.array([2, 5, 9, 13]), np.array([7, 2, 9, 17])
    np.testing.assert_array_equal(
        loaded.predict_proba(users, items), hashed_fit.predict_proba(users, items)
    )
    weights = torch.load(path / "weights.pt", weights_only=True)
    assert "embed.hashed.item.table" in weights and "linear.hashed.item.table" in weights
    assert not any(key.endswith(".index") for key in weights)


@pytest.mark.parametrize("name", NAMES)
def test_hashed_ids_shrink_the_model_and_share_buckets(name):
    from recpipe.models.hashed import IdEmbeddingConfig

    n_users, n_items, dim = 1000, 5000, 16
    net = {"wide_deep": WideAndDeepNet, "deepfm": DeepFMNet}[name]
    extra = {"n_cross_buckets": 64} if name == "wide_deep" else {}
    table = net(n_users, n_items, 4, dim, (8,), 0.0, **extra)
    keys = {k for k in table.state_dict() if k.startswith(("embed.", "linear."))}
    assert keys == {
        "embed.table.weight",
        "embed.bag_table.weight",
        "linear.table.weight",
        "linear.bag_table.weight",
        "linear.bias",
    }
    spec = IdEmbeddingConfig(**HASHED)
    hashed = net(n_users, n_items, 4, dim, (8,), 0.0, id_embedding=spec, **extra)
    n_table = sum(p.numel() for p in table.parameters())
    n_hashed = sum(p.numel() for p in hashed.parameters())
    saved = (n_users + n_items - 2 * N_RESERVED) // 2 * (dim + 1)  # half of the id rows
    assert n_hashed == n_table - saved
    for field in ("user", "item"):
        emb, lin = hashed.embed.hashed[field], hashed.linear.hashed[field]
        assert torch.equal(emb.index, lin.index)  # same hash functions for v and w


def test_id_embedding_config_is_validated(data):
    meta = data[2]
    assert build_model("deepfm", {}, meta).config.id_embedding.kind == "table"
    with pytest.raises(ConfigError, match=r"unknown tables \['session'\].*\['item', 'user'\]"):
        build_model("deepfm", {"id_embedding": {**HASHED, "tables": ["session"]}}, meta)
    with pytest.raises(ConfigError, match=r"id_embedding\.buckets"):
        build_model("wide_deep", {"id_embedding": {**HASHED, "buckets": 2.0}}, meta)
