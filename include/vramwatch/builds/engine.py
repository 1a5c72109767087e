"""build_engine: one isolated virtualenv per BuildRequest, holding llama-cpp-python built for it.

    paths.builds/<key>/venv/          the only Python that ever loads llama.cpp (the bench child runs in it)
    paths.builds/<key>/build.json     the BuildRecord; with an importable venv it means "reuse, do not rebuild";
                                      its mtime is the build's last use (vramwatch.prune keeps the latest)
    paths.builds/<key>/build.log      everything the build printed
    paths.builds/<key>.lock           held while <key> is built or checked: one build per key at a time
    paths.cache/wheels/<key>/*.whl    the built wheel: a second build, or a fresh clone, installs it in seconds
    paths.cache/wheels/<key>/llama-bench/   built from the wheel's cmake tree, when the matrix asks for it
    paths.builds/<key>/llama-bench/         its copy for this build (runs on the venv's libraries: llama_bench_env)
    paths.cache/build/<slot>/         the persistent slim source + cmake tree that builds of one slot share
                                      (build_tree.py): a nearby llama.cpp commit recompiles only what changed

A git-source build (bindings around a llama.cpp commit) also passes the ABI guard (abi.py) before it counts as built.

Build failures come back as a BuildRecord with status "failed" (the caller decides); only bad input raises UserError.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import tomllib
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path

from vramwatch.builds.abi import guard_bindings
from vramwatch.builds.backend import build_request, ccache_args, compile_env
from vramwatch.builds.build_tree import build_slot, ccache_env, slot_dir, slot_lock, sync_tree
from vramwatch.builds.detect import find_build
from vramwatch.builds.llama_bench import TOOLS_OFF, build_llama_bench
from vramwatch.builds.locking import exclusive
from vramwatch.builds.process import StepFailed, engine_env, run_step, say
from vramwatch.builds.slim import LLAMA
from vramwatch.builds.sources import (
    GIT_BINDINGS_VERSION,
    SourceTree,
    find_sdist,
    git_source,
    pip_index,
    release_source,
)
from vramwatch.config import BuildSource, Paths
from vramwatch.errors import UserError
from vramwatch.records import BuildRecord, BuildRequest

# The wheel brings numpy, typing-extensions, diskcache and jinja2; the bench child also reads NVML.
BENCH_CHILD_EXTRAS = ("nvidia-ml-py",)


def cached_wheel(paths: Paths, request: BuildRequest, with_llama_bench: bool) -> Path | None:
    """The cached wheel; with_llama_bench: only together with its llama-bench (the tree that makes one is gone)."""
    wheels = sorted((paths.cache / "wheels" / request.key).glob("llama_cpp_python-*.whl"))
    if not wheels or (with_llama_bench and not (wheels[-1].parent / "llama-bench" / "llama-bench").is_file()):
        return None
    return wheels[-1]


def engine_import_error(python: Path) -> str:
    """Empty if `python` imports llama_cpp (which loads the shared libraries), else the reason in one line."""
    if not python.is_file():
        return f"{python} does not exist"
    done = subprocess.run([str(python), "-c", "import llama_cpp"], capture_output=True, text=True, timeout=300,
                          env=engine_env())
    return "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["import failed"])[-1]


def _read_record(home: Path) -> BuildRecord | None:
    try:
        return BuildRecord.from_json((home / "build.json").read_text())
    except (OSError, ValueError, TypeError):
        return None


def list_builds(paths: Paths) -> list[BuildRecord]:
    """Every build recorded under paths.builds, newest first."""
    records = [r for home in paths.builds.glob("*/") if (r := _read_record(home))] if paths.builds.is_dir() else []
    return sorted(records, key=lambda r: r.built_at, reverse=True)


def newest_engine(paths: Paths) -> BuildRecord:
    """The newest finished engine under paths.builds: what a command uses when it is not told which."""
    for record in list_builds(paths):
        if record.ok and Path(record.python).exists():
            return record
    raise UserError(f"no finished engine build under {paths.builds}",
                    "build one first (`vramwatch builds build`), or pass --python PATH to an engine venv's python")


def engine_of_commit(paths: Paths, llama_cpp_commit: str, backend: str) -> BuildRecord | None:
    """The newest finished engine on this machine that vendors `llama_cpp_commit` for `backend` (what a same-night
    A/B runs the previous build on), or None when this machine has none (pruned, or built elsewhere)."""
    return next((b for b in list_builds(paths) if b.ok and b.llama_cpp_commit == llama_cpp_commit
                 and b.request.backend == backend and Path(b.python).exists()), None)


def engine_for(python: str | None, paths: Paths) -> BuildRecord:
    """The engine a command runs in: the newest build, or a bare engine Python the caller names (its llama.cpp
    commit then comes from VRAMWATCH_LLAMA_CPP_COMMIT, else is unknown)."""
    if not python:
        return newest_engine(paths)
    return BuildRecord(request=BuildRequest(version="unknown"), status="ok", python=python, source_dir="",
                       llama_cpp_python_version="unknown",
                       llama_cpp_commit=os.environ.get("VRAMWATCH_LLAMA_CPP_COMMIT", "unknown"))


def _known_commit(source: BuildSource, request: BuildRequest, paths: Paths) -> str:
    """Ask the source for the version before anything is written: one it does not have raises UserError.
    Returns the commit for git sources (a tag names one); a cached PyPI sdist needs no network."""
    if source.source == "pypi" and find_sdist(paths.cache / "sdists", request.version):
        return ""
    return find_build(source, request.version).commit


def _build_wheel(request: BuildRequest, tree: SourceTree, python: Path, paths: Paths, log: Path,
                 with_llama_bench: bool) -> Path:
    """Compile the wheel with the build venv's Python, in its slot's persistent tree (build_tree.py) with the tree
    synced to this source first: the build writes libraries into llama_cpp/lib of its source, so the sync also
    removes whatever an earlier build of the slot left there.

    pip's build isolation is off on purpose: it hides the interpreter's site-packages from every child process, which
    breaks the pip-installed `cmake`/`ninja` launchers that CUDA images put first on PATH, and it then wants to
    download cmake, which an air-gapped worker cannot. The build backend is installed into the venv instead.
    """
    slot = build_slot(request)
    work = slot_dir(paths, slot)
    with slot_lock(paths, slot):
        say(f"syncing the build tree {work}: {sync_tree(tree.path, work / 'src')}")
        backend = tomllib.loads((work / "src" / "pyproject.toml").read_text())["build-system"]["requires"]
        index = pip_index(request)
        run_step("install build backend", [python, "-m", "pip", "install", "--disable-pip-version-check",
                                           *index.args, *backend], log, env=index.env)
        env = {**compile_env(request), **ccache_env(paths)}
        env["CMAKE_ARGS"] = " ".join([request.cmake_args, *ccache_args(request.backend, work / "src"), TOOLS_OFF])
        say(f"CMAKE_ARGS={env['CMAKE_ARGS']}")
        out = work / "wheel"
        shutil.rmtree(out, ignore_errors=True)
        try:
            run_step("build wheel", [python, "-m", "pip", "wheel", "-v", "--disable-pip-version-check", "--no-deps",
                                     "--no-build-isolation", "--wheel-dir", out,
                                     f"--config-settings=build-dir={work / 'cmake'}", work / "src"], log, env=env)
        except StepFailed as failure:  # name files relative to the source, not by their long cache path
            raise StepFailed(failure.error.replace(f"{work / 'src'}/", ""), failure.log_tail) from None
        built = sorted(out.glob("llama_cpp_python-*.whl"))
        if not built:
            raise StepFailed(f"build wheel failed: pip wheel left no wheel in {out}")
        dest = paths.cache / "wheels" / request.key / built[-1].name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(built[-1], dest)
        shutil.rmtree(out, ignore_errors=True)
        if with_llama_bench:
            build_llama_bench(work / "cmake", dest, dest.parent / "llama-bench", log, env)
    return dest


def _fresh_venv(venv: Path, log: Path) -> Path:
    shutil.rmtree(venv, ignore_errors=True)
    run_step("create venv", [sys.executable, "-m", "venv", venv], log)
    return venv / "bin" / "python"


def _install_engine(python: Path, wheel: Path, request: BuildRequest, log: Path) -> None:
    index = pip_index(request)
    run_step("install engine", [python, "-m", "pip", "install", "--disable-pip-version-check",
                                *index.args, wheel, *BENCH_CHILD_EXTRAS], log, env=index.env)
    problem = engine_import_error(python)
    if problem:
        raise StepFailed(f"import llama_cpp failed: {problem}")


def build_engine(source: BuildSource, version: str, paths: Paths) -> BuildRecord:
    """The engine for `version` of `source` ("latest" resolves first): reused if built before, else built.

    Streams the build to stderr and ends with one result line. A failed build returns status "failed" with a
    one-line error and the log's last lines; unknown versions and unusable locations raise UserError.
    """
    if version == "latest":
        version = find_build(source).version
    request = build_request(source, version)
    with build_lock(paths, request.key):
        return _reuse_or_build(source, version, request, paths)


def build_lock(paths: Paths, key: str, wait: bool = True) -> AbstractContextManager[bool]:
    """Hold <key>'s lock: two builds of one key (two DAG runs, or the CLI beside the scheduler) would share its venv
    and wheel cache and break each other, so the second waits for the first, then reuses what it built.
    wait False (prune): yields False at once if another process holds it, True once this one does."""
    return exclusive(paths.builds / f"{key}.lock", f"waiting for the build of {key} that {{holder}} is running", wait)


def _reuse_or_build(source: BuildSource, version: str, request: BuildRequest, paths: Paths) -> BuildRecord:
    home = paths.builds / request.key
    previous = _read_record(home)
    if previous and previous.ok and previous.request == request and not engine_import_error(Path(previous.python)):
        has_bench = bool(previous.llama_bench) and Path(previous.llama_bench).is_file()
        if has_bench or not source.build_llama_bench:
            (home / "build.json").touch()  # its mtime is when the engine was last used: prune keeps the recent ones
            say(f"result: reused {request.key} (llama-cpp-python {previous.llama_cpp_python_version}, "
                f"llama.cpp {previous.llama_cpp_commit[:12]}), python {previous.python}")
            return dataclasses.replace(previous, status="reused")

    commit = _known_commit(source, request, paths)
    home.mkdir(parents=True, exist_ok=True)
    log = home / "build.log"
    log.write_text("")
    started = time.monotonic()
    say(f"building {request.key}: {request.source} {version} for {request.backend}"
        + (f" from {request.location}" if request.location else "") + f"; CMake flags: {request.cmake_args}")
    tree: SourceTree | None = None
    wheel: Path | None = None
    try:
        tree = (git_source(request, commit, paths, log) if request.source == "git"
                else release_source(request, paths, log))
        python = _fresh_venv(home / "venv", log)
        wheel = cached_wheel(paths, request, source.build_llama_bench)
        if wheel:
            say(f"using cached wheel {wheel}")
        else:
            wheel = _build_wheel(request, tree, python, paths, log, source.build_llama_bench)
        _install_engine(python, wheel, request, log)
        if request.source == "git":  # bindings of one release around another llama.cpp: never bench a mismatch
            say(guard_bindings(python, tree.path / LLAMA, log))
        bench_binary = ""
        if source.build_llama_bench:
            shutil.rmtree(home / "llama-bench", ignore_errors=True)
            shutil.copytree(wheel.parent / "llama-bench", home / "llama-bench", symlinks=True)
            bench_binary = str(home / "llama-bench" / "llama-bench")
        outcome = dict(status="ok", python=str(python), llama_bench=bench_binary)
    except StepFailed as failure:
        outcome = dict(status="failed", python="", error=failure.error, log_tail=failure.log_tail)
    record = BuildRecord(
        request=request,
        source_dir=str(tree.path) if tree else "",
        llama_cpp_python_version=tree.llama_cpp_python_version if tree else
        (GIT_BINDINGS_VERSION if request.source == "git" else version),
        llama_cpp_commit=tree.llama_cpp_commit if tree else "unknown",
        duration_s=round(time.monotonic() - started, 1),
        artifact_bytes=wheel.stat().st_size if wheel else 0,
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **outcome,
    )
    (home / "build.json").write_text(record.to_json(indent=2) + "\n")
    if record.ok:
        say(f"result: built {request.key} in {record.duration_s:.0f} s (llama-cpp-python "
            f"{record.llama_cpp_python_version}, llama.cpp {record.llama_cpp_commit[:12]}, wheel "
            f"{record.artifact_bytes / 1e6:.1f} MB), python {record.python}")
    else:
        say(f"result: FAILED {request.key} after {record.duration_s:.0f} s: {record.error} (full log: {log})")
    return record
