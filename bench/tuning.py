"""Tuning benchmark: default vs tuned configs of every candidate and baseline, same budget.

For a real data set, builds one split with the pipeline's stages, runs the tune stage
(:func:`recpipe.stages.tune`: Optuna TPE on the split's **validation** part, the gate's
metric, the same ``--trials`` / ``--timeout`` budget for every model, candidates and
baselines alike), then fits every model twice, with its default config and with its
tuned one, on the train part (torch candidates stop early on the validation part, as in
the train stage) and evaluates both on the **test** part with the split's protocol (full
ranking). Prints a Markdown table of Recall@20 and NDCG@20, default and tuned, with the
paired-bootstrap 95% interval of each tuned model's Recall@20 minus the best tuned
baseline's, the trials each study used and its seconds; writes it (and a JSON copy) to
``--out``.

- ``movielens``: MovieLens 100K, the per-user temporal split (users' top-K); the MF,
  CTR and content candidates against the user baselines.
- ``yoochoose``: the YOOCHOOSE 100k-click sample, the session split (next item); the
  session RNNs against the session baselines.

Run::

    .venv/bin/python bench/tuning.py movielens --trials 20
    .venv/bin/python bench/tuning.py yoochoose --trials 10 --timeout 600
    .venv/bin/python bench/tuning.py movielens --models mf_bpr als --trials 5
    .venv/bin/python bench/tuning.py movielens --extra sasrec   # a candidate not in params

The data come from $RECPIPE_DATA_DIR (default ../shared/data). Set the telemetry
variables of ../shared/TOOLCHAIN.md first (the tune stage logs to a throwaway MLflow
store in the workspace).
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

import numpy as np
from _common import build_features

REPO = Path(__file__).resolve().parents[1]
DATASETS: dict[str, tuple[str, str, list[str]]] = {
    "movielens": (
        "ml-100k",
        "user_temporal",
        ["data.source=movielens-100k"],
    ),
    "yoochoose": (
        "yoochoose-rsc15-100k",
        "session",
        ["data.source=session-tsv", "validate.on_failure=quarantine"],
    ),
}
METRICS = ("recall@20", "ndcg@20")


def fit_variant(
    names: list[str],
    candidates: set[str],
    split: str,
    data: Any,
    configs: dict[str, dict[str, Any]],
    ks: list[int],
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Fit every model of ``names`` with ``configs`` and evaluate it on the test part:
    candidates as the train stage fits them, baselines as the evaluate stage does."""
    from recpipe.evaluate.leaderboard import evaluate_models, split_query_kinds
    from recpipe.models.fitting import fit_candidate, skip_reason
    from recpipe.models.registry import build_model

    fitted: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in (n for n in names if n in candidates):
        if skip_reason(name, split, split_query_kinds(split)):
            continue
        t0 = time.perf_counter()
        model = build_model(name, configs[name], data.meta)
        fit_candidate(model, data)
        fitted[name] = model
        seconds[name] = time.perf_counter() - t0
    baselines = [n for n in names if n not in candidates]
    results, per_query = evaluate_models(
        split,
        data.parts,
        data.meta,
        baselines,
        configs,
        ks,
        fitted=fitted,
        test_user_keys=data.test_user_keys,
    )
    for name, s in seconds.items():
        results[name]["fit_s"] = round(s, 3)
    return results, per_query


def _ci(b: dict[str, float]) -> str:
    return f"{b['mean_diff']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"


def table(rows: dict[str, Any], best: str | None, metric: str, n_queries: int, load: str) -> str:
    """The Markdown table of the closing note."""
    lines = [
        f"best tuned baseline: **{best}**; {n_queries} test queries; paired bootstrap "
        f"(1000 resamples) of {metric} differences; load average at the end {load}",
        "",
        "| model | role | trials | tune s | recall@20 default | recall@20 tuned "
        "| ndcg@20 default | ndcg@20 tuned | tuned - default [95% CI] "
        "| tuned - best baseline [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["tuned"].get(metric, -1)):
        d, t = r["default"], r["tuned"]
        ci = r.get("vs_best")
        ci_s = _ci(ci) if ci else "(itself)" if name == best else "-"
        gain = _ci(r["vs_default"]) if r.get("vs_default") else "-"
        lines.append(
            f"| {name} | {r['role']} | {r['trials']} | {r['tune_s']:.0f} "
            f"| {d.get('recall@20', float('nan')):.4f} | {t.get('recall@20', float('nan')):.4f} "
            f"| {d.get('ndcg@20', float('nan')):.4f} | {t.get('ndcg@20', float('nan')):.4f} "
            f"| {gain} | {ci_s} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--trials", type=int, default=20, help="finished trials per model")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per model")
    parser.add_argument("--models", nargs="*", default=None, help="default: every tunable one")
    parser.add_argument(
        "--extra", nargs="*", default=[], help="candidates beyond train.candidates (e.g. sasrec)"
    )
    parser.add_argument("--workspace", type=Path, default=None, help="keep the workspace here")
    parser.add_argument("--out", type=Path, default=None, help="write the table here (.md)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("recpipe.train", "recpipe.evaluate", "recpipe.models", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("bench.tuning")

    from recpipe import stages
    from recpipe.config import load_params
    from recpipe.evaluate.significance import paired_bootstrap
    from recpipe.models.dataset import load_split
    from recpipe.models.registry import get_model
    from recpipe.paths import Paths
    from recpipe.tuning.configs import read_tuned
    from recpipe.tuning.study import plan

    folder_name, split, overrides = DATASETS[args.dataset]
    data_root = Path(os.environ.get("RECPIPE_DATA_DIR", REPO.parent / "shared" / "data"))
    overrides = [
        *overrides,
        f"data.path={data_root / folder_name}",
        f"evaluate.splits=[{split}]",
        f"gate.split={split}",
        f"tune.split={split}",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        ws = args.workspace or Path(tmp)
        ws.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        folder = build_features(overrides, split, ws)
        log.info("features of %s built in %.0f s", split, time.perf_counter() - t0)
        params = load_params(None, [*overrides, f"sessions.splits=[{split}]"])
        paths = Paths.at(ws)
        wanted = args.models or [*params.train.candidates, *args.extra, *params.evaluate.models]
        fixed = [n for n in wanted if not get_model(n).search_space]  # e.g. pop: no knobs
        tunable, split, base = plan(params, [n for n in wanted if n not in fixed], split)
        report = stages.tune(
            params, paths, models=tunable, split=split, trials=args.trials, timeout=args.timeout
        )
        studies = report["models"]
        studies.update({n: {"budget": {"used_trials": 0}, "seconds": 0.0} for n in fixed})
        base.update({n: dict(params.evaluate.model_configs.get(n, {})) for n in fixed})
        names = [n for n in [*tunable, *fixed] if "skipped" not in studies[n]]
        candidates = {*params.train.candidates, *args.extra}
        data = load_split(folder)
        ks = list(params.evaluate.ks)
        tuned_cfg = {n: read_tuned(paths.tuned_dir, split, n) or base[n] for n in names}
        res_d, pq_d = fit_variant(names, candidates, split, data, base, ks)
        res_t, pq_t = fit_variant(names, candidates, split, data, tuned_cfg, ks)
    metric = params.gate.metric or params.evaluate.primary_metric
    evaluated = [n for n in names if "metrics" in res_t.get(n, {})]
    baselines = [n for n in evaluated if n not in candidates]
    best = max(baselines, key=lambda n: res_t[n]["metrics"][metric]) if baselines else None
    rows: dict[str, Any] = {}
    for name in evaluated:
        rows[name] = {
            "role": "candidate" if name in candidates else "baseline",
            "trials": studies[name]["budget"]["used_trials"],
            "tune_s": studies[name]["seconds"],
            "default": {m: res_d[name]["metrics"].get(m) for m in METRICS},
            "tuned": {m: res_t[name]["metrics"].get(m) for m in METRICS},
            "valid_default": studies[name].get("default_value"),
            "valid_tuned": studies[name].get("best_value"),
            "config": tuned_cfg[name],
        }
        if name in pq_d and name in pq_t:  # the tuning's own gain on the test part
            g = paired_bootstrap(pq_t[name][metric], pq_d[name][metric])
            rows[name]["vs_default"] = {"mean_diff": g.mean_diff, "low": g.low, "high": g.high}
        if best is not None and name != best:
            b = paired_bootstrap(pq_t[name][metric], pq_t[best][metric])
            rows[name]["vs_best"] = {
                "mean_diff": b.mean_diff,
                "low": b.low,
                "high": b.high,
                "p_value": b.p_value,
            }
    n_queries = res_t[evaluated[0]]["n_queries"] if evaluated else 0
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    text = (
        f"## {args.dataset}: {split} split, budget {args.trials} trials / "
        f"{args.timeout or 'no'} s per model\n\n" + table(rows, best, metric, n_queries, load)
    )
    sys.stdout.write(text + "\n")
    if args.out:
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(
            json.dumps({"split": split, "best_baseline": best, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
