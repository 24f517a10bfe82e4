"""Evaluate-stage benchmark: peak memory and time of a user top-K split, the test part
read whole against ranked by blocks of users.

Writes a raw log of ``--events`` synthetic events (``bench/scale.py``'s generator:
sessions of mean length 5, users ``n/20``, items Zipf over 50k), runs the ``ingest``,
``validate``, ``sessions`` and ``features`` stages on it (arrow engine, the
``user_temporal`` split only), then runs the ``evaluate`` stage (baselines
``--models``, no deep candidate) in a fresh subprocess per run, the two ways in turn
(``whole, blocks, whole, blocks`` by default, ``--rounds``):

``whole``
    ``evaluate.stream_min_rows`` above the test part's rows: the split read whole, as
    before.
``blocks``
    ``evaluate.stream_min_rows=0``: the train and valid parts read whole, the test part
    ranked ``evaluate.stream_block_rows`` (``--block-rows``) events at a time.

Each row gives the subprocess's seconds and peak RSS (VmHWM) and the 1-minute load
average when it started; at the end the ``reports/evaluation.json`` results of the last
two runs are compared without their timings (equal, or the script fails). Run::

    OMP_NUM_THREADS=1 .venv/bin/python bench/evaluate_stage.py --events 5000000
    .venv/bin/python bench/evaluate_stage.py prepare 5000000 /tmp/ws /tmp   # once, then
    .venv/bin/python bench/evaluate_stage.py --events 5000000 --workspace /tmp/ws
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.evaluate_stage")

MODES = ("whole", "blocks")
SPLIT = "user_temporal"
TIMINGS = ("fit_s", "eval_s")


def evaluate(mode: str, workspace: Path, models: str, block_rows: int, out: Path) -> dict:
    """Child: the evaluate stage on ``workspace``'s split, the ``mode`` way."""
    sys.path.insert(0, str(REPO / "bench"))
    from _common import peak_rss_mib

    from recpipe.config import load_params
    from recpipe.paths import Paths
    from recpipe.pipeline import run_stage

    paths = Paths.at(workspace)
    params = load_params(
        None,
        [
            f"evaluate.models=[{models}]",
            f"evaluate.splits=[{SPLIT}]",
            "train.candidates=[]",
            f"evaluate.stream_min_rows={0 if mode == 'blocks' else 2**62}",
            f"evaluate.stream_block_rows={block_rows}",
        ],
    )
    t0 = time.perf_counter()
    run_stage("evaluate", params, paths)
    seconds = time.perf_counter() - t0
    shutil.copy(paths.evaluation_json, out)
    return {"seconds": round(seconds, 1), "peak_mib": round(peak_rss_mib())}


def prepare(n: int, workspace: Path, tmp: Path) -> None:
    """Child: raw events, then ingest, validate, sessions and features (arrow engine)."""
    from _common import prepare_workspace

    prepare_workspace(
        n,
        workspace,
        tmp,
        ("ingest", "validate", "sessions", "features"),
        [f"sessions.splits=[{SPLIT}]"],
    )


def _figures(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text())
    results = {
        kind: {n: {k: v for k, v in e.items() if k not in TIMINGS} for n, e in models.items()}
        for kind, models in report["results"].items()
    }
    return {"results": results, "significance": report["significance"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    child = sub.add_parser("evaluate")
    child.add_argument("mode", choices=MODES)
    child.add_argument("workspace", type=Path)
    child.add_argument("models")
    child.add_argument("block_rows", type=int)
    child.add_argument("out", type=Path)
    prep = sub.add_parser("prepare")
    prep.add_argument("events", type=int)
    prep.add_argument("workspace", type=Path)
    prep.add_argument("tmp", type=Path)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--models", default="pop", help="baselines, comma-separated")
    parser.add_argument("--block-rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2, help="whole/blocks pairs (interleaved)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the workspace")
    parser.add_argument(
        "--workspace", type=Path, default=None, help="reuse a prepared workspace (kept)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.cmd == "evaluate":
        out = evaluate(args.mode, args.workspace, args.models, args.block_rows, args.out)
        print(json.dumps(out))
        return 0
    if args.cmd == "prepare":
        prepare(args.events, args.workspace, args.tmp)
        return 0
    with tempfile.TemporaryDirectory(prefix="recpipe-bench-evaluate-", dir=args.tmp) as tmp:
        workspace = args.workspace or Path(tmp) / "ws"
        if args.workspace is None:
            from _common import prepare_in_child

            prepare_in_child(__file__, args.events, workspace, tmp)
        import pyarrow.parquet as pq

        folder = workspace / "data" / "features" / SPLIT
        rows = {
            p: pq.ParquetFile(folder / f"{p}.parquet").metadata.num_rows
            for p in ("train", "valid", "test")
        }
        print(json.dumps({"events": args.events, "part_rows": rows}), flush=True)
        outs: dict[str, Path] = {}
        for r in range(args.rounds):
            for mode in MODES:
                out = Path(tmp) / f"evaluation-{mode}-{r}.json"
                load = os.getloadavg()[0]
                result = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "evaluate",
                        mode,
                        str(workspace),
                        args.models,
                        str(args.block_rows),
                        str(out),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                )
                entry = json.loads(result.stdout.strip().splitlines()[-1])
                entry |= {"mode": mode, "round": r, "load": round(load, 2)}
                print(json.dumps(entry), flush=True)
                outs[mode] = out
        same = _figures(outs["whole"]) == _figures(outs["blocks"])
        print(json.dumps({"equal_figures": same}), flush=True)
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
