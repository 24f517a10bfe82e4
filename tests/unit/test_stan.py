"""STAN against its formula on a hand-made example."""

from __future__ import annotations

import math

import numpy as np

from recpipe.baselines.stan import STAN, stan_prefix_weights
from recpipe.models.data import DataMeta, Queries
from tests.contract.planted import interactions

DAY = 86_400 * 10**9
N_ITEMS = 10  # items 2..9
T0 = 1_700_000_000 * 10**9


def test_stan_by_hand() -> None:
    a, b, c, d, e, f = 2, 3, 4, 5, 6, 7
    # s0 = [a, b, c, d] ends 3 min after T0; s1 = [e, a, f] two days later
    train = interactions([[a, b, c, d], [e, a, f]], start_ns=[T0, T0 + 2 * DAY])
    meta = DataMeta.from_interactions(train, n_items=N_ITEMS, n_users=6)
    lam_t, lam_i = 3.0, 2.0
    config = {"remind": False, "pop_weight": 0.0, "lambda_time": lam_t, "lambda_item": lam_i}
    model = STAN(config, meta).fit(train)
    now = T0 + 5 * DAY
    query = Queries(
        kind="session", items=np.array([[a]]), timestamps=np.array([[now]], dtype=np.int64)
    )
    got = model.score(query)[0]
    end0, end1 = T0 + 3 * 60 * 10**9, T0 + 2 * DAY + 2 * 60 * 10**9
    sim0 = 1 / math.sqrt(1 * 4) * math.exp(-(now - end0) / DAY / lam_t)
    sim1 = 1 / math.sqrt(1 * 3) * math.exp(-(now - end1) / DAY / lam_t)
    want = {
        b: sim0 * math.exp(-1 / lam_i),  # one step after a in s0
        c: sim0 * math.exp(-2 / lam_i),
        d: sim0 * math.exp(-3 / lam_i),
        e: sim1 * math.exp(-1 / lam_i),  # one step before a in s1
        f: sim1 * math.exp(-1 / lam_i),
        a: 0.0,  # remind off: the prefix's own item
    }
    for item, value in want.items():
        assert math.isclose(got[item], value, rel_tol=1e-5, abs_tol=1e-9), item
    # without timestamps no time decay
    plain = model.score(Queries.from_item_lists([[a]]))[0]
    assert math.isclose(plain[b], 0.5 * math.exp(-1 / lam_i), rel_tol=1e-5)


def test_prefix_weights_decay_by_position_and_keep_the_latest_repeat() -> None:
    w = stan_prefix_weights(np.array([[0, 2, 3, 2]]), 1.0, 5).toarray()[0]
    assert math.isclose(w[2], 1.0) and math.isclose(w[3], math.exp(-1.0))
