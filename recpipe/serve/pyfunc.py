"""The registry's pyfunc model: the service's predictor over a serving bundle.

Every version the register step logs (:meth:`recpipe.gates.registry.Registry.register`
with :func:`bundle_code`) carries a serving bundle (:mod:`recpipe.serve.bundle`: the
model, the cold-start fallback, each known user's seen items) under
``artifacts/recpipe_bundle/``, and MLflow loads it as :class:`BundlePyfunc`, which
answers with the same :class:`~recpipe.serve.predictor.Predictor` the Bento runs. So
``mlflow.pyfunc.load_model("models:/recpipe@champion").predict(...)`` gives the lists
``POST /recommend`` and ``POST /recommend/session`` give: seen items left out,
unknown users and items routed to the cold-start strategies, and the strategy named.

One input row is one request:

=================================  ============================================================
row                                 answered as
=================================  ============================================================
``user_id`` (``items`` optional)    ``POST /recommend`` with ``context.items = items``: a known
                                    user's scores without their seen items (and ``items``); an
                                    unknown user from ``items`` or the fallback
no ``user_id``, ``items``           ``POST /recommend/session`` of ``items`` (oldest first)
=================================  ============================================================

Params: ``k`` (default 20, at most the bundle's ``serve.max_k``) and ``exclude_seen``
(default true). Output columns: ``items``, ``scores``, ``strategy``, ``reason``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

from recpipe.gates.registry import BUNDLE_KEY, PyfuncCode
from recpipe.serve.predictor import Predictor
from recpipe.serve.schemas import DEFAULT_K, Recommendation, SessionRequest

__all__ = ["ENTRY", "SIGNATURE", "BundlePyfunc", "bundle_code", "predict_frame"]

log = logging.getLogger(__name__)

#: The "models from code" file MLflow runs when it loads a bundle version.
ENTRY = Path(__file__).with_name("_pyfunc_entry.py")

SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("string", "user_id", required=False),
            ColSpec(Array("string"), "items", required=False),
        ]
    ),
    outputs=Schema(
        [
            ColSpec(Array("string"), "items"),
            ColSpec(Array("double"), "scores"),
            ColSpec("string", "strategy"),
            ColSpec("string", "reason"),
        ]
    ),
    params=ParamSchema(
        [ParamSpec("k", "long", DEFAULT_K), ParamSpec("exclude_seen", "boolean", True)]
    ),
)


def _present(value: Any) -> bool:
    """Whether a cell holds a value (not None, NA, NaN or an empty string)."""
    if value is None or value is pd.NA:
        return False
    if isinstance(value, float) and np.isnan(value):
        return False
    return not (isinstance(value, str) and not value)


def _items(value: Any) -> list[str]:
    """A cell of the ``items`` column as a list of item ids ([] when absent)."""
    if value is None or np.isscalar(value):
        return []
    return [str(i) for i in value]


def predict_frame(
    predictor: Predictor, frame: pd.DataFrame, k: int = DEFAULT_K, exclude_seen: bool = True
) -> pd.DataFrame:
    """One answer per row of ``frame``, as the service answers (see the module docstring).

    Parameters
    ----------
    predictor : Predictor
        The bundle's predictor (what the Bento serves).
    frame : pandas.DataFrame
        Columns ``user_id`` (optional) and ``items`` (optional; lists of item ids).
    k : int, default 20
        Items per answer (at most the bundle's ``max_k``).
    exclude_seen : bool, default True
        Leave out the user's seen items and the row's items.

    Returns
    -------
    pandas.DataFrame
        ``items``, ``scores``, ``strategy`` and ``reason`` per row, in the input order.

    Raises
    ------
    RequestError
        ``k`` or a row's item count is above the bundle's limits.
    """
    n = len(frame)
    users = frame["user_id"].tolist() if "user_id" in frame else [None] * n
    lists = frame["items"].tolist() if "items" in frame else [None] * n
    answers: list[Recommendation | None] = [None] * n
    sessions: list[int] = []
    for row, (user, items) in enumerate(zip(users, lists, strict=True)):
        if _present(user):
            answers[row] = predictor.recommend(
                str(user), k=k, exclude_seen=exclude_seen, context={"items": _items(items)}
            )
        else:
            sessions.append(row)
    if sessions:  # scored as one batch, as the service batches concurrent sessions
        requests: Sequence[SessionRequest] = [
            SessionRequest(items=_items(lists[row]), k=k, exclude_seen=exclude_seen)
            for row in sessions
        ]
        for row, answer in zip(sessions, predictor.recommend_sessions(requests), strict=True):
            answers[row] = answer
    done = [a for a in answers if a is not None]
    return pd.DataFrame(
        {
            "items": [a.items for a in done],
            "scores": [a.scores for a in done],
            "strategy": [a.strategy for a in done],
            "reason": [a.reason for a in done],
        }
    )


class BundlePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc of a serving bundle: :func:`predict_frame` over its predictor."""

    def load_context(self, context: Any) -> None:
        """Load the bundle under ``artifacts/recpipe_bundle/`` as the service does."""
        self.predictor = Predictor.from_artifact(context.artifacts[BUNDLE_KEY])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Answers per row (:func:`predict_frame`); params ``k`` and ``exclude_seen``."""
        params = params or {}
        return predict_frame(
            self.predictor,
            pd.DataFrame(model_input),
            k=int(params.get("k", DEFAULT_K)),
            exclude_seen=bool(params.get("exclude_seen", True)),
        )


def bundle_code(bundle: Path) -> PyfuncCode:
    """What :meth:`~recpipe.gates.registry.Registry.register` logs to make a version answer
    as the service: :class:`BundlePyfunc` over ``bundle``, a directory named
    ``recpipe_bundle`` (MLflow names a logged artifact after its file).

    Raises
    ------
    ValueError
        ``bundle`` is not named ``recpipe_bundle``.
    """
    bundle = Path(bundle)
    if bundle.name != BUNDLE_KEY:
        raise ValueError(f"the bundle folder must be named {BUNDLE_KEY!r}, got {bundle.name!r}")
    return PyfuncCode(python_model=ENTRY, artifacts={BUNDLE_KEY: bundle}, signature=SIGNATURE)
