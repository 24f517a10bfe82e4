"""One model's tuning study on one split, and the tuned config files.

:func:`tune_model` searches the model's ``search_space`` (:mod:`recpipe.models.space`)
with Optuna's TPE sampler (seeded) for the best mean ``metric`` on the split's
**validation** part, by the split's own protocol (as the evaluate stage ranks the test
part; the test part is never read). Every model gets the same budget: ``trials``
finished trials and/or ``timeout`` seconds. Torch models report their per-epoch
validation metric, so hopeless trials are pruned (bottom quarter at an epoch, see
:data:`recpipe.tuning.trials.PRUNE_PERCENTILE`). A trial that raises is
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
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recpipe.errors import ConfigError, RecpipeError
from recpipe.models.dataset import SplitData
from recpipe.models.space import Choice, Float, Int, SearchSpace
from recpipe.tuning.trials import (
    DONE_STATES,
    Job,
    count_trials,
    open_study,
    plain_options,
    run_trials,
)

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
    study: str = ""
    """The Optuna study's name in the storage: ``<split>/<model>/<key>-<data hash>``."""
    key: str = ""
    """:func:`study_key` of the search space, base options and metric."""
    data: dict[str, Any] = field(default_factory=dict)
    """The split's fingerprint when tuned (``hash``, ``train_events``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def study_key(space: SearchSpace, base: Mapping[str, Any], metric: str) -> str:
    """A short hash of what a study searches: the search space, the options every trial
    starts from and the metric. A tuned config whose key differs is out of date."""
    text = json.dumps(
        {
            "space": {k: repr(v) for k, v in space.items()},
            "base": plain_options(base),
            "metric": metric,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _fail_interrupted(study: Any) -> None:
    """Mark the trials a killed tune left RUNNING as failed (they count as used)."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    if stale:
        log.warning(
            "study %s: trial(s) %s were interrupted (the tune process stopped mid-trial): "
            "recorded as failed",
            study.study_name,
            [t.number for t in stale],
        )


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
    data_info: Mapping[str, Any] | None = None,
    workers: int = 1,
    parallel: str = "processes",
    dask_address: str | None = None,
    folder: Path | str | None = None,
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
        Started trials and/or seconds for this model's study (trials of an interrupted
        run count: a killed study resumes with what is left).
    storage : str
        An Optuna RDB URL (``sqlite:///tuning/optuna.db``).
    base_options : mapping, optional
        Options every trial starts from (``train.model_configs``); the search space
        overrides them.
    callbacks : list, optional
        Optuna callbacks ``(study, trial)`` run after every finished trial (e.g. the
        MLflow logger of :func:`recpipe.tracking.study_run`); with several workers they
        run once the workers are done.
    data_info : mapping, optional
        The split's :func:`recpipe.tuning.policy.split_fingerprint` (``hash``,
        ``train_events``): the study is named after it, so a study on other data starts
        afresh, and the tuned file records it (the re-tune rule on data growth).
    workers, parallel, dask_address, folder
        ``workers`` > 1 run trials in parallel on the same study
        (:func:`recpipe.tuning.parallel.run_workers`): worker processes, or a Dask
        cluster (``parallel="dask"``: the scheduler at ``dask_address``, else a local
        one); each reads the split from ``folder``.

    Raises
    ------
    ConfigError
        Unknown model, a model with an empty search space (nothing to tune), or
        parallel workers without the split's folder.
    RecpipeError
        No trial of the study finished (every one failed or was pruned).
    """
    import optuna

    from recpipe.models.registry import get_model

    try:
        cls = get_model(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    space = cls.search_space
    if not space:
        raise ConfigError(
            f"model {name!r} declares no search space (search_space is empty): nothing to tune"
        )
    if workers > 1 and folder is None:
        raise ConfigError(f"tuning {name} with {workers} workers needs the split's folder")
    base = dict(base_options or {})
    info = dict(data_info or {})
    key = study_key(space, base, metric)
    study_name = f"{split}/{name}/{key}" + (f"-{info['hash'][:8]}" if info.get("hash") else "")
    started = time.perf_counter()
    job = Job(
        model=name,
        split=split,
        study_name=study_name,
        storage=storage,
        metric=metric,
        ks=tuple(ks),
        base=base,
        seed=seed,
        prune=prune,
        deadline=None if budget.timeout is None else time.time() + budget.timeout,
        folder=None if folder is None else str(folder),
        threads=max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None,
    )
    study = open_study(job, seed)
    study.set_user_attr("metric", metric)
    _fail_interrupted(study)
    default = _default_params(cls, space, base)
    if default is not None and not study.trials:
        study.enqueue_trial(default, user_attrs={"default": True})  # trial 0: the defaults
    before = count_trials(study)
    remaining = None if budget.trials is None else max(budget.trials - before, 0)
    log.info(
        "tuning %s on %s: %s trials, %s s, %d worker(s) (%d done before)",
        name,
        split,
        "any" if remaining is None else remaining,
        budget.timeout if budget.timeout is not None else "no limit of",
        workers,
        before,
    )
    if workers == 1 or remaining == 0:
        run_trials(job, data, n_trials=remaining, study=study, callbacks=callbacks)
    else:  # each worker gets its share of the trials left: the budget holds exactly
        from recpipe.tuning.parallel import run_workers

        if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            # The queued default runs here, before the workers: on SQLite two workers can
            # both pop a queued trial (the read and the update are not one transaction)
            # and run it twice as one trial, leaving the budget a trial short.
            run_trials(job, data, n_trials=1, study=study, callbacks=callbacks)
            remaining = None if remaining is None else remaining - 1
        shares: list[int | None] = [None] * workers
        if remaining is not None:  # e.g. 5 over 2 workers: 3 and 2 (no worker with 0)
            cut = [remaining // workers + (i < remaining % workers) for i in range(workers)]
            shares = [n for n in cut if n > 0]
        known = {t.number for t in study.trials if t.state.name in DONE_STATES}
        if shares:
            run_workers(job, shares, parallel, dask_address)
        for trial in optuna.load_study(study_name=study_name, storage=storage).trials:
            if trial.number not in known and trial.state.name in DONE_STATES:
                for callback in callbacks or []:
                    callback(study, trial)
    study = optuna.load_study(study_name=study_name, storage=storage)
    states: dict[str, int] = {}
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
            "used_trials": count_trials(study),
            "workers": workers,
        },
        trials=states,
        seconds=round(time.perf_counter() - started, 3),
        study=study_name,
        key=key,
        data=info,
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
    folder: Path | None = None,
    data_info: Mapping[str, Any] | None = None,
    workers: int = 1,
    parallel: str = "processes",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Tune each of ``names`` on one split with the same ``budget``.

    ``study_log(name)``, when given, is a context manager around each model's study that
    yields an Optuna callback (or None), e.g. :func:`recpipe.tracking.study_run`.

    A model whose queries the split's protocols do not ask (``needed``) is skipped with
    the reason. Check the names with :func:`check_tunable` first. ``folder``,
    ``data_info``, ``workers``, ``parallel`` and ``dask_address`` go to :func:`tune_model`.

    Returns
    -------
    dict
        ``{model: TuneResult.to_dict() or {"skipped": reason}}``: skipped are the models
        whose queries the split does not ask, those that cannot be built on the data
        (a content model without item content) and those whose every trial failed.
    """
    from recpipe.errors import MissingContentError
    from recpipe.models.registry import build_model, get_model

    out: dict[str, Any] = {}
    for name in names:
        kinds = get_model(name).query_kinds
        if not needed & kinds:
            out[name] = {
                "skipped": f"scores {sorted(kinds)} queries; {split} needs "
                + " or ".join(sorted(needed))
            }
            continue
        try:  # e.g. a content model on click logs without item content (as train skips it)
            build_model(name, base_options.get(name, {}), data.meta)
        except MissingContentError as exc:
            out[name] = {"skipped": str(exc)}
            log.warning("not tuning %s on %s: %s", name, split, exc)
            continue
        try:
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
                    data_info=data_info,
                    workers=workers,
                    parallel=parallel,
                    dask_address=dask_address,
                    folder=folder,
                )
        except RecpipeError as exc:  # every trial failed: the other models still tune
            out[name] = {"skipped": f"no trial finished: {exc}"}
            log.warning("tuning %s on %s failed: %s", name, split, exc)
            continue
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
