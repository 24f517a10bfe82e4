"""Sessions benchmark: sessionize a large click log, filter it, build all splits, map ids.

Generates a synthetic log of ``--events`` events (default 10,000,000) with
:func:`recpipe.data.synth.generate` in a child process and hands it over as
Parquet; the source session ids are then dropped, so that sessionization runs
the gap path (every user's stream cut at ``gap_minutes``). It times, one after
the other, in this process::

    recpipe.sessions.sessionize.sessionize(events, params)          # gap sessions
    recpipe.sessions.sessionize.filter_support(sessions, 5, 2)      # GRU4Rec filter
    recpipe.sessions.splits.build_splits(sessions, params)          # all four splits
    IdMap.fit(...) / IdMap.encode(...) of item_id and user_id       # id mapping

(the id mapping uses :class:`recpipe.features.idmap.IdMap` when it exists, else
``pandas.factorize`` as a stand-in) and prints events/s for each step and for the
whole, with the peak resident memory after each step. ``check_leakage`` on every
split is timed too but left out of the total. ``--write`` adds a step that writes
every split's parts and tables to Parquet as the ``sessions`` stage does
(:func:`recpipe.sessions.parts.write_parts`; on code without it, each part frame's
``to_parquet``), in the total: splits held as part codes gather their rows there.

The sessions package works on up to min(4, usable CPUs) threads (column gathers and
hashing, the splits side by side, the part writes); the count is printed with the
table, and the "CPU s" column against "seconds" shows how much of it ran in parallel.
Run::

    .venv/bin/python bench/sessions.py                    # 10M events
    .venv/bin/python bench/sessions.py --events 1000000 -v
    .venv/bin/python bench/sessions.py --events 3000000 --write
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import peak_rss_mib, synth_params_for
from rich.console import Console
from rich.table import Table

log = logging.getLogger("bench.sessions")


def prepare(n_events: int, seed: int, out_dir: str) -> dict[str, Any]:
    """Child process: generate the log and write ``events.parquet``."""
    from recpipe.data.synth import generate

    params = synth_params_for(n_events, seed)
    t0 = time.perf_counter()
    tables = generate(params)
    t_gen = time.perf_counter() - t0
    path = Path(out_dir) / "events.parquet"
    tables.events.to_parquet(path, index=False)
    return {
        "events": len(tables.events),
        "users": len(tables.users),
        "items": len(tables.items),
        "sessions": int(params.n_sessions),
        "generate_s": t_gen,
        "path": str(path),
    }


def id_mapper() -> tuple[str, Any]:
    """``(name, fit_encode)``: IdMap when the features package has it, else factorize."""
    try:
        from recpipe.features.idmap import IdMap
    except ImportError:
        import pandas as pd

        return "pandas.factorize (stand-in)", lambda values: pd.factorize(values)[0]

    def fit_encode(values: Any) -> Any:
        return IdMap.fit(values, min_count=1).encode(values)

    return "IdMap.fit + encode", fit_encode


def _summary(result: Any) -> Any:
    """What the streaming mode keeps of a split: its stats and leakage checks, no frames."""
    from recpipe.sessions.parts import SplitResult
    from recpipe.sessions.splits import check_leakage

    if not isinstance(result, SplitResult):
        return result
    return result.stats, check_leakage(result, result.kind)


def split_writer() -> Any:
    """``write(result, folder)``: :func:`recpipe.sessions.parts.write_parts` when it
    exists, else the stage's former loop (each part frame's ``to_parquet``)."""
    try:
        from recpipe.sessions.parts import write_parts
    except ImportError:
        from recpipe.sessions.parts import PART_NAMES

        def write_parts(result: Any, out: Path) -> None:
            out.mkdir(parents=True, exist_ok=True)
            for name in PART_NAMES:
                getattr(result, name).to_parquet(out / f"{name}.parquet", index=False)
            for name, table in result.tables.items():
                table.to_parquet(out / f"{name}.parquet", index=False)

    return write_parts


def sessions_threads() -> int:
    """The worker threads of the sessions package: min(4, the CPUs this process may use)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def run(path: str, stream: bool = False, write_to: Path | None = None) -> dict[str, Any]:
    """Time the sessions path on the log at ``path`` in this process; with ``write_to``,
    also write every split under that folder."""
    import pandas as pd

    from recpipe.config import SessionsParams
    from recpipe.sessions.parts import SplitResult
    from recpipe.sessions.sessionize import filter_support, sessionize
    from recpipe.sessions.splits import build_splits, check_leakage, iter_splits

    events = pd.read_parquet(path)
    events["session_id"] = pd.Series(pd.NA, index=events.index, dtype="string")
    gc.collect()
    base_rss = peak_rss_mib()
    params = SessionsParams()
    mapper_name, fit_encode = id_mapper()
    steps: dict[str, float] = {}
    cpu: dict[str, float] = {}
    rss: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        steps[name] = time.perf_counter() - t0
        cpu[name] = time.process_time() - c0
        rss[name] = peak_rss_mib()
        return out

    n = len(events)
    sessions = timed("sessionize (gap path)", functools.partial(sessionize, events, params))
    del events  # the stage keeps only the sessionized table
    gc.collect()
    filtered, fstats = timed(
        "filter_support",
        lambda: filter_support(sessions, params.item_support, params.min_session_length),
    )
    del filtered  # the stage writes it to data/sessions and lets it go
    gc.collect()
    if stream:  # as a stage that writes each split and lets it go
        splits = timed(
            "iter_splits (4 splits, one held at a time)",
            lambda: {k: _summary(r) for k, r in iter_splits(sessions, params)},
        )
    else:
        splits = timed("build_splits (4 splits, all held)", lambda: build_splits(sessions, params))
    if write_to is not None and not stream:
        write = split_writer()
        timed(
            "write splits (parquet)",
            lambda: [
                write(r, write_to / kind)
                for kind, r in splits.items()
                if isinstance(r, SplitResult)
            ],
        )
    timed(
        f"id map ({mapper_name})",
        lambda: (fit_encode(sessions["item_id"]), fit_encode(sessions["user_id"])),
    )

    t0 = time.perf_counter()
    if stream:  # checked inside the timed step, one split at a time
        leakage = {kind: r[1] for kind, r in splits.items() if isinstance(r, tuple)}
        stats = {kind: r[0] for kind, r in splits.items() if isinstance(r, tuple)}
    else:
        leakage = {
            kind: check_leakage(result, kind)
            for kind, result in splits.items()
            if isinstance(result, SplitResult)
        }
        stats = {k: r.stats for k, r in splits.items() if isinstance(r, SplitResult)}
    leakage_s = time.perf_counter() - t0
    return {
        "rows": n,
        "sessions": int(sessions["session_id"].nunique()),
        "filter": fstats,
        "splits": {
            kind: {p: st["parts"][p]["rows"] for p in ("train", "valid", "test")}
            for kind, st in stats.items()
        },
        "stream": stream,
        "leakage_ok": all(all(v.values()) for v in leakage.values()),
        "leakage_s": leakage_s,
        "steps": steps,
        "cpu": cpu,
        "peak_rss_mib": rss,
        "base_rss_mib": base_rss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events to generate")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--stream",
        action="store_true",
        help="iter_splits, dropping each split after its leakage check (as the stage "
        "writes them), instead of build_splits holding all four",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="also write every split to Parquet as the sessions stage does (timed, in "
        "the total; not with --stream)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    console = Console()
    with tempfile.TemporaryDirectory(prefix="recpipe-bench-") as tmp:
        console.print(f"generating {args.events:,} events (child process) into {tmp} ...")
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            prep = pool.submit(prepare, args.events, args.seed, tmp).result()
        console.print(
            f"generated {prep['events']:,} events of {prep['users']:,} users on "
            f"{prep['items']:,} items ({prep['sessions']:,} generated sessions) in "
            f"{prep['generate_s']:.2f} s"
        )
        write_to = Path(tmp) / "splits" if args.write else None
        result = run(prep["path"], stream=args.stream, write_to=write_to)

    n = result["rows"]
    table = Table(title=f"sessions path on {n:,} events (source session ids dropped)")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("CPU s", justify="right")
    table.add_column("events/s", justify="right")
    table.add_column("peak RSS after (MiB)", justify="right")
    for name, seconds in result["steps"].items():
        table.add_row(
            name,
            f"{seconds:.2f}",
            f"{result['cpu'][name]:.2f}",
            f"{n / seconds:,.0f}",
            f"{result['peak_rss_mib'][name]:,.0f}",
        )
    total = sum(result["steps"].values())
    table.add_row(
        "[bold]total[/bold]",
        f"[bold]{total:.2f}[/bold]",
        f"[bold]{sum(result['cpu'].values()):.2f}[/bold]",
        f"[bold]{n / total:,.0f}[/bold]",
        f"[bold]{max(result['peak_rss_mib'].values()):,.0f}[/bold]",
    )
    console.print(table)
    console.print(
        f"{result['sessions']:,} sessions; filter kept {result['filter']['rows']:,} events; "
        f"splits (train/valid/test rows): {result['splits']}"
    )
    leak = (
        "in the iter_splits step"
        if result["stream"]
        else f"not in the total: {result['leakage_s']:.2f} s"
    )
    console.print(
        f"check_leakage of all splits {leak} (all invariants hold: {result['leakage_ok']}); "
        f"RSS with the input loaded {result['base_rss_mib']:,.0f} MiB; "
        f"CPUs {multiprocessing.cpu_count()}, threads up to {sessions_threads()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
