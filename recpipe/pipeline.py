"""The stage table: what dvc.yaml, the Prefect flow and the CLI share.

:data:`STAGES` declares every dvc.yaml stage: the stage function (in
:mod:`recpipe.stages`), the params sections it reads, the code it runs and the files it
reads and writes; ``tests/pipeline/test_dvc_consistency.py`` keeps dvc.yaml in step with
it and ``tests/unit/test_architecture.py`` checks that the declared code covers every
module the stage imports. :func:`run_stage` runs one stage by name (``recpipe stage
NAME``); :func:`workspace_params` reads a workspace's params once per run and checks
every model option against its model's config before any stage runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recpipe import stages
from recpipe.config import Params, load_params
from recpipe.errors import ConfigError, StageError
from recpipe.paths import Paths

StageFn = Callable[..., dict[str, Any]]


def workspace_params(
    paths: Paths, params_file: str | Path | None = None, overrides: list[str] | None = None
) -> Params:
    """Params of a workspace: ``params_file``, else ``<root>/params.yaml`` when it exists,
    else the defaults; then the ``key=value`` overrides. Model names and options are
    checked against the registry (:func:`check_models`), so a misspelt option fails here,
    before any stage has run."""
    if params_file is None and paths.params_file.exists():
        params_file = paths.params_file
    params = load_params(params_file, overrides)
    check_models(params)
    return params


def _model_problems(section: str, names: list[str], configs: dict[str, Any]) -> list[str]:
    """Unknown model names and options of one params section (``train`` or ``evaluate``)."""
    from pydantic import ValidationError

    from recpipe.models.names import NAMES

    problems: list[str] = []
    list_key = "candidates" if section == "train" else "models"
    for name in names:
        if name not in NAMES:
            problems.append(f"{section}.{list_key}: unknown model {name!r}; known: {sorted(NAMES)}")
    for name, options in configs.items():
        if name not in NAMES:
            problems.append(
                f"{section}.model_configs.{name}: unknown model {name!r}; known: {sorted(NAMES)}"
            )
            continue
        from recpipe.models.registry import get_model

        config_cls = get_model(name).Config  # imports this model's module only
        if not isinstance(options, dict):
            problems.append(
                f"{section}.model_configs.{name}: must be a mapping of options, got {options!r}"
            )
            continue
        try:
            config_cls.model_validate(options)
        except ValidationError as err:
            allowed = sorted(config_cls.model_fields)
            for e in err.errors():
                key = ".".join(str(p) for p in e["loc"])
                where = f"{section}.model_configs.{name}.{key}"
                if e["type"] == "extra_forbidden":
                    problems.append(
                        f"{where}: unknown option of model {name!r}; allowed: {allowed}"
                    )
                else:
                    problems.append(f"{where}: {e['msg']} (got {e.get('input')!r})")
    return problems


def check_models(params: Params) -> None:
    """Check every model name and option in ``train`` and ``evaluate`` against the registry.

    Raises
    ------
    ConfigError
        An unknown model name, an unknown option or a bad value; the message gives the
        key's full path (``train.model_configs.gru4rec.hiden_size``) and the allowed keys.
    """
    problems = _model_problems(
        "train", list(params.train.candidates), dict(params.train.model_configs)
    )
    problems += _model_problems(
        "evaluate", list(params.evaluate.models), dict(params.evaluate.model_configs)
    )
    if problems:
        raise ConfigError("invalid model params:\n" + "\n".join(f"  - {p}" for p in problems))


#: Code every stage runs: the stage functions and what they import everywhere.
CORE_CODE = (
    "recpipe/stages.py",
    "recpipe/workspace.py",
    "recpipe/config.py",
    "recpipe/errors.py",
    "recpipe/paths.py",
)
#: Code the stages that load models run (the registry imports every model and baseline).
MODEL_CODE = (
    "recpipe/__init__.py",
    "recpipe/baselines",
    "recpipe/data",
    "recpipe/evaluate",
    "recpipe/features",
    "recpipe/models",
    "recpipe/sessions",
    "recpipe/train",
)


@dataclass(frozen=True)
class StageSpec:
    """What one stage reads and writes, as declared in dvc.yaml."""

    name: str
    func: StageFn
    params: tuple[str, ...]
    code: tuple[str, ...]
    deps: Callable[[Paths], list[Path]] = field(default=lambda p: [])
    outs: Callable[[Paths], list[Path]] = field(default=lambda p: [])
    metrics: Callable[[Paths], list[Path]] = field(default=lambda p: [])
    plain_outs: Callable[[Paths], list[Path]] = field(default=lambda p: [])
    """Outputs kept in the workspace only (``cache: false``), e.g. human reports."""
    persist: bool = False
    """Every output is ``persist: true`` in dvc.yaml: dvc does not delete it before the
    stage runs (the tune stage keeps the tuned configs it does not re-tune)."""
    foreach: str | None = None
    """A dvc.yaml ``foreach`` list (one stage per item, ``cmd: recpipe stage NAME --model
    ${item}``); ``outs`` then take the item as second argument."""

    def items(self, params: Params) -> list[str]:
        """The ``foreach`` items these params give (``[]`` for a plain stage)."""
        if self.foreach is None:
            return []
        value: Any = params.dump()
        for key in self.foreach.removeprefix("${").removesuffix("}").split("."):
            value = value[key]
        return [str(v) for v in value]

    def all_outs(self, paths: Paths, params: Params) -> list[Path]:
        """Cached outputs, one set per ``foreach`` item for a foreach stage."""
        if self.foreach is None:
            return self.outs(paths)
        return [o for item in self.items(params) for o in self.outs(paths, item)]  # type: ignore[call-arg]


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            name="ingest",
            func=stages.ingest,
            params=("data", "synth", "prep"),
            code=(*CORE_CODE, "recpipe/data"),
            outs=lambda p: [p.interim_dir],
        ),
        StageSpec(
            name="validate",
            func=stages.validate,
            params=("validate", "prep"),
            code=(*CORE_CODE, "recpipe/data", "recpipe/validation"),
            deps=lambda p: [p.interim_dir],
            outs=lambda p: [p.validated_dir, p.quarantine_dir],
            plain_outs=lambda p: [p.validation_json, p.validation_md],
        ),
        StageSpec(
            name="sessions",
            func=stages.sessions,
            params=("sessions", "prep", "data.source"),
            code=(*CORE_CODE, "recpipe/data", "recpipe/sessions"),
            deps=lambda p: [p.validated_dir],
            outs=lambda p: [p.sessions_dir, p.splits_dir],
            plain_outs=lambda p: [p.splits_json],
        ),
        StageSpec(
            name="features",
            func=stages.features,
            params=("features",),
            code=(*CORE_CODE, "recpipe/data", "recpipe/features", "recpipe/sessions"),
            deps=lambda p: [p.validated_dir, p.splits_dir],
            outs=lambda p: [p.features_dir],
            plain_outs=lambda p: [p.features_json],
        ),
        StageSpec(
            name="tune",
            func=stages.tune_stage,
            params=(
                "tune",
                "train.candidates",
                "train.model_configs",
                "train.device",
                "train.max_epochs",
                "evaluate.models",
                "evaluate.model_configs",
                "evaluate.ks",
                "evaluate.primary_metric",
                "gate.split",
                "gate.metric",
                "orchestration.dask_address",
            ),
            code=(
                *CORE_CODE,
                *MODEL_CODE,
                "recpipe/gates",
                "recpipe/tracking.py",
                "recpipe/tuning",
            ),
            deps=lambda p: [p.features_dir],
            outs=lambda p: [p.tuned_dir],
            plain_outs=lambda p: [
                p.reports_dir / "tuning.json",
                p.reports_dir / "tuning.md",
                p.reports_dir / "tuning",
            ],
            persist=True,
        ),
        StageSpec(
            name="train",
            func=stages.train,
            params=("train", "tune.use"),
            code=(*CORE_CODE, *MODEL_CODE, "recpipe/tracking.py", "recpipe/tuning"),
            deps=lambda p: [p.features_dir, p.tuned_dir],
            outs=lambda p, item="${item}": [p.model_dir(item)],
            foreach="${train.candidates}",
        ),
        StageSpec(
            name="evaluate",
            func=stages.evaluate,
            params=("evaluate", "train.candidates", "tune.use"),
            code=(*CORE_CODE, *MODEL_CODE, "recpipe/tuning"),
            deps=lambda p: [p.features_dir, p.models_dir, p.tuned_dir, p.splits_json],
            plain_outs=lambda p: [p.evaluation_json, p.leaderboard_md, p.plots_dir],
        ),
        StageSpec(
            name="gate",
            func=stages.gate,
            params=(
                "gate",
                "evaluate.primary_metric",
                "evaluate.ks",
                "evaluate.cold_users_given",
                "tracking",
                "tune.use",
            ),
            code=(
                *CORE_CODE,
                *MODEL_CODE,
                "recpipe/gates",
                "recpipe/tracking.py",
                "recpipe/tuning",
            ),
            deps=lambda p: [
                p.evaluation_json,
                p.validation_json,
                p.features_dir,
                p.models_dir,
                p.tuned_dir,
            ],
            metrics=lambda p: [p.metrics_json],  # the one file dvc metrics show prints
            plain_outs=lambda p: [p.gate_json, p.gate_md],
        ),
        StageSpec(
            name="package",
            func=stages.package,
            params=("serve", "features.gap_buckets", "gate.registered_model", "tracking"),
            code=(
                *CORE_CODE,
                "recpipe/__init__.py",
                "recpipe/baselines",
                "recpipe/data",
                "recpipe/features",
                "recpipe/gates",
                "recpipe/models",
                "recpipe/serve",
                "recpipe/sessions",
                "recpipe/tracking.py",
                "recpipe/train",
                "bentofile.yaml",
            ),
            deps=lambda p: [p.sessions_dir, p.gate_json, p.models_dir],
            outs=lambda p: [p.bento_archive],
            plain_outs=lambda p: [p.package_json],
        ),
    )
}


def get_stage(name: str) -> StageSpec:
    """The stage called ``name``; a clear error for an unknown one."""
    try:
        return STAGES[name]
    except KeyError:
        raise StageError(f"unknown stage {name!r}; known: {sorted(STAGES)}") from None


def run_stage(name: str, params: Params, paths: Paths, **options: Any) -> dict[str, Any]:
    """Run one stage by name (the entry point of ``recpipe stage NAME``).

    ``options`` go to stages that take them (``train``: ``model``, ``progress``).
    """
    spec = get_stage(name)
    given = {k: v for k, v in options.items() if v is not None}
    if given and spec.foreach is None:
        raise StageError(f"stage {name!r} takes no options, got {sorted(given)}")
    return spec.func(params, paths, **given)
