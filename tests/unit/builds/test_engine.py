"""Engine builds end to end with real tools: a slim bundle, an offline build from it, reuse, a git checkout, and a
source that does not compile.

No test compiles llama.cpp (that is ~10 minutes here): the wheel cache, which a real build fills, is seeded with the
CPU wheel of the session's engine (conftest `engine_build`), so these tests exercise everything around the compile.
The one compile is a tiny broken source, to prove how a failed build is reported.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import typing_extensions
from support.git_repos import git, init_repo
from support.llama_commits import share_release
from support.llama_headers import headers_of

from vramwatch.builds.backend import build_request
from vramwatch.builds.bundle import make_bundle
from vramwatch.builds.engine import build_engine, cached_wheel, list_builds
from vramwatch.builds.slim import keep
from vramwatch.builds.sources import find_sdist
from vramwatch.config import BuildSource, Paths, load_matrix
from vramwatch.errors import UserError

VERSION = "0.3.36"
VENDORED_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"  # what llama-cpp-python 0.3.36 vendors (REFERENCE.md)


def _paths(root: Path) -> Paths:
    paths = Paths(root)
    paths.cache = root / "cache"
    paths.builds = root / "builds"
    return paths


def _seed_wheel(paths: Paths, source: BuildSource, version: str, engine_build) -> Path:
    """Put the session engine's wheel (and its llama-bench) where a finished compile of this request would have."""
    wheel = cached_wheel(Paths(), engine_build.request, with_llama_bench=True)
    assert wheel, "the session engine's wheel and llama-bench are not in the wheel cache"
    dest = paths.cache / "wheels" / build_request(source, version).key
    shutil.copytree(wheel.parent, dest)
    return dest / wheel.name


@pytest.fixture
def offline(monkeypatch):
    """No package index and no network: only what --find-links names can be installed."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, engine_build):
    """Made as on a fresh machine: pip downloads the release's sdist (from a local find-links folder here); only
    the unpacked tree is shared."""
    maker = _paths(tmp_path_factory.mktemp("maker"))
    index = tmp_path_factory.mktemp("index")
    sdist = find_sdist(Paths().cache / "sdists", VERSION)
    (index / sdist.name).symlink_to(sdist)
    (maker.cache / "src").mkdir(parents=True)
    (maker.cache / "src" / VERSION).symlink_to(engine_build.source_dir)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PIP_FIND_LINKS", str(index))
        made = make_bundle(VERSION, tmp_path_factory.mktemp("bundle"), maker)
    assert find_sdist(maker.cache / "sdists", VERSION), "the bundle did not download its sdist"
    return made


def test_slim_rule_keeps_sources_and_vocab_only():
    assert keep("vendor/llama.cpp/ggml/src/ggml.c") and keep("llama_cpp/llama_cpp.py")
    assert keep("vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf") and keep("vendor/llama.cpp/models")
    for dropped in (".git/HEAD", "vendor/llama.cpp/docs/build.md", "vendor/llama.cpp/tests/test-backend-ops.cpp",
                    "vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf.inp", "vendor/llama.cpp/models/templates/x",
                    "vendor/llama.cpp/benches", "vendor/llama.cpp/examples/simple/simple.cpp"):
        assert not keep(dropped), dropped


def test_bundle_is_a_slim_sdist_with_the_commit_and_offline_wheels(bundle):
    sdist = bundle / f"llama_cpp_python-{VERSION}.tar.gz"
    full = Paths().cache / "sdists" / sdist.name
    assert sdist.stat().st_size < full.stat().st_size / 2
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        marker = tar.extractfile(f"llama_cpp_python-{VERSION}/LLAMA_CPP_COMMIT").read().decode().strip()
    top = f"llama_cpp_python-{VERSION}/vendor/llama.cpp"
    assert marker == VENDORED_COMMIT
    assert f"{top}/models/ggml-vocab-qwen2.gguf" in names and f"{top}/CMakeLists.txt" in names
    assert not any(n.startswith((f"{top}/docs/", f"{top}/tests/", f"llama_cpp_python-{VERSION}/.git/")) for n in names)
    wheels = {p.name.split("-")[0].lower() for p in (bundle / "wheels").glob("*.whl")}
    assert {"numpy", "jinja2", "markupsafe", "diskcache", "typing_extensions", "nvidia_ml_py",
            "scikit_build_core"} <= wheels


def test_offline_build_from_the_bundle_then_reuse(bundle, engine_build, tmp_path, offline, monkeypatch):
    # A worker whose PYTHONPATH already has llama-cpp-python's dependencies (seen on a GPU worker): the engine venv
    # must still get its own copies, since the bench child runs without the caller's PYTHONPATH.
    monkeypatch.setenv("PYTHONPATH", str(Path(typing_extensions.__file__).parent))
    worker = _paths(tmp_path)
    source = BuildSource(source="path", location=str(bundle), version=VERSION, backend="cpu")
    wheel = _seed_wheel(worker, source, VERSION, engine_build)

    first = build_engine(source, VERSION, worker)
    assert first.status == "ok", first.error
    assert first.llama_cpp_commit == VENDORED_COMMIT  # from the bundle's marker: the slim tree has no .git
    assert first.llama_cpp_python_version == VERSION and first.artifact_bytes == wheel.stat().st_size
    assert Path(first.source_dir, "vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf").is_file()
    alone = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    imported = subprocess.run([first.python, "-c", "import llama_cpp, pynvml; print(llama_cpp.__version__)"],
                              capture_output=True, text=True, env=alone)
    assert imported.stdout.strip() == VERSION, imported.stderr
    assert not (worker.cache / "build").exists()  # the cached wheel was installed: nothing compiled

    home = worker.builds / first.request.key
    stamp = (home / "venv" / "pyvenv.cfg").stat().st_mtime_ns
    again = build_engine(source, "latest", worker)  # "latest" of a bundle directory is its one version
    assert again.status == "reused" and again.python == first.python and again.request == first.request
    assert (home / "venv" / "pyvenv.cfg").stat().st_mtime_ns == stamp
    assert [r.request.key for r in list_builds(worker)] == [first.request.key]

    with pytest.raises(UserError, match="9.9.9 is not available"):
        build_engine(source, "9.9.9", worker)
    assert not (worker.builds / build_request(source, "9.9.9").key).exists()  # bad input writes nothing


def _broken_sdist(folder: Path, version: str) -> None:
    """A llama-cpp-python look-alike whose C does not compile (scikit-build-core, like the real one)."""
    files = {
        "pyproject.toml": '[build-system]\nrequires = ["scikit-build-core"]\n'
                          'build-backend = "scikit_build_core.build"\n'
                          f'[project]\nname = "llama_cpp_python"\nversion = "{version}"\n',
        "CMakeLists.txt": "cmake_minimum_required(VERSION 3.21)\nproject(broken C)\n"
                          "add_library(llama SHARED broken.c)\ninstall(TARGETS llama DESTINATION llama_cpp/lib)\n",
        "broken.c": "this is not C;\n",
    }
    with tarfile.open(folder / f"llama_cpp_python-{version}.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(f"llama_cpp_python-{version}/{name}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))


def test_broken_source_fails_with_one_line_and_is_never_reused(bundle, tmp_path, offline):
    location = tmp_path / "broken"
    location.mkdir()
    _broken_sdist(location, "0.0.1")
    (location / "wheels").symlink_to(bundle / "wheels")  # the build backend, offline
    paths = _paths(tmp_path)
    source = BuildSource(source="path", location=str(location), backend="cpu")

    record = build_engine(source, "0.0.1", paths)
    assert record.status == "failed" and not record.ok and record.python == ""
    assert "\n" not in record.error and "broken.c" in record.error and "error" in record.error
    assert 5 <= len(record.log_tail.splitlines()) <= 40
    home = paths.builds / record.request.key
    assert '"status": "failed"' in (home / "build.json").read_text()
    assert "this is not C" in (home / "build.log").read_text()

    assert build_engine(source, "latest", paths).status == "failed"  # retried, not reused


def _llama_cpp_repo(root: Path, engine_build, llama_h_edit: tuple[str, str] | None = None) -> tuple[Path, str]:
    """A one-commit llama.cpp repository (tag b1): a vocab GGUF, a CMakeLists and the engine's real headers."""
    repo = headers_of(engine_build, root / "llama.cpp", llama_h_edit)
    (repo / "models").mkdir(parents=True)
    (repo / "models" / "ggml-vocab-tiny.gguf").write_bytes(b"GGUF")
    (repo / "CMakeLists.txt").write_text("# the checkout\n")
    init_repo(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "b1")
    git(repo, "tag", "b1")
    return repo, git(repo, "rev-parse", "b1")


def _git_build(tmp_path: Path, engine_build, llama_h_edit: tuple[str, str] | None = None):
    """build_engine of tag b1 from a local repository, with the session engine's wheel in the wheel cache."""
    repo, commit = _llama_cpp_repo(tmp_path, engine_build, llama_h_edit)
    paths = _paths(tmp_path)
    share_release(paths, Path(engine_build.source_dir), VERSION)
    source = BuildSource(source="git", location=str(repo), version="b*", backend="cpu")
    _seed_wheel(paths, source, "b1", engine_build)
    return build_engine(source, "b1", paths), commit


def test_git_checkout_replaces_the_vendored_llama_cpp(engine_build, tmp_path):
    record, commit = _git_build(tmp_path, engine_build)
    assert record.status == "ok", record.error
    assert record.llama_cpp_commit == commit and record.llama_cpp_python_version == VERSION
    tree = Path(record.source_dir)
    assert (tree / "vendor/llama.cpp/CMakeLists.txt").read_text() == "# the checkout\n"
    assert (tree / "vendor/llama.cpp/models/ggml-vocab-tiny.gguf").is_file()
    assert (tree / "llama_cpp" / "llama_cpp.py").is_file()  # the bindings around it
    assert (tree / "LLAMA_CPP_COMMIT").read_text().strip() == commit
    assert "ABI guard: bindings match llama.h" in (Path(record.python).parents[2] / "build.log").read_text()


def test_git_checkout_whose_llama_h_the_bindings_do_not_match_fails_the_build(engine_build, tmp_path):
    """Fault: a llama.cpp commit grew llama_context_params; its build must not be benched through the old bindings."""
    record, _ = _git_build(tmp_path, engine_build, ("uint32_t n_ctx;", "uint32_t n_ctx;\n        uint32_t n_planted;"))
    assert record.status == "failed" and record.python == ""
    assert record.error.startswith("bindings do not match llama.h: llama_context_params: C size ")
    assert "llama_context_params.n_batch: C offset 8 size 4, ctypes offset 4 size 4" in record.error


def test_a_second_build_of_a_key_waits_for_the_first_then_reuses_it(engine_build):
    lock_path = Paths().builds / f"{engine_build.request.key}.lock"
    vramwatch = Path(sys.executable).parent / "vramwatch"
    with open(lock_path, "w") as first_build:  # this test holds the key, as a running build would
        fcntl.flock(first_build, fcntl.LOCK_EX)
        first_build.write("pid 4242 on nightly-worker")
        first_build.flush()
        second = subprocess.Popen([str(vramwatch), "builds", "build"], stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(300, second.kill)  # a build that never says it waits must not hang the suite
        watchdog.start()
        said = ""
        while "waiting for" not in said and (line := second.stderr.readline()):
            said += line
        assert f"waiting for the build of {engine_build.request.key} that pid 4242 on nightly-worker is running" \
            in said
        assert second.poll() is None  # still waiting while the first holds the key
    rest = second.stderr.read()
    watchdog.cancel()
    assert second.wait() == 0
    assert f"result: reused {engine_build.request.key}" in rest


def test_reusing_an_engine_marks_it_used(engine_build):
    record = Paths().builds / engine_build.request.key / "build.json"
    os.utime(record, (0, 0))
    demo = load_matrix("demo").build  # what the engine_build fixture built

    assert build_engine(demo, demo.version, Paths()).status == "reused"
    assert record.stat().st_mtime > 0  # prune keeps the builds used last
