"""llama-bench from the engine's own compiled libraries: llama.cpp's own numbers, to cross-check ours.

The wheel does not ship it. Once the wheel is built, its CMake tree is configured again with llama.cpp's tools on and
only the llama-bench target is built: every library object is reused, so this costs seconds rather than a second CUDA
compile, and the binary runs on exactly the shared libraries the engine loads (`llama_bench_env`). It also needs
two libraries the wheel does not ship (llama-common, llama-bench-impl): they are kept beside it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

from vramwatch.builds.process import StepFailed, run_step
from vramwatch.records import BuildRecord

# Tools on, but none that the slim tree leaves out (the server's web UI) or that need the network.
TOOLS_FLAGS = ("-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_TESTS=OFF",
               "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF")
# The wheel's own default (llama.cpp as a subproject), restated for each wheel build: a kept tree that built
# llama-bench has tools on in its CMake cache, and the wheel would then compile every tool.
TOOLS_OFF = "-DLLAMA_BUILD_TOOLS=OFF"


def cmake_of(tree: Path) -> str:
    """The cmake that configured `tree`: another version could regenerate it from scratch, or refuse."""
    cache = (tree / "CMakeCache.txt").read_text(encoding="utf-8", errors="replace")
    found = re.search(r"^CMAKE_COMMAND:INTERNAL=(.+)$", cache, re.MULTILINE)
    return found.group(1) if found else "cmake"


def configure_tools(tree: Path, log: Path, env: dict[str, str] | None = None) -> None:
    """Turn llama.cpp's tools on in a configured bindings tree (its other settings stay as cached)."""
    run_step("configure llama-bench", [cmake_of(tree), tree, *TOOLS_FLAGS], log, env=env)


def build_llama_bench(tree: Path, wheel: Path, dest: Path, log: Path, env: dict[str, str]) -> Path:
    """Build llama-bench in the wheel's cmake `tree`; copy it and the libraries `wheel` lacks into folder `dest`."""
    configure_tools(tree, log, env)
    run_step("build llama-bench", [cmake_of(tree), "--build", tree, "--target", "llama-bench",
                                   "--parallel", env.get("CMAKE_BUILD_PARALLEL_LEVEL", "1")], log, env=env)
    binary = tree / "bin" / "llama-bench"  # llama.cpp puts executables and shared libraries in <build>/bin
    if not binary.is_file():
        raise StepFailed(f"build llama-bench failed: no binary at {binary}")
    with zipfile.ZipFile(wheel) as zf:  # what the engine loads from llama_cpp/lib (llama_bench_env's path)
        shipped = {Path(name).name for name in zf.namelist() if Path(name).parent == Path("llama_cpp/lib")}
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for library in sorted(binary.parent.glob("lib*.so*")):
        if library.name not in shipped:
            shutil.copy2(library, dest / library.name, follow_symlinks=False)  # keeps the .so -> .so.N chain
    shutil.copy2(binary, dest / binary.name)
    return dest / binary.name


def llama_bench_env(build: BuildRecord) -> dict[str, str]:
    """Environment that runs the build's llama-bench on the engine venv's own llama.cpp libraries."""
    found = subprocess.run(
        [build.python, "-c", "import llama_cpp, os; print(os.path.join(os.path.dirname(llama_cpp.__file__), 'lib'))"],
        capture_output=True, text=True, check=True)
    search = [str(Path(build.llama_bench).parent), found.stdout.strip(), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, search))}
