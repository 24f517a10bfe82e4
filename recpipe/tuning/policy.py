"""When to tune again: a split's fingerprint and the re-tune rule.

A tuned config records the search it came from (:func:`recpipe.tuning.study.study_key`)
and the split it was tuned on (:func:`split_fingerprint`: a content hash of the train and
valid parts and the train part's event count). :func:`retune_reasons` says why a model's
config is out of date: none yet, its search changed (space, base options, metric), or
the train part grew by at least ``tune.retune_growth`` since. The dvc ``tune`` stage and
the retraining flow tune only then; ``recpipe tune`` always tunes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from recpipe.tuning.configs import read_tuned_file

#: The files of a features folder a study's data comes from.
_FINGERPRINTED = ("meta.json", "train.parquet", "valid.parquet")


def split_fingerprint(folder: Path) -> dict[str, Any]:
    """``{"hash", "train_events"}`` of a split's features folder: a SHA-1 of its meta,
    train and valid files, and the train part's row count (from the Parquet footer)."""
    import pyarrow.parquet as pq

    digest = hashlib.sha1()
    for name in _FINGERPRINTED:
        path = Path(folder) / name
        if not path.is_file():
            continue
        digest.update(name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    train = Path(folder) / "train.parquet"
    events = pq.read_metadata(train).num_rows if train.is_file() else 0
    return {"hash": digest.hexdigest(), "train_events": int(events)}


def retune_reasons(
    tuned_dir: Path,
    split: str,
    wanted: dict[str, str],
    data: dict[str, Any],
    growth: float | None,
) -> dict[str, str]:
    """Why each model of ``wanted`` (``{model: study key}``) needs tuning on ``split``
    (models whose tuned config is current are left out).

    ``data`` is the split's :func:`split_fingerprint` now; ``growth`` the share of new
    train events that calls for a re-tune (None: growth alone never does).
    """
    reasons: dict[str, str] = {}
    for model, key in wanted.items():
        found = read_tuned_file(tuned_dir, split, model)
        if found is None:
            reasons[model] = "not tuned yet"
            continue
        if found.get("key") != key:
            reasons[model] = "its search changed (search space, base options or metric)"
            continue
        before = int((found.get("data") or {}).get("train_events") or 0)
        if growth is not None and before > 0:
            grew = data["train_events"] / before - 1.0
            if grew >= growth:
                reasons[model] = (
                    f"the train part grew by {grew:.0%} since it was tuned "
                    f"({before} -> {data['train_events']} events; tune.retune_growth {growth})"
                )
    return reasons
