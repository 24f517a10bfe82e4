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
    assert summary["dvc"]["status"] == "skipped" and summary["dvc"]["params_overridden"] == []
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


def test_overrides_are_written_into_params_yaml_changing_only_their_lines(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path)
    shutil.copy(REPO / "params.yaml", paths.params_file)
    before = paths.params_file.read_text()
    used = load_params(
        paths.params_file,
        ["data.path=/drops/2026-01-07", "train.max_epochs=3", "train.candidates=[mf_bpr]"],
    )
    differing, problem = _param_differences(used, paths)
    assert problem is None
    assert differing == ["data.path", "train.candidates", "train.max_epochs"]
    write_params(used, paths, differing)
    after = paths.params_file.read_text()
    assert load_params(paths.params_file) == used
    assert _param_differences(used, paths) == ([], None)
    changed = [
        (old, new)
        for old, new in zip(before.splitlines(), after.splitlines(), strict=True)
        if old != new
    ]
    # the three entries only, each on its own line with its comment; `null`, the
    # hand-wrapped evaluate.models list and every comment stay as written
    assert [new.split("#")[0].strip() for _, new in changed] == [
        "path: /drops/2026-01-07",
        "candidates: [mf_bpr]",
        "max_epochs: 3",
    ]
    assert "# raw file or folder" in changed[0][1]
    assert "  items_path: null\n" in after and "  timestamp_unit: null " in after
    assert "bias,\n           category_pop, context_pop]" in after


def test_edited_text_without_keys_is_the_file_itself_and_removes_what_the_run_lacks() -> None:
    from recpipe.params_file import edited_text

    original = (REPO / "params.yaml").read_text()
    assert edited_text(original, {}, []) == original
    used = load_params(None, ["train.model_splits={sasrec: [session]}"])
    text = edited_text(original, used.dump(), ["train.model_splits.content2cf"])
    assert "content2cf: [user_temporal, cold_start]" not in text
    assert "    sasrec: [session]       # where it beats" in text  # its sibling untouched
    assert len(text.splitlines()) == len(original.splitlines()) - 1


def test_params_file_for_dvc_holds_the_runs_values_only_inside(tmp_path: Path) -> None:
    from recpipe.lineage import params_file_for_dvc
    from recpipe.params_file import holding, restore_backup

    paths = Paths.at(tmp_path)
    shutil.copy(REPO / "params.yaml", paths.params_file)
    before = paths.params_file.read_bytes()
    used = load_params(paths.params_file, ["synth.seed=7", "train.candidates=[gru4rec]"])
    differing, _ = _param_differences(used, paths)
    with params_file_for_dvc(used, paths, differing) as text:
        assert load_params(paths.params_file) == used  # what dvc commit reads
        assert paths.params_file.read_text() == text
    assert paths.params_file.read_bytes() == before
    try:  # a failure inside (dvc crashed) puts the file back too
        with params_file_for_dvc(used, paths, differing):
            raise RuntimeError("dvc crashed")
    except RuntimeError:
        pass
    assert paths.params_file.read_bytes() == before
    # a process killed inside leaves a backup, which the next run restores first
    held = holding(paths.params_file, "synth: {seed: 1}\n")
    held.__enter__()
    assert paths.params_file.read_bytes() != before
    assert restore_backup(paths.params_file) is True
    assert paths.params_file.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


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


def test_run_save_params_writes_only_the_set_lines_before_the_run(
    tmp_path: Path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from recpipe import cli

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_text()
    seen = {}

    def fake_flow(root, params_file, overrides, **options):
        seen["file"] = (Path(root) / "params.yaml").read_text()  # what the run starts from
        raise SystemExit(0)

    monkeypatch.setattr(cli, "_run_flow", fake_flow)
    args = ["run", "--root", str(tmp_path), "--set", "train.candidates=[mf_bpr]"]
    result = CliRunner().invoke(cli.app, [*args, "--save-params"])
    assert result.exit_code == 0, result.output
    assert "--save-params: wrote train.candidates first" in result.output
    after = (tmp_path / "params.yaml").read_text()
    assert seen["file"] == after
    changed = [
        new for old, new in zip(before.splitlines(), after.splitlines(), strict=True) if old != new
    ]
    assert [line.split("#")[0].strip() for line in changed] == ["candidates: [mf_bpr]"]
    assert load_params(tmp_path / "params.yaml").train.candidates == ["mf_bpr"]
    # without the flag the file stays; a bad value is refused before anything is written
    result = CliRunner().invoke(cli.app, [*args[:-1], "train.max_epochs=2"])
    assert (tmp_path / "params.yaml").read_text() == after
    bad = CliRunner().invoke(cli.app, [*args[:-1], "train.max_epochs=-1", "--save-params"])
    assert bad.exit_code == 2 and "max_epochs" in bad.output
    assert (tmp_path / "params.yaml").read_text() == after


def test_holding_a_linked_params_file_keeps_the_link(tmp_path: Path) -> None:
    from recpipe.params_file import holding

    real = tmp_path / "shared-params.yaml"
    real.write_text("synth: {seed: 1}  # mine\n")
    link = tmp_path / "params.yaml"
    link.symlink_to(real)
    with holding(link, "synth: {seed: 2}\n"):
        assert link.read_text() == "synth: {seed: 2}\n"
    assert link.is_symlink() and real.read_text() == "synth: {seed: 1}  # mine\n"
