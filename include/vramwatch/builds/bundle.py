"""make_bundle: everything a GPU worker without network needs to build the engine.

    <out>/llama_cpp_python-<version>.tar.gz   the sdist, slim (see slim.py): ~14 MB instead of 76 MB
    <out>/wheels/*.whl                         runtime deps (numpy for the target Python), NVML, the build backend

On the worker: build.source "path", build.location <out>; pip then runs with --no-index --find-links <out>.
Before it returns, the slim tree is unpacked and CMake-configured (the bindings, then with the tools llama-bench
needs), so a CMakeLists that references something the slim rule dropped fails here, not on the air-gapped worker.
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
import tomllib
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

from vramwatch.builds.backend import CPU_CMAKE_ARGS
from vramwatch.builds.detect import PROJECT, find_build
from vramwatch.builds.engine import BENCH_CHILD_EXTRAS
from vramwatch.builds.llama_bench import configure_tools
from vramwatch.builds.process import StepFailed, run_step, say
from vramwatch.builds.slim import keep
from vramwatch.builds.sources import (
    COMMIT_MARKER,
    default_index,
    extract_all,
    fetch_sdist,
    read_llama_cpp_commit,
    unpack_sdist,
)
from vramwatch.config import BuildSource, Paths
from vramwatch.errors import UserError


def _requirements(tree: Path) -> list[str]:
    """What installing and building the sdist pulls in: its Requires-Dist (no extras) and build-system requires."""
    metadata = Parser().parsestr((tree / "PKG-INFO").read_text())
    runtime = [r for r in metadata.get_all("Requires-Dist") or [] if not Requirement(r).marker]
    build = tomllib.loads((tree / "pyproject.toml").read_text())["build-system"]["requires"]
    return [*runtime, *build, *BENCH_CHILD_EXTRAS]


def _pack_slim(tree: Path, top: str, commit: str, archive: Path) -> None:
    def only_kept(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        relpath = info.name.partition("/")[2]
        return info if not relpath or keep(relpath) else None

    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        tar.add(tree.resolve(), arcname=top, filter=only_kept)
        marker = (commit + "\n").encode()
        info = tarfile.TarInfo(f"{top}/{COMMIT_MARKER}")
        info.size = len(marker)
        tar.addfile(info, io.BytesIO(marker))


def _check_configures(archive: Path, log: Path) -> None:
    """CMake-configure what was packed: the bindings with the CPU flags, then with llama.cpp's tools on."""
    with tempfile.TemporaryDirectory(prefix="vramwatch-bundle-") as scratch:
        with tarfile.open(archive) as tar:
            extract_all(tar, Path(scratch))
        (tree,) = Path(scratch).glob(f"{archive.name.removesuffix('.tar.gz')}")
        bindings = Path(scratch, "bindings")
        run_step("configure bindings", ["cmake", "-S", tree, "-B", bindings, *CPU_CMAKE_ARGS.split()], log)
        configure_tools(bindings, log)


def make_bundle(version: str, out_dir: Path, paths: Paths, python_version: str | None = None) -> Path:
    """Write the bundle for llama-cpp-python `version` ("latest" = newest on PyPI) into `out_dir`; return it.

    python_version: the worker's Python for the binary wheels (numpy), e.g. "3.11" or "cp311"; default: this one.
    """
    if version == "latest":
        version = find_build(BuildSource()).version
    out_dir = Path(out_dir)
    (out_dir / "wheels").mkdir(parents=True, exist_ok=True)
    log = out_dir / "bundle.log"
    log.write_text("")
    target = (python_version or f"{sys.version_info.major}.{sys.version_info.minor}").removeprefix("cp")
    try:
        tree = unpack_sdist(fetch_sdist(version, default_index(), paths, log), paths.cache / "src" / version)
        archive = out_dir / f"llama_cpp_python-{version}.tar.gz"
        say(f"packing the slim sdist -> {archive}")
        _pack_slim(tree, archive.name.removesuffix(".tar.gz"), read_llama_cpp_commit(tree), archive)
        _check_configures(archive, log)
        run_step("download wheels", [sys.executable, "-m", "pip", "download", "--only-binary", ":all:",
                                     "--python-version", target, "--dest", out_dir / "wheels",
                                     *_requirements(tree)], log)
    except StepFailed as failure:
        raise UserError(f"bundle of {PROJECT} {version} failed: {failure.error}",
                        f"see {log}; if CMake misses a path, keep it in vramwatch/builds/slim.py") from None
    wheels = sorted(p.name for p in (out_dir / "wheels").glob("*.whl"))
    say(f"result: bundle {out_dir}: slim sdist {archive.stat().st_size / 1e6:.1f} MB, {len(wheels)} wheels "
        f"for Python {target}: {', '.join(wheels)}")
    return out_dir
