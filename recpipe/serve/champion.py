"""The packaged champion in Python: the predictor the Bento runs, without HTTP.

:func:`load_champion` finds the serving bundle that a workspace's last ``package``
stage stored (``reports/package.json`` names its BentoML model tag; a store that lacks
it imports ``bentos/recpipe.bento``) and returns the same
:class:`~recpipe.serve.predictor.Predictor` the service builds from it, so that
answers match the HTTP ones (seen items excluded, cold-start fallbacks, strategies).
:func:`top_k_all_users` is the batch form (every known user's top-K, as a table), what
``recpipe recommend --all-users --out FILE.parquet`` writes.

Examples
--------
>>> from recpipe.serve.champion import load_champion  # doctest: +SKIP
>>> champion = load_champion(".")  # doctest: +SKIP
>>> champion.recommend("u0042", k=5)  # doctest: +SKIP
Recommendation(items=[...], scores=[...], strategy='model')
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from recpipe.errors import ArtifactError
from recpipe.paths import Paths
from recpipe.serve.predictor import Predictor

log = logging.getLogger(__name__)

__all__ = ["champion_bundle", "export_top_k", "load_champion", "top_k_all_users"]


def champion_bundle(root: Path | str = ".") -> Path:
    """The serving bundle of the workspace's last package stage (a folder in the
    BentoML model store; the store is filled from ``bentos/recpipe.bento`` if need be).

    Raises
    ------
    ArtifactError
        The workspace has packaged nothing, or the model is neither in the store nor in
        the exported archive.
    """
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    from recpipe.serve.package import bentoml_home, resolve_bento

    paths = Paths.at(Path(root))
    report = paths.package_json
    if not report.is_file():
        raise ArtifactError(
            f"{report} does not exist: the workspace {paths.root} has packaged no champion; "
            "run `make run` (or `recpipe run`) there first"
        )
    try:
        tag = json.loads(report.read_text()).get("model_tag")
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{report} is not valid JSON: {exc}") from exc
    if not tag:
        raise ArtifactError(
            f"{report} names no packaged model (model_tag): the last package stage built "
            "nothing; run `recpipe run` again"
        )
    try:
        return Path(bentoml.models.get(tag).path)
    except (NotFound, BentoMLException):
        pass
    # another machine or a cleaned store: import the workspace's exported Bento
    resolve_bento(None, paths.bento_archive)
    try:
        return Path(bentoml.models.get(tag).path)
    except (NotFound, BentoMLException) as exc:
        raise ArtifactError(
            f"the packaged model {tag} is not in the BentoML store ({bentoml_home()}) nor in "
            f"{paths.bento_archive}; package it again (`recpipe stage package`)"
        ) from exc


def load_champion(root: Path | str = ".") -> Predictor:
    """The workspace's packaged champion as the service's predictor.

    ``recommend(user_id, k)``, ``recommend_session(items, k)`` and ``similar(item_id,
    k=...)`` answer as ``POST /recommend``, ``/recommend/session`` and ``/similar`` do.

    Raises
    ------
    ArtifactError
        See :func:`champion_bundle`, or the bundle cannot be loaded.
    """
    return Predictor.from_artifact(champion_bundle(root))


def top_k_all_users(
    predictor: Predictor,
    k: int = 10,
    *,
    exclude_seen: bool = True,
    on_user: Callable[[], Any] | None = None,
) -> pd.DataFrame:
    """Every known user's top-``k`` (seen items excluded by default), one row per
    recommendation: ``user_id``, ``rank`` (1 = best), ``item_id``, ``score``,
    ``strategy``. ``on_user`` is called after each user (a progress bar's advance)."""
    rows: dict[str, list[Any]] = {k_: [] for k_ in ("user_id", "rank", "item_id", "score")}
    strategies: list[str] = []
    for user in predictor.user_map.ids:
        answer = predictor.recommend(str(user), k=k, exclude_seen=exclude_seen)
        n = len(answer.items)
        rows["user_id"] += [str(user)] * n
        rows["rank"] += list(range(1, n + 1))
        rows["item_id"] += answer.items
        rows["score"] += answer.scores
        strategies += [answer.strategy] * n
        if on_user is not None:
            on_user()
    frame = pd.DataFrame(rows).astype(
        {"user_id": "string", "rank": "int32", "item_id": "string", "score": "float32"}
    )
    frame["strategy"] = pd.Series(strategies, dtype="string")
    return frame


def export_top_k(predictor: Predictor, k: int, out: Path, console: Any = None) -> dict[str, Any]:
    """Write :func:`top_k_all_users` to ``out`` (CSV for ``*.csv``, else Parquet), with a
    progress bar on ``console`` (a Rich console) when given; returns what it wrote."""
    from rich.progress import Progress

    with Progress(console=console, transient=True, disable=console is None) as bar:
        task = bar.add_task("top-k of every user", total=len(predictor.user_map.ids))
        table = top_k_all_users(predictor, k, on_user=lambda: bar.advance(task))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)
    return {"users": int(table["user_id"].nunique()), "rows": len(table), "out": str(out)}
