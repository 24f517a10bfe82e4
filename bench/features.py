"""Features benchmark: peak memory and time of encoding the splits, whole parts against streamed.

Writes a raw log of ``--events`` synthetic events (``bench/scale.py``'s generator:
sessions of mean length 5, users ``n/20``, items Zipf over 50k), runs the ``ingest``,
``validate`` and ``sessions`` stages on it (arrow engine, every split of
``params.yaml``), then encodes every split's parts in a fresh subprocess per run, the
two ways in turn (``whole, stream, whole, stream`` by default, ``--rounds``):

``whole``
    what the features stage did before it streamed: each part read whole with
    ``pd.read_parquet``, :func:`recpipe.features.build.split_features`, each encoded
    frame written with ``to_parquet``.
``stream``
    what it does now: :func:`recpipe.features.build.stream_split_features` (id maps
    from the id counts of the train part, each part encoded batch by batch).

Both write the id maps too; the content encoders (the same both ways) are left out. Each
row gives the subprocess's seconds and peak RSS (VmHWM) and the 1-minute load average
when it started; at the end the encoded parts of the last two runs are compared (equal
frames, or the script fails). Run::

    OMP_NUM_THREADS=1 .venv/bin/python bench/features.py --events 5000000
    .venv/bin/python bench/features.py --events 200000 --rounds 1
    .venv/bin/python bench/features.py prepare 10000000 /tmp/ws /tmp   # once, then
    .venv/bin/python bench/features.py --events 10000000 --workspace /tmp/ws
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.features")

MODES = ("whole", "stream")


def encode(mode: str, workspace: Path, out: Path) -> dict:
    """Child: encode every split of ``workspace`` into ``out`` the ``mode`` way."""
    sys.path.insert(0, str(REPO / "bench"))
    from _common import peak_rss_mib

    from recpipe.config import load_params
    from recpipe.data.schema import read_tables
    from recpipe.features.build import read_cold, stream_split_features
    from recpipe.paths import Paths
    from recpipe.sessions.parts import PART_NAMES

    params = load_params(None, [])
    paths = Paths.at(workspace)
    tables = read_tables(paths.validated_dir, events=False)
    t0 = time.perf_counter()
    rows = 0
    for split_dir in sorted(d for d in paths.splits_dir.iterdir() if d.is_dir()):
        kind = split_dir.name
        target = out / kind
        target.mkdir(parents=True)
        # whole: each part read whole, split_features, to_parquet (the stage below
        # features.stream_min_rows); stream: batch by batch
        built = stream_split_features(
            kind,
            split_dir,
            target,
            params.features,
            PART_NAMES,
            items=tables.items,
            cold=read_cold(split_dir),
            stream=mode == "stream",
        )
        built.item_map.save(target / "item_map.parquet")
        built.user_map.save(target / "user_map.parquet")
        rows += sum(p["rows"] for p in built.meta["parts"].values())
        del built
    return {"seconds": time.perf_counter() - t0, "peak_mib": peak_rss_mib(), "rows": rows}


def prepare(n: int, workspace: Path, tmp: Path) -> None:
    """Child: raw events, then ingest, validate and sessions (arrow engine)."""
    from _common import prepare_workspace

    prepare_workspace(n, workspace, tmp, ("ingest", "validate", "sessions"), [])


def compare(a: Path, b: Path) -> int:
    """Assert the encoded parts and id maps under ``a`` and ``b`` are equal; files compared."""
    import pandas as pd

    n = 0
    for left in sorted(a.rglob("*.parquet")):
        right = b / left.relative_to(a)
        pd.testing.assert_frame_equal(pd.read_parquet(left), pd.read_parquet(right))
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    child = sub.add_parser("encode")
    child.add_argument("mode", choices=MODES)
    child.add_argument("workspace", type=Path)
    child.add_argument("out", type=Path)
    prep = sub.add_parser("prepare")
    prep.add_argument("events", type=int)
    prep.add_argument("workspace", type=Path)
    prep.add_argument("tmp", type=Path)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="whole/stream pairs (interleaved)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the workspace")
    parser.add_argument(
        "--workspace", type=Path, default=None, help="reuse a prepared workspace (kept)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.cmd == "encode":
        print(json.dumps(encode(args.mode, args.workspace, args.out)))
        return 0
    if args.cmd == "prepare":
        prepare(args.events, args.workspace, args.tmp)
        return 0
    with tempfile.TemporaryDirectory(prefix="recpipe-bench-features-", dir=args.tmp) as tmp:
        workspace = args.workspace or Path(tmp) / "ws"
        if args.workspace is None:
            from _common import prepare_in_child

            prepare_in_child(__file__, args.events, workspace, tmp)
        outs: dict[str, Path] = {}
        for r in range(args.rounds):
            for mode in MODES:
                out = Path(tmp) / f"out-{mode}-{r}"
                load = os.getloadavg()[0]
                result = subprocess.run(
                    [sys.executable, __file__, "encode", mode, str(workspace), str(out)],
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                )
                entry = json.loads(result.stdout.strip().splitlines()[-1])
                entry |= {"events": args.events, "mode": mode, "round": r, "load": load}
                print(json.dumps(entry), flush=True)
                outs[mode] = out
        n = compare(outs["whole"], outs["stream"])
        print(json.dumps({"equal_files": n}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
