"""Evaluation benchmark: full-ranking next-item metrics of 100k queries over 50k items on CPU.

Draws random float32 query and item embeddings (``--dim``, default 64), a random target
and ``--seen`` random seen items per query, then times the evaluation path of the
next-item protocol::

    recpipe.evaluate.ranking.chunked_ranks(score_fn, ...)   # scores = Q[chunk] @ I.T (torch),
                                                            # conservative-tie ranks with
                                                            # seen items excluded
    recpipe.evaluate.metrics.next_item_metrics(ranks, ks)   # recall/MRR/NDCG @ K
    recpipe.evaluate.ranking.chunked_top_k(...)             # --topk: lists for coverage@K

and prints seconds and queries/s for each ``--chunk-size`` given (a sweep when several
are), plus, with ``--breakdown``, the share of the time spent in the matrix product
alone, and, with ``--topk``, the cost of also building the top-K lists for
``coverage@K`` and ``popularity_bias@K``. Random embeddings rank the target
uniformly, so ``recall@K`` should come out near ``K / items``. Run::

    .venv/bin/python bench/evaluate.py                          # 100k x 50k, chunk 1024
    .venv/bin/python bench/evaluate.py --chunk-size 256 1024 4096 --breakdown
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

log = logging.getLogger("bench.evaluate")

TARGET_SECONDS = 30.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_data(
    n_queries: int, n_items: int, dim: int, n_seen: int, n_reserved: int, seed: int
) -> dict[str, Any]:
    """Random embeddings (float32), one target and ``n_seen`` seen items per query."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    queries = torch.randn(n_queries, dim, generator=gen)  # (Q, D)
    items = torch.randn(n_items, dim, generator=gen)  # (N, D)
    targets = rng.integers(n_reserved, n_items, size=n_queries)
    seen = rng.integers(n_reserved, n_items, size=(n_queries, n_seen))  # may hit the target
    indptr = np.arange(0, n_queries * n_seen + 1, n_seen, dtype=np.int64)
    return {
        "queries": queries,
        "items_t": items.T.contiguous(),  # (D, N): the product reads it row-major
        "targets": targets,
        "seen": (indptr, seen.ravel().astype(np.int64)),
    }


def scorer(data: dict[str, Any], chunk_size: int) -> Callable[[slice], torch.Tensor]:
    """``score_fn`` for chunked_ranks: ``Q[sl] @ I.T`` into one reused (chunk, N) buffer.

    Reusing the buffer avoids a fresh 200 MB allocation per chunk, whose page faults
    cost about as much as the product itself.
    """
    queries, items_t = data["queries"], data["items_t"]
    buf = torch.empty(chunk_size, items_t.shape[1])

    def score_fn(sl: slice) -> torch.Tensor:
        out = buf[: sl.stop - sl.start]
        torch.matmul(queries[sl], items_t, out=out)
        return out

    return score_fn


class Timed:
    """Wall-clock and process CPU seconds of a ``with`` block.

    On a shared machine the wall time grows with other people's load; the CPU time
    (all threads of this process) much less so, so both are reported.
    """

    def __enter__(self) -> Timed:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run_ranks(data: dict[str, Any], chunk_size: int, n_reserved: int) -> tuple[np.ndarray, Timed]:
    from recpipe.evaluate.ranking import chunked_ranks

    score_fn = scorer(data, chunk_size)
    n = len(data["targets"])
    with Timed() as t:
        ranks = chunked_ranks(
            score_fn, n, data["targets"], chunk_size, data["seen"], n_reserved=n_reserved
        )
    return ranks, t


def run_scoring_only(data: dict[str, Any], chunk_size: int) -> Timed:
    score_fn = scorer(data, chunk_size)
    n = len(data["targets"])
    with Timed() as t:
        for start in range(0, n, chunk_size):
            score_fn(slice(start, min(start + chunk_size, n)))
    return t


def run_topk(
    data: dict[str, Any], chunk_size: int, k: int, n_reserved: int
) -> tuple[np.ndarray, Timed]:
    from recpipe.evaluate.ranking import chunked_top_k

    score_fn = scorer(data, chunk_size)
    n = len(data["targets"])
    with Timed() as t:
        lists = chunked_top_k(score_fn, n, k, chunk_size, data["seen"], n_reserved=n_reserved)
    return lists, t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=100_000, help="queries to rank")
    parser.add_argument("--items", type=int, default=50_000, help="catalogue size N")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension")
    parser.add_argument("--seen", type=int, default=5, help="seen items excluded per query")
    parser.add_argument(
        "--reserved", type=int, default=2, help="reserved index slots (IdMap: padding, unknown)"
    )
    parser.add_argument(
        "--chunk-size", type=int, nargs="+", default=[1024], help="queries per score block"
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20], help="metric cut-offs")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the matrix product alone"
    )
    parser.add_argument(
        "--topk", action="store_true", help="also time top-K lists for coverage/popularity"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    from recpipe.evaluate.metrics import coverage, next_item_metrics, popularity_bias

    console = Console()
    with Timed() as t_data:
        data = make_data(args.queries, args.items, args.dim, args.seen, args.reserved, args.seed)
    console.print(
        f"drew {args.queries:,} queries x {args.items:,} items (dim {args.dim}, float32), "
        f"{args.seen} seen items per query, in {t_data.wall:.2f} s; "
        f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}"
    )

    n = args.queries
    table = Table(title=f"full-ranking evaluation of {n:,} queries over {args.items:,} items")
    for name in ("chunk", "step", "seconds", "CPU seconds", "queries/s", "peak RSS (MiB)"):
        table.add_column(name, justify="left" if name in ("chunk", "step") else "right")

    def add(chunk: int, step: str, t: Timed, rss: str = "", bold: bool = False) -> None:
        cells = [f"{t.wall:.2f}", f"{t.cpu:.2f}", f"{n / max(t.wall, 1e-9):,.0f}", rss]
        if bold:
            step, cells = f"[bold]{step}[/bold]", [f"[bold]{c}[/bold]" if c else c for c in cells]
        table.add_row(str(chunk), step, *cells)

    best: tuple[float, int] | None = None
    ranks = np.empty(0, dtype=np.int64)
    for chunk in args.chunk_size:
        if args.breakdown:
            add(chunk, "Q @ I.T alone (for reference)", run_scoring_only(data, chunk))
        ranks, t_rank = run_ranks(data, chunk, args.reserved)
        with Timed() as t_metrics:
            next_item_metrics(ranks, args.ks)
        add(chunk, "score + rank (chunked_ranks)", t_rank)
        add(chunk, "next-item metrics", t_metrics)
        total = Timed()
        total.wall, total.cpu = t_rank.wall + t_metrics.wall, t_rank.cpu + t_metrics.cpu
        add(chunk, "total", total, f"{peak_rss_mib():,.0f}", bold=True)
        if best is None or total.wall < best[0]:
            best = (total.wall, chunk)
    assert best is not None
    shown = next_item_metrics(ranks, args.ks)
    if args.topk:
        k = max(args.ks)
        lists, t_topk = run_topk(data, best[1], k, args.reserved)
        counts = np.bincount(data["seen"][1], minlength=args.items)  # stand-in popularity
        with Timed() as t_cat:
            shown |= coverage(lists, args.items, args.ks, n_reserved=args.reserved)
            shown |= popularity_bias(lists, counts, args.ks, n_reserved=args.reserved)
        add(best[1], f"score + top_k, K={k} (chunked_top_k)", t_topk)
        add(best[1], "coverage, popularity bias", t_cat)
    console.print(table)

    mt = Table(title="metrics (random embeddings: recall@K ~ K / items)")
    mt.add_column("metric")
    mt.add_column("value", justify="right")
    for key, value in shown.items():
        mt.add_row(key, f"{value:.6f}")
    console.print(mt)
    verdict = "met" if best[0] <= TARGET_SECONDS else "NOT met"
    console.print(
        f"best: {best[0]:.2f} s at chunk {best[1]} ({n / best[0]:,.0f} queries/s); "
        f"target {TARGET_SECONDS:.0f} s {verdict}; median rank {int(np.median(ranks)):,} "
        f"(uniform ~ {(args.items - args.reserved) // 2:,}); "
        f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
