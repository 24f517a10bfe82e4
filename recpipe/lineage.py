"""Lineage: from a served model back to the data and params that made it.

Recording (:func:`record`, the last step of the retraining flow)
    After a successful run, when the workspace is a DVC repository (``.dvc/`` and
    ``dvc.yaml`` at its root), ``dvc commit --force`` of the stages the run ran
    (ingest ... evaluate, gate, and package when it built a Bento), so that
    ``dvc.lock`` records exactly the data, params and outputs this run produced;
    then ``dvc push`` of those stages to the default remote. DVC runs as a
    subprocess of this interpreter (``python -m dvc``, analytics off): it keeps DVC's
    loggers, locks and global state out of the flow's process and costs about 2 s of
    start-up per command.

    A run whose params differ from ``params.yaml`` (``--set``, ``--params``, a
    scheduled run's data drop, ``recpipe retrain --model``) leaves ``params.yaml`` as
    its user wrote it, byte for byte: the file is what the next run starts from. So
    that ``dvc.lock`` still pairs these outputs with the params that made them, the
    run's values are in ``params.yaml`` only while ``dvc commit`` reads it
    (:func:`params_file_for_dvc`: written with comments and layout kept, the original
    bytes put back afterwards, even when the commit fails); ``dvc status`` then shows
    those stages as changed, and ``dvc repro`` re-runs them with the file's values. The
    summary names the keys (``params_overridden``).

    Not a DVC repository, DVC not installed, or no default remote: that step is
    skipped with a logged reason, returned in the summary. A failed ``dvc commit`` or
    ``dvc push`` is a warning in the summary, not an error: the models are already
    registered (and perhaps promoted), so failing the run would only hide that;
    the tags then say ``dvc.lock.sha256: none`` (commit failed) or
    ``lineage.push: failed``. ``dvc push`` again later uploads what is missing.

    Then the MLflow pipeline run and every model version it registered are tagged
    ``git.commit``, ``git.dirty``, ``dvc.lock.sha256`` (of the committed dvc.lock,
    ``none`` when nothing was committed), ``lineage.dvc`` and ``lineage.push``; the
    run also gets ``params.sha256`` and, when it built one, ``bento.tag``,
    ``bento.registry_version`` and ``bento.archive_sha256``. The run's artifacts
    under ``lineage/`` keep what reproducing needs without Git history:
    ``dvc.lock`` (only when committed), ``dvc.yaml``, ``params.yaml`` (the file DVC
    read: the user's file with this run's values), ``params.effective.yaml`` (every
    param the run used), ``package.json``, ``lineage.json`` (this summary) and, under
    ``outs/``, the ``cache: false`` reports and metrics dvc.lock hashes but DVC cannot
    restore.

Reading (:func:`describe`, ``recpipe lineage VERSION``)
    The chain data -> params -> run -> model version -> Bento of a registered version,
    from the registry and its run's artifacts only.

Restoring (:func:`reproduce`, ``recpipe reproduce VERSION``)
    Puts a version's ``dvc.lock`` and ``params.yaml`` back into the workspace and
    runs ``dvc checkout`` (fetching from the remote what the cache lacks); the
    uncached reports come back from the run's ``lineage/outs/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from recpipe.config import Params, load_params
from recpipe.errors import ConfigError, LineageError
from recpipe.paths import Paths

log = logging.getLogger(__name__)

#: Artifact folder of the pipeline run holding the lineage files.
ARTIFACT_DIR = "lineage"
#: The few params :func:`describe` shows beside the params hash.
KEY_PARAMS: tuple[str, ...] = (
    "data.source",
    "data.path",
    "synth.seed",
    "train.candidates",
    "train.max_epochs",
    "evaluate.primary_metric",
    "gate.split",
    "gate.min_lift",
    "gate.registered_model",
)
#: The dvc.yaml outputs :func:`describe` reports, by stage.
DATA_OUTS: dict[str, tuple[str, str]] = {
    "interim": ("ingest", "data/interim"),
    "validated": ("validate", "data/validated"),
}
BENTO_OUT: tuple[str, str] = ("package", "bentos/recpipe.bento")
#: Seconds one DVC command may take.
DVC_TIMEOUT_S = 1800.0


# ---------------------------------------------------------------------- helpers
def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def params_sha256(params: Params) -> str:
    """sha256 of the params as canonical JSON (every key, sorted): equal params, equal hash."""
    text = json.dumps(params.dump(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def key_params(flat: dict[str, Any]) -> dict[str, Any]:
    """The :data:`KEY_PARAMS` found in flattened params."""
    return {k: flat[k] for k in KEY_PARAMS if k in flat}


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def is_dvc_repo(root: Path | str) -> bool:
    """Whether ``root`` is a DVC repository's root with a pipeline (``.dvc/``, ``dvc.yaml``)."""
    root = Path(root)
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()


def dvc_installed() -> bool:
    """Whether DVC can be imported by this interpreter."""
    return importlib.util.find_spec("dvc") is not None


def run_dvc(args: list[str], root: Path | str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dvc ARGS`` in ``root`` with analytics off; never raises for its exit.

    A DVC that cannot start (or runs past :data:`DVC_TIMEOUT_S`) is returned as a failed
    process (``returncode`` -1) with the reason in ``stderr``.
    """
    cmd = [sys.executable, "-m", "dvc", *args]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    log.debug("running %s in %s", " ".join(cmd[2:]), root)
    try:
        return subprocess.run(
            cmd,
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=DVC_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return subprocess.CompletedProcess(cmd, -1, "", f"cannot run dvc: {exc}")


def dvc_remote(root: Path | str) -> dict[str, str] | None:
    """The default DVC remote of a repository: ``{"name", "url"}``, None without one.

    Read with ``dvc config --list`` (every config level merged; a local remote's
    relative URL comes back resolved).
    """
    done = run_dvc(["config", "--list"], root)
    if done.returncode != 0:
        return None
    config = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if "=" in line and "." in line
    )
    name = config.get("core.remote")
    if not name:
        return None
    return {"name": name, "url": config.get(f"remote.{name}.url", "")}


def pipeline_stages(params: Params, *, packaged: bool = True) -> list[str]:
    """The dvc.yaml stages a retraining run runs (``train@NAME`` per candidate)."""
    names = ["ingest", "validate", "sessions", "features", "tune"]
    names += [f"train@{name}" for name in params.train.candidates]
    names += ["evaluate", "gate"]
    if packaged:
        names.append("package")
    return names


def uncached_outs(paths: Paths, stage_names: list[str]) -> list[Path]:
    """The ``cache: false`` outputs and metrics of these dvc.yaml stages (reports, plots):
    DVC records their hashes in dvc.lock but cannot restore them, so the run keeps them."""
    from recpipe.pipeline import STAGES

    found: list[Path] = []
    for name in dict.fromkeys(n.split("@", 1)[0] for n in stage_names):
        spec = STAGES.get(name)
        if spec is not None:
            found += [p for p in (*spec.metrics(paths), *spec.plain_outs(paths)) if p.exists()]
    return found


def _param_differences(params: Params, paths: Paths) -> tuple[list[str], str | None]:
    """Flattened keys whose value in ``params.yaml`` differs from ``params``; or the
    reason the file cannot be compared (missing or invalid)."""
    if not paths.params_file.is_file():
        return sorted(_flatten(params.dump())), f"{paths.rel(paths.params_file)} does not exist"
    try:
        on_file = _flatten(load_params(paths.params_file).dump())
    except ConfigError as exc:
        return [], f"{paths.rel(paths.params_file)} is invalid: {exc}"
    used = _flatten(params.dump())
    return sorted(k for k in on_file.keys() | used.keys() if on_file.get(k) != used.get(k)), None


def write_params(params: Params, paths: Paths, keys: list[str]) -> None:
    """Set ``keys`` (flattened, e.g. ``data.path``) of ``params.yaml`` to their values in
    ``params``; every other line stays byte for byte
    (:func:`recpipe.params_file.edited_text`). For a write the user asked for
    (``recpipe reproduce``); a run's own params never go into the file for good."""
    from recpipe.params_file import edited_text

    original = paths.params_file.read_text() if paths.params_file.is_file() else ""
    paths.params_file.write_text(edited_text(original, params.dump(), keys))


@contextlib.contextmanager
def params_file_for_dvc(params: Params, paths: Paths, keys: list[str]) -> Iterator[str]:
    """``params.yaml`` with this run's values of ``keys`` only inside the block (what
    ``dvc commit`` reads, so that dvc.lock records the params that made the outputs);
    yields that text; the file's own bytes are back after the block, whatever happens
    in it (:func:`recpipe.params_file.holding`)."""
    from recpipe.params_file import edited_text, holding, restore_backup

    restore_backup(paths.params_file)
    original = paths.params_file.read_text() if paths.params_file.is_file() else ""
    text = edited_text(original, params.dump(), keys)
    if text == original:
        yield text
        return
    with holding(paths.params_file, text):
        yield text


def override_notice(params: Params, paths: Paths) -> str | None:
    """What a run says before it starts when its params differ from ``params.yaml``:
    the file stays as it is, and dvc.lock will record the run's values (None when they
    agree, or when the run records no lineage)."""
    if not params.orchestration.record_lineage or not is_dvc_repo(paths.root):
        return None
    differing, _ = _param_differences(params, paths)
    if not differing:
        return None
    return (
        f"{paths.rel(paths.params_file)} stays as it is; this run's own values of "
        f"{', '.join(_outermost_keys(differing))} go to dvc.lock (and to the MLflow run), "
        "so `dvc status` will show the stages they feed as changed"
    )


def save_overrides(paths: Paths, params_file: Path | None, overrides: list[str]) -> list[str]:
    """Write ``overrides`` (``key=value``) into the params file for good, the one write a
    user asks for (``recpipe run --save-params``): only their entries change, every
    other line stays byte for byte. Returns the keys written (none when the file holds
    those values already).

    Raises
    ------
    ConfigError
        An override that does not validate (the file is then left as it was).
    """
    from recpipe.params_file import edited_text

    target = Path(params_file) if params_file is not None else paths.params_file
    original = target.read_text() if target.is_file() else ""
    before = load_params(target if target.is_file() else None)
    after = load_params(target if target.is_file() else None, overrides)
    old, new = _flatten(before.dump()), _flatten(after.dump())
    keys = _outermost_keys(sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)))
    if keys:
        target.write_text(edited_text(original, after.dump(), keys))
    return keys


def _outermost_keys(keys: list[str]) -> list[str]:
    return [k for k in keys if not any(k.startswith(f"{o}.") for o in keys if o != k)]


def _commit_and_push(
    root: Path,
    targets: list[str],
    dvc: dict[str, Any],
    push: dict[str, Any],
    warnings: list[str],
) -> None:
    """``dvc commit --force`` of ``targets``, then ``dvc push`` of them to the default
    remote; the outcomes go into ``dvc`` and ``push`` (status, message), failures also
    into ``warnings``."""
    done = run_dvc(["commit", "--force", *targets], root)
    if done.returncode != 0:
        dvc["status"] = "failed"
        dvc["message"] = f"dvc commit failed: {_tail(done.stderr or done.stdout)}"
        warnings.append(dvc["message"])
        return
    dvc["status"] = "committed"
    dvc["message"] = f"dvc.lock records {len(targets)} stages"
    remote = dvc_remote(root)
    if remote is None:
        push["message"] = "no default DVC remote configured (dvc remote add -d NAME URL)"
        return
    push.update(remote=remote["name"], url=remote["url"])
    done = run_dvc(["push", *targets], root)
    if done.returncode == 0:
        push["status"] = "pushed"
        push["message"] = _tail(done.stdout, 1) or "pushed"
    else:
        push["status"] = "failed"
        push["message"] = (
            f"dvc push to {remote['name']} ({remote['url']}) failed; the run's outputs "
            f"are committed to the local cache only, `dvc push` uploads them later: "
            f"{_tail(done.stderr or done.stdout)}"
        )
        warnings.append(push["message"])


# ---------------------------------------------------------------------- record
def record_run(params: Params, paths: Paths, *, packaged: bool = True) -> dict[str, Any]:
    """Record a finished run's lineage: :func:`record` for the active MLflow run.

    In a DVC repository, commits the stages the run ran (``package`` only when
    ``packaged``: it built a Bento) so that dvc.lock records this run's data, params and
    outputs, and pushes them to the default remote; then tags the active MLflow run and
    the model versions it registered with the git commit and the dvc.lock sha256, and
    attaches ``lineage/dvc.lock`` and ``lineage/params.yaml`` to the run. Outside a DVC
    repository, or without a remote, those steps are skipped with the reason; a failed
    commit or push is a warning in the summary, not an error (the models are registered
    already). Like ``register``, this writes outside dvc.yaml's outputs, so it is not a
    dvc.yaml stage: the retraining flow runs it last.
    """
    from recpipe import tracking
    from recpipe.workspace import workspace_io

    run_id = None
    if tracking.run_active():
        import mlflow

        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    with workspace_io("stage lineage"):
        return record(params, paths, run_id=run_id, packaged=packaged)


def record(
    params: Params,
    paths: Paths,
    *,
    run_id: str | None = None,
    packaged: bool = True,
) -> dict[str, Any]:
    """Record a finished run's lineage with DVC and MLflow (see the module docstring).

    Parameters
    ----------
    params : Params
        The params the run used (after overrides).
    paths : Paths
        The workspace.
    run_id : str, optional
        The MLflow pipeline run to tag and attach the lineage files to, and whose
        registered model versions to re-tag; None: DVC only.
    packaged : bool, default True
        Whether the run's package stage built a Bento (else ``package`` is not
        committed: its archive, if any, is an earlier run's).

    Returns
    -------
    dict
        ``dvc`` (``status``: committed / skipped / failed, ``stages``, ``message``,
        ``params_overridden``: the keys whose run values dvc.lock records but
        ``params.yaml`` does not hold), ``push`` (``status``: pushed / skipped / failed,
        ``remote``, ``url``, ``message``), ``dvc_lock_sha256``, ``git_commit``,
        ``git_dirty``, ``params_sha256``, ``versions`` (re-tagged), ``warnings``.
    """
    from recpipe.gates.registry import lineage_tags

    root = paths.root
    targets = pipeline_stages(params, packaged=packaged)
    dvc: dict[str, Any] = {"status": "skipped", "stages": targets, "params_overridden": []}
    dvc_read: str | None = None  # the params.yaml text dvc commit read
    push: dict[str, Any] = {"status": "skipped", "remote": None, "url": None}
    warnings: list[str] = []
    if not params.orchestration.record_lineage:
        dvc["message"] = (
            "orchestration.record_lineage is false (a look-only run, e.g. recpipe run "
            "--quick): dvc.lock and params.yaml left as they are"
        )
    elif not is_dvc_repo(root):
        dvc["message"] = f"{root} is not a DVC repository (no .dvc/ and dvc.yaml there)"
    elif not dvc_installed():
        dvc["message"] = "DVC is not installed in this environment (pip install dvc)"
    else:
        differing, unreadable = _param_differences(params, paths)
        if unreadable and not differing:
            dvc["message"] = f"not committed: {unreadable}"
        else:
            # dvc commit and push read the run's params (the foreach stages of the
            # run's candidates among them); params.yaml is the user's again after
            with params_file_for_dvc(params, paths, differing) as dvc_read:
                _commit_and_push(root, targets, dvc, push, warnings)
            if differing:
                dvc["params_overridden"] = _outermost_keys(differing)
                log.info(
                    "dvc.lock records this run's %s; %s is left as it was",
                    ", ".join(dvc["params_overridden"]),
                    paths.rel(paths.params_file),
                )
    if dvc["status"] != "committed":
        push["message"] = f"nothing committed ({dvc['status']})"
    for where, entry in (("dvc", dvc), ("push", push)):
        if entry["status"] == "skipped":
            log.info("lineage: %s skipped: %s", where, entry["message"])
    for warning in warnings:
        log.warning("lineage: %s", warning)

    git = lineage_tags(paths)
    lock_sha = git["dvc.lock.sha256"] if dvc["status"] == "committed" else "none"
    summary: dict[str, Any] = {
        "dvc": dvc,
        "push": push,
        "dvc_lock_sha256": lock_sha,
        "git_commit": git["git.commit"],
        "git_dirty": git["git.dirty"],
        "params_sha256": params_sha256(params),
        "run_id": run_id,
        "versions": [],
        "warnings": warnings,
    }
    if run_id is not None:
        summary["versions"] = _log_to_mlflow(params, paths, run_id, summary, packaged, dvc_read)
    return summary


def _log_to_mlflow(
    params: Params,
    paths: Paths,
    run_id: str,
    summary: dict[str, Any],
    packaged: bool,
    dvc_read: str | None = None,
) -> list[str]:
    """Tag the run and its model versions; attach the lineage files. Returns the versions."""
    import mlflow

    from recpipe.gates.registry import Registry
    from recpipe.tracking import tracking_uri

    uri = tracking_uri(params, paths)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    tags = {
        "git.commit": summary["git_commit"],
        "git.dirty": summary["git_dirty"],
        "dvc.lock.sha256": summary["dvc_lock_sha256"],
        "lineage.dvc": summary["dvc"]["status"],
        "lineage.push": summary["push"]["status"],
    }
    run_tags = {**tags, "params.sha256": summary["params_sha256"]}
    package = None
    if packaged and paths.package_json.is_file():
        package = json.loads(paths.package_json.read_text())
        run_tags["bento.tag"] = str(package.get("bento_tag"))
        run_tags["bento.registry_version"] = str(
            (package.get("labels") or {}).get("registry_version")
        )
        run_tags["bento.archive_sha256"] = _sha256(paths.bento_archive) or "none"
    for key, value in run_tags.items():
        client.set_tag(run_id, key, value)
    with tempfile.TemporaryDirectory(prefix="recpipe-lineage-") as tmp:
        folder = Path(tmp)
        if summary["dvc"]["status"] == "committed" and paths.dvc_lock.is_file():
            shutil.copy2(paths.dvc_lock, folder / "dvc.lock")
        for src in (paths.root / "dvc.yaml", paths.params_file):
            if src.is_file():
                shutil.copy2(src, folder / src.name)
        if dvc_read is not None:  # the params.yaml dvc.lock was committed with
            (folder / paths.params_file.name).write_text(dvc_read)
        (folder / "params.effective.yaml").write_text(
            yaml.safe_dump(params.dump(), sort_keys=False)
        )
        if summary["dvc"]["status"] == "committed":
            for out in uncached_outs(paths, summary["dvc"]["stages"]):
                dst = folder / "outs" / paths.rel(out)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if out.is_dir():
                    shutil.copytree(out, dst)
                else:
                    shutil.copy2(out, dst)
        if package is not None:
            (folder / "package.json").write_text(json.dumps(package, indent=2) + "\n")
        (folder / "lineage.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        client.log_artifacts(run_id, str(folder), ARTIFACT_DIR)
    registry = Registry.for_workspace(params, paths)
    if not registry.exists():
        return []
    found = client.search_model_versions(f"name = '{registry.name}' and run_id = '{run_id}'")
    versions = sorted((str(v.version) for v in found), key=int)
    for version in versions:
        registry.set_tags(version, tags)
    if versions:
        log.info("lineage tags set on %s versions %s", registry.name, ", ".join(versions))
    return versions


# ---------------------------------------------------------------------- reading
def _ms_to_iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _download(client: Any, run_id: str, path: str, dst: Path) -> Path | None:
    """One artifact (file or folder) of a run, None when the run has none there."""
    from mlflow.exceptions import MlflowException

    try:
        local = Path(client.download_artifacts(run_id, path, str(dst)))
    except (MlflowException, OSError):
        return None
    if not local.exists() or (local.is_dir() and not any(local.iterdir())):
        return None
    return local


def lock_out(lock: dict[str, Any] | None, stage: str, path: str) -> dict[str, Any] | None:
    """The ``outs`` entry (md5, size, nfiles) of ``path`` in ``stage`` of a parsed dvc.lock."""
    for out in ((lock or {}).get("stages", {}).get(stage) or {}).get("outs", []):
        if out.get("path") == path:
            return {k: out[k] for k in ("md5", "size", "nfiles") if k in out}
    return None


def _registry_and_version(params: Params, paths: Paths, version: str | int) -> tuple[Any, Any]:
    from recpipe.gates.registry import Registry

    registry = Registry.for_workspace(params, paths)
    return registry, registry.get_version(version)  # unknown: RegistryError naming them


def _run_id(mv: Any) -> str:
    run_id = mv.run_id or (mv.tags or {}).get("pipeline.run_id")
    if not run_id:
        raise LineageError(
            f"version {mv.version} of {mv.name!r} names no MLflow run (no run_id, no "
            "pipeline.run_id tag); it was not registered by recpipe"
        )
    return str(run_id)


def describe(params: Params, paths: Paths, version: str | int) -> dict[str, Any]:
    """The lineage of a registered version: data -> params -> run -> version -> Bento.

    Everything comes from the MLflow registry and the version's pipeline run (its
    tags, params and ``lineage/`` artifacts), so it needs neither Git history nor
    the workspace's current files.

    Returns
    -------
    dict
        ``data`` (source, input files, rows, content hash, the dvc.lock hashes of
        ``data/interim`` and ``data/validated``), ``params`` (sha256, key params,
        params written into params.yaml), ``run`` (id, name, status, start time, git
        commit and dirty flag, dvc.lock sha256, DVC commit and push status),
        ``version`` (name, number, aliases, candidate model and split, metrics, gate
        decision, tags), ``bento`` (the Bento the run built: tag, the version it
        serves, archive sha256 and its dvc.lock md5; and ``serving_runs``: the runs
        whose Bento serves this version).

    Raises
    ------
    RegistryError
        No registry, or no such version (the message lists the versions).
    LineageError
        The version names no run.
    """
    registry, mv = _registry_and_version(params, paths, version)
    client = registry.client
    run_id = _run_id(mv)
    run = client.get_run(run_id)
    rtags = dict(run.data.tags or {})
    vtags = dict(mv.tags or {})
    with tempfile.TemporaryDirectory(prefix="recpipe-lineage-") as tmp:
        folder = _download(client, run_id, ARTIFACT_DIR, Path(tmp))
        manifest_file = _download(client, run_id, "data/manifest.json", Path(tmp) / "data")
        manifest = json.loads(manifest_file.read_text()) if manifest_file else {}
        files = {
            name: (folder / name).read_text()
            for name in ("dvc.lock", "params.effective.yaml", "package.json", "lineage.json")
            if folder is not None and (folder / name).is_file()
        }
    lock = yaml.safe_load(files["dvc.lock"]) if "dvc.lock" in files else None
    recorded = json.loads(files["lineage.json"]) if "lineage.json" in files else {}
    package = json.loads(files["package.json"]) if "package.json" in files else {}
    if "params.effective.yaml" in files:
        flat = _flatten(yaml.safe_load(files["params.effective.yaml"]) or {})
    else:  # older runs: the flattened params MLflow logged
        flat = dict(run.data.params or {})
    labels = package.get("labels") or {}
    serving = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`bento.registry_version` = '{mv.version}'",
        order_by=["attributes.start_time DESC"],
    )
    return {
        "data": {
            "source": manifest.get("source", rtags.get("data.source")),
            "input_files": manifest.get("input_files", {}),
            "rows": manifest.get("rows", {}),
            "time_range": manifest.get("time_range"),
            "content_hash": manifest.get("content_hash", vtags.get("data.content_hash")),
            "dvc": {name: lock_out(lock, *where) for name, where in DATA_OUTS.items()},
        },
        "params": {
            "sha256": rtags.get("params.sha256"),
            "key": key_params(flat),
            "overridden": (recorded.get("dvc") or {}).get(
                "params_overridden", (recorded.get("dvc") or {}).get("params_written", [])
            ),
        },
        "run": {
            "run_id": run_id,
            "name": run.info.run_name,
            "status": run.info.status,
            "start_time": _ms_to_iso(run.info.start_time),
            "git_commit": rtags.get("git.commit", vtags.get("git.commit")),
            "git_dirty": rtags.get("git.dirty", vtags.get("git.dirty")),
            "dvc_lock_sha256": rtags.get("dvc.lock.sha256", vtags.get("dvc.lock.sha256")),
            "dvc_commit": rtags.get("lineage.dvc", "not recorded"),
            "dvc_push": rtags.get("lineage.push", "not recorded"),
            "lineage_files": sorted(files),
        },
        "version": {
            "name": mv.name,
            "version": str(mv.version),
            "aliases": sorted(mv.aliases or []),
            "model": vtags.get("recpipe.model"),
            "split": vtags.get("recpipe.split"),
            # every metric is in the version's record; older versions carry them as tags
            "metrics": {
                k: f"{float(v):.6g}"
                for k, v in sorted((registry.details(mv.version).get("metrics") or {}).items())
            }
            or {
                k.removeprefix("metric.").replace("_at_", "@"): v
                for k, v in sorted(vtags.items())
                if k.startswith("metric.")
            },
            "gate_decision": vtags.get("gate.decision"),
            "dvc_lock_sha256": vtags.get("dvc.lock.sha256"),
            "created": _ms_to_iso(mv.creation_timestamp),
        },
        "bento": {
            "tag": package.get("bento_tag"),
            "serves_version": labels.get("registry_version"),
            "serves_this_version": str(labels.get("registry_version")) == str(mv.version),
            "archive": package.get("archive"),
            "archive_sha256": rtags.get("bento.archive_sha256"),
            "archive_dvc": lock_out(lock, *BENTO_OUT),
            "labels": labels,
            "serving_runs": [
                {
                    "run_id": r.info.run_id,
                    "bento_tag": r.data.tags.get("bento.tag"),
                    "start_time": _ms_to_iso(r.info.start_time),
                }
                for r in serving
            ],
        },
    }


# ---------------------------------------------------------------------- restoring
def _restore(client: Any, mv: Any, run_id: str, root: Path) -> tuple[list[str], Path, bool]:
    """Back up, restore a run's lineage files, ``dvc checkout`` (see :func:`reproduce`)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    backup = root / ".recpipe" / "backups" / stamp
    restored: list[str] = []
    with tempfile.TemporaryDirectory(prefix="recpipe-reproduce-") as tmp:
        folder = _download(client, run_id, ARTIFACT_DIR, Path(tmp))
        if folder is None or not (folder / "dvc.lock").is_file():
            status = client.get_run(run_id).data.tags.get("lineage.dvc", "not recorded")
            raise LineageError(
                f"version {mv.version}'s run {run_id} recorded no dvc.lock (lineage.dvc: "
                f"{status}); only runs whose lineage was committed with DVC can be reproduced"
            )
        wanted = ["dvc.lock", "params.yaml"]
        if (folder / "dvc.yaml").is_file() and (folder / "dvc.yaml").read_bytes() != (
            (root / "dvc.yaml").read_bytes() if (root / "dvc.yaml").is_file() else b""
        ):
            wanted.append("dvc.yaml")
        backup.mkdir(parents=True)
        for name in ("dvc.lock", "params.yaml", "dvc.yaml"):
            if (root / name).is_file():
                shutil.copy2(root / name, backup / name)
        for name in wanted:
            if (folder / name).is_file():
                shutil.copy2(folder / name, root / name)
                restored.append(name)
        outs = folder / "outs"
        for src in sorted(outs.rglob("*")) if outs.is_dir() else []:
            if src.is_file():  # the reports DVC does not cache, byte for byte
                dst = root / src.relative_to(outs)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                restored.append(dst.relative_to(root).as_posix())
    log.info("restored %s of v%s (run %s); backup in %s", restored, mv.version, run_id, backup)
    done = run_dvc(["checkout", "--force"], root)
    fetched = False
    if done.returncode != 0:
        remote = dvc_remote(root)
        if remote is not None:
            log.info("the DVC cache lacks objects; fetching from %s", remote["name"])
            fetch = run_dvc(["fetch"], root)
            fetched = fetch.returncode == 0
            done = run_dvc(["checkout", "--force"], root)
        if done.returncode != 0:
            raise LineageError(
                f"dvc checkout of v{mv.version}'s dvc.lock failed"
                + ("" if remote else " (and no default remote to fetch from)")
                + f": {_tail(done.stderr or done.stdout)}; the previous files are in {backup}"
            )
    return restored, backup, fetched


def reproduce(params: Params, paths: Paths, version: str | int) -> dict[str, Any]:
    """Restore a version's data and outputs into the workspace with DVC.

    Downloads ``lineage/dvc.lock`` and ``lineage/params.yaml`` of the version's
    pipeline run (and ``dvc.yaml`` when the workspace's differs), copies the
    workspace's current ``dvc.lock``, ``params.yaml`` and ``dvc.yaml`` into
    ``.recpipe/backups/<UTC time>/`` (put them back and run ``dvc checkout`` to
    return), writes the run's files in their place and runs ``dvc checkout --force``;
    when the local cache lacks objects, ``dvc fetch`` from the default remote and
    ``dvc checkout --force`` again. Workspace outputs that were never committed to the
    DVC cache are overwritten. Outputs DVC does not cache (``cache: false`` reports
    such as ``reports/gate.json``) come back byte for byte from the run's
    ``lineage/outs/``, so ``dvc status`` then finds the workspace matching the
    restored dvc.lock (but for the ``always_changed`` gate and package). The code is
    not touched: the summary names the run's git commit. It holds the workspace's
    retraining lock (:mod:`recpipe.locks`) throughout, so it never rewrites files
    under a running retrain.

    Returns
    -------
    dict
        ``version``, ``run_id``, ``restored`` (files written), ``backup``, ``fetched``,
        ``dvc_lock_sha256``, ``git_commit`` (the run's) and ``head`` (the workspace's),
        ``manifest`` (the restored data manifest's source, rows and content hash).

    Raises
    ------
    LineageError
        The workspace is not a DVC repository, the run recorded no dvc.lock, or
        ``dvc checkout`` failed.
    RegistryError
        No registry, or no such version (the message lists the versions).
    WorkspaceLockedError
        A retraining run holds the workspace.
    """
    from recpipe.gates.registry import lineage_tags
    from recpipe.locks import retrain_lock

    root = paths.root
    if not is_dvc_repo(root):
        raise LineageError(
            f"{root} is not a DVC repository (expected .dvc/ and dvc.yaml there); "
            "reproduce restores a version's outputs with `dvc checkout`, run it in the "
            "project's clone"
        )
    if not dvc_installed():
        raise LineageError("DVC is not installed in this environment (pip install dvc)")
    registry, mv = _registry_and_version(params, paths, version)
    run_id = _run_id(mv)
    client = registry.client
    # a retraining run writes the same files: hold its lock (fails at once when held)
    with retrain_lock(root, purpose="reproduce"):
        restored, backup, fetched = _restore(client, mv, run_id, root)
    manifest = {}
    if paths.manifest_json.is_file():
        data = json.loads(paths.manifest_json.read_text())
        manifest = {k: data.get(k) for k in ("source", "rows", "content_hash")}
    head = lineage_tags(paths)["git.commit"]
    run_commit = client.get_run(run_id).data.tags.get("git.commit", "unknown")
    if run_commit not in ("unknown", head):
        log.warning(
            "the workspace's code is at %s, v%s was built at %s (git checkout %s for its code)",
            head,
            mv.version,
            run_commit,
            run_commit,
        )
    return {
        "version": str(mv.version),
        "run_id": run_id,
        "restored": restored,
        "backup": str(backup),
        "fetched": fetched,
        "dvc_lock_sha256": _sha256(paths.dvc_lock),
        "git_commit": run_commit,
        "head": head,
        "manifest": manifest,
    }
