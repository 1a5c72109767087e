"""llama-bench from the same source as the bindings: llama.cpp's own numbers, to cross-check ours.

The wheel does not ship it, so it is a separate CMake build of vendor/llama.cpp, static so the one binary can be
copied next to the build's venv.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from vramwatch.builds.backend import ccache_args, compile_env
from vramwatch.builds.process import StepFailed, run_step
from vramwatch.builds.slim import LLAMA
from vramwatch.config import Paths
from vramwatch.records import BuildRequest

# Only the tools tree (llama-bench is in it), none of what the slim tree leaves out; no network features.
_STANDALONE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
)


def configure_llama_bench(request: BuildRequest, tree: Path, work: Path, log: Path) -> None:
    """CMake configure of the tree's llama.cpp with the request's backend flags."""
    flags = [*shlex.split(request.cmake_args), *_STANDALONE_FLAGS, *ccache_args(request.backend)]
    run_step("configure llama-bench", ["cmake", "-S", tree / LLAMA, "-B", work, *flags], log, env=compile_env(request))


def build_llama_bench(request: BuildRequest, tree: Path, home: Path, paths: Paths, log: Path) -> str:
    """Build llama-bench (the cmake tree persists until success, so an interrupted build resumes) into home/bin."""
    work = paths.cache / "build" / f"{request.key}-llama-bench"
    configure_llama_bench(request, tree, work, log)
    env = compile_env(request)
    run_step("build llama-bench", ["cmake", "--build", work, "--target", "llama-bench",
                                   "--parallel", env["CMAKE_BUILD_PARALLEL_LEVEL"]], log, env=env)
    binary = work / "bin" / "llama-bench"
    if not binary.is_file():
        raise StepFailed(f"build llama-bench failed: no binary at {binary}")
    dest = home / "bin" / "llama-bench"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, dest)
    shutil.rmtree(work, ignore_errors=True)
    return str(dest)
