"""One trial's work and a worker's loop: what every process of a study runs.

:func:`run_trials` runs trials of one study until its budget is spent, counting the
trials every worker started (the study's storage coordinates them); the objective fits
the model with the trial's config and returns its validation metric, reporting each
epoch of a torch model so hopeless trials are pruned. :func:`worker_main` is a worker
process's entry point (:mod:`recpipe.tuning.parallel`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recpipe.errors import ConfigError
from recpipe.models.dataset import SplitData
from recpipe.models.space import Choice, Dimension, Float, Int, SearchSpace, to_option


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Config options for one trial: each dimension of ``space`` suggested by ``trial``."""
    out: dict[str, Any] = {}
    for name, dim in space.items():
        out[name] = to_option(dim, _suggest_one(trial, name, dim))
    return out


def _suggest_one(trial: Any, name: str, dim: Dimension) -> Any:
    if isinstance(dim, Int):
        return trial.suggest_int(name, dim.low, dim.high, log=dim.log)
    if isinstance(dim, Float):
        return trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    if isinstance(dim, Choice):
        return trial.suggest_categorical(name, list(dim.options))
    raise TypeError(f"unknown search dimension {dim!r} for {name!r}")


def _validation_value(model: Any, split: str, data: SplitData, metric: str, ks: list[int]) -> float:
    """The mean ``metric`` of ``model`` on the split's validation part, by its protocol."""
    from recpipe.gates.measure import split_metrics

    parts = {
        "train": data.parts["train"],
        "valid": data.parts["valid"],
        "test": data.parts["valid"],
    }
    metrics, _ = split_metrics(model, split, parts, data.meta, ks, metric)
    return float(metrics[metric])


def _epoch_reporter(trial: Any, monitor: str | None, deadline: float | None = None) -> Any:
    """An ``on_epoch`` callback that reports the monitored validation metric to the trial
    and stops a hopeless one (``optuna.TrialPruned``); past ``deadline`` (the study's
    time budget) it stops the trial too, once the study has a finished trial (the
    first one always runs to its end), so the budget holds to within one epoch."""
    import optuna

    def on_epoch(record: Mapping[str, Any]) -> None:
        epoch = int(record.get("epoch", 0))
        metrics = record.get("metrics") or {}
        if monitor is not None and monitor in metrics:
            trial.report(float(metrics[monitor]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")
        if deadline is not None and time.time() >= deadline:
            done = trial.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
            )
            if done:
                trial.set_user_attr("stopped", f"time budget spent after epoch {epoch}")
                raise optuna.TrialPruned(f"time budget spent after epoch {epoch}")

    return on_epoch


#: A trial is pruned when its validation metric after an epoch is in the bottom quarter
#: of the earlier trials' at that epoch (Optuna's PercentilePruner keeps the top
#: ``PRUNE_PERCENTILE`` percent), from the 4th epoch on and after 5 trials. The median
#: rule (bottom half, from epoch 2) pruned 16 of 20 mf_bpr trials on MovieLens 100K and
#: kept the default: configs that learn slower early were cut before they could
#: overtake it.
PRUNE_PERCENTILE = 75.0
PRUNE_WARMUP_EPOCHS = 3

DONE_STATES = ("COMPLETE", "PRUNED", "FAIL")


def count_trials(study: Any, states: tuple[str, ...] = DONE_STATES) -> int:
    """Trials of ``study`` in one of ``states`` (state names)."""
    return sum(t.state.name in states for t in study.trials)


@dataclass(frozen=True)
class Job:
    """What every worker of one study needs (picklable: sent to worker processes)."""

    model: str
    split: str
    study_name: str
    storage: str
    metric: str
    ks: tuple[int, ...]
    base: dict[str, Any]
    seed: int
    prune: bool
    deadline: float | None
    """``time.time()`` after which no trial starts (None: no time limit)."""
    folder: str | None = None
    """The split's features folder (worker processes read it)."""
    threads: int | None = None
    """Torch threads per worker process (None: leave as it is)."""


def open_study(job: Job, seed: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=job.study_name,
        storage=job.storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.PercentilePruner(
            PRUNE_PERCENTILE, n_startup_trials=5, n_warmup_steps=PRUNE_WARMUP_EPOCHS
        )
        if job.prune
        else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


def _objective(job: Job, data: SplitData) -> Any:
    """The study's objective: fit the model with the trial's config, return its
    validation metric (torch models report epochs and may be pruned)."""
    import optuna

    from recpipe.models.registry import build_model, get_model
    from recpipe.models.torch_base import TorchRecommender

    cls = get_model(job.model)
    space = cls.search_space
    monitor = job.metric if job.metric == getattr(cls, "monitor", None) else None

    def run_trial(trial: optuna.Trial) -> float:
        options = {**job.base, **suggest(trial, space), "seed": job.seed}
        trial.set_user_attr("config", plain_options(options))
        model = build_model(job.model, options, data.meta)
        if isinstance(model, TorchRecommender):  # report epochs, prune
            model.fit(
                data.parts["train"],
                data.parts["valid"],
                on_epoch=_epoch_reporter(trial, monitor if job.prune else None, job.deadline),
            )
        else:
            model.fit(data.parts["train"], data.parts["valid"])
        return _validation_value(model, job.split, data, job.metric, list(job.ks))

    def objective(trial: optuna.Trial) -> float:
        try:
            return run_trial(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded with the trial; the study goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise

    return objective


def run_trials(
    job: Job,
    data: SplitData,
    *,
    n_trials: int | None,
    worker: int = 0,
    study: Any = None,
    callbacks: list[Any] | None = None,
) -> int:
    """Run ``n_trials`` trials of the study (None: any number), starting none after
    ``job.deadline`` but the first; worker ``worker`` samples with the seed ``job.seed + worker``.
    Returns the trials this call ran."""
    if study is None:
        study = open_study(job, job.seed + worker)
    objective = _objective(job, data)
    ran = 0
    while n_trials is None or ran < n_trials:
        if ran and job.deadline is not None and time.time() >= job.deadline:
            break  # (a worker always runs one trial: a budget spent on setup runs none)
        study.optimize(
            objective,
            n_trials=1,
            catch=(Exception,),  # a failing trial is recorded as failed; the study goes on
            gc_after_trial=True,
            callbacks=callbacks,
        )
        ran += 1
    return ran


def worker_main(job: Job, worker: int, n_trials: int | None) -> int:
    """A worker process's share of a study (:func:`run_trials` on the split in
    ``job.folder``); the entry point of :mod:`recpipe.tuning.parallel`."""
    from recpipe.models.dataset import FIT_PARTS, load_split

    if job.threads is not None:
        import torch

        torch.set_num_threads(job.threads)
    if job.folder is None:
        raise ConfigError("a tuning worker needs the split's features folder (Job.folder)")
    return run_trials(job, load_split(job.folder, FIT_PARTS), n_trials=n_trials, worker=worker)


def plain_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """JSON/YAML-able options (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
