"""One model's tuning study on one split, and the tuned config files.

:func:`tune_model` searches the model's ``search_space`` (:mod:`recpipe.models.space`)
with Optuna's TPE sampler (seeded) for the best mean ``metric`` on the split's
**validation** part, by the split's own protocol (as the evaluate stage ranks the test
part; the test part is never read). Every model gets the same budget: ``trials``
finished trials and/or ``timeout`` seconds. Torch models report their per-epoch
validation metric, so hopeless trials are pruned (median rule). A trial that raises is
recorded as failed, with its error, and the study goes on.

The study lives in an RDB storage (``sqlite:///.../tuning/optuna.db`` in a workspace),
named ``<split>/<model>``: a killed study resumes where it stopped (its finished trials
count against the budget) and ``optuna-dashboard sqlite:///tuning/optuna.db`` shows it.

The tune stage keeps the best config of each model and split in
``tuned/<split>/<model>.yaml`` (:mod:`recpipe.tuning.configs`), which the train and
evaluate stages use when ``tune.use`` is true.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from recpipe.errors import ConfigError, RecpipeError
from recpipe.models.dataset import SplitData
from recpipe.models.space import Choice, Dimension, Float, Int, SearchSpace, to_option

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """What every model's study may spend: finished ``trials`` and/or ``timeout`` seconds
    (None: no limit of that kind; at least one must be set)."""

    trials: int | None = 20
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.trials is None and self.timeout is None:
            raise ConfigError("a tuning budget needs trials or timeout (or both); got neither")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"tune trials must be >= 1, got {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"tune timeout must be > 0 seconds, got {self.timeout}")


@dataclass
class TuneResult:
    """A finished study: the best config and value, and the budget spent."""

    model: str
    split: str
    metric: str
    best_value: float | None
    best_config: dict[str, Any]
    default_value: float | None
    budget: dict[str, Any]
    trials: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    from recpipe.gates.measure import evaluate_on_split

    parts = {
        "train": data.parts["train"],
        "valid": data.parts["valid"],
        "test": data.parts["valid"],
    }
    value, _ = evaluate_on_split(model, split, parts, data.meta, ks, metric)
    return float(value)


def _epoch_reporter(trial: Any, monitor: str | None) -> Any:
    """An ``on_epoch`` callback that reports the monitored validation metric to the trial
    and stops a hopeless one (``optuna.TrialPruned``)."""
    import optuna

    def on_epoch(record: Mapping[str, Any]) -> None:
        metrics = record.get("metrics") or {}
        if monitor is None or monitor not in metrics:
            return
        trial.report(float(metrics[monitor]), int(record.get("epoch", 0)))
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {record.get('epoch')}")

    return on_epoch


def _finished(study: Any) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in (*done, optuna.trial.TrialState.FAIL) for t in study.trials)


def tune_model(
    name: str,
    split: str,
    data: SplitData,
    *,
    metric: str,
    ks: list[int],
    budget: Budget,
    storage: str,
    base_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    prune: bool = True,
    callbacks: list[Any] | None = None,
) -> TuneResult:
    """Tune model ``name`` on ``split`` (see the module docstring).

    Parameters
    ----------
    data : SplitData
        The split (:func:`recpipe.models.dataset.load_split`); its test part is not read.
    metric : str
        The gate's metric (``recall@20``), measured on the validation part.
    ks : list[int]
        Cut-offs the protocol computes (must include the metric's).
    budget : Budget
        Finished trials and/or seconds for this model's study (trials finished before a
        resume count).
    storage : str
        An Optuna RDB URL (``sqlite:///tuning/optuna.db``).
    base_options : mapping, optional
        Options every trial starts from (``train.model_configs``); the search space
        overrides them.
    callbacks : list, optional
        Optuna callbacks ``(study, trial)`` run after every finished trial (e.g. the
        MLflow logger of :func:`recpipe.tracking.study_run`).

    Raises
    ------
    ConfigError
        Unknown model, or a model with an empty search space (nothing to tune).
    RecpipeError
        No trial of the study finished (every one failed or was pruned).
    """
    import optuna

    from recpipe.models.registry import build_model, get_model
    from recpipe.models.torch_base import TorchRecommender

    try:
        cls = get_model(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    space = cls.search_space
    if not space:
        raise ConfigError(
            f"model {name!r} declares no search space (search_space is empty): nothing to tune"
        )
    base = dict(base_options or {})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=f"{split}/{name}",
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if prune
        else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    study.set_user_attr("metric", metric)
    default = _default_params(cls, space, base)
    if default is not None and not study.trials:
        study.enqueue_trial(default, user_attrs={"default": True})  # trial 0: the defaults
    monitor = metric if metric == getattr(cls, "monitor", None) else None  # torch models

    def run_trial(trial: optuna.Trial) -> float:
        options = {**base, **suggest(trial, space), "seed": seed}
        trial.set_user_attr("config", _plain(options))
        model = build_model(name, options, data.meta)
        if isinstance(model, TorchRecommender):  # report epochs, prune
            model.fit(
                data.parts["train"],
                data.parts["valid"],
                on_epoch=_epoch_reporter(trial, monitor if prune else None),
            )
        else:
            model.fit(data.parts["train"], data.parts["valid"])
        return _validation_value(model, split, data, metric, ks)

    def objective(trial: optuna.Trial) -> float:
        try:
            return run_trial(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded with the trial; the study goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise

    started = time.perf_counter()
    remaining = None if budget.trials is None else max(budget.trials - _finished(study), 0)
    if remaining != 0:
        log.info(
            "tuning %s on %s: %s trials, %s s (%d done before)",
            name,
            split,
            "any" if remaining is None else remaining,
            budget.timeout if budget.timeout is not None else "no limit of",
            _finished(study),
        )
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=budget.timeout,
            catch=(Exception,),  # a failing trial is recorded as failed; the study goes on
            gc_after_trial=True,
            callbacks=callbacks,
        )
    states = {}
    for t in study.trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        errors = [
            t.user_attrs.get("error") or t.system_attrs.get("fail_reason") for t in study.trials
        ]
        raise RecpipeError(
            f"no trial of {name} on {split} finished ({states}); first errors: {errors[:3]}"
        )
    best = max(complete, key=lambda t: (t.value, -t.number))
    defaults = [t.value for t in complete if t.user_attrs.get("default")]
    return TuneResult(
        model=name,
        split=split,
        metric=metric,
        best_value=float(best.value),
        best_config=dict(best.user_attrs["config"]),
        default_value=float(defaults[0]) if defaults else None,
        budget={
            "trials": budget.trials,
            "timeout": budget.timeout,
            "used_trials": len(study.trials),
        },
        trials=states,
        seconds=round(time.perf_counter() - started, 3),
    )


def _default_params(cls: Any, space: SearchSpace, base: Mapping[str, Any]) -> dict | None:
    """The trial parameters of the model's own config (``base`` over its defaults), or
    None when a default lies outside its dimension (then no default trial is queued)."""
    config = cls.Config()
    out: dict[str, Any] = {}
    for name, dim in space.items():
        value = base.get(name, getattr(config, name))
        if isinstance(dim, Int) and dim.as_tuple:
            if len(value) != 1:
                return None
            value = value[0]
        if isinstance(dim, Int | Float) and not dim.low <= value <= dim.high:
            return None
        if isinstance(dim, Choice) and value not in dim.options:
            return None
        out[name] = value
    return out


def _plain(options: Mapping[str, Any]) -> dict[str, Any]:
    """JSON/YAML-able options (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def tune_split(
    names: list[str],
    split: str,
    data: SplitData,
    *,
    base_options: Mapping[str, Mapping[str, Any]],
    needed: frozenset[str],
    metric: str,
    ks: list[int],
    budget: Budget,
    storage: str,
    seed: int = 0,
    prune: bool = True,
    study_log: Any = None,
) -> dict[str, Any]:
    """Tune each of ``names`` on one split with the same ``budget``.

    ``study_log(name)``, when given, is a context manager around each model's study that
    yields an Optuna callback (or None), e.g. :func:`recpipe.tracking.study_run`.

    A model whose queries the split's protocols do not ask (``needed``) is skipped with
    the reason. Check the names with :func:`check_tunable` first.

    Returns
    -------
    dict
        ``{model: TuneResult.to_dict() or {"skipped": reason}}``.
    """
    from recpipe.models.registry import get_model

    out: dict[str, Any] = {}
    for name in names:
        kinds = get_model(name).query_kinds
        if not needed & kinds:
            out[name] = {
                "skipped": f"scores {sorted(kinds)} queries; {split} needs "
                + " or ".join(sorted(needed))
            }
            continue
        with study_log(name) if study_log is not None else contextlib.nullcontext() as logger:
            result = tune_model(
                name,
                split,
                data,
                metric=metric,
                ks=ks,
                budget=budget,
                storage=storage,
                base_options=base_options.get(name, {}),
                seed=seed,
                prune=prune,
                callbacks=None if logger is None else [logger],
            )
        out[name] = result.to_dict()
    return out


def check_tunable(names: list[str], split: str) -> None:
    """Clear errors for what cannot be tuned: an unknown model, a model with an empty
    search space, or a split without a plain validation protocol (``cold_start``)."""
    from recpipe.models.names import NAMES
    from recpipe.models.registry import get_model

    if split == "cold_start":
        raise ConfigError(
            "tune.split='cold_start' cannot be tuned (its cold-user protocol has no "
            "validation part); use session, user_temporal, global_temporal or leave_last_out"
        )
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ConfigError(f"cannot tune unknown model(s) {unknown}; known: {sorted(NAMES)}")
    empty = [n for n in names if not get_model(n).search_space]
    if empty:
        raise ConfigError(
            f"model(s) {empty} declare no search space (nothing to tune); tunable: "
            f"{sorted(n for n in NAMES if get_model(n).search_space)}"
        )


def plan(
    params: Any, models: list[str] | None = None, split: str | None = None
) -> tuple[list[str], str, dict[str, dict[str, Any]]]:
    """What a tune run tunes: the model names, the split and each model's base options.

    ``models`` default to ``tune.models``, else every candidate and baseline that declares
    a search space; ``split`` to ``tune.split``, else ``gate.split``, else the first of
    ``evaluate.splits``. A candidate starts from ``train.model_configs`` with the stage-wide
    device and epoch cap, a baseline from ``evaluate.model_configs``. Checked with
    :func:`check_tunable`.
    """
    from recpipe.models.fitting import candidate_options
    from recpipe.models.registry import get_model

    tp, tr = params.tune, params.train
    split = split or tp.split or params.gate.split or params.evaluate.splits[0]
    names = list(models or tp.models)
    if not names:
        every = dict.fromkeys([*tr.candidates, *params.evaluate.models])
        names = [n for n in every if get_model(n).search_space]
    check_tunable(names, split)
    base = {
        n: candidate_options(n, tr.model_configs.get(n, {}), tr.device, tr.max_epochs)
        if n in tr.candidates
        else dict(params.evaluate.model_configs.get(n, {}))
        for n in names
    }
    return names, split, base
