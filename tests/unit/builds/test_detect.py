"""Build detection against real sources: a PEP 503 index served on 127.0.0.1 and a local git repository with b-tags.

Also the CMake flags each backend gets, and the one-line cause a failed build reports.
"""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
from pydantic import ValidationError
from support.git_repos import commit, git, init_repo

from vramwatch.builds.backend import build_request, cuda_architectures, resolve_backend
from vramwatch.builds.detect import check_for_new_build, git_tags, tag_order
from vramwatch.builds.process import failure_cause
from vramwatch.config import BuildSource
from vramwatch.errors import UserError

# ------------------------------------------------------------------------------------------ PEP 503 index

INDEX_PAGE = """<!DOCTYPE html><html><body>
<a href="../../files/llama_cpp_python-0.3.9.tar.gz#sha256=00">llama_cpp_python-0.3.9.tar.gz</a>
<a href="../../files/llama_cpp_python-0.3.10.tar.gz#sha256=00">llama_cpp_python-0.3.10.tar.gz</a>
<a href="../../files/llama_cpp_python-0.3.36.tar.gz#sha256=00">llama_cpp_python-0.3.36.tar.gz</a>
<a href="../../files/llama_cpp_python-0.4.0rc1.tar.gz#sha256=00">llama_cpp_python-0.4.0rc1.tar.gz</a>
<a href="../../files/llama_cpp_python-0.3.40.tar.gz#sha256=00" data-yanked="broken">llama_cpp_python-0.3.40.tar.gz</a>
<a href="../../files/llama_cpp_python-0.3.50-py3-none-any.whl#sha256=00">llama_cpp_python-0.3.50-py3-none-any.whl</a>
</body></html>
"""


@pytest.fixture(scope="module")
def index_url(tmp_path_factory):
    """A PEP 503 simple index over a directory: 0.3.36 is the newest usable release (0.4.0rc1 is a pre-release,
    0.3.40 is yanked, 0.3.50 has no sdist to build from)."""
    root = tmp_path_factory.mktemp("index")
    page = root / "simple" / "llama-cpp-python" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(INDEX_PAGE)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()


def test_index_latest_is_the_newest_final_release_by_pep440(index_url):
    check = check_for_new_build(BuildSource(location=index_url), None)
    assert check.latest == "0.3.36"  # not "0.3.9" (string order), not the rc, the yanked or the wheel-only one
    assert check.is_new and check.should_run


@pytest.mark.parametrize(("last", "is_new"), [("0.3.10", True), ("0.3.9", True), ("0.3.36", False), ("0.3.40", False),
                                              ("1.0.0", False)])
def test_index_new_same_and_older(index_url, last, is_new):
    check = check_for_new_build(BuildSource(location=index_url), last)
    assert (check.latest, check.last_benchmarked, check.is_new) == ("0.3.36", last, is_new)


def test_force_runs_without_claiming_a_new_build(index_url):
    check = check_for_new_build(BuildSource(location=index_url), "0.3.36", force=True)
    assert not check.is_new and check.forced and check.should_run


def test_index_exact_version_and_unknown_version(index_url):
    assert check_for_new_build(BuildSource(location=index_url, version="0.3.10"), "0.3.9").latest == "0.3.10"
    with pytest.raises(UserError, match="9.9.9 is not available"):
        check_for_new_build(BuildSource(location=index_url, version="9.9.9"), None)


def test_index_without_the_project_is_bad_input(index_url):
    with pytest.raises(UserError, match="HTTP 404"):
        check_for_new_build(BuildSource(location=index_url + "/nothing-here"), None)


def refusing_index() -> str:
    """An index URL on a loopback port nothing listens on: every connection is refused, as on an air-gapped host."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/simple"


def test_with_no_index_reachable_a_pinned_version_is_used(caplog):
    """Fault: an air-gapped worker failed at detect_build: it asked the index even for the pinned 0.3.36 that was
    already built and cached (the GPU worker's build stage reuses it; detection may run where no cache is)."""
    import logging

    with caplog.at_level(logging.INFO):
        check = check_for_new_build(BuildSource(location=refusing_index(), version="0.3.36"), "0.3.36", force=True)
    assert (check.latest, check.is_new, check.forced) == ("0.3.36", False, True)
    assert "no index reachable, using the pinned build 0.3.36 (cannot reach package index" in caplog.text


def test_with_no_index_reachable_latest_still_fails_naming_the_fix():
    with pytest.raises(UserError, match=r"cannot reach package index .*build from a bundle"):
        check_for_new_build(BuildSource(location=refusing_index(), version="latest"), None)


# ------------------------------------------------------------------------------------------ git tags


@pytest.fixture(scope="module")
def llama_repo(tmp_path_factory):
    """A llama.cpp-like repository: tags b9, b10, b99 (annotated), b100, then a gguf-v0.4.0 tag on a later commit."""
    repo = tmp_path_factory.mktemp("llama.cpp")
    init_repo(repo)
    for tag in ("b9", "b10", "b99", "b100", "gguf-v0.4.0"):
        commit(repo, tag, {"VERSION": tag})
        git(repo, "tag", *(["-a", "-m", tag] if tag == "b99" else []), tag)
    return repo


def test_tag_order_is_numeric():
    assert sorted(["b100", "b9", "b10", "b99"], key=tag_order) == ["b9", "b10", "b99", "b100"]


@pytest.mark.parametrize("pattern", ["b*", "latest"])
def test_git_newest_matching_tag_with_its_commit(llama_repo, pattern):
    check = check_for_new_build(BuildSource(source="git", location=str(llama_repo), version=pattern), None)
    assert check.latest == "b100"
    assert check.commit == git(llama_repo, "rev-parse", "b100^{commit}")


@pytest.mark.parametrize(("last", "is_new"), [("b99", True), ("b9", True), ("b100", False), ("b101", False),
                                              ("0.3.36", True)])
def test_git_new_same_and_older(llama_repo, last, is_new):
    check = check_for_new_build(BuildSource(source="git", location=str(llama_repo), version="b*"), last)
    assert check.is_new is is_new


def test_git_annotated_tag_resolves_to_its_commit(llama_repo):
    check = check_for_new_build(BuildSource(source="git", location=str(llama_repo), version="b99"), None)
    assert check.commit == git(llama_repo, "rev-parse", "b99^{commit}") != git(llama_repo, "rev-parse", "b99")


def test_git_unknown_tag_and_unusable_location_are_bad_input(llama_repo, tmp_path):
    with pytest.raises(UserError, match="no tag 'b7'"):
        check_for_new_build(BuildSource(source="git", location=str(llama_repo), version="b7"), None)
    with pytest.raises(UserError, match="cannot list tags"):
        check_for_new_build(BuildSource(source="git", location=str(tmp_path / "missing")), None)


# ------------------------------------------------------------------------------------------ backend and flags


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    """An nvidia-smi that reports two GPUs (an A100 and an H100): this machine has none, the GPU worker has."""
    tool = tmp_path / "nvidia-smi"
    tool.write_text('#!/bin/sh\ncase "$*" in\n  -L) echo "GPU 0: NVIDIA A100 (UUID: a)"; '
                    'echo "GPU 1: NVIDIA H100 (UUID: b)";;\n  *compute_cap*) echo 9.0; echo 8.0;;\nesac\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/local/bin:/usr/bin:/bin")
    return tool


def test_cpu_flags_are_exactly_the_cached_wheels():
    request = build_request(BuildSource(backend="cpu"), "0.3.36")
    assert request.cmake_args == "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
    assert request.cuda_architectures == "" and request.key.startswith("0.3.36-cpu-")


def test_cuda_flags_pin_the_architectures_and_append_the_matrix_flags():
    source = BuildSource(backend="cuda", cuda_architectures="90", cmake_args="-DGGML_CUDA_FA_ALL_QUANTS=ON")
    request = build_request(source, "0.3.36")
    assert request.cmake_args == ("-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=OFF "
                                  "-DLLAMA_BUILD_MTMD=OFF -DGGML_CUDA_FA_ALL_QUANTS=ON")
    assert request.key != build_request(source.model_copy(update={"cuda_architectures": "80"}), "0.3.36").key


def test_auto_is_cuda_only_with_a_gpu_and_nvcc(fake_gpus, monkeypatch):
    assert resolve_backend(BuildSource()) == "cuda"  # nvcc is installed here; the GPU is the fake one
    assert cuda_architectures(BuildSource()) == "80;90"
    assert "native" not in build_request(BuildSource(), "0.3.36").cmake_args
    fake_gpus.unlink()
    assert resolve_backend(BuildSource()) == "cpu"


def test_no_gpu_and_no_configured_architectures_is_bad_input(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi
    assert cuda_architectures(BuildSource(cuda_architectures="86")) == "86"
    with pytest.raises(UserError, match="no GPU"):
        build_request(BuildSource(backend="cuda"), "0.3.36")


def test_failure_cause_names_the_first_real_error():
    cmake = ["-- Configuring", "CMake Error at CMakeLists.txt:3 (message):", "", "  no CUDA toolkit found", "x"]
    assert failure_cause(cmake) == "CMake Error at CMakeLists.txt:3 (message): no CUDA toolkit found"
    compile_log = ["FAILED: broken.o", "broken.c:1:1: error: unknown type name 'oops'", "ERROR: Failed building wheel"]
    assert failure_cause(compile_log) == "broken.c:1:1: error: unknown type name 'oops'"
    assert failure_cause(["all fine"]) == ""


def test_a_location_that_git_would_read_as_an_option_is_refused(tmp_path):
    """Fault: a git location starting with '--' was read by git as an option (--upload-pack) and ran a command."""
    planted = f"--upload-pack=touch {tmp_path / 'ran'}"
    with pytest.raises(ValidationError, match="location"):
        BuildSource(source="git", location=planted)
    with pytest.raises(UserError, match="cannot list tags"):  # and git itself is told where its options end
        git_tags(planted)
    assert not (tmp_path / "ran").exists()
