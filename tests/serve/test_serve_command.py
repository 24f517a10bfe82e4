"""`recpipe serve` before the server starts: which Bento, from where, and a corrupt or
truncated one stopped with one clear line (no server, no worker restarts, no bare
"Aborted.")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.helpers import make_bundle

pytestmark = pytest.mark.slow

pytest.importorskip("bentoml")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """A workspace whose package step left a report and an archive (as the package stage
    does), in this test process's BentoML store."""
    from recpipe.paths import Paths
    from recpipe.serve.package import package_bundle

    root = tmp_path_factory.mktemp("workspace")
    paths = Paths.at(root)
    bundle = make_bundle(tmp_path_factory.mktemp("bundle") / "bundle")
    report = package_bundle(bundle, paths.bento_archive, labels={"registry_version": "7"})
    paths.reports_dir.mkdir()
    paths.package_json.write_text(json.dumps(report))
    return paths, report


def serve(root: Path, home: Path, port: int = 1) -> subprocess.CompletedProcess:
    """`recpipe serve` in ``root`` with the BentoML store ``home`` (port 1: never reached
    when the Bento is refused first; the check of the port comes before)."""
    env = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "recpipe.cli", "serve", "--root", str(root), "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Aborted" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "serving" not in done.stdout  # no server was started
    return errors[0]


def test_a_truncated_archive_stops_serve_with_one_line(packaged, tmp_path) -> None:
    paths, _ = packaged
    root = tmp_path / "workspace"
    (root / "bentos").mkdir(parents=True)
    data = paths.bento_archive.read_bytes()
    (root / "bentos" / "recpipe.bento").write_bytes(data[: len(data) // 3])
    line = one_error_line(serve(root, tmp_path / "empty-home", free_port()))
    assert "cannot import the Bento archive" in line and "recpipe.bento" in line
    assert "truncated or corrupt" in line


def test_a_corrupt_model_stops_serve_with_one_line(packaged, tmp_path) -> None:
    """The model the Bento references is damaged in the store: refused before starting
    a server whose workers would fail and restart forever."""
    import bentoml

    paths, report = packaged
    home = tmp_path / "home"
    shutil.copytree(os.environ["BENTOML_HOME"], home)
    model = Path(bentoml.models.get(report["model_tag"]).path)
    damaged = home / model.relative_to(os.environ["BENTOML_HOME"]) / "model" / "weights.pt"
    assert damaged.is_file()
    damaged.chmod(0o644)
    damaged.write_bytes(damaged.read_bytes()[:100])
    line = one_error_line(serve(paths.root, home, free_port()))
    assert report["model_tag"] in line and report["bento_tag"] in line
    assert "cannot be loaded" in line and "weights.pt" in line


def test_the_workspaces_bento_is_chosen_and_described(packaged) -> None:
    from recpipe.serve.package import choose_bento

    paths, report = packaged
    served, warning = choose_bento(None, paths.package_json, paths.bento_archive)
    assert warning is None
    assert served.tag == report["bento_tag"] and served.model_tag == report["model_tag"]
    assert Path(served.path, "src", "recpipe", "serve", "service.py").is_file()
    line = served.describe()
    assert report["bento_tag"] in line and report["model_tag"] in line
    assert str(paths.package_json) in line and served.path in line


def test_a_workspace_without_a_run_is_told_which_bento_it_gets(packaged, tmp_path) -> None:
    """No package report here: the store's latest Bento, with a warning that names it and
    the workspace that built it (its archive)."""
    from recpipe.paths import Paths
    from recpipe.serve.package import choose_bento

    paths, _ = packaged
    empty = Paths.at(tmp_path / "fresh")
    served, warning = choose_bento(None, empty.package_json, empty.bento_archive)
    assert warning is not None
    assert served.tag in warning and "another workspace" in warning
    assert str(paths.bento_archive) in warning  # where it was built
    assert "the BentoML store's latest" in served.describe()


def test_a_broken_report_is_one_line_too(packaged, tmp_path) -> None:
    from recpipe.errors import ArtifactError
    from recpipe.serve.package import choose_bento

    report = tmp_path / "reports" / "package.json"
    report.parent.mkdir()
    report.write_text("{not json")
    with pytest.raises(ArtifactError, match="is not a package report"):
        choose_bento(None, report, tmp_path / "bentos" / "recpipe.bento")
