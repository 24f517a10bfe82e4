"""Fitting one candidate on one split: what the ``train`` stage runs per model and split.

:func:`candidate_options` gives a candidate's options with the stage-wide device and
epoch cap (applied by the model class itself,
:meth:`~recpipe.models.base.Recommender.training_options`) and :func:`fit_candidate`
fits it on a split: torch models with checkpoints,
progress and a per-epoch callback. The generic training loop (:mod:`recpipe.train`)
knows no model; the registry lives in :mod:`recpipe.models.registry`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recpipe.models.base import Recommender
from recpipe.models.dataset import SplitData

log = logging.getLogger(__name__)


def candidate_options(
    name: str, options: Mapping[str, Any], device: str, max_epochs: int | None
) -> dict[str, Any]:
    """A candidate's options as the train stage builds it: ``train.model_configs[name]``
    with the stage-wide ``train.device`` and ``train.max_epochs`` applied (by the model
    class itself, :meth:`~recpipe.models.base.Recommender.training_options`)."""
    from recpipe.models.registry import get_model

    return get_model(name).training_options(dict(options), device=device, max_epochs=max_epochs)


def fit_candidate(
    candidate: Recommender,
    data: SplitData,
    *,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Fit ``candidate`` on the split's train part, validating on its valid part.

    Torch models checkpoint each epoch to ``checkpoint_dir`` (a killed run resumes),
    show progress and call ``on_epoch(record)`` after each epoch; baselines fit in one
    call. Returns the training summary (per-epoch history, best epoch, device, seconds;
    ``{}`` for a model without a training loop).
    """
    from recpipe.models.torch_base import TorchRecommender

    train, valid = data.parts["train"], data.parts["valid"]
    if isinstance(candidate, TorchRecommender):
        candidate.fit(
            train, valid, checkpoint_dir=checkpoint_dir, progress=progress, on_epoch=on_epoch
        )
        return candidate.training.summary() if candidate.training else {}
    candidate.fit(train, valid)
    return {}


def skip_reason(name: str, kind: str, needed: frozenset[str]) -> str | None:
    """Why candidate ``name`` does not train on split ``kind``, whose protocols score the
    query kinds ``needed`` (None: it scores one of them)."""
    from recpipe.models.registry import get_model

    kinds = get_model(name).query_kinds
    if needed & kinds:
        return None
    return f"scores {sorted(kinds)} queries; {kind} needs " + " or ".join(sorted(needed))


def fit_and_save(
    candidate: Recommender,
    data: SplitData,
    artifact_dir: Path | None,
    *,
    checkpoint_dir: Path | None = None,
    run: Any = None,
    progress: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], Path | None]:
    """:func:`fit_candidate`, then save the artifact to ``artifact_dir`` (None: a rank
    of a distributed job that writes nothing). ``run`` is the candidate's tracking run
    (:func:`recpipe.tracking.candidate_run`; None: none): it sees every epoch and the
    artifact. Returns the training summary (with ``processes`` under DDP) and the
    artifact's path."""
    from recpipe.train import distributed as ddp

    def epoch_done(record: dict[str, Any]) -> None:
        if run is not None:
            run.on_epoch(record)
        if on_epoch is not None:
            on_epoch(record)

    entry = fit_candidate(
        candidate, data, checkpoint_dir=checkpoint_dir, progress=progress, on_epoch=epoch_done
    )
    if entry and ddp.world_size() > 1:
        entry["processes"] = ddp.world_size()
    if artifact_dir is None:
        return entry, None
    artifact = candidate.save(artifact_dir)
    if run is not None:
        run.finish(artifact, entry)
    return entry, artifact
