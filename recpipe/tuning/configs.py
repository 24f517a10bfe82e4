"""The tuned config files: ``tuned/<split>/<model>.yaml``, one per tuned model and split.

Each holds a finished study's summary (:class:`recpipe.tuning.study.TuneResult`): the
metric, the best value and config, the default config's value, the budget and the trial
counts. The train and evaluate stages read ``best_config`` when ``tune.use`` is true.
Nothing here imports Optuna.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from recpipe.errors import ConfigError


def tuned_path(folder: Path, split: str, model: str) -> Path:
    """``<folder>/<split>/<model>.yaml``."""
    return Path(folder) / split / f"{model}.yaml"


def write_tuned(folder: Path, result: Any) -> Path:
    """Write a study's best config to ``tuned/<split>/<model>.yaml``; returns the path."""
    path = tuned_path(folder, result.split, result.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(result.to_dict(), sort_keys=False))
    return path


def read_tuned_file(folder: Path, split: str, model: str) -> dict[str, Any] | None:
    """The whole tuned file of ``model`` on ``split`` (None: not tuned)."""
    path = tuned_path(folder, split, model)
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text()) or {}


def read_tuned(folder: Path, split: str, model: str) -> dict[str, Any] | None:
    """The tuned config of ``model`` on ``split`` (None: not tuned)."""
    path = tuned_path(folder, split, model)
    if not path.is_file():
        return None
    found = yaml.safe_load(path.read_text()) or {}
    config = found.get("config", found.get("best_config"))
    if not isinstance(config, dict):
        raise ConfigError(f"{path} holds no tuned config (expected a best_config mapping)")
    return config


def tuned_summary(folder: Path, split: str, model: str) -> dict[str, Any]:
    """What a report says of a model's config on ``split``: ``{"tuned": False}``, or
    ``tuned`` with the study's metric, best and default values, budget and trials."""
    path = tuned_path(folder, split, model)
    if not path.is_file():
        return {"tuned": False}
    found = yaml.safe_load(path.read_text()) or {}
    keys = ("metric", "best_value", "default_value", "budget", "trials")
    return {"tuned": True, "file": path.as_posix(), **{k: found.get(k) for k in keys}}
