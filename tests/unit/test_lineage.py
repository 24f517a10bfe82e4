"""recpipe.lineage without DVC runs: skipping reasons, params written back, stage lists.

The DVC and MLflow halves run end to end in tests/pipeline/test_e2e.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from recpipe.config import load_params
from recpipe.lineage import (
    _param_differences,
    lock_out,
    params_sha256,
    pipeline_stages,
    record,
    write_params,
)
from recpipe.paths import Paths

REPO = Path(__file__).resolve().parents[2]


def test_record_outside_a_dvc_repository_skips_with_the_reason(tmp_path: Path) -> None:
    summary = record(load_params(), Paths.at(tmp_path))
    assert summary["dvc"]["status"] == "skipped"
    assert "not a DVC repository" in summary["dvc"]["message"]
    assert summary["push"]["status"] == "skipped"
    assert summary["dvc_lock_sha256"] == "none"
    assert summary["warnings"] == [] and summary["versions"] == []


def test_a_quick_run_leaves_params_yaml_and_dvc_lock_alone(tmp_path: Path) -> None:
    from recpipe.config import QUICK_OVERRIDES

    paths = Paths.at(tmp_path)
    shutil.copy(REPO / "params.yaml", paths.params_file)
    (tmp_path / ".dvc").mkdir()  # a DVC repository: a full run would commit
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    before = paths.params_file.read_text()
    quick = load_params(paths.params_file, list(QUICK_OVERRIDES))
    assert quick.train.candidates == ["mf_bpr", "gru4rec"] and quick.train.max_epochs == 3
    summary = record(quick, paths)
    assert summary["dvc"]["status"] == "skipped" and summary["dvc"]["params_written"] == []
    assert "record_lineage is false" in summary["dvc"]["message"]
    assert paths.params_file.read_text() == before
    assert not (tmp_path / "dvc.lock").exists()


def test_run_quick_puts_the_preset_under_the_users_overrides(monkeypatch) -> None:
    from typer.testing import CliRunner

    from recpipe import cli
    from recpipe.config import QUICK_OVERRIDES

    seen = {}

    def fake_flow(root, params_file, overrides, **options):
        seen["overrides"] = overrides
        raise SystemExit(0)

    monkeypatch.setattr(cli, "_run_flow", fake_flow)
    result = CliRunner().invoke(cli.app, ["run", "--quick", "--set", "train.max_epochs=5"])
    assert result.exit_code == 0, result.output
    assert seen["overrides"] == [*QUICK_OVERRIDES, "train.max_epochs=5"]  # the user's wins


def test_overrides_are_written_into_params_yaml_keeping_its_comments(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path)
    shutil.copy(REPO / "params.yaml", paths.params_file)
    used = load_params(paths.params_file, ["data.path=/drops/2026-01-07", "train.max_epochs=3"])
    differing, problem = _param_differences(used, paths)
    assert problem is None and differing == ["data.path", "train.max_epochs"]
    write_params(used, paths, differing)
    text = paths.params_file.read_text()
    assert "# recpipe params: every knob a person tunes" in text  # comments kept
    assert load_params(paths.params_file) == used
    assert _param_differences(used, paths) == ([], None)


def test_pipeline_stages_and_hashes() -> None:
    params = load_params(None, ["train.candidates=[mf_bpr, gru4rec]"])
    assert pipeline_stages(params) == [
        "ingest",
        "validate",
        "sessions",
        "features",
        "tune",
        "train@mf_bpr",
        "train@gru4rec",
        "evaluate",
        "gate",
        "package",
    ]
    assert "package" not in pipeline_stages(params, packaged=False)
    assert params_sha256(params) == params_sha256(
        load_params(None, ["train.candidates=[mf_bpr, gru4rec]"])
    )
    assert params_sha256(params) != params_sha256(load_params())
    lock = {"stages": {"ingest": {"outs": [{"path": "data/interim", "md5": "a.dir", "size": 3}]}}}
    assert lock_out(lock, "ingest", "data/interim") == {"md5": "a.dir", "size": 3}
    assert lock_out(lock, "validate", "data/validated") is None
