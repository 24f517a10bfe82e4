"""fetch() against a loopback HTTP server serving a small zip built in tmp_path."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from recpipe.data.fetch import DATASETS, MARKER_FILE, default_cache_dir, fetch
from recpipe.data.sources import import_source
from recpipe.errors import FetchError

U_DATA = "1\t10\t4\t881250949\n2\t10\t3\t881250950\n"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Server:
    """A loopback file server in a thread; ``stop()`` shuts it down."""

    def __init__(self, root: Path) -> None:
        handler = partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def served(tmp_path, monkeypatch) -> Iterator[tuple[Server, str]]:
    """A server holding ``ml-100k.zip`` (a tiny MovieLens-like folder) and its sha256."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    archive = root / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", U_DATA)
        zf.writestr("ml-100k/README", "tiny\n")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    server = Server(root)
    try:
        yield server, digest
    finally:
        server.stop()


def test_registry_has_movielens_100k():
    spec = DATASETS["movielens-100k"]
    assert spec.url == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    assert spec.sha256 is not None and len(spec.sha256) == 64
    assert spec.kind == "movielens-100k" and spec.folder == "ml-100k"


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RECPIPE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("RECPIPE_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "recpipe"


def test_fetch_verifies_unpacks_and_caches(served, tmp_path):
    server, digest = served
    cache = tmp_path / "cache"
    folder = fetch("movielens-100k", cache, url=f"{server.url}/ml-100k.zip", sha256=digest)
    assert folder == cache / "movielens-100k" / "data" / "ml-100k"
    assert (folder / "u.data").read_text() == U_DATA
    assert (cache / "movielens-100k" / MARKER_FILE).is_file()
    assert not list((cache / "movielens-100k").glob("*.part"))
    assert len(import_source("movielens-100k", folder).events) == 2

    server.stop()  # a second call must not touch the network
    again = fetch("movielens-100k", cache, url=f"{server.url}/ml-100k.zip", sha256=digest)
    assert again == folder


def test_fetch_uses_env_cache_dir(served, tmp_path, monkeypatch):
    server, digest = served
    monkeypatch.setenv("RECPIPE_CACHE_DIR", str(tmp_path / "envcache"))
    folder = fetch("movielens-100k", url=f"{server.url}/ml-100k.zip", sha256=digest)
    assert folder.is_relative_to(tmp_path / "envcache")


def test_checksum_mismatch_names_both_hashes_and_removes_the_file(served, tmp_path):
    server, digest = served
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(FetchError, match=f"expected sha256 {wrong}, got {digest}.*removed"):
        fetch("movielens-100k", cache, url=f"{server.url}/ml-100k.zip", sha256=wrong)
    leftovers = [p for p in (cache / "movielens-100k").iterdir()]
    assert leftovers == []  # neither the archive nor a partial download remains


def test_http_404_is_a_fetch_error(served, tmp_path):
    server, _ = served
    with pytest.raises(FetchError, match=r"download of .*/missing\.zip failed: HTTP 404"):
        fetch("movielens-100k", tmp_path / "cache", url=f"{server.url}/missing.zip")


def test_connection_refused_is_a_fetch_error(served, tmp_path):
    server, _ = served
    server.stop()
    with pytest.raises(FetchError, match=r"download of .* failed"):
        fetch("movielens-100k", tmp_path / "cache", url=f"{server.url}/ml-100k.zip")


def test_force_downloads_again(served, tmp_path):
    server, digest = served
    cache = tmp_path / "cache"
    url = f"{server.url}/ml-100k.zip"
    folder = fetch("movielens-100k", cache, url=url, sha256=digest)
    (folder / "u.data").write_text("changed")
    assert (fetch("movielens-100k", cache, url=url, sha256=digest) / "u.data").read_text() == (
        "changed"
    )
    assert (
        fetch("movielens-100k", cache, url=url, sha256=digest, force=True) / "u.data"
    ).read_text() == U_DATA


def test_unknown_name_without_url(tmp_path):
    with pytest.raises(FetchError, match=r"unknown data set 'nope'; known: \["):
        fetch("nope", tmp_path)


def test_custom_dataset_by_url_and_unsafe_archive(served, tmp_path):
    server, _ = served
    www = Path(server.httpd.RequestHandlerClass.keywords["directory"])  # type: ignore[attr-defined]
    with zipfile.ZipFile(www / "evil.zip", "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(FetchError, match=r"unsafe path '\.\./escape\.txt'"):
        fetch("evil", tmp_path / "cache", url=f"{server.url}/evil.zip")
    assert not (tmp_path / "cache" / "escape.txt").exists()
    folder = fetch("mine", tmp_path / "cache", url=f"{server.url}/ml-100k.zip")
    assert folder.name == "ml-100k"  # the archive's single top folder
