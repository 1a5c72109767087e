"""Which backend a build targets and the CMake flags that follow from it.

The flags are part of the build's identity (BuildRequest.key): the CPU string must stay exactly
CPU_CMAKE_ARGS, or every machine's cached CPU wheel stops matching and the next night recompiles for ~10 minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from vramwatch.builds.process import engine_env
from vramwatch.config import BuildSource
from vramwatch.errors import UserError
from vramwatch.records import BuildRequest

# GGML_NATIVE off: the wheel may run on another CPU than the one that built it. LLAVA off: mtmd is not benchmarked.
CPU_CMAKE_ARGS = "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
# LLAMA_BUILD_MTMD pins the default (OFF) of llama.cpp's standalone-mtmd switch; releases without it ignore it.
CUDA_CMAKE_ARGS = "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES={archs} -DLLAVA_BUILD=OFF -DLLAMA_BUILD_MTMD=OFF"
CUDA_HOME_BIN = Path("/usr/local/cuda/bin")


def find_nvcc() -> str | None:
    """nvcc on PATH, else the CUDA toolkit's usual place (not on PATH in many containers)."""
    found = shutil.which("nvcc") or shutil.which("nvcc", path=str(CUDA_HOME_BIN))
    return found or None


def _nvidia_smi(*args: str) -> list[str]:
    """Output lines of nvidia-smi, or [] where there is no driver or no GPU."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        done = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def resolve_backend(source: BuildSource) -> str:
    """cuda or cpu; `auto` means cuda only where both the compiler (nvcc) and a GPU are present."""
    if source.backend != "auto":
        return source.backend
    has_gpu = any(line.startswith("GPU ") for line in _nvidia_smi("-L"))
    return "cuda" if has_gpu and find_nvcc() else "cpu"


def cuda_architectures(source: BuildSource) -> str:
    """CMAKE_CUDA_ARCHITECTURES: the configured list, else the worker's GPUs ("9.0" -> "90").

    Never "native": it fails wherever the build runs with no GPU visible (a build container, a CPU worker).
    """
    if source.cuda_architectures:
        return source.cuda_architectures
    caps = _nvidia_smi("--query-gpu=compute_cap", "--format=csv,noheader")
    archs = sorted({cap.replace(".", "") for cap in caps if cap.replace(".", "").isdigit()}, key=int)
    if not archs:
        raise UserError(
            "cannot tell which CUDA architectures to build for: nvidia-smi shows no GPU here",
            "set build.cuda_architectures in the matrix (e.g. '90' for H100, '80;90' for A100 and H100)",
        )
    return ";".join(archs)


def build_request(source: BuildSource, version: str) -> BuildRequest:
    """The artifact to build for `version` (a llama-cpp-python version, or a llama.cpp tag for git sources)."""
    backend = resolve_backend(source)
    archs = cuda_architectures(source) if backend == "cuda" else ""
    base = CUDA_CMAKE_ARGS.format(archs=archs) if backend == "cuda" else CPU_CMAKE_ARGS
    return BuildRequest(
        version=version,
        source=source.source,
        # a bundle directory by its absolute path: the same bundle is the same build whatever the working directory
        location=str(Path(source.location).resolve()) if source.source == "path" else source.location,
        backend=backend,
        cuda_architectures=archs,
        cmake_args=" ".join(part for part in (base, source.cmake_args.strip()) if part),
    )


def ccache_args(backend: str, source: Path) -> list[str]:
    """Compiler launchers for ccache where it is installed: a rebuild after a small llama.cpp change is minutes.

    libllama is a unity build: CMake writes its batches as `#include "<absolute path of source>/..."`, so __FILE__ in
    them names the tree and no other tree (another slot, a test's scratch cache) could reuse their objects. Mapping
    the tree's prefix away makes them the same objects wherever the tree lies; ccache's base_dir does the rest. It is
    an _INIT flag: CMake reads it when a tree is configured the first time, and a slot's tree never moves.
    """
    ccache = shutil.which("ccache")
    if not ccache:
        return []
    languages = ("C", "CXX", "CUDA") if backend == "cuda" else ("C", "CXX")
    return ([f"-DCMAKE_{lang}_COMPILER_LAUNCHER={ccache}" for lang in languages]
            + [f"-DCMAKE_{lang}_FLAGS_INIT=-fmacro-prefix-map={source}/=" for lang in ("C", "CXX")])


def compile_env(request: BuildRequest) -> dict[str, str]:
    """Environment for a compile: every core, and nvcc found even where it is not on PATH."""
    env = engine_env()
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    nvcc = find_nvcc()
    if request.backend == "cuda" and nvcc:
        env.setdefault("CUDACXX", nvcc)
    return env
