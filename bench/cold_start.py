"""Cold-start benchmark: content models against popularity on cold items and cold users.

On a real data set with item content, it builds the pipeline's ``cold_start`` split
(a global time cut-off; a seeded 10% of the items and of the users with test events
are held out of training entirely, see :mod:`recpipe.sessions.splits`), fits the
content models and the baselines on its train part and reports, with full ranking:

- **cold items**: test events on items that had no train event, ranked among the
  period's cold items, for warm users (from their history) and new users (from their
  request, below) (Recall@20, NDCG@20);
- **cold users**: users unknown to training, answered from the first ``--given`` (5 on
  MovieLens, 1 on DIGINETICA's short sessions) items of their test events (the
  request), over the whole catalogue (cold items' queries of such users use the same
  request);

and the paired-bootstrap difference (95% CI) of each content model against
``category_pop`` (popularity within the query's preferred categories), the baseline a
content model has to beat on cold items. Run::

    .venv/bin/python bench/cold_start.py movielens        # genres, titles, demographics
    .venv/bin/python bench/cold_start.py diginetica       # categories
    .venv/bin/python bench/cold_start.py movielens --only content2cf --set content2cf.epochs=5

The data come from $RECPIPE_DATA_DIR (default ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import build_features

REPO = Path(__file__).resolve().parents[1]
BASELINES = ["pop", "category_pop", "context_pop", "itemknn", "als"]
CONTENT = ["content2cf", "content2vec"]
REFERENCE = "category_pop"
DATASETS: dict[str, tuple[str, list[str]]] = {
    "movielens": ("ml-100k", ["data.source=movielens-100k"]),
    "diginetica": (
        "diginetica",
        ["data.source=diginetica", "validate.on_failure=quarantine"],
    ),
}
#: A new user's request: MovieLens users rate in bursts; DIGINETICA sessions are short.
GIVEN = {"movielens": 5, "diginetica": 1}
METRICS = [f"{p}/{m}@20" for p in ("cold_items", "cold_users") for m in ("recall", "ndcg")]


def _parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``model.key=value`` overrides (values parsed as JSON where possible)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        model, dot, option = key.partition(".")
        if not (sep and dot):
            raise SystemExit(f"--set takes model.key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(model.strip(), {})[option.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--only", nargs="*", default=None, help="content models to run")
    parser.add_argument(
        "--set", action="append", default=[], metavar="MODEL.KEY=VALUE", help="model options"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--given",
        type=int,
        default=None,
        help="events of a new user's request (default: 5; 1 on sessions)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    log = logging.getLogger("bench.cold_start")
    log.setLevel(logging.INFO)

    import numpy as np
    import pandas as pd

    from recpipe.evaluate.leaderboard import evaluate_models
    from recpipe.evaluate.significance import paired_bootstrap
    from recpipe.models.data import DataMeta, Interactions
    from recpipe.models.registry import build_model

    configs = _parse_sets(args.set)
    given = args.given if args.given is not None else GIVEN[args.dataset]
    data_root = Path(os.environ.get("RECPIPE_DATA_DIR", REPO.parent / "shared" / "data"))
    folder_name, overrides = DATASETS[args.dataset]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = build_features(
            [*overrides, f"data.path={data_root / folder_name}"], "cold_start", Path(tmp)
        )
        prep_s = time.perf_counter() - t0
        meta = DataMeta.from_features(folder)
        data = {
            p: Interactions.from_parquet(folder / f"{p}.parquet")
            for p in ("train", "valid", "test")
        }
        test_frame = pd.read_parquet(folder / "test.parquet")
        keys = pd.factorize(test_frame["user_id"])[0] if "user_id" in test_frame else None
        split_meta = json.loads((folder / "meta.json").read_text())
        fitted: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        for name in CONTENT:
            if args.only is not None and name not in args.only:
                continue
            config = {"device": args.device, **configs.get(name, {})}
            t0 = time.perf_counter()
            fitted[name] = build_model(name, config, meta).fit(data["train"], data["valid"])
            seconds[name] = time.perf_counter() - t0
            log.info("%s fitted in %.0f s", name, seconds[name])
        results, per_query = evaluate_models(
            "cold_start",
            data,
            meta,
            BASELINES,
            configs,
            [10, 20],
            fitted=fitted,
            test_user_keys=keys,
            cold_given=given,
        )
    print(
        f"\n{args.dataset}: cold_start split, train {len(data['train']):,} events, test "
        f"{len(data['test']):,} events; {meta.n_real_items:,} items in the catalogue, "
        f"{split_meta.get('n_cold_items_indexed', '?')} cold items ranked, "
        f"{split_meta.get('n_cold_users', '?')} cold users (request: first {given} events); "
        f"features built in {prep_s:.1f} s\n"
    )
    header = " | ".join(METRICS)
    print(f"| model | {header} | n cold-item / cold-user queries | fit s |")
    print("|---" * (len(METRICS) + 3) + "|")
    for name, entry in results.items():
        if "metrics" not in entry:
            print(f"| {name} | skipped: {entry.get('skipped', '?')} |")
            continue
        m = entry["metrics"]
        cells = " | ".join(f"{m[k]:.4f}" if k in m else "-" for k in METRICS)
        slices = entry.get("slices", {})
        counts = "/".join(
            str(slices.get(p, {}).get("n", "-")) for p in ("cold_items", "cold_users")
        )
        fit = seconds.get(name, entry.get("fit_s", float("nan")))
        print(f"| {name} | {cells} | {counts} | {fit:.1f} |")

    print(f"\nDifference against {REFERENCE} (paired bootstrap, 95% CI):\n")
    print("| model | metric | mean diff | 95% CI | relative |")
    print("|---|---|---|---|---|")
    reference = per_query.get(REFERENCE, {})
    for name in [*fitted, "pop"]:
        for metric in METRICS:
            a, b = per_query.get(name, {}).get(metric), reference.get(metric)
            if a is None or b is None or len(a) != len(b) or not len(a):
                continue
            r = paired_bootstrap(np.asarray(a), np.asarray(b))
            base = float(np.mean(b))
            rel = f"{r.mean_diff / base:+.1%}" if base > 0 else "-"
            print(
                f"| {name} | {metric} | {r.mean_diff:+.4f} | [{r.low:+.4f}, {r.high:+.4f}] "
                f"| {rel} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
