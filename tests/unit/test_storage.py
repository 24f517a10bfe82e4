"""recpipe.data.storage: local paths and fsspec URLs behind one small API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from recpipe.data import storage
from recpipe.errors import ConfigError


@pytest.fixture
def memory_folder() -> Iterator[str]:
    url = f"memory://recpipe-tests/{uuid.uuid4().hex}"
    for name, data in (("b.csv", b"x\n2\n"), ("a.csv", b"x\n1\n"), ("c.txt", b"no")):
        with fsspec.open(f"{url}/{name}", "wb") as fh:
            fh.write(data)
    with fsspec.open(f"{url}/sub/d.csv", "wb") as fh:
        fh.write(b"x\n3\n")
    yield url
    fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def test_a_string_without_a_protocol_is_a_local_path(tmp_path: Path) -> None:
    assert storage.location(str(tmp_path / "x.csv")) == tmp_path / "x.csv"
    assert not storage.is_url(tmp_path / "x.csv")
    url = "memory://bucket/key.csv"
    assert storage.is_url(url) and storage.location(url) == url  # never a Path


def test_urls_and_paths_answer_alike(tmp_path: Path, memory_folder: str) -> None:
    (tmp_path / "b.csv").write_bytes(b"x\n2\n")
    (tmp_path / "a.csv").write_bytes(b"x\n1\n")
    (tmp_path / "c.txt").write_bytes(b"no")
    (tmp_path / "sub").mkdir()
    for root in (tmp_path, memory_folder, tmp_path.as_uri()):
        assert storage.is_dir(root) and not storage.is_file(root)
        files = storage.glob(root, "*.csv")
        assert [storage.name_of(f) for f in files] == ["a.csv", "b.csv"]  # no sub/, no .txt
        first = files[0]
        assert storage.exists(first) and storage.is_file(first)
        with storage.open_file(first, "rt", encoding="utf-8", newline="") as fh:
            assert fh.read() == "x\n1\n"
        assert not storage.exists(f"{root}/missing.csv" if storage.is_url(root) else root / "m")
    # the URLs keep the spelling given (fsspec's own would be memory:///recpipe-tests/...)
    assert storage.glob(memory_folder, "*.csv")[0] == f"{memory_folder}/a.csv"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nosuch://b/k", "unknown protocol 'nosuch'"),
        ("s3://", "has no path after 's3://'"),
        ("file://data/x.csv", "needs an absolute path (file:///abs/path, three slashes)"),
        ("://x", "has no protocol before '://'"),
    ],
)
def test_a_bad_url_names_the_value_and_the_form_expected(url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        storage.location(url, "data.path")
    message = str(info.value)
    assert f"data.path {url!r}" in message and expected in message


def test_a_protocol_whose_package_is_missing_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(protocol: str) -> None:
        raise ImportError(f"Install {protocol}fs to access it")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    with pytest.raises(ConfigError, match=r"the 'gcs' filesystem is not installed .*gcsfs"):
        storage.check_url("gcs://bucket/events.csv", "data.path")
