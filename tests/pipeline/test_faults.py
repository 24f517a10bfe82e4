"""Faults: a training process killed mid-epoch, a corrupt checkpoint, a workspace that
cannot be written (permissions, a full disk, a file in the way), a failed data drop."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from recpipe import stages
from recpipe.cli import app
from recpipe.config import Params, load_params
from recpipe.errors import WorkspaceError
from recpipe.paths import Paths
from recpipe.train.loop import CHECKPOINT_FILE
from tests.conftest import REPO_ROOT
from tests.pipeline.conftest import SMALL

runner = CliRunner()

MODEL, SPLIT, EPOCHS = "mf_bpr", "user_temporal", 8
#: A cheap torch candidate with enough epochs (about 0.2 s each) to be killed mid-way.
TRAIN = [
    *[o for o in SMALL if not o.startswith("train.")],
    "sessions.splits=[user_temporal]",
    "train.splits=[user_temporal]",
    f"train.candidates=[{MODEL}]",
    f"train.model_configs={{{MODEL}: {{epochs: {EPOCHS}, batch_size: 32, patience: null}}}}",
]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with features for the train stage (built once for this module).

    The validation stage is not what these tests are about: the ingested tables are
    copied to data/validated as they are (they pass; see test_retrain_flow.py)."""
    root = tmp_path_factory.mktemp("prepared")
    paths, params = Paths.at(root), load_params(None, TRAIN)
    stages.ingest(params, paths)
    shutil.copytree(paths.interim_dir, paths.validated_dir)
    stages.sessions(params, paths)
    stages.features(params, paths)
    return root


def _copy(prepared: Path, dest: Path) -> Paths:
    shutil.copytree(prepared, dest)
    return Paths.at(dest)


def _weights(paths: Paths) -> dict[str, torch.Tensor]:
    return torch.load(paths.model_dir(MODEL) / SPLIT / "weights.pt", weights_only=True)


def _assert_same_weights(a: Paths, b: Paths) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


def _training(paths: Paths) -> dict:
    return json.loads((paths.model_dir(MODEL) / "training.json").read_text())["splits"][SPLIT]


@pytest.fixture(scope="module")
def uninterrupted(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """The same training, never interrupted (in this process)."""
    paths = _copy(prepared, tmp_path_factory.mktemp("whole") / "ws")
    stages.train(load_params(None, TRAIN), paths, MODEL)
    return paths


def _train_command(root: Path) -> list[str]:
    return [sys.executable, "-m", "recpipe.cli", "stage", "train", "--model", MODEL,
            "--root", str(root), *_sets(TRAIN)]  # fmt: skip


def test_training_killed_mid_epoch_resumes_from_its_checkpoint(
    prepared: Path, uninterrupted: Paths, tmp_path: Path
) -> None:
    paths = _copy(prepared, tmp_path / "ws")
    # the previous run's artifact (issue 24, case 4: a kill must leave it whole)
    shutil.copytree(uninterrupted.model_dir(MODEL), paths.model_dir(MODEL))
    (paths.model_dir(MODEL) / "previous-run").write_text("the last complete artifact")
    previous = _digest(paths.model_dir(MODEL))
    checkpoint = paths.checkpoint_dir(MODEL, SPLIT) / CHECKPOINT_FILE
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(
        _train_command(paths.root),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.is_file():  # the first epoch is done
            assert proc.poll() is None, "the training process ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.005)
        # into the middle of the next epoch (the checkpoint is replaced atomically)
        first = torch.load(checkpoint, weights_only=True)["history"][0]["seconds"]
        time.sleep(first / 2)
        assert proc.poll() is None, "training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)  # no clean-up, no last checkpoint
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = torch.load(checkpoint, weights_only=True)["epoch"] + 1  # epochs it holds
    assert 1 <= done < EPOCHS
    assert _digest(paths.model_dir(MODEL)) == previous  # before: an emptied folder
    staging = paths.models_dir / f".{MODEL}.new-{proc.pid}"
    assert staging.is_dir()  # what the kill left: the next run removes it

    # the next run: the same command, in this process (a fresh module and optimiser)
    rerun = runner.invoke(app, _train_command(paths.root)[3:])
    log = " ".join(rerun.output.split())
    assert rerun.exit_code == 0, rerun.output
    assert "resumed from checkpoint" in log and f"at epoch {done}/{EPOCHS}" in log, log
    assert f"removed {staging}, left by process {proc.pid}, which no longer runs" in log, log
    assert sorted(p.name for p in paths.models_dir.iterdir()) == [MODEL]
    assert not (paths.model_dir(MODEL) / "previous-run").exists()  # replaced as a whole
    trained = [int(n) for n in re.findall(rf"{MODEL} epoch (\d+)/{EPOCHS}", log)]
    assert trained == list(range(done + 1, EPOCHS + 1)), log  # only the remaining epochs
    entry = _training(paths)
    assert entry["resumed_from_epoch"] == done and entry["epochs_run"] == EPOCHS - done
    assert [r["epoch"] for r in entry["history"]] == list(range(EPOCHS))
    assert not checkpoint.parent.exists()  # a completed run clears its checkpoint
    _assert_same_weights(paths, uninterrupted)
    whole = _training(uninterrupted)
    assert whole["resumed_from_epoch"] is None and whole["epochs_run"] == EPOCHS
    losses = [r["loss"] for r in entry["history"]]
    assert losses == [r["loss"] for r in whole["history"]]


def test_sigterm_to_a_training_stage_leaves_the_previous_artifact_and_no_staging(
    prepared: Path, uninterrupted: Paths, tmp_path: Path
) -> None:
    paths = _copy(prepared, tmp_path / "ws")
    shutil.copytree(uninterrupted.model_dir(MODEL), paths.model_dir(MODEL))
    previous = _digest(paths.model_dir(MODEL))
    checkpoint = paths.checkpoint_dir(MODEL, SPLIT) / CHECKPOINT_FILE
    proc = subprocess.Popen(
        _train_command(paths.root), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.is_file():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert b"stopped by signal 15 (SIGTERM)" in err and b"Traceback" not in err
    assert _digest(paths.model_dir(MODEL)) == previous
    assert sorted(p.name for p in paths.models_dir.iterdir()) == [MODEL]  # staging removed
    assert checkpoint.is_file()  # the next run resumes from it


def test_a_truncated_checkpoint_is_ignored_with_a_warning(
    prepared: Path, uninterrupted: Paths, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = _copy(prepared, tmp_path / "ws")
    checkpoint = paths.checkpoint_dir(MODEL, SPLIT) / CHECKPOINT_FILE
    checkpoint.parent.mkdir(parents=True)
    # a real checkpoint cut short, and the debris of a process killed while saving one
    buffer = io.BytesIO()
    torch.save({"epoch": 3, "module": {"w": torch.zeros(1000)}}, buffer)
    checkpoint.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (checkpoint.parent / f".{CHECKPOINT_FILE}.999999999.tmp").write_bytes(b"partial")
    with caplog.at_level(logging.INFO, logger="recpipe"):
        summary = stages.train(load_params(None, TRAIN), paths, MODEL)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ignoring unreadable checkpoint" in w and str(checkpoint) in w for w in warnings)
    entry = summary[MODEL]["splits"][SPLIT]
    assert entry["resumed_from_epoch"] is None and entry["epochs_run"] == EPOCHS
    assert not checkpoint.parent.exists()  # cleared, debris included
    _assert_same_weights(paths, uninterrupted)


# --- a workspace that cannot be written --------------------------------------------


def test_os_errors_become_one_readable_workspace_error() -> None:
    def raised(exc: OSError) -> WorkspaceError:
        try:
            raise exc
        except OSError as caught:
            return WorkspaceError.from_os_error(caught, "stage x")

    denied = raised(PermissionError(errno.EACCES, "Permission denied", "/w/data/interim"))
    assert denied.path == "/w/data/interim" and denied.errno == errno.EACCES
    assert str(denied).startswith("stage x: cannot write /w/data/interim: permission denied")
    assert "writable" in str(denied)
    full = raised(OSError(errno.ENOSPC, "No space left on device", "/w/models/a/weights.pt"))
    assert "no space left on device (ENOSPC)" in str(full) and "free space" in str(full)
    # pyarrow names the file in its message only
    arrow = raised(PermissionError(errno.EACCES, "Failed to open local file '/w/x.parquet'"))
    assert arrow.path == "/w/x.parquet"
    assert not WorkspaceError.translates(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert not WorkspaceError.translates(OSError(errno.EIO, "I/O error"))
    assert WorkspaceError.translates(OSError(errno.EROFS, "Read-only file system", "/w"))


def test_a_stage_that_cannot_write_raises_workspace_error_and_the_cli_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recpipe.data.schema as schema

    target = tmp_path / "data" / "interim" / "events.parquet"

    def full_disk(tables: object, out_dir: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(schema, "write_tables", full_disk)
    with pytest.raises(WorkspaceError, match="stage ingest: cannot write") as info:
        stages.ingest(load_params(None, SMALL), Paths.at(tmp_path))
    assert info.value.path == str(target) and info.value.errno == errno.ENOSPC
    assert isinstance(info.value.__cause__, OSError)

    res = runner.invoke(app, ["stage", "ingest", "--root", str(tmp_path), *_sets(SMALL)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    message = " ".join(res.output.split())
    assert f"error: stage ingest: cannot write {target}: no space left on device" in message
    assert "free space" in message


def test_a_file_where_the_data_folder_belongs(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    res = runner.invoke(app, ["stage", "ingest", "--root", str(tmp_path), *_sets(SMALL)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    message = " ".join(res.output.split())
    assert f"cannot create the folder {tmp_path / 'data' / 'interim'}" in message
    assert f"{tmp_path / 'data'} is a file where a folder is expected" in message
    assert f"remove or rename {tmp_path / 'data'}" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_workspace_folder(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path)
    paths.data_dir.mkdir()
    paths.data_dir.chmod(0o555)
    try:
        res = runner.invoke(app, ["stage", "ingest", "--root", str(tmp_path), *_sets(SMALL)])
    finally:
        paths.data_dir.chmod(0o755)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    message = " ".join(res.output.split())
    assert str(paths.interim_dir) in message and "permission denied (EACCES)" in message
    assert "writable" in message


def test_a_checkpoint_that_cannot_be_written_leaves_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recpipe.train import loop

    trainer = loop.Trainer(loop.TrainConfig(epochs=1, device="cpu"), checkpoint_dir=tmp_path)
    trainer._save_checkpoint({"epoch": 0})
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()

    def full_disk(obj: object, fh: object) -> None:
        fh.write(b"half")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop.torch, "save", full_disk)
    with pytest.raises(OSError) as info:
        trainer._save_checkpoint({"epoch": 1})
    assert info.value.errno == errno.ENOSPC and info.value.filename.endswith(".tmp")
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no debris


# --- a corrupt data drop ------------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _fake_champion(params: Params, paths: Paths) -> dict[str, str]:
    """A registry with a champion and a previous version (no real models needed)."""
    import mlflow
    from mlflow import MlflowClient

    from recpipe import tracking
    from recpipe.gates.registry import Registry

    mlflow.set_tracking_uri(tracking.tracking_uri(params, paths))
    client = MlflowClient()
    name = params.gate.registered_model
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source=(paths.root / "mlruns").as_uri())
    client.set_registered_model_alias(name, "champion", "2")
    client.set_registered_model_alias(name, "previous", "1")
    return Registry.for_workspace(params, paths).aliases()


@pytest.mark.usefixtures("prefect_harness")
def test_a_failed_drop_leaves_the_last_good_state(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from recpipe.gates.registry import Registry

    paths = Paths.at(tmp_path)
    good = load_params(None, SMALL)
    stages.ingest(good, paths)
    stages.validate(good, paths)  # the last drop that passed
    for name in ("mf_bpr", "gru4rec"):  # the previous run's models and Bento
        (paths.model_dir(name) / "session").mkdir(parents=True)
        (paths.model_dir(name) / "session" / "weights.pt").write_bytes(name.encode())
    paths.bento_archive.parent.mkdir(parents=True)
    paths.bento_archive.write_bytes(b"the champion's bento")
    aliases = _fake_champion(good, paths)
    assert aliases == {"champion": "2", "previous": "1"}
    before = {
        "validated": _digest(paths.validated_dir),
        "models": _digest(paths.models_dir),
        "bento": paths.bento_archive.read_bytes(),
    }

    # a new drop whose every event breaks the rules: only purchases are allowed
    bad = [*SMALL, "validate.event_types=[purchase]"]
    capfd.readouterr()
    res = runner.invoke(app, ["run", "--root", str(paths.root), *_sets(bad)])
    assert res.exit_code == 1 and "data validation failed" in res.output, res.output
    assert "event_type" in res.output
    # neither the command nor Prefect's console logs (fd 2) show a traceback
    assert "Traceback" not in res.output + capfd.readouterr().err

    assert json.loads(paths.validation_json.read_text())["passed"] is False  # the drop's report
    assert _digest(paths.validated_dir) == before["validated"]  # the last good data stays
    assert not [p for p in paths.data_dir.iterdir() if p.name.startswith(".validated")]
    assert not paths.sessions_dir.exists() and not paths.features_dir.exists()  # nothing ran
    assert not paths.gate_json.exists()
    assert _digest(paths.models_dir) == before["models"]
    assert paths.bento_archive.read_bytes() == before["bento"]
    assert Registry.for_workspace(good, paths).aliases() == aliases


# --- a run stopped by SIGTERM or SIGKILL (issue 24, case 7) ------------------------------

#: One torch candidate with many epochs (a run to stop mid-training), no DVC lineage.
LONG_RUN = [
    *[o for o in TRAIN if not o.startswith("train.model_configs")],
    "train.max_epochs=20000",  # about 10 ms each: never done before it is stopped
    f"train.model_configs={{{MODEL}: {{epochs: 20000, patience: null}}}}",
    "evaluate.splits=[user_temporal]",
    "evaluate.models=[pop]",
    "orchestration.record_lineage=false",
]


def _start_run(root: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """`recpipe run` in a process group of its own (as a shell or a service manager
    starts it), until its candidate has trained a few epochs."""
    command = [sys.executable, "-m", "recpipe.cli", "run", "--root", str(root), *_sets(LONG_RUN)]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with open(log_file, "wb") as sink:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**env, "COLUMNS": "200"}, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 300
    while len(re.findall(rf"{MODEL} epoch \d+/", log_file.read_text())) < 3:
        assert proc.poll() is None, log_file.read_text()[-3000:]
        assert time.monotonic() < deadline, "no training after 300 s"
        time.sleep(0.2)
    return proc


def _server_pid(log_file: Path) -> int:
    return int(re.findall(r"temporary Prefect server \(pid (\d+)\)", log_file.read_text())[-1])


def _runs(paths: Paths) -> dict[str, str]:
    import sqlite3

    with sqlite3.connect(paths.mlflow_db) as db:
        return dict(db.execute("select run_uuid, status from runs").fetchall())


def _gone(pid: int, wait: float = 20.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_sigkill_then_sigterm_a_run_leaves_nothing_behind(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path / "ws")
    previous = paths.model_dir(MODEL) / SPLIT
    previous.mkdir(parents=True)
    (previous / "weights.pt").write_bytes(b"the last complete artifact")
    before = _digest(paths.model_dir(MODEL))

    # SIGKILL to the run alone: no clean-up at all
    first = tmp_path / "first.log"
    proc = _start_run(paths.root, first)
    proc.kill()
    proc.wait()
    assert _gone(_server_pid(first)), "the temporary Prefect server outlived a killed run"
    left = [p for p in paths.models_dir.iterdir() if p.name.startswith(f".{MODEL}.new-")]
    assert left and _digest(paths.model_dir(MODEL)) == before
    assert "RUNNING" in _runs(paths).values()

    # the next run tidies that up; SIGTERM to its process group stops it at once
    second = tmp_path / "second.log"
    proc = _start_run(paths.root, second)
    log = " ".join(second.read_text().split())
    assert f"removed {left[0]}, left by process" in log and "which no longer runs" in log
    assert "was left RUNNING (its process (pid" in log and "marked KILLED" in log
    stopped = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=90)  # before: about 2.5 min of connection-refused retries
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    took = time.monotonic() - stopped
    text = second.read_text()
    assert code == 128 + signal.SIGTERM and took < 60, (code, took, text[-3000:])
    assert "stopped by signal 15 (SIGTERM)" in text and "Traceback" not in text
    assert "All connection attempts failed" not in text
    assert _gone(_server_pid(second))
    assert _digest(paths.model_dir(MODEL)) == before  # the previous artifact, whole
    assert sorted(p.name for p in paths.models_dir.iterdir()) == [MODEL]  # no staging
    assert not [p for p in paths.data_dir.iterdir() if p.name.startswith(".")]
    assert set(_runs(paths).values()) == {"KILLED"}  # none left RUNNING, none FINISHED
